//! Drift at scale: PSI, KS, missing share and mean of every feature for 1,000,000 customers
//! against a reference of 1,000,000, in process. The reference is the eligible base of a
//! 1,000,000-customer generated log at 2024-06-30, the current population the base at
//! 2024-12-31 (features computed once, not timed); each is about 640,000 eligible customers,
//! so its rows are repeated cyclically up to exactly 1,000,000. Prints a table (median of 5)
//! and writes reports/bench/monitor.json.
//!
//! `make bench-monitor` (or `cargo bench --bench monitor`); `FIDELIS_BENCH_CUSTOMERS`
//! changes the size. Under `cargo test` it is a smoke run on 20,000 customers.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::NaiveDate;
use common::median;
use fidelis::config::MonitorConfig;
use fidelis::features::{self, FeatureMatrix, FeatureSpec};
use fidelis::generate::{self, GenerateOptions};
use fidelis::monitor::{self, Reference, Status};
use fidelis::Config;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let default_size = if bench { 1_000_000 } else { 20_000 };
    let customers: usize =
        std::env::var("FIDELIS_BENCH_CUSTOMERS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_size);
    let root = PathBuf::from(if bench { "data/bench" } else { "data/bench/smoke" });
    let file = root.join(format!("customers_{customers}")).join("transactions.parquet");
    if !file.is_file() {
        eprintln!("generating {customers} customers into {} (cached)", file.display());
        let mut df =
            generate::generate(&GenerateOptions { customers, ..GenerateOptions::default() }).unwrap();
        fidelis::sink::write_parquet_atomic(&mut df, &file).unwrap();
    }
    let mut cfg = Config::default();
    cfg.input.transactions.path = file.display().to_string();
    let tx = fidelis::ingest::load_transactions(&cfg.input.transactions, cfg.input.sql_batch_rows).unwrap();
    let spec = FeatureSpec::from_config(&cfg);
    let names = spec.names();
    let daily = features::daily_activity(&tx.frame).unwrap();
    let at = |d: &str| {
        let d = NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        FeatureMatrix::from_frame(&features::features_at(&daily, &spec, &[d], None).unwrap(), &names).unwrap()
    };
    let tile = |x: FeatureMatrix| {
        let idx: Vec<usize> = (0..customers).map(|i| i % x.rows).collect();
        x.select_rows(&idx)
    };
    let (x_ref, x_cur) = (tile(at("2024-06-30")), tile(at("2024-12-31")));
    drop(daily);

    let mcfg = MonitorConfig::default();
    let (mut build, mut drift_s) = (Vec::new(), Vec::new());
    let mut last = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        // Scores are not part of this benchmark: the first feature stands in for both.
        let reference = Reference::build(
            NaiveDate::from_ymd_opt(2024, 6, 30).unwrap(),
            &x_ref,
            x_ref.column(0),
            x_ref.column(0),
        );
        build.push(t.elapsed().as_secs_f64());
        let current: BTreeMap<&str, &[f64]> =
            names.iter().enumerate().map(|(c, n)| (n.as_str(), x_cur.column(c))).collect();
        let t = Instant::now();
        last = monitor::drift(&reference, &current, &mcfg);
        drift_s.push(t.elapsed().as_secs_f64());
    }
    // The run's performance estimated from its calibrated probabilities (CBPE): one pass over
    // the scored customers, then the estimate from the counts; and the counts of 64 parts
    // merged, as Spark's partitions are.
    let mut r = fidelis::rng::Rng::new(1);
    let p: Vec<f64> = (0..customers).map(|_| fidelis::math::sigmoid(-1.5 + 1.6 * r.normal())).collect();
    let clv: Vec<f64> = x_cur.column(0).iter().map(|v| v.abs() * 10.0).collect();
    let contact: Vec<bool> = p.iter().map(|&q| q >= 0.3).collect();
    let d = fidelis::config::DecisionConfig::default();
    let (mut estimate_s, mut merge_s) = (Vec::new(), Vec::new());
    let none = monitor::estimate::Allowance::default();
    let mut auc = f64::NAN;
    for _ in 0..5 {
        let t = Instant::now();
        let e = monitor::EstimateCounts::of(&p, &clv, &contact, &d).estimate(NaiveDate::MIN, &none);
        estimate_s.push(t.elapsed().as_secs_f64());
        auc = e.roc_auc.value;
        let step = customers.div_ceil(64);
        let parts: Vec<monitor::EstimateCounts> = (0..customers)
            .step_by(step)
            .map(|s| {
                let e = (s + step).min(customers);
                monitor::EstimateCounts::of(&p[s..e], &clv[s..e], &contact[s..e], &d)
            })
            .collect();
        let t = Instant::now();
        let mut all = parts[0].clone();
        parts[1..].iter().for_each(|x| all.merge(x));
        let merged = all.estimate(NaiveDate::MIN, &none);
        merge_s.push(t.elapsed().as_secs_f64());
        assert_eq!(merged.roc_auc.value.to_bits(), auc.to_bits(), "the parts merge to the whole");
    }
    let alerts = last.iter().filter(|d| d.status == Status::Alert).count();
    println!();
    println!(
        "drift of {} features: {} current customers vs {} reference customers (median of 5)",
        last.len(),
        x_cur.rows,
        x_ref.rows
    );
    println!("{:<46} {:>10}", "step", "seconds");
    println!("{:<46} {:>10.3}", "reference (deciles, shares, sample)", median(build.clone()));
    println!("{:<46} {:>10.3}", "drift (PSI, KS, missing, mean; all features)", median(drift_s.clone()));
    println!(
        "{:<46} {:>10.3}",
        format!("estimated performance of {customers} (CBPE)"),
        median(estimate_s.clone())
    );
    println!("{:<46} {:>10.3}", "  the same from 64 parts' counts, merged", median(merge_s.clone()));
    println!("items in alert between the two dates: {alerts} of {}; estimated AUC {auc:.4}", last.len());
    common::record(bench, "monitor", || {
        serde_json::json!({
            "benchmark": "monitor",
            "customers": customers,
            "current_rows": x_cur.rows,
            "reference_rows": x_ref.rows,
            "features": last.len(),
            "reference_seconds_median": median(build),
            "drift_seconds_median": median(drift_s.clone()),
            "drift_seconds_runs": drift_s,
            "estimate_seconds_median": median(estimate_s),
            "estimate_merge_seconds_median": median(merge_s),
            "targets": {"drift_seconds": 5.0},
        })
    });
}
