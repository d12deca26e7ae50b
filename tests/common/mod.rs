//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The real datasets: `$FIDELIS_DATASETS`, else `../shared/datasets`, else `data/external`
/// (filled by `make datasets`). Also exported as FIDELIS_DATASETS for the configs.
pub fn datasets_dir() -> PathBuf {
    let dir = std::env::var("FIDELIS_DATASETS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| ["../shared/datasets", "data/external"].iter().map(PathBuf::from).find(|p| p.join("cdnow").is_dir()))
        .expect("real datasets not found: set FIDELIS_DATASETS, or run `make datasets` to fetch them into data/external");
    assert!(dir.join("cdnow/CDNOW_master.txt").is_file(), "{} has no cdnow/CDNOW_master.txt", dir.display());
    std::env::set_var("FIDELIS_DATASETS", &dir);
    dir
}

pub fn fidelis(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("run fidelis")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
