//! Holdout regression tests on the real datasets, with the protocol of the training issue
//! (28-day grid, 90-day horizon and eligibility, last snapshot with a full label window as
//! holdout). Floors sit a little under the measured values (docs/results.md).

mod common;

use fidelis::jobs::train::{self, TrainOptions};
use fidelis::model::TrainMetrics;
use fidelis::progress::Progress;
use fidelis::train::baselines::BGNBD_BASELINE;
use fidelis::Config;

fn train_on(config: &str) -> TrainMetrics {
    train_outcome(config).metrics
}

fn train_outcome(config: &str) -> train::TrainOutcome {
    common::datasets_dir();
    let mut cfg = Config::load(config.as_ref()).unwrap();
    let models = tempfile::tempdir().unwrap();
    cfg.paths.models_dir = models.path().display().to_string();
    cfg.paths.reports_dir = models.path().join("reports").display().to_string();
    train::run(&cfg, &TrainOptions::default(), &Progress::hidden()).unwrap()
}

/// The shipped models are chosen by the one-standard-error rule on the choice metric (out of
/// time, never the holdout): the simplest candidate whose mean is within one standard error
/// (of its paired per-group difference, recomputed here from the per-group values) of the
/// best; and what is reported as shipped is what that candidate scored.
fn assert_honest_choice(m: &TrainMetrics, basis: &str) {
    let c = &m.candidates;
    assert!(c.basis.starts_with(basis), "{}", c.basis);
    assert_eq!(c.churn.len(), 4);
    assert_eq!(c.clv.len(), 5);
    let rule = |names: Vec<&str>, means: Vec<f64>, groups: Vec<&Vec<f64>>, simplest: &[&str]| -> usize {
        let order: Vec<usize> = simplest.iter().map(|s| names.iter().position(|n| n == s).unwrap()).collect();
        let best = order.iter().copied().fold(order[0], |b, i| if means[i] > means[b] { i } else { b });
        let se = |i: usize| {
            let d: Vec<f64> = groups[best].iter().zip(groups[i]).map(|(a, b)| a - b).collect();
            let n = d.len() as f64;
            let mean = d.iter().sum::<f64>() / n;
            (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt()
        };
        assert!(groups.iter().all(|g| g.len() >= 2), "{groups:?}");
        *order.iter().find(|&&i| means[i] >= means[best] - se(i)).unwrap()
    };
    let churn = rule(
        c.churn.iter().map(|k| k.name.as_str()).collect(),
        c.churn.iter().map(|k| k.out_of_time_roc_auc.unwrap()).collect(),
        c.churn.iter().map(|k| &k.out_of_time_groups).collect(),
        &["logistic", "gbdt + logistic", "gbdt", "bg/nbd"],
    );
    let clv = rule(
        c.clv.iter().map(|k| k.name.as_str()).collect(),
        c.clv.iter().map(|k| k.out_of_time_normalized_gini.unwrap()).collect(),
        c.clv.iter().map(|k| &k.out_of_time_groups).collect(),
        &["poisson gbdt + bg/nbd", "gbdt + bg/nbd", "poisson gbdt", "gbdt", "bg/nbd"],
    );
    // Cross-fitted on one snapshot: a CLV GBDT chosen alone ships blended with the BG/NBD, and
    // the BG/NBD ships when it beats the choice on validation.
    let cross = c.basis.contains("cross-fitting");
    let clv = match (cross, c.clv[clv].name.as_str()) {
        (true, "gbdt" | "poisson gbdt") => {
            let blend = format!("{} + bg/nbd", c.clv[clv].name);
            c.clv.iter().position(|k| k.name == blend).unwrap()
        }
        _ => clv,
    };
    let bgnbd = |names: Vec<&str>| names.iter().position(|n| *n == "bg/nbd").unwrap();
    let b = bgnbd(c.churn.iter().map(|k| k.name.as_str()).collect());
    let churn =
        if cross && c.churn[b].validation.roc_auc > c.churn[churn].validation.roc_auc { b } else { churn };
    let b = bgnbd(c.clv.iter().map(|k| k.name.as_str()).collect());
    let clv = if cross && c.clv[b].validation.normalized_gini > c.clv[clv].validation.normalized_gini {
        b
    } else {
        clv
    };
    assert_eq!(c.churn.iter().filter(|k| k.chosen).count(), 1);
    assert_eq!(c.clv.iter().filter(|k| k.chosen).count(), 1);
    assert!(c.churn[churn].chosen, "{:?}", c.churn);
    assert!(c.clv[clv].chosen, "{:?}", c.clv);
    let shipped = c.churn.iter().find(|k| k.chosen).unwrap();
    assert!((shipped.holdout.roc_auc - m.churn.holdout.roc_auc).abs() < 1e-3);
    let shipped = c.clv.iter().find(|k| k.chosen).unwrap();
    assert_eq!(shipped.holdout.normalized_gini, m.clv.holdout.normalized_gini);
    let best = |v: &[f64]| (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b });
    // The logistic regression's penalty is chosen from the default grid on the same basis.
    let l2: Vec<f64> = c.logistic_l2.iter().map(|p| p.l2).collect();
    assert_eq!(l2, [1.0, 10.0, 100.0, 1000.0]);
    let auc: Vec<f64> = c.logistic_l2.iter().map(|p| p.roc_auc).collect();
    assert_eq!(c.logistic_l2.iter().filter(|p| p.chosen).count(), 1);
    assert!(c.logistic_l2[best(&auc)].chosen, "{:?}", c.logistic_l2);
}

#[test]
fn cdnow_holdout() {
    let m = train_on("configs/cdnow.toml");
    assert_eq!(m.holdout_snapshot.to_string(), "1998-03-25");
    assert_eq!(m.n_holdout, 3742);
    // Measured 0.7217 AUC (GBDT + logistic blend) and 0.6838 Gini (Poisson GBDT), chosen out of
    // time. References on the same protocol: logistic regression 0.7167 AUC, XGBoost 0.6825 Gini.
    assert!(m.churn.holdout.roc_auc >= 0.719, "CDNOW churn AUC {}", m.churn.holdout.roc_auc);
    assert!(m.clv.holdout.normalized_gini >= 0.681, "CDNOW CLV Gini {}", m.clv.holdout.normalized_gini);
    assert_honest_choice(&m, "out-of-time predictions of purged models");
    // Calibration keeps the ranking and does not worsen the holdout ECE: chosen on three
    // purged out-of-time snapshots (one fitted on the validation snapshot alone made the
    // holdout ECE worse, 0.018 -> 0.034).
    let c = &m.calibration;
    assert!((c.holdout_roc_auc_before - c.holdout_roc_auc_after).abs() < 1e-3, "{c:?}");
    assert!(c.holdout_ece_after <= c.holdout_ece_before, "{c:?}");
    assert_eq!(c.choice.scheme, "leave-one-snapshot-out", "{c:?}");
    assert_eq!(c.choice.snapshots.len(), 3, "{c:?}");
    // Defaults (65 saved per churner, 3 per needless contact): break-even 3/68, and with 53%
    // churn the right answer is to contact almost everyone.
    let d = &m.decision;
    assert!((d.break_even_probability - 3.0 / 68.0).abs() < 1e-12);
    assert!(d.holdout.contacted_share > 0.9, "{:?}", d.holdout);
    assert!(d.holdout.net_value > d.holdout.net_top10, "{:?}", d.holdout);
    assert!(d.holdout.net_value <= d.holdout.net_oracle);
    assert!(d.explanation.contains("0.044"), "{}", d.explanation);
    for b in ["logistic_regression", "decision_tree", "random_forest"] {
        let auc = m.baselines[b].churn.as_ref().unwrap().holdout.roc_auc;
        assert!(auc > 0.65, "baseline {b} AUC {auc}");
    }
    // The baselines were fitted on a 20,000-row sample of the 61,684 fit rows, and it says so.
    assert_eq!(m.n_fit, 61684);
    assert!(
        m.notes.iter().any(|n| n.contains("seeded sample of 20000 of the 61684 fit rows")),
        "{:?}",
        m.notes
    );
    // Our BG/NBD + Gamma-Gamma, fitted on the history before the holdout snapshot, gives the
    // reference implementation's (lifetimes') numbers on this protocol: 0.7160 AUC, 0.6749 Gini.
    let bg = &m.baselines[BGNBD_BASELINE];
    let (auc, gini) =
        (bg.churn.as_ref().unwrap().holdout.roc_auc, bg.clv.as_ref().unwrap().holdout.normalized_gini);
    assert!((auc - 0.7160).abs() < 0.002 && (gini - 0.6749).abs() < 0.003, "BG/NBD {auc} {gini}");
}

#[test]
fn completejourney_holdout_and_determinism() {
    let m = train_on("configs/completejourney.toml");
    assert_eq!(m.holdout_snapshot.to_string(), "2017-09-10");
    assert_eq!(m.n_holdout, 2315);
    // Measured 0.8924 AUC (logistic, L2 100 from the grid) and 0.8567 Gini (Poisson GBDT +
    // BG/NBD), chosen by cross-fitting (one fit snapshot: no room for purged models).
    // References: logistic regression 0.8930 AUC, LightGBM 0.8551 Gini.
    assert!(m.churn.holdout.roc_auc >= 0.890, "CJ churn AUC {}", m.churn.holdout.roc_auc);
    assert!(m.clv.holdout.normalized_gini >= 0.854, "CJ CLV Gini {}", m.clv.holdout.normalized_gini);
    assert_honest_choice(&m, "5-fold cross-fitting by customer");
    // Reference (lifetimes) BG/NBD on this protocol: 0.8763 AUC, 0.8437 Gini.
    let bg = &m.baselines[BGNBD_BASELINE];
    let (auc, gini) =
        (bg.churn.as_ref().unwrap().holdout.roc_auc, bg.clv.as_ref().unwrap().holdout.normalized_gini);
    assert!((auc - 0.8763).abs() < 0.005 && (gini - 0.8437).abs() < 0.005, "BG/NBD {auc} {gini}");
    // Calibration keeps the ranking and does not worsen the holdout ECE here.
    let c = &m.calibration;
    assert!((c.holdout_roc_auc_before - c.holdout_roc_auc_after).abs() < 1e-3, "{c:?}");
    assert!(c.holdout_ece_after <= c.holdout_ece_before, "{c:?}");
    // 4% churn: the cost-weighted threshold contacts a minority and beats contacting everyone.
    let d = &m.decision.holdout;
    assert!(d.contacted_share < 0.5 && d.net_value > d.net_all && d.net_value > 0.0, "{d:?}");
    // Seeded and deterministic: a second run gives the same numbers.
    let again = train_on("configs/completejourney.toml");
    assert_eq!(m.churn.holdout, again.churn.holdout);
    assert_eq!(m.clv.holdout, again.clv.holdout);
}

/// Complete Journey's household demographics through `[input.customers].attributes`: each
/// range or label one-hot with `other`, and the shipped churn model better for them.
#[test]
fn completejourney_with_demographics() {
    let out = train_outcome("configs/completejourney-demographics.toml");
    let (m, names) = (&out.metrics, &out.info.features);
    assert_eq!(m.n_holdout, 2315);
    for f in [
        "attr_age_45_54",
        "attr_income_50_74k",
        "attr_income_other",
        "attr_kids_count_3",
        "attr_marital_status_married",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} not in {names:?}");
    }
    // Measured 0.8969 (logistic regression, chosen by cross-fitting) against 0.8924 without them.
    assert!(m.churn.holdout.roc_auc >= 0.895, "CJ + demographics churn AUC {}", m.churn.holdout.roc_auc);
    assert!(
        m.clv.holdout.normalized_gini >= 0.854,
        "CJ + demographics CLV Gini {}",
        m.clv.holdout.normalized_gini
    );
    assert_honest_choice(m, "5-fold cross-fitting by customer");
}

/// A short history (20,000 generated customers over one year: one fit snapshot, candidates
/// cross-fitted): the fitted models cannot extrapolate to the holdout's longer tenures, the
/// BG/NBD can. Measured: shipped churn AUC 0.8585 (the BG/NBD, which beats the cross-fitted
/// choice on validation, 0.8551 against 0.8534) where the cross-fitted choice alone shipped
/// 0.8378; CLV Poisson GBDT + BG/NBD 0.8510 (the Poisson GBDT chosen alone, blended because
/// the candidates were cross-fitted) against the BG/NBD's 0.8431 (the Poisson GBDT alone:
/// 0.8406).
#[test]
fn generated_short_history_keeps_up_with_bgnbd() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out =
        common::fidelis(&["generate", "--customers", "20000", "--days", "365", "--out", "data", "-q"], d);
    assert!(out.status.success(), "{}", common::stderr(&out));
    std::fs::write(
        d.join("fidelis.toml"),
        "[input.transactions]\npath = \"data/transactions.parquet\"\n\n[output]\ndir = \"output\"\n\n\
         [paths]\nmodels_dir = \"models\"\nreports_dir = \"reports\"\n",
    )
    .unwrap();
    let out = common::fidelis(&["train", "--config", "fidelis.toml", "-q"], d);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let id = std::fs::read_to_string(d.join("models/latest")).unwrap();
    let m: TrainMetrics = serde_json::from_str(
        &std::fs::read_to_string(d.join("models").join(id.trim()).join("metrics.json")).unwrap(),
    )
    .unwrap();
    assert_honest_choice(&m, "5-fold cross-fitting by customer");
    let holdout = |name: &str| m.candidates.churn.iter().find(|k| k.name == name).unwrap().holdout.roc_auc;
    let auc = m.churn.holdout.roc_auc;
    assert!(auc >= holdout("bg/nbd") - 0.005 && auc >= holdout("logistic") - 0.005, "{auc}");
    assert!(auc >= 0.85, "{auc}");
    let gini = m.clv.holdout.normalized_gini;
    let bgnbd = m.candidates.clv.iter().find(|k| k.name == "bg/nbd").unwrap().holdout.normalized_gini;
    assert!(gini >= bgnbd, "{gini} vs {bgnbd}");
}
