//! The weekly batch at scale: `fidelis score` on 1,000,000 generated customers (~30 M
//! transactions), as a whole process: ingest, features at one as_of, churn + CLV predictions,
//! reasons, RFM, Parquet + SQLite. Prints a table (wall seconds, peak RSS, in-process stage
//! timings) and writes it to reports/bench/score.json.
//!
//! Inputs are cached under data/bench/: the 1M-customer log, and a model trained on 50,000
//! customers of the same generator (training at 1M is the training benchmark's business).
//! Three runs, one week apart, each with the previous run present (as on a real Monday).
//!
//! `make bench-score` (or `cargo bench --bench score`); `FIDELIS_BENCH_CUSTOMERS` changes
//! the size.

use std::path::PathBuf;

mod common;

use common::{ensure_data, median, run, steps};

fn main() {
    // `cargo bench` passes --bench. Without it (`cargo test --all-targets`) this is a smoke
    // run on 2,000 customers that keeps the benchmark code working and records nothing.
    let bench = std::env::args().any(|a| a == "--bench");
    let root = PathBuf::from(if bench { "data/bench" } else { "data/bench/smoke" });
    let default_size = if bench { 1_000_000 } else { 2_000 };
    let customers: usize =
        std::env::var("FIDELIS_BENCH_CUSTOMERS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_size);
    let train_size = customers.min(50_000);
    let big = ensure_data(&root, customers);
    let small = ensure_data(&root, train_size);

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
    // The cached model is reused while it has the features this fidelis builds.
    let features = fidelis::features::FeatureSpec::from_config(&fidelis::Config::default()).names();
    let cached = fidelis::model::store::resolve(&models, None)
        .ok()
        .and_then(|dir| fidelis::model::load::read_info(&dir).ok())
        .is_some_and(|info| info.features == features);
    if !cached {
        let _ = std::fs::remove_dir_all(&models);
        eprintln!("training the benchmark model on {train_size} customers (cached in {})", models.display());
        run(&["train", "--config", train_cfg.to_str().unwrap(), "-q"], &[]);
    }

    let out_dir = root.join(format!("output_{customers}"));
    let _ = std::fs::remove_dir_all(&out_dir);
    let cfg = root.join(format!("score_{customers}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[input.transactions]\npath = {:?}\n\n[output]\ndir = {:?}\nsql = [\"sqlite://{}/fidelis.sqlite\"]\n\n\
             [paths]\nmodels_dir = {:?}\n",
            big.display().to_string(),
            out_dir.display().to_string(),
            out_dir.display(),
            models.display().to_string()
        ),
    )
    .unwrap();

    // The generator's period ends 2024-12-31: Mondays-style weekly runs at its end.
    let dates = ["2024-12-18", "2024-12-25", "2025-01-01"];
    let mut walls = Vec::new();
    let mut rss = Vec::new();
    let mut stage_runs: Vec<Vec<(String, f64)>> = Vec::new();
    let mut scored = String::new();
    for d in dates {
        let (out, secs, peak) = run(
            &["score", "--config", cfg.to_str().unwrap(), "--as-of", d, "-q"],
            &[("RUST_LOG", "info"), ("FIDELIS_PG_URL", "")],
        );
        walls.push(secs);
        rss.push(peak as f64);
        stage_runs.push(steps(&out.stderr));
        scored = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string();
        eprintln!("run as_of={d}: {secs:.2} s, peak RSS {:.2} GB", peak as f64 / 1e9);
    }

    let wall = median(walls.clone());
    let peak = rss.iter().cloned().fold(0.0, f64::max);
    println!();
    println!("fidelis score, {customers} customers ({scored})");
    println!("{:<46} {:>10}", "stage (median of 3 weekly runs)", "seconds");
    let labels: Vec<String> = stage_runs[0].iter().map(|(l, _)| l.clone()).collect();
    let mut stage_json = serde_json::Map::new();
    for (i, label) in labels.iter().enumerate() {
        let m = median(stage_runs.iter().filter_map(|r| r.get(i).map(|x| x.1)).collect());
        let short = label.split(" eligible at").next().unwrap_or(label);
        println!("{:<46} {:>10.2}", short, m);
        stage_json.insert(short.to_string(), serde_json::json!(m));
    }
    println!("{:<46} {:>10.2}", "whole process (wall)", wall);
    println!("{:<46} {:>10.2}", "peak RSS, GB (max of 3)", peak / 1e9);
    println!("runs: {}", walls.iter().map(|w| format!("{w:.2}")).collect::<Vec<_>>().join(", "));
    let report = serde_json::json!({
        "benchmark": "score",
        "customers": customers,
        "summary": scored,
        "wall_seconds_median": wall,
        "wall_seconds_runs": walls,
        "peak_rss_bytes_max": peak,
        "stages_median_seconds": stage_json,
        "targets": {"wall_seconds": 20.0, "peak_rss_bytes": 4e9},
    });
    if !bench {
        println!("(smoke run under cargo test: not recorded)");
        return;
    }
    std::fs::create_dir_all("reports/bench").unwrap();
    std::fs::write("reports/bench/score.json", serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    println!("written to reports/bench/score.json");
}
