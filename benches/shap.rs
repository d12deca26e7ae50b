//! What the churn reasons cost at 1,000,000 customers: the churn GBDT of the score bench's
//! model (trained on 50,000 generated customers) on the features of a 1,000,000-customer log
//! at its end (the eligible base, about 640,000 customers, repeated cyclically up to exactly
//! 1,000,000 rows; features built once, not timed). In process, median of 3: the GBDT's
//! probabilities alone, with path attributions (Saabas, what reasons were before), exact SHAP
//! values by TreeSHAP for every row, and TreeSHAP for the rows the model's decision contacts
//! and for the top 10% by churn probability. Prints a table and writes reports/bench/shap.json.
//!
//! `make bench-shap` (or `cargo bench --bench shap`); `FIDELIS_BENCH_CUSTOMERS` changes the
//! size. Under `cargo test` it is a smoke run on 2,000 customers.

mod common;

use std::path::PathBuf;

use chrono::NaiveDate;
use common::{ensure_data, ensure_model, record, timed};
use fidelis::train::gbdt::Gbdt;
use fidelis::Config;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let root = PathBuf::from(if bench { "data/bench" } else { "data/bench/smoke" });
    let customers: usize = std::env::var("FIDELIS_BENCH_CUSTOMERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if bench { 1_000_000 } else { 2_000 });
    let file = ensure_data(&root, customers);
    let models = ensure_model(&root, customers.min(50_000));
    let model = fidelis::model::load::load(&models, None).unwrap();
    let mut cfg = Config::default();
    cfg.input.transactions.path = file.display().to_string();
    let tx = fidelis::ingest::load_transactions(&cfg.input.transactions, cfg.input.sql_batch_rows).unwrap();
    let daily = fidelis::features::daily_activity(&tx.frame).unwrap();
    let as_of = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    let signals = fidelis::signals::SignalData::default();
    let (_, x) = fidelis::predict::features_at(&model, &daily, &signals, as_of).unwrap();
    drop(daily);
    let eligible = x.rows;
    let x = x.select_rows(&(0..customers).map(|i| i % eligible).collect::<Vec<_>>());

    let gbdt = &model.churn.gbdt;
    let (probability, predict_s) = timed(|| gbdt.predict(&x));
    let (_, path_s) = timed(|| gbdt.predict_with_contributions(&x));
    let (all, shap_s) = timed(|| gbdt.shap(&x, None).expect("a model trained now stores covers"));
    // The rows the decision contacts (calibrated churn probability of the shipped mix) and
    // the top 10% by the GBDT's own probability.
    let p = model.calibrator.apply_all(&model.churn.predict(&x));
    let contacted: Vec<usize> = (0..x.rows).filter(|&i| model.decision.contacts(p[i])).collect();
    let mut order: Vec<usize> = (0..x.rows).collect();
    order.sort_by(|&a, &b| probability[b].total_cmp(&probability[a]).then(a.cmp(&b)));
    let top: Vec<usize> = order[..x.rows / 10].to_vec();
    let (_, contacted_s) = timed(|| gbdt.shap(&x, Some(&contacted)));
    let (_, top_s) = timed(|| gbdt.shap(&x, Some(&top)));
    // Each row adds up to its margin (the log-odds of the GBDT's probability).
    let w = x.cols() + 1;
    let worst = (0..x.rows)
        .map(|r| {
            (all[r * w..(r + 1) * w].iter().sum::<f64>() - fidelis::math::logit(probability[r], 1e-15)).abs()
        })
        .fold(0.0, f64::max);

    let trees = gbdt.n_trees();
    println!();
    println!(
        "churn reasons, {} rows ({eligible} eligible customers repeated), {trees} trees, {} features (median of 3)",
        x.rows,
        x.cols()
    );
    println!("{:<52} {:>9} {:>9}", "", "seconds", "x alone");
    for (what, s) in [
        ("GBDT probabilities only", predict_s),
        ("probabilities + path attributions (Saabas)", path_s),
        ("TreeSHAP, every row", shap_s),
        (&*format!("TreeSHAP, the {} contacted rows", contacted.len()), contacted_s),
        (&*format!("TreeSHAP, the top 10% ({} rows)", top.len()), top_s),
    ] {
        println!("{what:<52} {s:>9.2} {:>9.1}", s / predict_s);
    }
    println!("largest |sum of SHAP values - margin|: {worst:.2e}");
    record(bench, "shap", || {
        serde_json::json!({
            "benchmark": "shap",
            "rows": x.rows,
            "eligible_customers": eligible,
            "trees": trees,
            "features": x.cols(),
            "median_seconds": {
                "margins": predict_s,
                "margins_and_path_attributions": path_s,
                "treeshap_all": shap_s,
                "treeshap_contacted": contacted_s,
                "treeshap_top10": top_s,
            },
            "contacted_rows": contacted.len(),
            "max_additivity_error": worst,
        })
    });
}
