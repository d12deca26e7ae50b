//! The weekly batch at scale: `fidelis score` on 1,000,000 generated customers (~30 M
//! transactions), as a whole process: ingest, features at one as_of, churn + CLV predictions,
//! reasons (exact SHAP; the same runs again with path attributions, for their cost), RFM,
//! Parquet + SQLite. Prints a table (wall seconds, peak RSS, in-process stage
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

use common::{ensure_data, ensure_model, median, run, steps};

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
    let models = ensure_model(&root, train_size);

    // The generator's period ends 2024-12-31: Mondays-style weekly runs at its end. The same
    // three runs with path attributions as the reasons (what they were before exact SHAP):
    // what the exact reasons cost the batch, in the same run.
    let dates = ["2024-12-18", "2024-12-25", "2025-01-01"];
    let weekly = |reasons: &str| {
        let out_dir = root.join(format!("output_{customers}_{reasons}"));
        let _ = std::fs::remove_dir_all(&out_dir);
        let cfg = root.join(format!("score_{customers}_{reasons}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[input.transactions]\npath = {:?}\n\n[output]\ndir = {:?}\nsql = [\"sqlite://{}/fidelis.sqlite\"]\n\
                 reasons = {reasons:?}\n\n[paths]\nmodels_dir = {:?}\n",
                big.display().to_string(),
                out_dir.display().to_string(),
                out_dir.display(),
                models.display().to_string()
            ),
        )
        .unwrap();
        let (mut walls, mut rss, mut stage_runs, mut scored) =
            (Vec::new(), Vec::new(), Vec::new(), String::new());
        for d in dates {
            let (out, secs, peak) = run(
                &["score", "--config", cfg.to_str().unwrap(), "--as-of", d, "-q"],
                &[("RUST_LOG", "info"), ("FIDELIS_PG_URL", "")],
            );
            walls.push(secs);
            rss.push(peak as f64);
            stage_runs.push(steps(&out.stderr));
            scored = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string();
            eprintln!("run as_of={d}, reasons={reasons}: {secs:.2} s, peak RSS {:.2} GB", peak as f64 / 1e9);
        }
        (walls, rss, stage_runs, scored)
    };
    let (walls, rss, stage_runs, scored) = weekly("shap");
    let (path_walls, _, _, _) = weekly("path");
    let path_wall = median(path_walls.clone());

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
    println!(
        "the same runs with path attributions as reasons: median {path_wall:.2} s (exact SHAP reasons: {:+.1}%)",
        (wall / path_wall - 1.0) * 100.0
    );
    let report = serde_json::json!({
        "benchmark": "score",
        "customers": customers,
        "summary": scored,
        "wall_seconds_median": wall,
        "wall_seconds_runs": walls,
        "peak_rss_bytes_max": peak,
        "stages_median_seconds": stage_json,
        "reasons": "shap",
        "path_reasons_wall_seconds_median": path_wall,
        "path_reasons_wall_seconds_runs": path_walls,
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
