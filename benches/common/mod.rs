//! Helpers shared by the bench binaries: run fidelis as a child process and measure it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub const BIN: &str = env!("CARGO_BIN_EXE_fidelis");

// The child is reaped with wait4 (for its rusage), which clippy cannot see.
#[allow(clippy::zombie_processes)]
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (std::process::Output, f64, u64) {
    let start = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start fidelis");
    let pid = child.id() as libc::pid_t;
    // Read the pipes on threads, reap with wait4 to get this child's own peak RSS.
    let (mut out, mut err) = (child.stdout.unwrap(), child.stderr.unwrap());
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut s).ok();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut s).ok();
        s
    });
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child, status and usage are valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 failed");
    let secs = start.elapsed().as_secs_f64();
    let output = std::process::Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    };
    assert!(output.status.success(), "fidelis {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
    (output, secs, usage.ru_maxrss as u64 * 1024)
}

pub fn ensure_data(root: &Path, customers: usize) -> PathBuf {
    let dir = root.join(format!("customers_{customers}"));
    let file = dir.join("transactions.parquet");
    if !file.is_file() {
        eprintln!("generating {customers} customers into {} (cached)", dir.display());
        let n = customers.to_string();
        run(&["generate", "--customers", &n, "--seed", "42", "--out", dir.to_str().unwrap(), "-q"], &[]);
    }
    file
}

/// The model the scoring benches score with: trained on `train_size` customers of the same
/// generator (training at 1M is the training benchmark's business), cached in
/// `root/models_<train_size>` while it has the features this fidelis builds and was trained
/// by a fidelis that stores its trees' covers (exact SHAP reasons).
pub fn ensure_model(root: &Path, train_size: usize) -> PathBuf {
    let small = ensure_data(root, train_size);
    let models = root.join(format!("models_{train_size}"));
    let train_cfg = root.join(format!("train_{train_size}.toml"));
    std::fs::write(
        &train_cfg,
        format!(
            "[input.transactions]\npath = {:?}\n\n[paths]\nmodels_dir = {:?}\nreports_dir = {:?}\n",
            small.display().to_string(),
            models.display().to_string(),
            root.join("reports").display().to_string()
        ),
    )
    .unwrap();
    let features = fidelis::features::FeatureSpec::from_config(&fidelis::Config::default()).names();
    let dir = fidelis::model::store::resolve(&models, None).ok();
    let cached = dir.as_ref().is_some_and(|dir| {
        fidelis::model::load::read_info(dir).is_ok_and(|info| info.features == features)
            && fidelis::model::load::read_metrics(dir).is_ok_and(|m| m.gbdt.churn_contributions_shap)
    });
    if !cached {
        let _ = std::fs::remove_dir_all(&models);
        eprintln!("training the benchmark model on {train_size} customers (cached in {})", models.display());
        run(&["train", "--config", train_cfg.to_str().unwrap(), "-q"], &[]);
    }
    models
}

/// In-process step timings from `RUST_LOG=info`: lines `... ] label: 1.23s`.
pub fn steps(stderr: &[u8]) -> Vec<(String, f64)> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("] ")?.1;
            let (label, secs) = rest.rsplit_once(": ")?;
            Some((label.to_string(), secs.strip_suffix('s')?.parse().ok()?))
        })
        .collect()
}

/// `f` run three times: its last result and the median seconds.
pub fn timed<T>(f: impl Fn() -> T) -> (T, f64) {
    let mut times = Vec::new();
    let mut out = None;
    for _ in 0..3 {
        let t = Instant::now();
        out = Some(f());
        times.push(t.elapsed().as_secs_f64());
    }
    (out.expect("three runs"), median(times))
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Write a bench's results to `reports/bench/<name>.json` (built only under `cargo bench`:
/// `bench` is false under `cargo test`, where the run is a smoke run and nothing is recorded).
pub fn record(bench: bool, name: &str, results: impl FnOnce() -> serde_json::Value) {
    if !bench {
        println!("(smoke run under cargo test: not recorded)");
        return;
    }
    let path = format!("reports/bench/{name}.json");
    std::fs::create_dir_all("reports/bench").unwrap();
    std::fs::write(&path, serde_json::to_vec_pretty(&results()).unwrap()).unwrap();
    println!("written to {path}");
}
