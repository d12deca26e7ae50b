//! Subscriptions at scale (issue 31): `fidelis train` and `fidelis score` with churn as a
//! cancellation on generated contracts (`generate --kind saas --contracts`: monthly and annual
//! contracts, notices, renewals, product events, a customer table: all four inputs configured,
//! as `configs/saas.toml` does), as whole processes: wall time and peak RSS of each,
//! the training's own step timings (features and labels, the churn and CLV candidates, the
//! time-to-cancellation model with its out-of-time choice and refit), the person-period rows
//! the survival model learns from, and the scoring run (median of 3) with the survival,
//! renewal and revenue columns.
//!
//! `make bench-subscriptions` (or `cargo bench --bench subscriptions`): 100,000 subscriptions
//! (`FIDELIS_BENCH_SUBSCRIPTIONS`, data cached under data/bench/saas_N;
//! `FIDELIS_BENCH_SAAS_INPUTS=core`: the transactions and the subscription table only, without
//! the events and the customer table); prints a table and
//! writes reports/bench/subscriptions.json. Under `cargo test`, a smoke run at 1,500.

mod common;

use std::path::PathBuf;

use common::{median, record, run};
use serde_json::{json, Value};

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let root = PathBuf::from(if bench { "data/bench" } else { "data/bench/smoke" });
    let n: usize = std::env::var("FIDELIS_BENCH_SUBSCRIPTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 100_000 } else { 1_500 });
    let data = root.join(format!("saas_{n}"));
    if !data.join("subscriptions.parquet").is_file() {
        eprintln!("generating {n} subscriptions with contracts into {} (cached)", data.display());
        let (_, secs, _) = run(
            &[
                "generate",
                "--kind",
                "saas",
                "--contracts",
                "--customers",
                &n.to_string(),
                "--seed",
                "42",
                "--out",
                data.to_str().unwrap(),
                "-q",
            ],
            &[],
        );
        eprintln!("generated in {secs:.1} s");
    }
    let dir = root.join(format!("subscriptions_{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = |p: PathBuf| p.display().to_string();
    let cfg = dir.join("fidelis.toml");
    // The product events and the customer table unless only the core inputs are asked for.
    let core = std::env::var("FIDELIS_BENCH_SAAS_INPUTS").is_ok_and(|v| v == "core");
    let signals = if core {
        String::new()
    } else {
        format!(
            "[input.events]\npath = {:?}\n\n[input.customers]\npath = {:?}\n\n",
            path(data.join("events.parquet")),
            path(data.join("customers.parquet")),
        )
    };
    std::fs::write(
        &cfg,
        format!(
            "[input.transactions]\npath = {:?}\n\n[input.subscriptions]\npath = {:?}\n\n{signals}\
             [snapshots]\neligibility_days = 31\nchurn = \"cancellation\"\n\n\
             [output]\ndir = {:?}\nsql = []\n\n[paths]\nmodels_dir = {:?}\nreports_dir = {:?}\n",
            path(data.join("transactions.parquet")),
            path(data.join("subscriptions.parquet")),
            path(dir.join("output")),
            path(dir.join("models")),
            path(dir.join("reports")),
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let env = [("RUST_LOG", "info"), ("FIDELIS_PG_URL", "")];
    let (_, train_s, train_rss) = run(&["train", "--config", c, "-q"], &env);
    let id = std::fs::read_to_string(dir.join("models/latest")).unwrap();
    let model = dir.join("models").join(id.trim());
    let read = |f: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(model.join(f)).unwrap()).unwrap()
    };
    let (m, info) = (read("metrics.json"), read("model.json"));
    let t = &info["timings_s"];
    let sec = |k: &str| t[k].as_f64().unwrap_or(f64::NAN);
    let s = &m["survival"];
    let rows =
        ["n_fit", "n_validation", "n_holdout"].iter().map(|k| m[k].as_f64().unwrap_or(0.0)).sum::<f64>();
    let mut scores = Vec::new();
    let mut score_rss = 0;
    for _ in 0..3 {
        let (_, secs, rss) = run(&["score", "--config", c, "-q"], &env);
        scores.push(secs);
        score_rss = score_rss.max(rss);
    }
    let score_s = median(scores);
    let dates = fidelis::sink::ScoreParquet::new(&dir.join("output")).run_dates().unwrap();
    let scored = fidelis::sink::ScoreParquet::new(&dir.join("output"))
        .read_scores(*dates.last().unwrap())
        .unwrap()
        .height();
    let mb = |b: u64| b as f64 / 1e6;
    println!("subscriptions: {n} generated contracts, churn = cancellation ({} snapshot rows)", rows);
    println!("{:<44} {:>10} {:>12}", "stage", "wall s", "peak RSS MB");
    println!("{:<44} {:>10.1} {:>12.0}", "train (whole process)", train_s, mb(train_rss));
    for (label, key) in [
        ("  features and labels over the snapshots", "features"),
        ("  churn/CLV models, candidates, decision", "train_main"),
        ("  out-of-time predictions (churn, CLV)", "out_of_time"),
        ("  time to cancellation (survival)", "survival"),
        ("  refit for deployment", "refit"),
    ] {
        println!("{:<44} {:>10.1} {:>12}", label, sec(key), "");
    }
    println!(
        "{:<44} {:>10.2} {:>12.0}",
        format!("score, median of 3 ({scored} scored)"),
        score_s,
        mb(score_rss)
    );
    println!(
        "survival: {} person-period rows evaluated, {} shipped; {} ({} trees); holdout C {:.4} (sBG {:.4}), S(90) ECE {:.4}",
        s["fit_periods"], s["deployed_periods"], s["mix"], s["trees"], s["model"]["concordance"].as_f64().unwrap_or(f64::NAN),
        s["sbg"]["concordance"].as_f64().unwrap_or(f64::NAN), s["model"]["s90_ece"].as_f64().unwrap_or(f64::NAN)
    );
    record(bench, "subscriptions", || {
        json!({
            "subscriptions": n,
            "config": std::fs::read_to_string(&cfg).unwrap_or_default(),
            "snapshot_rows": rows,
            "train": {"wall_s": train_s, "peak_rss_mb": mb(train_rss), "steps_s": t.clone()},
            "score": {"wall_s_median_of_3": score_s, "peak_rss_mb": mb(score_rss), "scored": scored},
            "survival": s.clone(),
            "churn_holdout_auc": m["churn"]["holdout"]["roc_auc"].clone(),
        })
    });
}
