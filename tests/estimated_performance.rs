//! Performance before the labels (issue 32, item 2): every weekly run records its ROC AUC,
//! precision, recall and net value estimated from its calibrated probabilities, with a 95%
//! interval; once the run matures, realized and estimated sit side by side.
//!
//! Two generated backtests of 20,000 customers, a model trained before 2024-03-01, runs every
//! 14 days to 2024-09-27 (16 matured runs each):
//! - without drift, the realized AUC is inside the interval on at least 90% of the runs and
//!   the estimate never alerts;
//! - with a change in the acquisition mix from 2024-04-01 (70% of the customers are a new
//!   channel's, joining after it and buying at 0.15 times the usual rate), the real AUC falls
//!   more than 0.05 and the estimated-AUC ALERT fires on a run scored before any run after the
//!   change has matured labels.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use chrono::NaiveDate;
use common::{fidelis, stderr, stdout};
use fidelis::sink::read_parquet;

/// Per run: (estimated AUC, low, high, status) and the realized AUC.
type Runs = BTreeMap<NaiveDate, ((f64, f64, f64, String), Option<f64>)>;

fn backtest(dir: &Path, shift: &[&str]) -> (Runs, String) {
    let ok = |args: &[&str]| {
        let out = fidelis(args, dir);
        assert!(out.status.success(), "fidelis {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let mut args = vec!["generate", "--customers", "20000", "--seed", "7", "--out", "data", "-q"];
    args.extend_from_slice(shift);
    ok(&args);
    fs::write(dir.join("fidelis.toml"), "[input.transactions]\npath = \"data/transactions.parquet\"\n")
        .unwrap();
    let printed = ok(&["backtest", "--from", "2024-03-01", "--every", "14", "--out", "bt", "-q"]);
    let h = read_parquet(&dir.join("bt/monitoring/metrics_history.parquet")).unwrap();
    let text = |c: &str| -> Vec<String> {
        h.column(c).unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect()
    };
    let (kind, item, metric, status) = (text("kind"), text("item"), text("metric"), text("status"));
    let value: Vec<f64> = h.column("value").unwrap().f64().unwrap().iter().map(|v| v.unwrap()).collect();
    let at = |k: &str, it: &str, m: &str| {
        (0..value.len()).find(|&i| kind[i] == k && item[i] == it && metric[i] == m).map(|i| (value[i], i))
    };
    let mut runs = Runs::new();
    for i in (0..value.len()).filter(|&i| kind[i] == "estimated" && metric[i] == "roc_auc") {
        let run = NaiveDate::parse_from_str(&item[i], "%Y-%m-%d").unwrap();
        let bound = |m: &str| at("estimated", &item[i], m).unwrap().0;
        let estimated = (value[i], bound("roc_auc_low"), bound("roc_auc_high"), status[i].clone());
        runs.insert(run, (estimated, at("realized", &item[i], "roc_auc").map(|x| x.0)));
    }
    assert_eq!(runs.len(), 16, "one estimate per replayed run");
    (runs, printed)
}

#[test]
fn without_drift_the_realized_auc_falls_inside_the_estimated_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, printed) = backtest(dir.path(), &[]);
    let matured: Vec<_> = runs.values().filter_map(|(e, r)| Some((e, (*r)?))).collect();
    assert_eq!(matured.len(), 16, "the closing pass realizes every run");
    let inside = matured.iter().filter(|((_, lo, hi, _), r)| lo <= r && r <= hi).count();
    assert!(
        inside * 10 >= matured.len() * 9,
        "realized AUC inside the interval on {inside} of 16 runs: {runs:?}"
    );
    for ((auc, lo, hi, status), _) in runs.values() {
        assert!(lo < auc && auc < hi && hi - lo < 0.03, "a useful interval: {lo} {auc} {hi}");
        assert_eq!(status, "ok", "no estimated-AUC alert without drift: {runs:?}");
    }
    assert!(
        printed.contains(&format!("inside the interval estimated when the run was scored: {inside} of 16"))
    );
}

#[test]
fn a_change_in_the_customer_mix_lowers_the_estimate_and_alerts_before_the_labels_mature() {
    let dir = tempfile::tempdir().unwrap();
    let shift = ["--shift-date", "2024-04-01", "--shift-share", "0.7", "--shift-rate", "0.15"];
    let (runs, printed) = backtest(dir.path(), &[&shift[..], &["--shift-kind", "acquisition"]].concat());
    let change = NaiveDate::from_ymd_opt(2024, 4, 1).unwrap();
    let before: Vec<f64> = runs.range(..change).map(|(_, ((a, ..), _))| *a).collect();
    let after: Vec<f64> =
        runs.range(change + chrono::Duration::days(28)..).map(|(_, ((a, ..), _))| *a).collect();
    let realized_before: Vec<f64> = runs.range(..change).filter_map(|(_, (_, r))| *r).collect();
    let realized_after: Vec<f64> =
        runs.range(change + chrono::Duration::days(28)..).filter_map(|(_, (_, r))| *r).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // The drift lowers the real AUC, and the estimate falls with it.
    assert!(
        mean(&realized_after) < mean(&realized_before) - 0.05,
        "{realized_before:?} -> {realized_after:?}"
    );
    assert!(mean(&after) < mean(&before) - 0.04, "estimated {before:?} -> {after:?}");
    // The first alert is on a run scored before any run after the change has matured labels
    // (the first such run, 2024-04-12, matures 90 days later), and none before the change.
    let first_alert = runs.iter().find(|(_, ((.., s), _))| s == "alert").map(|(d, _)| *d);
    let first_after = *runs.range(change..).next().unwrap().0;
    let alert = first_alert.expect("an estimated-AUC alert");
    assert!(alert > change && alert < first_after + chrono::Duration::days(90), "first alert at {alert}");
    assert!(printed.contains(&format!("ALERT estimated AUC of the run at {alert}")), "{printed}");
}
