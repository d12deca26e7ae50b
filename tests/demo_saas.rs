//! `make demo-saas` as the Makefile writes it: the recipe's command lines run in a scratch
//! directory holding `configs/saas.toml`, and its reports and messages show what the SaaS demo
//! is for (docs/subscriptions.md): churn as a cancellation, survival curves, renewals by ARR at
//! risk, NRR and GRR, renewal-driven escalations.

mod common;

use std::fs;
use std::path::Path;

use common::{fidelis, stderr, stdout};
use fidelis::sink::{read_parquet, ScoreParquet};

/// The `demo-saas` recipe of the Makefile: each line's arguments after `$(FIDELIS)`, with
/// `$(SEED)` at the Makefile's default.
fn recipe() -> Vec<Vec<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let make = fs::read_to_string(root.join("Makefile")).unwrap();
    let seed = make.lines().find_map(|l| l.strip_prefix("SEED ?= ")).expect("SEED in the Makefile").trim();
    let at = make.find("\ndemo-saas:").expect("the demo-saas target");
    make[at + 1..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .map(|l| {
            let l = l.trim().strip_prefix("$(FIDELIS) ").unwrap_or_else(|| panic!("not a fidelis line: {l}"));
            l.replace("$(SEED)", seed).split_whitespace().map(str::to_string).collect()
        })
        .collect()
}

#[test]
fn the_saas_demo_shows_renewals_revenue_retention_and_survival() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("configs")).unwrap();
    fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/saas.toml"), d.join("configs/saas.toml"))
        .unwrap();
    let lines = recipe();
    assert!(lines.len() >= 4 && lines[0].contains(&"--contracts".to_string()), "{lines:?}");
    let mut printed = Vec::new();
    for args in &lines {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = fidelis(&args, d);
        assert!(out.status.success(), "fidelis {args:?}: {}{}", stdout(&out), stderr(&out));
        printed.push(stdout(&out));
    }
    // Training: the time-to-cancellation model beside the churn model, in the evaluation report.
    let train = printed.iter().find(|p| p.contains("time to cancellation")).expect("train's output");
    assert!(train.contains("Harrell's C") && train.contains("<- shipped"), "{train}");
    let latest = fs::read_to_string(d.join("models/saas/latest")).unwrap();
    let eval = fs::read_to_string(d.join(format!("reports/saas/{}/evaluation.md", latest.trim()))).unwrap();
    assert!(eval.contains("## Time to cancellation"), "no survival section");
    assert!(d.join(format!("reports/saas/{}/charts/survival-curves.svg", latest.trim())).is_file());

    // The last weekly run: renewals by ARR at risk, NRR and GRR, from scores that carry the
    // renewal probability.
    let weekly = fs::read_dir(d.join("reports/saas/weekly")).unwrap();
    let mut md: Vec<_> = weekly
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    md.sort();
    assert_eq!(md.len(), 3, "three weekly runs");
    let report = fs::read_to_string(md.last().unwrap()).unwrap();
    for section in
        ["## Renewals in the next 90 days", "## Recurring revenue", "| NRR / GRR, last 12 months |"]
    {
        assert!(report.contains(section), "{section} missing from the weekly report");
    }
    let scores = ScoreParquet::new(&d.join("output/saas"));
    let last = *scores.run_dates().unwrap().last().unwrap();
    let s = scores.read_scores(last).unwrap();
    for c in ["renewal_probability", "days_to_renewal", "survival_90d", "subscription_clv", "mrr"] {
        assert!(s.column(c).is_ok(), "scores without {c}");
    }
    // The renewal rules: an escalation fired by a renewal window, a message of the renewal desk.
    let weekly_out = printed.last().unwrap();
    assert!(weekly_out.contains("CSM call before the renewal"), "{weekly_out}");
    assert!(weekly_out.contains("[renewals]") && weekly_out.contains("renews in"), "{weekly_out}");
    // The monitoring history keeps the recurring revenue of every run.
    let history = read_parquet(&d.join("output/saas/monitoring/metrics_history.parquet")).unwrap();
    let kinds = history.column("kind").unwrap().str().unwrap().clone();
    let revenue_rows = kinds.iter().filter(|k| *k == Some("revenue")).count();
    assert_eq!(revenue_rows, 3 * 16, "16 revenue rows per run");
}
