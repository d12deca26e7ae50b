//! Train: fit the churn classifier and the CLV regressor on the fit snapshots, early-stop on
//! the validation snapshot, evaluate everything (and the baselines) on the holdout, and
//! write a versioned model artifact.

pub mod baselines;
pub mod candidates;
pub mod forest;
pub mod gbdt;
pub mod linear;
pub mod poisson;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime, Utc};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::artifact::{self, FileFingerprint};
use crate::calibration::{self, CalibrationChoice, Calibrator};
use crate::config::{Config, GbdtConfig};
use crate::error::{Error, PolarsContext, Result};
use crate::features::{self, FeatureMatrix, FeatureSpec, CHURN, CLV, CUSTOMER, SNAPSHOT};
use crate::ingest::{self, ValidationSummary};
use crate::metrics::{self, ChurnMetrics, ClvMetrics};
use crate::monitor;
use crate::progress::Progress;
use crate::signals::{SignalData, SignalSpec};
use crate::split::{self, SnapshotPlan};
use crate::threshold::{self, BandOutcome, CurvePoint, PolicyOutcome, RiskBands};
use candidates::{
    CandidateReport, ChurnCandidate, ChurnMix, ChurnModel, ClvCandidate, ClvMix, ClvModel, PenaltyChoice,
};
use gbdt::{ForustGbdt, Gbdt, Task};
use linear::Logistic;
use poisson::PoissonGbdt;

/// The engine behind the [`Gbdt`] trait in this build.
pub type Engine = ForustGbdt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Fit,
    Validation,
    Holdout,
}

/// Eligible customers and label rates at one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub snapshot: NaiveDate,
    pub role: Role,
    pub eligible: usize,
    pub churn_rate: f64,
    pub mean_clv: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChurnEval {
    pub holdout: ChurnMetrics,
    pub validation: ChurnMetrics,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClvEval {
    pub holdout: ClvMetrics,
    pub validation: ClvMetrics,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BaselineEval {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub churn: Option<ChurnEval>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub clv: Option<ClvEval>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GbdtInfo {
    pub engine: String,
    pub churn_trees: usize,
    pub clv_trees: usize,
    /// Total gain per feature (normalized), by feature name.
    pub churn_importance: BTreeMap<String, f64>,
    pub clv_importance: BTreeMap<String, f64>,
    /// Mean absolute contribution to the churn log-odds per feature on the holdout (how much
    /// a feature moves individual scores, the per-customer view of importance).
    #[serde(default)]
    pub churn_mean_abs_contribution: BTreeMap<String, f64>,
}

/// `metrics.json`: the fixed-schema evaluation of one trained model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainMetrics {
    pub model_id: String,
    pub holdout_snapshot: NaiveDate,
    pub validation_snapshot: NaiveDate,
    pub n_holdout: usize,
    pub n_validation: usize,
    pub n_fit: usize,
    pub churn: ChurnEval,
    pub clv: ClvEval,
    pub baselines: BTreeMap<String, BaselineEval>,
    /// Every model candidate on validation and holdout, and which one was shipped.
    #[serde(default)]
    pub candidates: CandidateReport,
    pub gbdt: GbdtInfo,
    pub calibration: CalibrationReport,
    pub decision: DecisionReport,
    pub snapshots: Vec<SnapshotStats>,
    pub timings_s: BTreeMap<String, f64>,
}

/// Calibration of the churn probabilities: the method chosen on validation and its effect
/// on the holdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalibrationReport {
    pub method: String,
    pub choice: CalibrationChoice,
    pub holdout_ece_before: f64,
    pub holdout_ece_after: f64,
    pub holdout_brier_before: f64,
    pub holdout_brier_after: f64,
    pub holdout_log_loss_before: f64,
    pub holdout_log_loss_after: f64,
    /// Ranking is unchanged by a monotone calibrator (isotonic may only add ties).
    pub holdout_roc_auc_before: f64,
    pub holdout_roc_auc_after: f64,
}

/// The contact decision chosen on validation, evaluated on the holdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionReport {
    /// Contact when calibrated churn probability >= threshold (null = nobody).
    pub threshold: Option<f64>,
    pub policy: crate::config::ValuePolicy,
    pub break_even_probability: f64,
    pub validation_net_value: f64,
    pub holdout: PolicyOutcome,
    pub explanation: String,
    /// Holdout customers and realized churn rate per risk band.
    pub holdout_bands: Vec<BandOutcome>,
}

/// `decision.json`: the rule `score` applies, with the curve it was chosen from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecisionArtifact {
    pub threshold: Option<f64>,
    pub config: crate::config::DecisionConfig,
    pub bands: RiskBands,
    /// Net value vs threshold on the validation snapshot (at most 201 points).
    pub validation_curve: Vec<CurvePoint>,
    pub explanation: String,
}

/// `model.json`: everything needed to use and reproduce the model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    pub model_id: String,
    pub created_at: NaiveDateTime,
    pub fidelis_version: String,
    pub engine: String,
    /// Feature names in model column order.
    pub features: Vec<String>,
    pub config: Config,
    pub data: FileFingerprint,
    pub validation: ValidationSummary,
    /// Transactions used: first transaction up to the end of the holdout label window.
    pub training_window: (NaiveDate, NaiveDate),
    pub snapshots: SnapshotPlan,
    pub libraries: BTreeMap<String, String>,
    /// BG/NBD + Gamma-Gamma fitted on all the data (at its end), used for scoring when
    /// `features.bgnbd` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probabilistic: Option<crate::bgnbd::Probabilistic>,
    /// Event and customer-table features (empty without those inputs).
    #[serde(default)]
    pub signals: SignalSpec,
    /// The churn and CLV candidates chosen at training (GBDT alone in older models).
    #[serde(default)]
    pub churn_model: ChurnMix,
    #[serde(default)]
    pub clv_model: ClvMix,
}

pub struct TrainOutcome {
    pub model_id: String,
    pub dir: PathBuf,
    /// The evaluation report (HTML; `.md` and `.json` beside it), when written.
    pub report: Option<PathBuf>,
    pub info: ModelInfo,
    pub metrics: TrainMetrics,
}

/// Library versions recorded in `model.json` (from Cargo.lock at build time).
pub fn library_versions() -> BTreeMap<String, String> {
    [
        ("fidelis", env!("CARGO_PKG_VERSION")),
        ("polars", env!("FIDELIS_DEP_POLARS")),
        ("forust-ml", env!("FIDELIS_DEP_FORUST")),
        ("linfa", env!("FIDELIS_DEP_LINFA")),
        ("smartcore", env!("FIDELIS_DEP_SMARTCORE")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Rows of the dataset per role, in dataset order.
struct Split {
    fit: Vec<usize>,
    validation: Vec<usize>,
    holdout: Vec<usize>,
}

/// A stable hash of each row's customer id (folds by customer).
fn customer_hashes(df: &DataFrame) -> Result<Vec<u64>> {
    let ids = df.column(CUSTOMER).polars("customer column")?.str().polars("customer ids")?;
    Ok(ids.iter().map(|v| xxhash_rust::xxh3::xxh3_64(v.unwrap_or("").as_bytes())).collect())
}

fn snapshot_days(df: &DataFrame) -> Result<Vec<i32>> {
    let c =
        df.column(SNAPSHOT).polars("snapshot column")?.cast(&DataType::Int32).polars("snapshot as days")?;
    Ok(c.i32().polars("snapshot days")?.into_no_null_iter().collect())
}

fn split_rows(days: &[i32], plan: &SnapshotPlan) -> Split {
    let v = features::epoch_day(plan.validation);
    let h = features::epoch_day(plan.holdout);
    let mut s = Split { fit: Vec::new(), validation: Vec::new(), holdout: Vec::new() };
    for (i, &d) in days.iter().enumerate() {
        if d == v {
            s.validation.push(i);
        } else if d == h {
            s.holdout.push(i);
        } else {
            s.fit.push(i);
        }
    }
    s
}

/// Out-of-time predictions of every candidate part, as a live run would see them.
///
/// The main models' validation predictions are not what a live run sees: the fit snapshots
/// just before validation have label windows overlapping the validation's, and the GBDT's
/// tree count was early-stopped on validation itself; the holdout (and every real scoring
/// date) lies a full horizon after the last label a model learned from. So for each of the
/// last `decision.calibration_snapshots` training snapshots `s`, models with the main
/// models' settings and tree counts are fitted only on snapshots whose label windows closed
/// by `s` (`t + horizon <= s`) and predict `s`. These predictions choose the candidate and
/// fit the calibrator. Snapshots without such history are skipped; `None` when none is left.
///
/// Without that history (one fit snapshot, as on Complete Journey), the candidates are
/// compared by cross-fitting on the fit rows instead: `decision.calibration_folds` folds by
/// customer, each predicted by models fitted on the other folds. Not out of time, but fair
/// between candidates, which validation is not: the GBDT was early-stopped on it and its
/// fit labels overlap its label window (measured on Complete Journey: GBDT validation AUC
/// 0.894, holdout 0.880; logistic 0.885, 0.890).
struct OutOfTime {
    /// Rows of the dataset predicted, group by group.
    rows: Vec<usize>,
    /// Group (snapshot index into `dates`, or fold) of each predicted row.
    group: Vec<usize>,
    /// The purged snapshots; empty for a cross-fitted set.
    dates: Vec<NaiveDate>,
    n_groups: usize,
    churn_gbdt: Vec<f64>,
    /// Logistic log-odds for each value of the penalty grid (`model.logistic_l2`).
    logistic_by_l2: Vec<Vec<f64>>,
    /// Those of the chosen penalty (set by [`choose_logistic`]).
    churn_logistic_margin: Vec<f64>,
    clv_gbdt: Vec<f64>,
    clv_poisson: Vec<f64>,
}

impl OutOfTime {
    /// Row indices (into `rows`) of each snapshot.
    fn per_snapshot(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.n_groups];
        for (i, &g) in self.group.iter().enumerate() {
            out[g].push(i);
        }
        out
    }
}

/// Predictions of the candidate parts for the rows `at`, by models fitted on the rows `fit`
/// with the main models' settings and tree counts; appended to `o` as group `group`. The
/// CLV GBDT is fitted only when there is a CLV choice to make (`clv_choice`).
#[allow(clippy::too_many_arguments)]
fn predict_group(
    o: &mut OutOfTime,
    cfg: &Config,
    x: &FeatureMatrix,
    (churn, clv): (&[f64], &[f64]),
    (churn_trees, clv_trees, poisson_trees): (usize, usize, Option<usize>),
    fit: &[usize],
    at: Vec<usize>,
    group: usize,
    clv_choice: bool,
) -> Result<()> {
    // The main models' tree counts, fitted without any look at the rows predicted.
    let params = |n: usize| GbdtConfig { iterations: n.max(1), ..cfg.model.clone() };
    let (x_fit, x_at) = (x.select_rows(fit), x.select_rows(&at));
    let (y_fit, v_fit) = (pick(churn, fit), pick(clv, fit));
    let g = Engine::fit(&params(churn_trees), Task::Churn, &x_fit, &y_fit, None)?;
    o.churn_gbdt.extend(g.predict(&x_at));
    for (margins, &l2) in o.logistic_by_l2.iter_mut().zip(&cfg.model.logistic_l2) {
        margins.extend(Logistic::fit(&x_fit, &y_fit, l2)?.margin(&x_at));
    }
    if clv_choice {
        let c = Engine::fit(&params(clv_trees), Task::Clv, &x_fit, &v_fit, None)?;
        o.clv_gbdt.extend(c.predict(&x_at));
        if let Some(n) = poisson_trees {
            o.clv_poisson.extend(PoissonGbdt::fit(&params(n), &x_fit, &v_fit, None)?.predict(&x_at));
        }
    }
    o.group.extend(std::iter::repeat_n(group, at.len()));
    o.rows.extend(at);
    o.n_groups = o.n_groups.max(group + 1);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn out_of_time(
    cfg: &Config,
    plan: &SnapshotPlan,
    days: &[i32],
    data: &DataFrame,
    fit_rows: &[usize],
    x: &FeatureMatrix,
    labels: (&[f64], &[f64]),
    trees: (usize, usize, Option<usize>),
) -> Result<Option<OutOfTime>> {
    let churn = labels.0;
    let clv_choice = ClvMix::available(&x.names, trees.2.is_some()).len() > 1;
    let horizon = cfg.snapshots.horizon_days;
    let mut training: Vec<NaiveDate> = plan.fit.clone();
    training.push(plan.validation);
    let k = cfg.decision.calibration_snapshots.min(training.len());
    let mut o = OutOfTime {
        rows: Vec::new(),
        group: Vec::new(),
        dates: Vec::new(),
        n_groups: 0,
        churn_gbdt: Vec::new(),
        logistic_by_l2: vec![Vec::new(); cfg.model.logistic_l2.len()],
        churn_logistic_margin: Vec::new(),
        clv_gbdt: Vec::new(),
        clv_poisson: Vec::new(),
    };
    for &s in &training[training.len() - k..] {
        let sd = features::epoch_day(s);
        let fit: Vec<usize> = (0..days.len()).filter(|&i| days[i] + horizon <= sd).collect();
        let at: Vec<usize> = (0..days.len()).filter(|&i| days[i] == sd).collect();
        let y_fit = pick(churn, &fit);
        // A purged model needs both classes to learn from.
        if at.is_empty() || y_fit.iter().all(|&v| v == y_fit[0]) {
            continue;
        }
        let group = o.dates.len();
        predict_group(&mut o, cfg, x, labels, trees, &fit, at, group, clv_choice)?;
        o.dates.push(s);
    }
    if o.dates.is_empty() {
        // Cross-fitting on the fit rows, folds by customer.
        let customers = customer_hashes(data)?;
        let k = cfg.decision.calibration_folds as u64;
        for f in 0..k {
            let (at, fit): (Vec<usize>, Vec<usize>) = fit_rows.iter().partition(|&&i| customers[i] % k == f);
            let y_fit = pick(churn, &fit);
            if at.is_empty() || y_fit.iter().all(|&v| v == y_fit[0]) {
                continue;
            }
            predict_group(&mut o, cfg, x, labels, trees, &fit, at, f as usize, clv_choice)?;
        }
    }
    Ok((o.n_groups > 0).then_some(o))
}

fn pick(v: &[f64], idx: &[usize]) -> Vec<f64> {
    idx.iter().map(|&i| v[i]).collect()
}

fn snapshot_stats(plan: &SnapshotPlan, days: &[i32], churn: &[f64], clv: &[f64]) -> Vec<SnapshotStats> {
    let mut out = Vec::new();
    for t in plan.all() {
        let d = features::epoch_day(t);
        let idx: Vec<usize> = (0..days.len()).filter(|&i| days[i] == d).collect();
        let role = if t == plan.holdout {
            Role::Holdout
        } else if t == plan.validation {
            Role::Validation
        } else {
            Role::Fit
        };
        out.push(SnapshotStats {
            snapshot: t,
            role,
            eligible: idx.len(),
            churn_rate: metrics::mean(&pick(churn, &idx)),
            mean_clv: metrics::mean(&pick(clv, &idx)),
        });
    }
    out
}

/// Run the whole training pipeline for `cfg`, write the artifact and the evaluation report
/// (`<reports_dir>/<model_id>/evaluation.{html,md,json}`).
pub fn train(cfg: &Config, progress: &Progress) -> Result<TrainOutcome> {
    train_with(cfg, &TrainOptions::default(), progress)
}

/// Options of a training run beyond the config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Train on the transactions before this date only.
    pub cutoff: Option<NaiveDate>,
    /// Also write the feature matrix with labels and each row's role (fit / validation /
    /// holdout) to this Parquet file (for other tools: benchmarks, notebooks).
    pub export_features: Option<PathBuf>,
}

/// [`train`] with options; writes the evaluation report.
pub fn train_with(cfg: &Config, opts: &TrainOptions, progress: &Progress) -> Result<TrainOutcome> {
    let mut outcome = train_core(cfg, opts, progress)?;
    let report = progress.step("report", "writing the evaluation report", || {
        crate::report::evaluation::write_evaluation(&outcome.dir, &cfg.models_dir(), &cfg.reports_dir())
    })?;
    outcome.report = Some(report);
    Ok(outcome)
}

/// Train on the transactions before `cutoff` only (a backtest's model, as if trained that
/// day); `None` = all of them.
pub fn train_until(cfg: &Config, cutoff: Option<NaiveDate>, progress: &Progress) -> Result<TrainOutcome> {
    train_core(cfg, &TrainOptions { cutoff, export_features: None }, progress)
}

fn train_core(cfg: &Config, opts: &TrainOptions, progress: &Progress) -> Result<TrainOutcome> {
    let cutoff = opts.cutoff;
    let input_path = PathBuf::from(&cfg.input.transactions.path);
    let mut tx = progress.step("ingest", "reading and validating transactions", || {
        ingest::load_transactions(&cfg.input.transactions)
    })?;
    if let Some(c) = cutoff {
        tx = ingest::truncate(tx, c)?;
    }
    let (first, last) = match (tx.summary.first_ts, tx.summary.last_ts) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(Error::Data("no valid transactions".into())),
    };
    let plan = split::plan(first, last, &cfg.snapshots)?;
    let spec = FeatureSpec::from_config(cfg);
    let signals = progress.step("signals", "reading events and customers", || SignalData::load(cfg))?;
    let signal_spec = SignalSpec::from_data(&signals, &cfg.health);
    let mut names = spec.names();
    names.extend(signal_spec.names());
    let snapshots = plan.all();
    // Training data, and the population at the end of the data (the drift reference: what
    // the first scoring run after training sees).
    let data_end = last.date() + chrono::Duration::days(1);
    let (mut data, mut at_end, probabilistic) = progress.step(
        "features",
        &format!("building features and labels at {} snapshots", snapshots.len()),
        || -> Result<(DataFrame, DataFrame, Option<crate::bgnbd::Probabilistic>)> {
            let daily = features::daily_activity(&tx.frame)?;
            let probabilistic =
                if spec.probabilistic { features::fit_probabilistic(&daily, data_end) } else { None };
            Ok((
                features::dataset_at(&daily, &spec, &snapshots)?,
                features::features_with(&daily, &spec, &[data_end], probabilistic.as_ref())?,
                probabilistic,
            ))
        },
    )?;
    crate::signals::append(&mut data, &signal_spec, &signals)?;
    crate::signals::append(&mut at_end, &signal_spec, &signals)?;
    let x = FeatureMatrix::from_frame(&data, &names)?;
    let churn = features::column_f64(&data, CHURN)?;
    let clv = features::column_f64(&data, CLV)?;
    let days = snapshot_days(&data)?;
    let rows = split_rows(&days, &plan);
    for (what, idx) in [("fit", &rows.fit), ("validation", &rows.validation), ("holdout", &rows.holdout)] {
        if idx.is_empty() {
            return Err(Error::Data(format!("no eligible customers at the {what} snapshot(s)")));
        }
    }
    if let Some(path) = &opts.export_features {
        let mut role = vec!["fit"; data.height()];
        for &i in &rows.validation {
            role[i] = "validation";
        }
        for &i in &rows.holdout {
            role[i] = "holdout";
        }
        let mut out = data.clone();
        out.with_column(Column::new("role".into(), role)).polars("adding roles")?;
        progress.step("export", &format!("writing {}", path.display()), || {
            crate::sink::write_parquet_atomic(&mut out, path)
        })?;
    }
    let (x_fit, x_val, x_hold) =
        (x.select_rows(&rows.fit), x.select_rows(&rows.validation), x.select_rows(&rows.holdout));
    let (y_fit, y_val, y_hold) =
        (pick(&churn, &rows.fit), pick(&churn, &rows.validation), pick(&churn, &rows.holdout));
    let (v_fit, v_val, v_hold) =
        (pick(&clv, &rows.fit), pick(&clv, &rows.validation), pick(&clv, &rows.holdout));

    let churn_model = progress.step("train_churn", "training the churn model (GBDT)", || {
        Engine::fit(&cfg.model, Task::Churn, &x_fit, &y_fit, Some((&x_val, &y_val)))
    })?;
    let clv_model = progress.step("train_clv", "training the CLV model (GBDT)", || {
        Engine::fit(&cfg.model, Task::Clv, &x_fit, &v_fit, Some((&x_val, &v_val)))
    })?;
    let clv_poisson = if cfg.model.clv_poisson {
        Some(progress.step("train_clv_poisson", "training the CLV candidate (Poisson GBDT)", || {
            PoissonGbdt::fit(&cfg.model, &x_fit, &v_fit, Some((&x_val, &v_val)))
        })?)
    } else {
        None
    };
    // Timed alone: prediction throughput (the benchmark compares it with LightGBM's).
    progress.step("predict_holdout", "predicting the holdout (churn)", || {
        Ok::<_, Error>(churn_model.predict(&x_hold))
    })?;
    let mut oot = progress.step(
        "out_of_time",
        &format!(
            "purged models at up to {} snapshots (candidate choice, calibration)",
            cfg.decision.calibration_snapshots
        ),
        || {
            let trees =
                (churn_model.n_trees(), clv_model.n_trees(), clv_poisson.as_ref().map(|p| p.n_trees()));
            out_of_time(cfg, &plan, &days, &data, &rows.fit, &x, (&churn, &clv), trees)
        },
    )?;
    let (logistic, penalties) =
        progress.step("train_logistic", "training the logistic regression candidate", || {
            choose_logistic(&cfg.model.logistic_l2, oot.as_mut(), &churn, (&x_fit, &y_fit), (&x_val, &y_val))
        })?;
    // Candidates, chosen on out-of-time predictions (on validation when there is too little
    // history for them); the holdout is only reported.
    let (mut candidates, churn_mix, clv_mix) = choose_candidates(
        (&churn_model, &logistic, &clv_model, clv_poisson.as_ref()),
        (&x_val, &y_val, &v_val),
        (&x_hold, &y_hold, &v_hold),
        oot.as_ref().map(|o| (o, &x, &churn[..], &clv[..])),
    );
    candidates.logistic_l2 = penalties;
    let churn_model = ChurnModel { mix: churn_mix, gbdt: churn_model, logistic: Some(logistic) };
    let clv_model = ClvModel { mix: clv_mix, gbdt: clv_model, poisson: clv_poisson };
    let raw_val = churn_model.predict(&x_val);
    let (raw_hold, contributions_hold) = churn_model.predict_with_contributions(&x_hold);
    let c_val = clv_model.predict(&x_val);
    let c_hold = clv_model.predict(&x_hold);

    // Decision layer: calibrate on out-of-time predictions, choose the threshold on
    // validation, and report both on the holdout. Every churn probability from here on is
    // calibrated.
    let d = &cfg.decision;
    let (calibrator, choice) = progress.step(
        "calibrate",
        "calibrating probabilities on the out-of-time predictions",
        || -> Result<_> {
            let set = oot.as_ref().filter(|o| !o.dates.is_empty()).map(|o| {
                let p = candidates::combine(churn_mix, Some(&o.churn_gbdt), Some(&o.churn_logistic_margin));
                (p, pick(&churn, &o.rows), o.group.clone(), o.dates.clone())
            });
            let ((p, y, group, dates), source) = match set {
                Some(set) => (set, "purged models"),
                // Too little history for a purged model: the validation snapshot alone.
                None => (
                    (raw_val.clone(), y_val.clone(), vec![0; raw_val.len()], vec![plan.validation]),
                    "main model at validation",
                ),
            };
            let (c, mut choice) =
                calibration::choose(&p, &y, &group, &dates, d.calibration_folds, cfg.model.seed);
            choice.source = source.into();
            Ok((c, choice))
        },
    )?;
    let p_val = calibrator.apply_all(&raw_val);
    let p_hold = calibrator.apply_all(&raw_hold);
    let calibration_report = CalibrationReport {
        method: calibrator.method().into(),
        choice,
        holdout_ece_before: calibration::ece(&y_hold, &raw_hold, 10),
        holdout_ece_after: calibration::ece(&y_hold, &p_hold, 10),
        holdout_brier_before: metrics::brier(&y_hold, &raw_hold),
        holdout_brier_after: metrics::brier(&y_hold, &p_hold),
        holdout_log_loss_before: metrics::log_loss(&y_hold, &raw_hold),
        holdout_log_loss_after: metrics::log_loss(&y_hold, &p_hold),
        holdout_roc_auc_before: metrics::roc_auc(&y_hold, &raw_hold),
        holdout_roc_auc_after: metrics::roc_auc(&y_hold, &p_hold),
    };
    let chosen = threshold::choose_threshold(&p_val, &y_val, &threshold::tp_values(d, &c_val), d);
    let outcome =
        threshold::evaluate(&p_hold, &y_hold, &threshold::tp_values(d, &c_hold), chosen.threshold, d);
    let bands = RiskBands::from_config(d);
    let explanation = threshold::explain(d, &outcome);
    let decision_report = DecisionReport {
        threshold: chosen.threshold,
        policy: d.value,
        break_even_probability: threshold::break_even(d),
        validation_net_value: chosen.net_value,
        holdout: outcome,
        explanation: explanation.clone(),
        holdout_bands: threshold::band_outcomes(&bands, &p_hold, &y_hold),
    };
    let decision_artifact = DecisionArtifact {
        threshold: chosen.threshold,
        config: d.clone(),
        bands,
        validation_curve: threshold::downsample(&chosen.curve, chosen.threshold, 201),
        explanation,
    };

    let mut baseline_evals: BTreeMap<String, BaselineEval> = BTreeMap::new();
    let mut baseline_preds: Vec<(String, &'static str, Vec<f64>)> = Vec::new();
    if cfg.baselines.enabled {
        let b = &cfg.baselines;
        let seed = cfg.model.seed;
        let eval = [&x_val, &x_hold];
        let (xb, yb) = baselines::sample(&x_fit, &y_fit, b.max_rows, seed);
        let (xb_clv, vb) = baselines::sample(&x_fit, &v_fit, b.max_rows, seed);
        let mut churn_b = vec![
            progress.step("baseline_logistic", "baseline: logistic regression", || {
                baselines::logistic_regression(b, &xb, &yb, &eval)
            })?,
            progress.step("baseline_tree", "baseline: decision tree", || {
                baselines::decision_tree(b, &xb, &yb, &eval)
            })?,
            progress.step("baseline_forest_churn", "baseline: random forest (churn)", || {
                baselines::random_forest(b, seed, &xb, &yb, &eval)
            })?,
        ];
        let mut clv_b =
            vec![progress.step("baseline_forest_clv", "baseline: random forest (CLV)", || {
                baselines::random_forest(b, seed, &xb_clv, &vb, &eval)
            })?];
        clv_b.extend(baselines::last_period_revenue(
            &format!("amount_{}d", cfg.snapshots.horizon_days),
            &eval,
        ));
        // BG/NBD (fitted before each snapshot) as a model of its own.
        churn_b.extend(baselines::from_feature(BGNBD_BASELINE, "bgnbd_p_no_purchase", &eval));
        clv_b.extend(baselines::from_feature(BGNBD_BASELINE, "bgnbd_expected_revenue", &eval));
        for p in churn_b {
            let e = baseline_evals.entry(p.name.clone()).or_default();
            e.churn = Some(ChurnEval {
                validation: metrics::churn_metrics(&y_val, &p.predictions[0]),
                holdout: metrics::churn_metrics(&y_hold, &p.predictions[1]),
            });
            baseline_preds.push((p.name, "churn", p.predictions[1].clone()));
        }
        for p in clv_b {
            let e = baseline_evals.entry(p.name.clone()).or_default();
            e.clv = Some(ClvEval {
                validation: metrics::clv_metrics(&v_val, &p.predictions[0]),
                holdout: metrics::clv_metrics(&v_hold, &p.predictions[1]),
            });
            baseline_preds.push((p.name, "clv", p.predictions[1].clone()));
        }
    }

    let importance = |imp: Vec<f64>| -> BTreeMap<String, f64> { names.iter().cloned().zip(imp).collect() };
    let fingerprint = artifact::fingerprint_file(&input_path)?;
    let config_text = toml::to_string(cfg).unwrap_or_default();
    let cut = cutoff.map(|c| format!("|before {c}")).unwrap_or_default();
    let hash = xxhash_rust::xxh3::xxh3_64(format!("{}|{}{cut}", fingerprint.xxh3, config_text).as_bytes());
    let now = Utc::now();
    let model_id = format!("{}-{:08x}", now.format("%Y%m%dT%H%M%SZ"), hash as u32);

    let metrics = TrainMetrics {
        model_id: model_id.clone(),
        holdout_snapshot: plan.holdout,
        validation_snapshot: plan.validation,
        n_holdout: rows.holdout.len(),
        n_validation: rows.validation.len(),
        n_fit: rows.fit.len(),
        churn: ChurnEval {
            holdout: metrics::churn_metrics(&y_hold, &p_hold),
            validation: metrics::churn_metrics(&y_val, &p_val),
        },
        clv: ClvEval {
            holdout: metrics::clv_metrics(&v_hold, &c_hold),
            validation: metrics::clv_metrics(&v_val, &c_val),
        },
        baselines: baseline_evals,
        candidates,
        gbdt: GbdtInfo {
            engine: Engine::ENGINE.into(),
            churn_trees: churn_model.gbdt.n_trees(),
            clv_trees: clv_model.n_trees(),
            churn_importance: importance(churn_model.gbdt.importance_gain(names.len())),
            clv_importance: importance(clv_model.importance_gain(names.len())),
            churn_mean_abs_contribution: importance(mean_abs_columns(&contributions_hold, names.len())),
        },
        calibration: calibration_report,
        decision: decision_report,
        snapshots: snapshot_stats(&plan, &days, &churn, &clv),
        timings_s: progress.timings(),
    };
    let horizon = chrono::Duration::days(cfg.snapshots.horizon_days as i64);
    let info = ModelInfo {
        model_id: model_id.clone(),
        created_at: now.naive_utc(),
        fidelis_version: env!("CARGO_PKG_VERSION").into(),
        engine: Engine::ENGINE.into(),
        features: names.clone(),
        config: cfg.clone(),
        data: fingerprint,
        validation: tx.summary.clone(),
        training_window: (first.date(), plan.holdout + horizon),
        probabilistic,
        signals: signal_spec,
        churn_model: churn_mix,
        clv_model: clv_mix,
        snapshots: plan.clone(),
        libraries: library_versions(),
    };

    // Drift reference: the customers eligible at the end of the data and their scores.
    let x_end = FeatureMatrix::from_frame(&at_end, &names)?;
    let reference = monitor::Reference::build(
        data_end,
        &x_end,
        &calibrator.apply_all(&churn_model.predict(&x_end)),
        &clv_model.predict(&x_end),
    );
    let predictions = predictions_frame(
        &data,
        &rows,
        (&p_val, &p_hold),
        (&raw_val, &raw_hold),
        (&c_val, &c_hold),
        &baseline_preds,
    )?;
    let files = vec![
        ("model.json", artifact::to_json_bytes(&info, "model.json")?),
        ("metrics.json", artifact::to_json_bytes(&metrics, "metrics.json")?),
        ("churn.json", churn_model.gbdt.to_json()?.into_bytes()),
        ("clv.json", clv_model.gbdt.to_json()?.into_bytes()),
        (LOGISTIC_FILE, artifact::to_json_bytes(&churn_model.logistic, LOGISTIC_FILE)?),
        (CLV_POISSON_FILE, artifact::to_json_bytes(&clv_model.poisson, CLV_POISSON_FILE)?),
        ("calibration.json", artifact::to_json_bytes(&calibrator, "calibration.json")?),
        ("decision.json", artifact::to_json_bytes(&decision_artifact, "decision.json")?),
        (monitor::REFERENCE_FILE, artifact::to_json_bytes(&reference, monitor::REFERENCE_FILE)?),
        ("predictions.parquet", crate::sink::parquet_bytes(predictions)?),
    ];
    let models_dir = cfg.models_dir();
    let dir = progress.step("write", "writing the model artifact", || {
        let dir = artifact::write_model_dir(&models_dir, &model_id, &files)?;
        artifact::set_latest(&models_dir, &model_id)?;
        Ok::<_, Error>(dir)
    })?;
    Ok(TrainOutcome { model_id, dir, report: None, info, metrics })
}

/// The logistic regression candidate's file in a model directory.
pub const LOGISTIC_FILE: &str = "logistic.json";

/// The Poisson GBDT CLV candidate's file in a model directory.
pub const CLV_POISSON_FILE: &str = "clv_poisson.json";

/// Every candidate's validation and holdout metrics (fit-snapshot models), its out-of-time
/// metric (purged models, mean over their snapshots) when there is one, and the mixes
/// chosen: on the out-of-time metric, or on validation without one.
fn choose_candidates(
    (churn, logistic, clv, poisson): (&Engine, &Logistic, &Engine, Option<&PoissonGbdt>),
    (x_val, y_val, v_val): (&FeatureMatrix, &[f64], &[f64]),
    (x_hold, y_hold, v_hold): (&FeatureMatrix, &[f64], &[f64]),
    oot: Option<(&OutOfTime, &FeatureMatrix, &[f64], &[f64])>,
) -> (CandidateReport, ChurnMix, ClvMix) {
    let parts = |x: &FeatureMatrix| {
        (churn.predict(x), logistic.margin(x), clv.predict(x), poisson.map(|p| p.predict(x)))
    };
    let (gv, lv, cv, pv) = parts(x_val);
    let (gh, lh, ch, ph) = parts(x_hold);
    // The GBDT a CLV mix starts from.
    let base = |mix: ClvMix, squared: &[f64], poisson: Option<&[f64]>| match poisson {
        Some(p) if mix.uses_poisson() => p.to_vec(),
        _ => squared.to_vec(),
    };
    // Out-of-time: per snapshot, the metric of each candidate; their mean.
    let oot = oot.map(|(o, x, y, v)| {
        (o, o.per_snapshot(), x.select_rows(&o.rows), pick(y, &o.rows), pick(v, &o.rows))
    });
    let oot_churn = |mix: ChurnMix| -> Option<f64> {
        let (o, per, _, y, _) = oot.as_ref()?;
        let p = candidates::combine(mix, Some(&o.churn_gbdt), Some(&o.churn_logistic_margin));
        Some(metrics::mean(
            &per.iter().map(|i| metrics::roc_auc(&pick(y, i), &pick(&p, i))).collect::<Vec<_>>(),
        ))
    };
    let oot_clv = |mix: ClvMix| -> Option<f64> {
        let (o, per, x, _, v) = oot.as_ref().filter(|(o, ..)| !o.clv_gbdt.is_empty())?;
        let p = candidates::combine_clv(mix, base(mix, &o.clv_gbdt, Some(&o.clv_poisson)), x);
        Some(metrics::mean(
            &per.iter().map(|i| metrics::normalized_gini(&pick(v, i), &pick(&p, i))).collect::<Vec<_>>(),
        ))
    };
    let mut churn_c: Vec<ChurnCandidate> = ChurnMix::ALL
        .iter()
        .map(|&mix| ChurnCandidate {
            name: mix.name().into(),
            mix,
            chosen: false,
            out_of_time_roc_auc: oot_churn(mix),
            validation: metrics::churn_metrics(y_val, &candidates::combine(mix, Some(&gv), Some(&lv))),
            holdout: metrics::churn_metrics(y_hold, &candidates::combine(mix, Some(&gh), Some(&lh))),
        })
        .collect();
    let mut clv_c: Vec<ClvCandidate> = ClvMix::available(&x_val.names, poisson.is_some())
        .into_iter()
        .map(|mix| ClvCandidate {
            name: mix.name().into(),
            mix,
            chosen: false,
            out_of_time_normalized_gini: oot_clv(mix),
            validation: metrics::clv_metrics(
                v_val,
                &candidates::combine_clv(mix, base(mix, &cv, pv.as_deref()), x_val),
            ),
            holdout: metrics::clv_metrics(
                v_hold,
                &candidates::combine_clv(mix, base(mix, &ch, ph.as_deref()), x_hold),
            ),
        })
        .collect();
    let i = candidates::best_index(
        &churn_c.iter().map(|c| c.out_of_time_roc_auc.unwrap_or(c.validation.roc_auc)).collect::<Vec<_>>(),
    );
    churn_c[i].chosen = true;
    let j = candidates::best_index(
        &clv_c
            .iter()
            .map(|c| c.out_of_time_normalized_gini.unwrap_or(c.validation.normalized_gini))
            .collect::<Vec<_>>(),
    );
    clv_c[j].chosen = true;
    let (churn_mix, clv_mix) = (churn_c[i].mix, clv_c[j].mix);
    let basis = match &oot {
        Some((o, ..)) if !o.dates.is_empty() => format!(
            "out-of-time predictions of purged models at {}",
            o.dates.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
        Some((o, ..)) => format!(
            "{}-fold cross-fitting by customer on the fit rows (too little history for purged models)",
            o.n_groups
        ),
        None => "the validation snapshot (too little data for purged models or cross-fitting)".into(),
    };
    let report = CandidateReport {
        rule: candidates::RULE.into(),
        basis,
        churn: churn_c,
        clv: clv_c,
        logistic_l2: Vec::new(),
    };
    (report, churn_mix, clv_mix)
}

/// The logistic regression, its penalty chosen from `grid` on the out-of-time predictions of
/// the logistic regression alone (mean ROC AUC over the snapshots or folds; on validation
/// without them), then refitted on the fit rows. Leaves the chosen penalty's out-of-time
/// log-odds in `oot.churn_logistic_margin` for the candidates and the calibration.
fn choose_logistic(
    grid: &[f64],
    oot: Option<&mut OutOfTime>,
    churn: &[f64],
    (x_fit, y_fit): (&FeatureMatrix, &[f64]),
    (x_val, y_val): (&FeatureMatrix, &[f64]),
) -> Result<(Logistic, Vec<PenaltyChoice>)> {
    let mut fitted = Vec::new();
    let scores: Vec<f64> = match &oot {
        Some(o) => {
            let (per, y) = (o.per_snapshot(), pick(churn, &o.rows));
            o.logistic_by_l2
                .iter()
                .map(|m| {
                    metrics::mean(
                        &per.iter().map(|i| metrics::roc_auc(&pick(&y, i), &pick(m, i))).collect::<Vec<_>>(),
                    )
                })
                .collect()
        }
        None if grid.len() == 1 => vec![f64::NAN],
        None => {
            for &l2 in grid {
                fitted.push(Logistic::fit(x_fit, y_fit, l2)?);
            }
            fitted.iter().map(|l| metrics::roc_auc(y_val, &l.margin(x_val))).collect()
        }
    };
    let best = candidates::best_index(&scores);
    if let Some(o) = oot {
        o.churn_logistic_margin = std::mem::take(&mut o.logistic_by_l2[best]);
    }
    let logistic = match fitted.into_iter().nth(best) {
        Some(l) => l,
        None => Logistic::fit(x_fit, y_fit, grid[best])?,
    };
    let choices = grid
        .iter()
        .zip(&scores)
        .enumerate()
        .map(|(i, (&l2, &roc_auc))| PenaltyChoice { l2, roc_auc, chosen: i == best })
        .collect();
    Ok((logistic, choices))
}

/// The BG/NBD + Gamma-Gamma baseline's name (churn: P(no purchase in the horizon); CLV:
/// expected purchases x expected spend).
pub const BGNBD_BASELINE: &str = "bgnbd_gamma_gamma";

/// The `predictions.parquet` column of a baseline's holdout predictions.
pub fn baseline_column(task: &str, name: &str) -> String {
    let key: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("baseline_{task}_{}", key.trim_end_matches('_'))
}

/// Validation and holdout predictions with labels (for reports, calibration, threshold).
fn predictions_frame(
    data: &DataFrame,
    rows: &Split,
    (p_val, p_hold): (&[f64], &[f64]),
    (raw_val, raw_hold): (&[f64], &[f64]),
    (c_val, c_hold): (&[f64], &[f64]),
    baseline_holdout: &[(String, &'static str, Vec<f64>)],
) -> Result<DataFrame> {
    let idx: Vec<IdxSize> = rows.validation.iter().chain(&rows.holdout).map(|&i| i as IdxSize).collect();
    let idx = IdxCa::from_vec("idx".into(), idx);
    let mut df = data
        .select([CUSTOMER, SNAPSHOT, CHURN, CLV])
        .and_then(|d| d.take(&idx))
        .polars("selecting prediction rows")?;
    let role: Vec<&str> = std::iter::repeat_n("validation", rows.validation.len())
        .chain(std::iter::repeat_n("holdout", rows.holdout.len()))
        .collect();
    let cat = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().chain(b).copied().collect() };
    let mut cols = vec![
        Column::new("role".into(), role),
        Column::new("churn_probability".into(), cat(p_val, p_hold)),
        Column::new("churn_probability_raw".into(), cat(raw_val, raw_hold)),
        Column::new("predicted_clv".into(), cat(c_val, c_hold)),
    ];
    for (name, task, hold) in baseline_holdout {
        // Baselines are kept for the holdout rows only (null on validation rows).
        let v: Vec<Option<f64>> =
            std::iter::repeat_n(None, rows.validation.len()).chain(hold.iter().map(|&x| Some(x))).collect();
        cols.push(Column::new(baseline_column(task, name).into(), v));
    }
    for c in cols {
        df.with_column(c).polars("adding prediction columns")?;
    }
    Ok(df)
}

/// Mean absolute value of each of the first `cols` columns of a row-major matrix with
/// `cols + 1` columns (contributions plus bias).
fn mean_abs_columns(m: &[f64], cols: usize) -> Vec<f64> {
    let rows = m.len() / (cols + 1);
    let mut sum = vec![0.0; cols];
    for row in m.chunks_exact(cols + 1) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v.abs();
        }
    }
    sum.into_iter().map(|s| if rows > 0 { s / rows as f64 } else { 0.0 }).collect()
}

/// Load the metrics of a trained model directory.
pub fn load_metrics(dir: &Path) -> Result<TrainMetrics> {
    artifact::read_json(&dir.join("metrics.json"))
}

/// Load the calibrator of a trained model directory.
pub fn load_calibrator(dir: &Path) -> Result<Calibrator> {
    artifact::read_json(&dir.join("calibration.json"))
}

/// Load `model.json` of a trained model directory.
pub fn load_info(dir: &Path) -> Result<ModelInfo> {
    artifact::read_json(&dir.join("model.json"))
}

fn fmt_metric(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.4}"),
        _ => "-".into(),
    }
}

/// The comparison table printed at the end of `fidelis train`.
pub fn summary_table(m: &TrainMetrics) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "holdout {} ({} customers, churn rate {:.1}%); validation {} ({}); fit rows {}\n",
        m.holdout_snapshot,
        m.n_holdout,
        100.0 * m.churn.holdout.churn_rate,
        m.validation_snapshot,
        m.n_validation,
        m.n_fit
    ));
    out.push_str(&format!(
        "{:<34} {:>8} {:>8} {:>8} {:>9} | {:>9} {:>9} {:>9}\n",
        "model (holdout)", "ROC AUC", "PR AUC", "Brier", "lift@10%", "CLV Gini", "Spearman", "MAE"
    ));
    let row = |name: &str, c: Option<&ChurnMetrics>, v: Option<&ClvMetrics>| {
        format!(
            "{:<34} {:>8} {:>8} {:>8} {:>9} | {:>9} {:>9} {:>9}\n",
            name,
            fmt_metric(c.map(|c| c.roc_auc)),
            fmt_metric(c.map(|c| c.pr_auc)),
            fmt_metric(c.map(|c| c.brier)),
            fmt_metric(c.map(|c| c.top10_lift)),
            fmt_metric(v.map(|v| v.normalized_gini)),
            fmt_metric(v.map(|v| v.spearman)),
            fmt_metric(v.map(|v| v.mae)),
        )
    };
    let chosen = |churn: bool| {
        let c = &m.candidates;
        let name = if churn {
            c.churn.iter().find(|k| k.chosen).map(|k| k.name.as_str())
        } else {
            c.clv.iter().find(|k| k.chosen).map(|k| k.name.as_str())
        };
        name.unwrap_or("gbdt").to_string()
    };
    out.push_str(&row(
        &format!("fidelis ({} / {})", chosen(true), chosen(false)),
        Some(&m.churn.holdout),
        Some(&m.clv.holdout),
    ));
    for (name, b) in &m.baselines {
        out.push_str(&row(name, b.churn.as_ref().map(|c| &c.holdout), b.clv.as_ref().map(|c| &c.holdout)));
    }
    out.push_str(&candidate_summary(m));
    out.push_str(&decision_summary(m));
    out
}

/// The candidates lines of the summary: what was compared, on what, and what was shipped.
pub fn candidate_summary(m: &TrainMetrics) -> String {
    let c = &m.candidates;
    if c.churn.is_empty() {
        return String::new();
    }
    let mut out = format!("candidates, chosen on {}:\n", c.basis);
    for k in c.rows() {
        out.push_str(&format!(
            "  {:<5} {:<21} choice {}  validation {:.4}  holdout {:.4}{}\n",
            k.task,
            k.name,
            fmt_metric(k.choice),
            k.validation,
            k.holdout,
            if k.chosen { "  <- shipped" } else { "" }
        ));
    }
    if let Some(line) = c.penalty_line() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// The calibration and decision lines of the summary.
pub fn decision_summary(m: &TrainMetrics) -> String {
    let c = &m.calibration;
    let d = &m.decision;
    let h = &d.holdout;
    let threshold = d.threshold.map_or("none (contact nobody)".to_string(), |t| format!("{t:.4}"));
    let mut out = format!(
        "calibration: {} (chosen by {} log loss over {} predictions of {} at {}); holdout ECE \
         {:.4} -> {:.4}, Brier {:.4} -> {:.4}, log loss {:.4} -> {:.4}\n",
        c.method,
        c.choice.scheme,
        c.choice.n_rows,
        c.choice.source,
        c.choice.snapshots.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
        c.holdout_ece_before,
        c.holdout_ece_after,
        c.holdout_brier_before,
        c.holdout_brier_after,
        c.holdout_log_loss_before,
        c.holdout_log_loss_after
    );
    out.push_str(&format!(
        "decision ({:?} value): contact when churn probability >= {threshold}; holdout: {} contacted \
         ({:.1}%), precision {:.3}, recall {:.3}, net value {:.0} (everyone {:.0}, nobody 0, \
         top 10% {:.0}, oracle {:.0})\n",
        d.policy,
        h.contacted,
        100.0 * h.contacted_share,
        h.precision,
        h.recall,
        h.net_value,
        h.net_all,
        h.net_top10,
        h.net_oracle
    ));
    out.push_str(&format!("  {}\n", d.explanation));
    out
}
