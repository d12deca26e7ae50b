//! The value loop at scale, in process:
//! - what measuring the effect of contacting adds to a weekly run of 1,000,000 customers
//!   (`monitor::realized` of a matured run's scores with a control group against the same
//!   scores without one; the Qini coefficient of 1,000,000 scores; pooling 52 runs);
//! - uplift training at 100,000 customers x 8 runs (the features and churn labels of a
//!   100,000-customer generated log at 8 weekly runs, groups from the experiment's draws,
//!   10% control): two learners' fits on every row, and `train::uplift::choose` (all three
//!   learners on 7 runs, judged on the 8th with the bootstrap, the best refitted when it
//!   ships). Timing only: here every eligible customer is a row at every run (`train` takes
//!   each customer once), so the same customers are on both sides of the split and the choice
//!   it prints means nothing.
//!
//! Prints a table (medians of 3) and writes reports/bench/uplift.json. `make bench-uplift`
//! (or `cargo bench --bench uplift`); under `cargo test` a smoke run at 20,000 / 5,000.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use chrono::{Duration, NaiveDate};
use fidelis::config::{DecisionConfig, ExperimentConfig, GbdtConfig, UpliftConfig};
use fidelis::experiment::{self, Effect, Group};
use fidelis::features::{self, FeatureMatrix, FeatureSpec};
use fidelis::train::uplift::{choose, gbdt_params, ExperimentRows, Learner, UpliftModel};
use fidelis::Config;
use polars::prelude::*;

use common::timed;

/// A matured run's scores of `n` customers: 62% selected, 10% of them control.
fn scores(n: usize, with_experiment: bool) -> (DataFrame, fidelis::monitor::Outcomes) {
    let mut r = fidelis::rng::Rng::new(7);
    let ids: Vec<String> = (0..n).map(|i| format!("C{i:07}")).collect();
    let p: Vec<f64> = (0..n).map(|_| r.uniform()).collect();
    let contact: Vec<bool> = p.iter().map(|&q| q > 0.38).collect();
    let cfg = ExperimentConfig::default();
    let groups: Vec<Option<&str>> = (0..n)
        .map(|i| {
            experiment::assign(&cfg, contact[i], experiment::draw("retention", &ids[i]), None)
                .map(Group::as_str)
        })
        .collect();
    let bands = ["low", "moderate", "high", "critical", "imminent"];
    let band: Vec<&str> = p.iter().map(|&q| bands[((q * 5.0) as usize).min(4)]).collect();
    let outcomes: fidelis::monitor::Outcomes = ids
        .iter()
        .zip(&p)
        .filter(|(_, &q)| r.uniform() > q * 0.6)
        .map(|(id, _)| (id.clone(), fidelis::monitor::CustomerOutcome { churned: false, revenue: 50.0 }))
        .collect();
    let mut cols = vec![
        Column::new("customer_id".into(), ids.clone()),
        Column::new("churn_probability".into(), p.clone()),
        Column::new("predicted_clv".into(), p.iter().map(|q| 100.0 * (1.0 - q)).collect::<Vec<_>>()),
        Column::new("contact".into(), contact.clone()),
        Column::new("in_top_decile".into(), p.iter().map(|&q| q > 0.9).collect::<Vec<_>>()),
        Column::new("model_id".into(), vec!["m"; n]),
        Column::new("risk_level".into(), band.clone()),
        Column::new("playbook".into(), band),
    ];
    if with_experiment {
        cols.push(Column::new("experiment_group".into(), groups.clone()));
        cols.push(Column::new(
            "first_in_experiment".into(),
            groups.iter().map(Option::is_some).collect::<Vec<_>>(),
        ));
    }
    (DataFrame::new_infer_height(cols).unwrap(), outcomes)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let (scored, customers) = if bench { (1_000_000, 100_000) } else { (20_000, 5_000) };
    let d = DecisionConfig::default();
    let run = NaiveDate::from_ymd_opt(2024, 9, 3).unwrap();

    // The effect's share of monitoring a matured run.
    let (plain, outcomes) = scores(scored, false);
    let (with, _) = scores(scored, true);
    let (_, realized_plain) = timed(|| fidelis::monitor::realized(run, &plain, &outcomes, &d).unwrap());
    let (measured, realized_with) = timed(|| fidelis::monitor::realized(run, &with, &outcomes, &d).unwrap());
    let effect = measured.effect.as_ref().and_then(|e| e.overall.clone()).expect("an effect");
    let runs: Vec<&Effect> = vec![&effect; 52];
    let (_, pooling) = timed(|| experiment::pooled(&runs));
    let n = scored;
    let mut r = fidelis::rng::Rng::new(3);
    let (y, u, t): (Vec<f64>, Vec<f64>, Vec<bool>) = (0..n)
        .map(|_| (f64::from(u8::from(r.uniform() < 0.7)), r.uniform() - 0.5, r.uniform() < 0.9))
        .fold((Vec::new(), Vec::new(), Vec::new()), |(mut a, mut b, mut c), (x, y, z)| {
            a.push(x);
            b.push(y);
            c.push(z);
            (a, b, c)
        });
    let (_, qini) = timed(|| fidelis::qini::qini_coefficient(&y, &u, &t));

    // Uplift training rows: 8 weekly runs of a generated log.
    let file =
        common::ensure_data(&PathBuf::from(if bench { "data/bench" } else { "data/bench/smoke" }), customers);
    let mut cfg = Config::default();
    cfg.input.transactions.path = file.display().to_string();
    let tx = fidelis::ingest::load_transactions(&cfg.input.transactions, cfg.input.sql_batch_rows).unwrap();
    let spec = FeatureSpec::from_config(&cfg);
    let names = spec.names();
    let daily = features::daily_activity(&tx.frame).unwrap();
    let first = NaiveDate::from_ymd_opt(2024, 7, 2).unwrap();
    let dates: Vec<NaiveDate> = (0..8).map(|k| first + Duration::weeks(k)).collect();
    let t0 = Instant::now();
    let frame = features::dataset_at(&daily, &spec, &dates, None).unwrap();
    let features_s = t0.elapsed().as_secs_f64();
    let x = FeatureMatrix::from_frame(&frame, &names).unwrap();
    let ids: Vec<String> =
        frame.column("customer_id").unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect();
    let day = frame.column("snapshot").unwrap().cast(&DataType::Int32).unwrap();
    let run_of: Vec<NaiveDate> =
        day.i32().unwrap().iter().map(|v| fidelis::schema::date_of_day(v.unwrap()).unwrap()).collect();
    let churned = features::column_f64(&frame, "churn").unwrap();
    let treated: Vec<bool> = ids.iter().map(|id| experiment::draw("retention", id) >= 0.1).collect();
    let rows = ExperimentRows {
        run: run_of,
        customer: ids,
        churn_probability: x.column(0).to_vec(),
        expected_loss: x.column(1).to_vec(),
        x,
        treated,
        churned,
    };
    let params = gbdt_params(&GbdtConfig::default(), &UpliftConfig::default());
    let fit =
        |l: Learner| timed(|| UpliftModel::fit(l, &params, &rows.x, &rows.treated, &rows.churned).unwrap()).1;
    let (t_fit, o_fit) = (fit(Learner::TLearner), fit(Learner::TransformedOutcome));
    let ((report, _), choose_s) = timed(|| choose(&rows, &params, 3, 0.9).unwrap());

    println!();
    println!("{:<62} {:>10}", "step (median of 3)", "seconds");
    println!(
        "{:<62} {:>10.3}",
        format!("realized metrics of a run of {scored}, no control group"),
        realized_plain
    );
    println!("{:<62} {:>10.3}", "the same with the effect (overall, bands, playbooks, new)", realized_with);
    println!("{:<62} {:>10.3}", "  the effect's share", realized_with - realized_plain);
    println!("{:<62} {:>10.4}", format!("Qini coefficient of {n} scores"), qini);
    println!("{:<62} {:>10.6}", "pooling 52 runs", pooling);
    println!(
        "{:<62} {:>10.3}",
        format!("features + labels, {customers} customers x 8 runs (once)"),
        features_s
    );
    println!("{:<62} {:>10.3}", format!("T-learner fit, {} rows", rows.run.len()), t_fit);
    println!("{:<62} {:>10.3}", "transformed-outcome fit, same rows", o_fit);
    println!("{:<62} {:>10.3}", "choose (three learners on 7 runs, judged on the 8th, refit)", choose_s);
    println!("uplift: {}", report.why);
    common::record(bench, "uplift", || {
        serde_json::json!({
            "benchmark": "uplift",
            "scored": scored,
            "realized_seconds_without_effect": realized_plain,
            "realized_seconds_with_effect": realized_with,
            "effect_seconds": realized_with - realized_plain,
            "qini_seconds": qini,
            "pooling_52_runs_seconds": pooling,
            "uplift_customers": customers,
            "uplift_rows": rows.run.len(),
            "features_seconds": features_s,
            "t_learner_fit_seconds": t_fit,
            "transformed_outcome_fit_seconds": o_fit,
            "choose_seconds": choose_s,
            "targets": {"effect_and_qini_seconds": 1.0, "uplift_training_seconds": 60.0},
        })
    });
}
