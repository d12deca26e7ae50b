//! `make bench`: every stage of fidelis as whole processes on generated data, at several
//! sizes (the growth curve), and the same work by LightGBM and DuckDB in the same run when
//! Python has them (`make bench-deps`). Prints a table and writes reports/bench/latest.json.
//!
//! Per size N (customers; `FIDELIS_BENCH_SIZES`, default 100000,300000,1000000; data cached
//! under data/bench/customers_N): `validate` (ingest), `train` (features and labels over the
//! snapshot grid, every candidate, baselines as configured by default; up to `FIDELIS_BENCH_TRAIN_MAX`
//! customers, default 300000, larger sizes are scored with the largest model trained), then
//! `weekly` at the end of the data (ingest, features at one date, scoring, Parquet, SQLite,
//! drift, monitoring history, weekly report). Wall time and peak RSS of each process (wait4),
//! in-process step timings from the logs and metrics.json.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ensure_data, run, steps};
use serde_json::{json, Value};

const AS_OF: &str = "2024-12-31";

fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

fn step(log: &[(String, f64)], prefix: &str) -> f64 {
    log.iter().filter(|(l, _)| l.starts_with(prefix)).map(|(_, s)| *s).sum()
}

/// Seconds at which the score laps ended (`score: <what> done at 1.23s`).
fn lap(stderr: &[u8], what: &str) -> Option<f64> {
    String::from_utf8_lossy(stderr).lines().find_map(|l| {
        let rest = l.split_once(&format!("score: {what} done at "))?.1;
        rest.strip_suffix('s')?.parse().ok()
    })
}

fn python_has_deps() -> bool {
    Command::new("python3")
        .args(["-c", "import lightgbm, duckdb, pandas, pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let root = PathBuf::from(if bench { "data/bench" } else { "data/bench/smoke" });
    let default_sizes = if bench { "100000,300000,1000000" } else { "2000" };
    let sizes: Vec<usize> = std::env::var("FIDELIS_BENCH_SIZES")
        .unwrap_or_else(|_| default_sizes.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let train_max: usize =
        std::env::var("FIDELIS_BENCH_TRAIN_MAX").ok().and_then(|s| s.parse().ok()).unwrap_or(300_000);
    let compare = bench && python_has_deps();
    if bench && !compare {
        eprintln!("LightGBM/DuckDB comparison skipped: python3 lacks lightgbm, duckdb, pandas or pyarrow (make bench-deps)");
    }
    let env = [("RUST_LOG", "info"), ("FIDELIS_PG_URL", "")];
    let mut results = Vec::new();
    let mut model_dir: Option<PathBuf> = None;
    for &n in &sizes {
        let data = ensure_data(&root, n);
        let dir = root.join(format!("pipeline_{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let trains = n <= train_max || model_dir.is_none();
        let models = if trains { dir.join("models") } else { model_dir.clone().unwrap() };
        let cfg = dir.join("fidelis.toml");
        std::fs::write(
            &cfg,
            format!(
                "[input.transactions]\npath = {:?}\n\n[output]\ndir = {:?}\n\
                 sql = [\"sqlite://{}/fidelis.sqlite\"]\n\n[paths]\nmodels_dir = {:?}\nreports_dir = {:?}\n",
                data.display().to_string(),
                dir.join("output").display().to_string(),
                dir.join("output").display(),
                models.display().to_string(),
                dir.join("reports").display().to_string(),
            ),
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let (out, ingest_s, ingest_rss) = run(&["validate", "--config", c, "--json"], &env);
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let transactions = summary["transactions"].as_u64().unwrap_or(0);
        eprintln!("{n}: ingest {ingest_s:.2} s");

        let mut r = json!({"customers": n, "transactions": transactions,
            "stages": {"ingest": {"wall_s": ingest_s, "peak_rss_mb": ingest_rss as f64 / 1e6,
                                  "rows_per_s": transactions as f64 / ingest_s}}});
        let features = dir.join("features.parquet");
        if trains {
            let (_, train_s, train_rss) =
                run(&["train", "--config", c, "--export-features", features.to_str().unwrap(), "-q"], &env);
            let id = std::fs::read_to_string(models.join("latest")).unwrap();
            let model = models.join(id.trim());
            let m: Value =
                serde_json::from_str(&std::fs::read_to_string(model.join("metrics.json")).unwrap()).unwrap();
            let info: Value =
                serde_json::from_str(&std::fs::read_to_string(model.join("model.json")).unwrap()).unwrap();
            let t = &info["timings_s"];
            let rows = m["n_fit"].as_f64().unwrap_or(0.0)
                + m["n_validation"].as_f64().unwrap_or(0.0)
                + m["n_holdout"].as_f64().unwrap_or(0.0);
            let sec = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
            r["stages"]["train_process"] = json!({"wall_s": train_s, "peak_rss_mb": train_rss as f64 / 1e6});
            r["stages"]["features_grid"] =
                json!({"wall_s": sec("features"), "rows_per_s": rows / sec("features")});
            r["stages"]["train_churn"] = json!({"wall_s": sec("train_churn"), "rows_per_s": m["n_fit"].as_f64().unwrap_or(0.0) / sec("train_churn"), "trees": m["gbdt"]["churn_trees"]});
            r["stages"]["train_clv"] =
                json!({"wall_s": sec("train_clv"), "trees": m["gbdt"]["clv_gbdt_trees"]});
            r["stages"]["predict_holdout"] = json!({"wall_s": sec("predict_holdout"), "rows_per_s": m["n_holdout"].as_f64().unwrap_or(0.0) / sec("predict_holdout")});
            r["holdout_auc"] = m["churn"]["holdout"]["roc_auc"].clone();
            r["churn_trees"] = m["gbdt"]["churn_trees"].clone();
            // What LightGBM's "same fits" repeat: tree counts, purged dates, refit parts.
            r["clv_trees"] = json!(m["gbdt"]["clv_gbdt_trees"].as_u64().unwrap_or(0));
            r["poisson_trees"] = json!(m["gbdt"]["clv_poisson_trees"].as_u64().unwrap_or(0));
            let basis = m["candidates"]["basis"].as_str().unwrap_or("");
            let dates: Vec<&str> = basis
                .split(|c: char| !(c.is_ascii_digit() || c == '-'))
                .filter(|w| w.len() == 10 && w.as_bytes()[4] == b'-')
                .collect();
            r["purged_dates"] = json!(dates.join(","));
            let parts: Vec<&str> = m["deployed"]["refit_parts"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            r["refit_parts"] = json!(parts.join(","));
            // fidelis's GBDT work in the same run: main fits, purged models (with their
            // logistic grid), refit.
            // The three main models are fitted side by side: their joint wall time counts
            // once (each one's own time, shared cores included, is in its stage).
            let main_fits = if sec("train_main").is_finite() {
                sec("train_main")
            } else {
                ["train_churn", "train_clv", "train_clv_poisson"]
                    .iter()
                    .map(|k| sec(k))
                    .filter(|v| v.is_finite())
                    .sum()
            };
            r["fidelis_fits_s"] = json!(
                main_fits
                    + ["out_of_time", "refit"].iter().map(|k| sec(k)).filter(|v| v.is_finite()).sum::<f64>()
            );
            r["stages"]["train_main_side_by_side"] = json!({"wall_s": main_fits});
            r["stages"]["train_clv_poisson"] = json!({"wall_s": sec("train_clv_poisson")});
            r["stages"]["out_of_time"] = json!({"wall_s": sec("out_of_time")});
            r["stages"]["refit"] = json!({"wall_s": sec("refit")});
            model_dir = Some(models.clone());
            eprintln!(
                "{n}: train {train_s:.2} s (features {:.2}, churn {:.2}, clv {:.2})",
                sec("features"),
                sec("train_churn"),
                sec("train_clv")
            );
        }
        let (out, weekly_s, weekly_rss) = run(&["weekly", "--config", c, "--as-of", AS_OF, "-q"], &env);
        let log = steps(&out.stderr);
        // "scored 639832 customers eligible at ..." (wherever it is in the output).
        let scored = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.trim().strip_prefix("scored "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.replace(',', "").parse::<u64>().ok())
            .unwrap_or(0);
        // Daily activity (once per run) plus the features at the scored date.
        let features_at = step(&log, "aggregating transactions per customer and day")
            + lap(&out.stderr, "features").unwrap_or(f64::NAN);
        r["weekly_batch"] =
            json!({"wall_s": weekly_s, "peak_rss_mb": weekly_rss as f64 / 1e6, "scored": scored});
        r["stages"]["weekly_ingest"] = json!({"wall_s": step(&log, "reading and validating")});
        r["stages"]["weekly_features_at_one_date"] = json!({"wall_s": features_at});
        r["stages"]["weekly_scoring"] = json!({"wall_s": step(&log, "scoring customers"), "rows_per_s": scored as f64 / step(&log, "scoring customers")});
        r["stages"]["weekly_parquet"] = json!({"wall_s": step(&log, "writing parquet")});
        r["stages"]["weekly_sqlite"] = json!({"wall_s": step(&log, "writing sqlite")});
        r["stages"]["weekly_drift"] = json!({"wall_s": step(&log, "drift at")});
        // Monitoring and the report are built beside the SQL load of the scores.
        r["stages"]["weekly_report_build"] = json!({"wall_s": step(&log, "building the weekly report")});
        r["stages"]["weekly_report"] = json!({"wall_s": step(&log, "writing the weekly report")});
        eprintln!("{n}: weekly {weekly_s:.2} s, peak {:.2} GB", gb(weekly_rss));

        if compare && trains {
            let py = Command::new("python3")
                .args([
                    "benches/compare/compare.py",
                    "--features",
                    features.to_str().unwrap(),
                    "--transactions",
                    data.to_str().unwrap(),
                    "--as-of",
                    AS_OF,
                    "--trees",
                    &r["churn_trees"].to_string(),
                    "--clv-trees",
                    &r["clv_trees"].to_string(),
                    "--poisson-trees",
                    &r["poisson_trees"].to_string(),
                    "--purged-dates",
                    r["purged_dates"].as_str().unwrap_or(""),
                    "--refit-parts",
                    r["refit_parts"].as_str().unwrap_or(""),
                ])
                .output()
                .expect("python3");
            if py.status.success() {
                let c: Value = serde_json::from_slice(&py.stdout).unwrap();
                let lgb = &c["lightgbm"];
                let ours = |k: &str| r["stages"][k]["wall_s"].as_f64().unwrap_or(f64::NAN);
                let fidelis_features = step(&log, "reading and validating") + features_at;
                let same = &c["same_fits"];
                let fits_ratio = r["fidelis_fits_s"].as_f64().unwrap_or(f64::NAN)
                    / same["total_s"].as_f64().unwrap_or(f64::NAN);
                let poisson_ratio =
                    ours("train_clv_poisson") / same["poisson_main_s"].as_f64().unwrap_or(f64::NAN);
                r["compare"] = json!({
                    "same_fits": {"fidelis_s": r["fidelis_fits_s"], "lightgbm_s": same["total_s"],
                                  "ratio": fits_ratio, "poisson_ratio": poisson_ratio,
                                  "lightgbm_parts": same["parts"]},
                    "lightgbm": {"train_ratio": ours("train_churn") / lgb["train_s"].as_f64().unwrap(),
                                 "predict_ratio": ours("predict_holdout") / lgb["predict_s"].as_f64().unwrap(),
                                 "auc_fidelis": r["holdout_auc"], "auc_lightgbm": lgb["auc"],
                                 "train_s": lgb["train_s"], "predict_s": lgb["predict_s"], "version": lgb["version"]},
                    "duckdb": {"features_ratio": fidelis_features / c["duckdb"]["features_s"].as_f64().unwrap(),
                               "fidelis_ingest_plus_features_s": fidelis_features,
                               "features_s": c["duckdb"]["features_s"], "customers": c["duckdb"]["customers"],
                               "version": c["duckdb"]["version"]},
                });
            } else {
                eprintln!("comparison failed: {}", String::from_utf8_lossy(&py.stderr));
            }
        }
        results.push(r);
    }

    println!();
    println!(
        "{:<30} {}",
        "stage",
        sizes.iter().map(|n| format!("{:>22}", format!("{n} customers"))).collect::<String>()
    );
    let keys = [
        "ingest",
        "features_grid",
        "train_churn",
        "train_clv",
        "train_clv_poisson",
        "train_main_side_by_side",
        "out_of_time",
        "refit",
        "predict_holdout",
        "train_process",
        "weekly_ingest",
        "weekly_features_at_one_date",
        "weekly_scoring",
        "weekly_parquet",
        "weekly_sqlite",
        "weekly_drift",
        "weekly_report_build",
        "weekly_report",
    ];
    for k in keys {
        let cells: String = results
            .iter()
            .map(|r| {
                let s = &r["stages"][k];
                match s["wall_s"].as_f64() {
                    Some(w) => {
                        let rate =
                            s["rows_per_s"].as_f64().map_or(String::new(), |x| format!(" {:.1}M/s", x / 1e6));
                        let mem =
                            s["peak_rss_mb"].as_f64().map_or(String::new(), |x| format!(" {:.1}GB", x / 1e3));
                        format!("{:>22}", format!("{w:.2}s{rate}{mem}"))
                    }
                    None => format!("{:>22}", "-"),
                }
            })
            .collect();
        println!("{k:<30} {cells}");
    }
    let cells: String = results
        .iter()
        .map(|r| {
            let w = &r["weekly_batch"];
            format!(
                "{:>22}",
                format!(
                    "{:.2}s {:.2}GB",
                    w["wall_s"].as_f64().unwrap_or(0.0),
                    w["peak_rss_mb"].as_f64().unwrap_or(0.0) / 1e3
                )
            )
        })
        .collect();
    println!("{:<30} {cells}", "WEEKLY BATCH (process)");
    for r in &results {
        if let Some(c) = r.get("compare") {
            println!(
                "{} customers: GBDT fits of a whole train, fidelis {:.1} s / LightGBM {:.1} s = {:.2}x; Poisson CLV model {:.2}x",
                r["customers"],
                c["same_fits"]["fidelis_s"].as_f64().unwrap_or(f64::NAN),
                c["same_fits"]["lightgbm_s"].as_f64().unwrap_or(f64::NAN),
                c["same_fits"]["ratio"].as_f64().unwrap_or(f64::NAN),
                c["same_fits"]["poisson_ratio"].as_f64().unwrap_or(f64::NAN),
            );
            println!(
                "{} customers: fidelis/LightGBM train {:.2}x, predict {:.2}x, AUC {:.4} vs {:.4}; fidelis/DuckDB features {:.2}x",
                r["customers"],
                c["lightgbm"]["train_ratio"].as_f64().unwrap_or(f64::NAN),
                c["lightgbm"]["predict_ratio"].as_f64().unwrap_or(f64::NAN),
                c["lightgbm"]["auc_fidelis"].as_f64().unwrap_or(f64::NAN),
                c["lightgbm"]["auc_lightgbm"].as_f64().unwrap_or(f64::NAN),
                c["duckdb"]["features_ratio"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    let Some(last) = results.last() else { return };
    let report = json!({
        "customers": last["customers"],
        "transactions": last["transactions"],
        "weekly_batch": last["weekly_batch"],
        "stages": last["stages"],
        "scaling": results.iter().map(|r| json!({"customers": r["customers"], "transactions": r["transactions"],
            "weekly_batch_wall_s": r["weekly_batch"]["wall_s"], "weekly_batch_peak_rss_mb": r["weekly_batch"]["peak_rss_mb"],
            "train_churn_s": r["stages"]["train_churn"]["wall_s"], "features_grid_s": r["stages"]["features_grid"]["wall_s"]})).collect::<Vec<_>>(),
        "compare": results.iter().rev().find_map(|r| r.get("compare").cloned()).unwrap_or(Value::Null),
        "runs": results,
    });
    if !bench {
        println!("(smoke run under cargo test: not recorded)");
        return;
    }
    std::fs::create_dir_all("reports/bench").unwrap();
    std::fs::write("reports/bench/latest.json", serde_json::to_vec_pretty(&report).unwrap()).unwrap();
    println!("written to reports/bench/latest.json");
}
