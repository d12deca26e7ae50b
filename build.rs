//! Records the versions of the main libraries (from Cargo.lock) so that `model.json` can say
//! exactly what produced a model.
use std::fs;

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (krate, var) in [
        ("polars", "FIDELIS_DEP_POLARS"),
        ("forust-ml", "FIDELIS_DEP_FORUST"),
        ("linfa", "FIDELIS_DEP_LINFA"),
        ("smartcore", "FIDELIS_DEP_SMARTCORE"),
    ] {
        let version = lock
            .split("[[package]]")
            .find(|block| block.contains(&format!("name = \"{krate}\"\n")))
            .and_then(|block| block.lines().find(|l| l.starts_with("version = ")))
            .map(|l| l.trim_start_matches("version = ").trim_matches('"').to_string())
            .unwrap_or_else(|| "unknown".into());
        println!("cargo:rustc-env={var}={version}");
    }
}
