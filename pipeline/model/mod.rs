//! The model artifact, in one place: what a model directory holds ([`file`]), the types of
//! its files, writing and publishing it ([`store`]), and loading it for scoring ([`load`]).
//! The layout with every file is in ARCHITECTURE.md ("The model artifact").
//!
//! `model.json` carries a [`FORMAT_VERSION`]; models written before versions existed (1:
//! the whole configuration stored, `${VAR}`s expanded) still load and score, and a model
//! of a newer format is refused with the version it has and the one this fidelis reads.

pub mod decision;
pub mod load;
pub mod record;
pub mod store;

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveDateTime};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::calibration::CalibrationChoice;
use crate::config::Config;
use crate::error::{PolarsContext, Result};
use crate::features::FeatureSpec;
use crate::ingest::ValidationSummary;
use crate::metrics::{ChurnMetrics, ClvMetrics};
use crate::schema::{CHURN, CHURN_SCORE, CLV, CLV_SCORE, CUSTOMER, SNAPSHOT};
use crate::signals::SignalSpec;
use crate::split::SnapshotPlan;
use crate::threshold::{BandOutcome, CurvePoint, PolicyOutcome, RiskBands};
use crate::train::candidates::{CandidateReport, ChurnMix, ClvMix};

pub use load::{load, LoadedModel};

/// SHA-256 of `bytes`, as lowercase hex (the checksums of [`ModelInfo::checksums`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The `model.json` format this fidelis writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 2;

/// The files of a model directory `models/<model_id>/`.
pub mod file {
    pub const MODEL: &str = "model.json";
    pub const METRICS: &str = "metrics.json";
    pub const CHURN_GBDT: &str = "churn.json";
    pub const CLV_GBDT: &str = "clv.json";
    /// The logistic regression candidate (`null` when not fitted).
    pub const LOGISTIC: &str = "logistic.json";
    /// The Poisson GBDT CLV candidate (`null` when not fitted).
    pub const CLV_POISSON: &str = "clv_poisson.json";
    pub const CALIBRATION: &str = "calibration.json";
    pub const DECISION: &str = "decision.json";
    pub const REFERENCE: &str = "reference.json";
    pub const PREDICTIONS: &str = "predictions.parquet";
    /// The uplift model (`train::uplift::UpliftModel`), only when one shipped
    /// (`model.json`'s `uplift` names its learner).
    pub const UPLIFT: &str = "uplift.json";
    /// The survival (discrete-time hazard) model (`train::survival`), only with churn as a
    /// cancellation (`model.json`'s `survival` is true).
    pub const SURVIVAL: &str = "survival.json";
    /// Every file a model of this format has.
    pub const ALL: [&str; 10] = [
        MODEL,
        METRICS,
        CHURN_GBDT,
        CLV_GBDT,
        LOGISTIC,
        CLV_POISSON,
        CALIBRATION,
        DECISION,
        REFERENCE,
        PREDICTIONS,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Fit,
    Validation,
    Holdout,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Fit => "fit",
            Role::Validation => "validation",
            Role::Holdout => "holdout",
        }
    }
}

/// Eligible customers and label rates at one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotStats {
    pub snapshot: NaiveDate,
    pub role: Role,
    pub eligible: usize,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub churn_rate: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
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
    /// Trees of the shipped CLV mix's GBDT.
    pub clv_trees: usize,
    /// Trees of each fitted CLV GBDT: squared error and Poisson (absent when off).
    #[serde(default)]
    pub clv_gbdt_trees: usize,
    #[serde(default)]
    pub clv_poisson_trees: Option<usize>,
    /// Total gain per feature (normalized), by feature name.
    pub churn_importance: BTreeMap<String, f64>,
    pub clv_importance: BTreeMap<String, f64>,
    /// Mean absolute contribution to the churn log-odds per feature on the holdout (how much
    /// a feature moves individual scores, the per-customer view of importance).
    #[serde(default)]
    pub churn_mean_abs_contribution: BTreeMap<String, f64>,
    /// Whether those contributions are exact SHAP values (every model trained since fidelis
    /// stored its trees' covers) or path attributions.
    #[serde(default)]
    pub churn_contributions_shap: bool,
    /// For the features with the largest mean absolute contribution, holdout customers'
    /// values and contributions (the evaluation report's dependence plots).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub churn_dependence: Vec<Dependence>,
}

/// One feature's dependence plot: `(value, contribution to the churn log-odds)` of holdout
/// customers (an evenly spaced subset of the rows, missing values left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dependence {
    pub feature: String,
    pub points: Vec<(f64, f64)>,
}

impl Dependence {
    /// Features in the report's dependence plots.
    pub const FEATURES: usize = 3;
    /// Customers per plot at most.
    pub const POINTS: usize = 400;

    /// The plots of the [`Self::FEATURES`] features with the largest mean absolute
    /// contribution (`mean_abs`, by column), from row-major contributions (`x.cols() + 1` a
    /// row) of the rows of `x`.
    pub fn top(
        x: &crate::features::FeatureMatrix,
        contributions: &[f64],
        mean_abs: &[f64],
    ) -> Vec<Dependence> {
        let w = x.cols() + 1;
        let mut order: Vec<usize> = (0..x.cols()).filter(|&c| mean_abs[c] > 0.0).collect();
        order.sort_by(|&a, &b| mean_abs[b].total_cmp(&mean_abs[a]).then(a.cmp(&b)));
        let step = x.rows.div_ceil(Self::POINTS).max(1);
        order
            .into_iter()
            .take(Self::FEATURES)
            .map(|c| Dependence {
                feature: x.names[c].clone(),
                points: (0..x.rows)
                    .step_by(step)
                    .map(|r| (x.get(r, c), contributions[r * w + c]))
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .collect(),
            })
            .collect()
    }
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
    /// Snapshots with eligible customers (those without any are skipped and noted).
    pub snapshots: Vec<SnapshotStats>,
    /// Which models `score` uses (older models: the evaluated ones).
    #[serde(default)]
    pub deployed: Deployment,
    /// What the run wants a reader to know (e.g. a snapshot skipped for having nobody
    /// eligible).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// How the uplift model was chosen and judged, when the experiment had matured runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplift: Option<crate::train::uplift::UpliftReport>,
    /// The survival model against its baseline, with churn as a cancellation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survival: Option<crate::train::survival::SurvivalReport>,
}

/// The deployed models: the evaluated ones, or those refit on every matured label
/// (`model.refit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub refit: bool,
    /// Training rows of the deployed models and their snapshots (first, last).
    pub rows: usize,
    pub snapshots: Option<(NaiveDate, NaiveDate)>,
    /// The newest label window the deployed models learned from closes on this day.
    pub labels_until: Option<NaiveDate>,
    pub churn_trees: usize,
    pub clv_trees: usize,
    /// The parts refit (those the shipped mixes use; the others are the evaluated ones and
    /// do not score).
    #[serde(default)]
    pub refit_parts: Vec<String>,
    /// In words, for the reports.
    pub description: String,
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
    /// Where the save rate came from (None in models trained before it was reported).
    #[serde(default)]
    pub save_rate: Option<crate::experiment::SaveRateSource>,
    /// The holdout's ROC AUC, precision, recall and net value estimated from its calibrated
    /// probabilities (as monitoring estimates a run's before its labels mature) and realized
    /// (None in models trained before it was recorded).
    #[serde(default)]
    pub holdout_estimate: Option<crate::monitor::estimate::HoldoutCheck>,
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
    /// Where the save rate in `config` came from (None in models trained before it).
    #[serde(default)]
    pub save_rate: Option<crate::experiment::SaveRateSource>,
}

impl DecisionArtifact {
    /// Whether a customer with calibrated churn probability `p` is contacted
    /// ([`crate::threshold::contacts`] at this decision's threshold).
    pub fn contacts(&self, p: f64) -> bool {
        crate::threshold::contacts(self.threshold, p)
    }

    /// [`Self::contacts`], and never a customer whose estimated uplift is below
    /// `never_below` (a contact expected to make them churn).
    pub fn contacts_with(&self, p: f64, uplift: Option<f64>, never_below: f64) -> bool {
        self.contacts(p) && !uplift.is_some_and(|u| u < never_below)
    }
}

/// `model.json`: what a model is, what it was trained on and with, and what scoring needs
/// to rebuild its features. Never a secret: `settings` records the configuration sections
/// that shape the model, not `[output]` (database URLs carry passwords) nor `[paths]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// [`FORMAT_VERSION`] of the writer (models written before versions existed read as 1).
    #[serde(default = "format_v1")]
    pub format_version: u32,
    pub model_id: String,
    /// SHA-256 (hex) of every other file of the directory, written at training and checked
    /// when a file is read ([`load`]): a file changed after training is refused, naming it.
    /// Empty in models trained before checksums (their files are checked for structure only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checksums: BTreeMap<String, String>,
    /// When the model was trained; with `timings_s`, the only content that differs between
    /// two trainings on the same data and settings.
    pub created_at: NaiveDateTime,
    /// Seconds per training step.
    #[serde(default)]
    pub timings_s: BTreeMap<String, f64>,
    pub fidelis_version: String,
    pub engine: String,
    /// Feature names in model column order.
    pub features: Vec<String>,
    /// How the transaction features are built (scoring builds them the same way).
    pub feature_spec: FeatureSpec,
    /// The training settings, for people and reproduction (never read back as a config).
    pub settings: serde_json::Value,
    pub data: DataFingerprint,
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
    /// How the BG/NBD churn mix's log-odds split into reasons (that mix only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgnbd_explainer: Option<crate::train::candidates::BgnbdExplainer>,
    /// The learner of the shipped uplift model (`uplift.json`), if one shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplift: Option<crate::train::uplift::Learner>,
    /// A survival model (`survival.json`) shipped with this model.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub survival: bool,
}

fn format_v1() -> u32 {
    1
}

/// The validated transactions a model saw: row count and an xxh3-64 hash of the rows in
/// their canonical order (customer, time, amount), so the same rows in any file order or
/// format give the same fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub path: String,
    #[serde(default)]
    pub rows: usize,
    pub xxh3: String,
}

/// The configuration sections recorded in `model.json` as `settings`.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingSettings<'a> {
    pub input: &'a crate::config::InputConfig,
    pub snapshots: &'a crate::config::SnapshotConfig,
    pub features: &'a crate::config::FeatureConfig,
    pub model: &'a crate::config::GbdtConfig,
    pub baselines: &'a crate::config::BaselineConfig,
    pub decision: &'a crate::config::DecisionConfig,
    pub health: &'a crate::config::HealthConfig,
    /// Trained on the transactions before this date only (a backtest's model).
    pub cutoff: Option<NaiveDate>,
}

impl<'a> TrainingSettings<'a> {
    pub fn of(cfg: &'a Config, cutoff: Option<NaiveDate>) -> Self {
        TrainingSettings {
            input: &cfg.input,
            snapshots: &cfg.snapshots,
            features: &cfg.features,
            model: &cfg.model,
            baselines: &cfg.baselines,
            decision: &cfg.decision,
            health: &cfg.health,
            cutoff,
        }
    }
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

/// The `predictions.parquet` column of a baseline's holdout predictions.
pub fn baseline_column(task: &str, name: &str) -> String {
    let key: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("baseline_{task}_{}", key.trim_end_matches('_'))
}

/// The shipped model's predictions for one role's rows of the training frame.
pub struct RolePredictions<'a> {
    pub rows: &'a [usize],
    pub calibrated: &'a [f64],
    pub raw: &'a [f64],
    pub clv: &'a [f64],
}

/// A baseline's holdout predictions (`task` is `churn` or `clv`).
pub struct BaselinePredictions {
    pub name: String,
    pub task: &'static str,
    pub holdout: Vec<f64>,
}

/// `predictions.parquet`: validation and holdout rows with labels, the shipped model's
/// predictions (calibrated and raw churn probability, CLV) and every baseline's on the holdout
/// (null on validation rows). What the evaluation report is drawn from.
pub fn predictions_frame(
    data: &DataFrame,
    val: RolePredictions,
    hold: RolePredictions,
    baselines: &[BaselinePredictions],
) -> Result<DataFrame> {
    let idx: Vec<IdxSize> = val.rows.iter().chain(hold.rows).map(|&i| i as IdxSize).collect();
    let idx = IdxCa::from_vec("idx".into(), idx);
    let mut df = data
        .select([CUSTOMER, SNAPSHOT, CHURN, CLV])
        .and_then(|d| d.take(&idx))
        .polars("selecting prediction rows")?;
    let role: Vec<&str> = std::iter::repeat_n("validation", val.rows.len())
        .chain(std::iter::repeat_n("holdout", hold.rows.len()))
        .collect();
    let cat = |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().chain(b).copied().collect() };
    let mut cols = vec![
        Column::new("role".into(), role),
        Column::new(CHURN_SCORE.into(), cat(val.calibrated, hold.calibrated)),
        Column::new("churn_probability_raw".into(), cat(val.raw, hold.raw)),
        Column::new(CLV_SCORE.into(), cat(val.clv, hold.clv)),
    ];
    for b in baselines {
        let v: Vec<Option<f64>> =
            std::iter::repeat_n(None, val.rows.len()).chain(b.holdout.iter().map(|&x| Some(x))).collect();
        cols.push(Column::new(baseline_column(b.task, &b.name).into(), v));
    }
    for c in cols {
        df.with_column(c).polars("adding prediction columns")?;
    }
    Ok(df)
}
