//! The model evaluation report: what a data scientist would put in a notebook before
//! trusting a model, computed from the model directory alone (`metrics.json`,
//! `predictions.parquet` with the validation and holdout rows, `decision.json`,
//! `model.json`), so `fidelis report --model ID` can regenerate it at any time.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Serialize;

use super::chart::{self, BarChart, HBarChart, HLine, Line, LineChart, Marker};
use super::{Doc, Tone};
use crate::error::{Error, PolarsContext, Result};
use crate::format::{f4, int, money, opt4, pct};
use crate::metrics::{ChurnMetrics, ClvMetrics};
use crate::model::load::{read_decision, read_info, read_metrics};
use crate::model::{baseline_column, DecisionArtifact, ModelInfo, SnapshotStats, TrainMetrics};
use crate::schema::epoch_day;
use crate::sink::read_parquet;
use crate::threshold::{self, CurvePoint, PolicyOutcome};

/// A curve with the metric that summarizes it.
#[derive(Debug, Clone, Serialize)]
pub struct Curve {
    pub model: String,
    pub metric: f64,
    pub points: Vec<(f64, f64)>,
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bin {
    pub customers: usize,
    pub mean_probability: f64,
    pub churn_rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CalibrationView {
    pub method: String,
    pub ece_before: f64,
    pub ece_after: f64,
    pub before: Vec<Bin>,
    pub after: Vec<Bin>,
}

/// Customers ranked by churn probability, in tenths.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GainsRow {
    pub decile: usize,
    pub customers: usize,
    pub churners: usize,
    pub churn_rate: f64,
    pub cumulative_capture: f64,
    pub cumulative_lift: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Confusion {
    pub threshold: Option<f64>,
    pub true_positive: usize,
    pub false_positive: usize,
    pub false_negative: usize,
    pub true_negative: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DecisionView {
    pub threshold: Option<f64>,
    pub break_even_probability: f64,
    pub holdout: PolicyOutcome,
    pub confusion: Confusion,
    pub validation_curve: Vec<CurvePoint>,
    pub holdout_curve: Vec<CurvePoint>,
    pub explanation: String,
    /// Where the save rate came from (assumed or measured by the control group).
    pub save_rate: Option<crate::experiment::SaveRateSource>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FeatureRow {
    pub feature: String,
    pub churn_gain: f64,
    pub clv_gain: f64,
    pub churn_mean_abs_contribution: Option<f64>,
}

/// Customers ranked by predicted CLV, in tenths.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ClvDecile {
    pub decile: usize,
    pub customers: usize,
    pub mean_predicted: f64,
    pub mean_actual: f64,
    pub revenue_share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelRow {
    pub model: String,
    pub churn_validation: Option<ChurnMetrics>,
    pub churn_holdout: Option<ChurnMetrics>,
    pub clv_validation: Option<ClvMetrics>,
    pub clv_holdout: Option<ClvMetrics>,
}

/// The previous model (the champion this one challenges), by its own metrics.
#[derive(Debug, Clone, Serialize)]
pub struct PreviousModel {
    pub model_id: String,
    pub holdout_snapshot: NaiveDate,
    pub churn_holdout: ChurnMetrics,
    pub clv_holdout: ClvMetrics,
    pub threshold: Option<f64>,
    pub holdout_net_value: f64,
}

/// `evaluation.json`.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluationReport {
    pub model_id: String,
    pub created_at: chrono::NaiveDateTime,
    pub engine: String,
    pub churn_trees: usize,
    pub clv_trees: usize,
    pub data_path: String,
    pub transactions: usize,
    pub customers: usize,
    pub validation_snapshot: NaiveDate,
    pub holdout_snapshot: NaiveDate,
    pub snapshots: Vec<SnapshotStats>,
    /// What training noted: skipped snapshots, a training sample.
    pub notes: Vec<String>,
    /// Which models `score` uses, in words (empty for models from before refitting).
    pub deployed: String,
    pub churn: ChurnMetrics,
    pub clv: ClvMetrics,
    pub roc: Vec<Curve>,
    pub precision_recall: Vec<Curve>,
    pub calibration: CalibrationView,
    pub gains: Vec<GainsRow>,
    pub decision: DecisionView,
    pub features: Vec<FeatureRow>,
    /// Whether the contributions are exact SHAP values (else path attributions).
    pub contributions_shap: bool,
    /// Dependence plots of the top features (empty for models trained before them).
    pub dependence: Vec<crate::model::Dependence>,
    pub clv_deciles: Vec<ClvDecile>,
    pub revenue_capture: Vec<Curve>,
    pub comparison: Vec<ModelRow>,
    /// The candidates the shipped models were chosen from (empty for older models).
    pub candidates: crate::train::candidates::CandidateReport,
    pub previous: Option<PreviousModel>,
    /// How the uplift model was chosen and judged (None without a matured experiment).
    pub uplift: Option<crate::train::uplift::UpliftReport>,
    /// The time-to-cancellation model (churn as a cancellation).
    pub survival: Option<crate::train::survival::SurvivalReport>,
}

const MAX_POINTS: usize = 200;

/// Keep at most `max` points, evenly spaced, always the first and last.
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points;
    }
    let n = points.len();
    (0..max).map(|i| points[i * (n - 1) / (max - 1)]).collect()
}

/// Indices by score, highest first, with tie groups (equal scores) kept together.
fn order_desc(score: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
    idx
}

/// ROC points (false positive rate, true positive rate), one per distinct score.
pub fn roc_points(y: &[f64], score: &[f64]) -> Vec<(f64, f64)> {
    let pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    let neg = y.len() as f64 - pos;
    let idx = order_desc(score);
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in idx.iter().enumerate() {
        if y[i] > 0.5 {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = k + 1 == idx.len() || score[idx[k + 1]] != score[i];
        if last_of_tie {
            pts.push((if neg > 0.0 { fp / neg } else { 0.0 }, if pos > 0.0 { tp / pos } else { 0.0 }));
        }
    }
    thin(pts, MAX_POINTS)
}

/// Precision-recall points (recall, precision), one per distinct score.
pub fn pr_points(y: &[f64], score: &[f64]) -> Vec<(f64, f64)> {
    let pos = y.iter().filter(|&&v| v > 0.5).count() as f64;
    let idx = order_desc(score);
    let mut pts = Vec::new();
    let (mut tp, mut n) = (0.0, 0.0);
    for (k, &i) in idx.iter().enumerate() {
        n += 1.0;
        if y[i] > 0.5 {
            tp += 1.0;
        }
        let last_of_tie = k + 1 == idx.len() || score[idx[k + 1]] != score[i];
        if last_of_tie && pos > 0.0 {
            pts.push((tp / pos, tp / n));
        }
    }
    thin(pts, MAX_POINTS)
}

/// Reliability bins: `bins` groups of (nearly) equal size by probability.
pub fn reliability(y: &[f64], p: &[f64], bins: usize) -> Vec<Bin> {
    let mut idx: Vec<usize> = (0..p.len()).collect();
    idx.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let n = idx.len();
    (0..bins)
        .filter_map(|b| {
            let part = &idx[b * n / bins..(b + 1) * n / bins];
            if part.is_empty() {
                return None;
            }
            let m = part.len() as f64;
            Some(Bin {
                customers: part.len(),
                mean_probability: part.iter().map(|&i| p[i]).sum::<f64>() / m,
                churn_rate: part.iter().map(|&i| y[i]).sum::<f64>() / m,
            })
        })
        .collect()
}

/// Cumulative gains by decile of churn probability.
pub fn gains(y: &[f64], p: &[f64]) -> Vec<GainsRow> {
    let idx = order_desc(p);
    let n = idx.len();
    let total: f64 = y.iter().sum();
    let mut cum = 0.0;
    (0..10)
        .map(|d| {
            let part = &idx[d * n / 10..(d + 1) * n / 10];
            let churners: f64 = part.iter().map(|&i| y[i]).sum();
            cum += churners;
            let capture = if total > 0.0 { cum / total } else { 0.0 };
            GainsRow {
                decile: d + 1,
                customers: part.len(),
                churners: churners as usize,
                churn_rate: if part.is_empty() { 0.0 } else { churners / part.len() as f64 },
                cumulative_capture: capture,
                cumulative_lift: capture / ((d + 1) as f64 / 10.0),
            }
        })
        .collect()
}

/// CLV deciles by predicted value.
pub fn clv_deciles(actual: &[f64], predicted: &[f64]) -> Vec<ClvDecile> {
    let idx = order_desc(predicted);
    let n = idx.len();
    let total: f64 = actual.iter().sum();
    (0..10)
        .map(|d| {
            let part = &idx[d * n / 10..(d + 1) * n / 10];
            let m = part.len().max(1) as f64;
            let revenue: f64 = part.iter().map(|&i| actual[i]).sum();
            ClvDecile {
                decile: d + 1,
                customers: part.len(),
                mean_predicted: part.iter().map(|&i| predicted[i]).sum::<f64>() / m,
                mean_actual: revenue / m,
                revenue_share: if total != 0.0 { revenue / total } else { 0.0 },
            }
        })
        .collect()
}

/// Share of realized revenue captured by the top x share of customers ranked by `rank`.
pub fn capture_curve(actual: &[f64], rank: &[f64]) -> Vec<(f64, f64)> {
    let idx = order_desc(rank);
    let total: f64 = actual.iter().sum();
    let n = idx.len() as f64;
    let mut cum = 0.0;
    let mut pts = vec![(0.0, 0.0)];
    for (k, &i) in idx.iter().enumerate() {
        cum += actual[i];
        pts.push(((k + 1) as f64 / n, if total != 0.0 { cum / total } else { 0.0 }));
    }
    thin(pts, MAX_POINTS)
}

fn column(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let c = df.column(name).polars(name)?.cast(&DataType::Float64).polars(name)?;
    Ok(c.f64().polars(name)?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// The most recent other model in `models_dir` created before `model_id` (ids start with
/// their UTC creation time).
fn previous_model(models_dir: &Path, model_id: &str) -> Option<PreviousModel> {
    let mut ids: Vec<String> = std::fs::read_dir(models_dir)
        .ok()?
        .flatten()
        .filter(|e| e.path().join("metrics.json").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|id| id.as_str() < model_id)
        .collect();
    ids.sort();
    let id = ids.pop()?;
    let m: TrainMetrics = read_metrics(&models_dir.join(&id)).ok()?;
    Some(PreviousModel {
        model_id: id,
        holdout_snapshot: m.holdout_snapshot,
        churn_holdout: m.churn.holdout,
        clv_holdout: m.clv.holdout,
        threshold: m.decision.threshold,
        holdout_net_value: m.decision.holdout.net_value,
    })
}

/// The holdout's labels and predictions (`predictions.parquet`, holdout rows).
struct Holdout {
    frame: DataFrame,
    y: Vec<f64>,
    p: Vec<f64>,
    raw: Vec<f64>,
    clv_actual: Vec<f64>,
    clv_pred: Vec<f64>,
}

/// The curves of the shipped model and every baseline, and the comparison table.
struct Curves {
    roc: Vec<Curve>,
    pr: Vec<Curve>,
    revenue_capture: Vec<Curve>,
    comparison: Vec<ModelRow>,
}

fn curves(info: &ModelInfo, m: &TrainMetrics, h: &Holdout) -> Curves {
    let (holdout, y, p, clv_actual, clv_pred) = (&h.frame, &h.y, &h.p, &h.clv_actual, &h.clv_pred);
    // Curves: the shipped model and every churn baseline on one chart.
    let churn_label = format!("fidelis ({})", info.churn_model.name());
    let clv_label = format!("fidelis ({})", info.clv_model.name());
    let mut roc =
        vec![Curve { model: churn_label.clone(), metric: m.churn.holdout.roc_auc, points: roc_points(y, p) }];
    let mut pr =
        vec![Curve { model: churn_label.clone(), metric: m.churn.holdout.pr_auc, points: pr_points(y, p) }];
    let mut comparison = vec![ModelRow {
        model: if churn_label == clv_label { churn_label } else { format!("{churn_label} / {clv_label}") },
        churn_validation: Some(m.churn.validation),
        churn_holdout: Some(m.churn.holdout),
        clv_validation: Some(m.clv.validation),
        clv_holdout: Some(m.clv.holdout),
    }];
    let mut revenue_capture = vec![
        Curve {
            model: clv_label,
            metric: m.clv.holdout.normalized_gini,
            points: capture_curve(clv_actual, clv_pred),
        },
        Curve {
            model: "oracle (actual revenue)".into(),
            metric: 1.0,
            points: capture_curve(clv_actual, clv_actual),
        },
    ];
    for (name, b) in &m.baselines {
        if let Some(c) = &b.churn {
            if let Ok(s) = column(holdout, &baseline_column("churn", name)) {
                roc.push(Curve { model: name.clone(), metric: c.holdout.roc_auc, points: roc_points(y, &s) });
                pr.push(Curve { model: name.clone(), metric: c.holdout.pr_auc, points: pr_points(y, &s) });
            }
        }
        if let Some(c) = &b.clv {
            if let Ok(s) = column(holdout, &baseline_column("clv", name)) {
                revenue_capture.push(Curve {
                    model: name.clone(),
                    metric: c.holdout.normalized_gini,
                    points: capture_curve(clv_actual, &s),
                });
            }
        }
        comparison.push(ModelRow {
            model: name.clone(),
            churn_validation: b.churn.as_ref().map(|c| c.validation),
            churn_holdout: b.churn.as_ref().map(|c| c.holdout),
            clv_validation: b.clv.as_ref().map(|c| c.validation),
            clv_holdout: b.clv.as_ref().map(|c| c.holdout),
        });
    }

    Curves { roc, pr, revenue_capture, comparison }
}

/// The decision section's data: the holdout's net-value curve beside the validation one the
/// threshold was chosen on, and the confusion matrix at that threshold.
fn decision_view(decision: &DecisionArtifact, m: &TrainMetrics, h: &Holdout) -> DecisionView {
    let (y, p, clv_pred) = (&h.y, &h.p, &h.clv_pred);
    let cfg = &decision.config;
    let values = threshold::tp_values(cfg, p, clv_pred);
    let swept = threshold::choose_threshold(p, y, &values, cfg);
    let holdout_curve = threshold::downsample(&swept.curve, decision.threshold, threshold::CURVE_POINTS);
    let contact: Vec<bool> = p.iter().map(|&q| decision.contacts(q)).collect();
    let count = |c: bool, churned: bool| {
        contact.iter().zip(y).filter(|(&k, &v)| k == c && (v > 0.5) == churned).count()
    };
    let confusion = Confusion {
        threshold: decision.threshold,
        true_positive: count(true, true),
        false_positive: count(true, false),
        false_negative: count(false, true),
        true_negative: count(false, false),
    };

    DecisionView {
        threshold: decision.threshold,
        break_even_probability: m.decision.break_even_probability,
        holdout: m.decision.holdout,
        confusion,
        validation_curve: decision.validation_curve.clone(),
        holdout_curve,
        explanation: m.decision.explanation.clone(),
        save_rate: m.decision.save_rate.clone(),
    }
}

/// Compute the evaluation of the model in `model_dir` (`models_dir` is searched for the
/// previous model).
pub fn evaluate(model_dir: &Path, models_dir: &Path) -> Result<EvaluationReport> {
    let info: ModelInfo = read_info(model_dir)?;
    let m: TrainMetrics = read_metrics(model_dir)?;
    let decision: DecisionArtifact = read_decision(model_dir)?;
    let path = model_dir.join("predictions.parquet");
    let pred =
        read_parquet(&path).map_err(|e| Error::Artifact { path: path.clone(), message: e.to_string() })?;
    let holdout =
        pred.clone().lazy().filter(col("role").eq(lit("holdout"))).collect().polars("holdout predictions")?;
    if holdout.height() == 0 {
        return Err(Error::Artifact { path, message: "no holdout rows".into() });
    }
    let h = Holdout {
        y: column(&holdout, "churn")?,
        p: column(&holdout, "churn_probability")?,
        raw: column(&holdout, "churn_probability_raw")?,
        clv_actual: column(&holdout, "clv")?,
        clv_pred: column(&holdout, "predicted_clv")?,
        frame: holdout,
    };
    let c = curves(&info, &m, &h);

    let mut features: Vec<FeatureRow> = info
        .features
        .iter()
        .map(|f| FeatureRow {
            feature: f.clone(),
            churn_gain: m.gbdt.churn_importance.get(f).copied().unwrap_or(0.0),
            clv_gain: m.gbdt.clv_importance.get(f).copied().unwrap_or(0.0),
            churn_mean_abs_contribution: m.gbdt.churn_mean_abs_contribution.get(f).copied(),
        })
        .collect();
    features.sort_by(|a, b| b.churn_gain.total_cmp(&a.churn_gain));

    Ok(EvaluationReport {
        model_id: m.model_id.clone(),
        created_at: info.created_at,
        engine: m.gbdt.engine.clone(),
        churn_trees: m.gbdt.churn_trees,
        clv_trees: m.gbdt.clv_trees,
        contributions_shap: m.gbdt.churn_contributions_shap,
        dependence: m.gbdt.churn_dependence.clone(),
        data_path: info.validation.path.display().to_string(),
        transactions: info.validation.transactions,
        customers: info.validation.customers,
        validation_snapshot: m.validation_snapshot,
        holdout_snapshot: m.holdout_snapshot,
        snapshots: m.snapshots.clone(),
        notes: m.notes.clone(),
        deployed: m.deployed.description.clone(),
        churn: m.churn.holdout,
        clv: m.clv.holdout,
        roc: c.roc,
        precision_recall: c.pr,
        calibration: CalibrationView {
            method: m.calibration.method.clone(),
            ece_before: m.calibration.holdout_ece_before,
            ece_after: m.calibration.holdout_ece_after,
            before: reliability(&h.y, &h.raw, 10),
            after: reliability(&h.y, &h.p, 10),
        },
        gains: gains(&h.y, &h.p),
        decision: decision_view(&decision, &m, &h),
        features,
        clv_deciles: clv_deciles(&h.clv_actual, &h.clv_pred),
        revenue_capture: c.revenue_capture,
        comparison: c.comparison,
        candidates: m.candidates.clone(),
        previous: previous_model(models_dir, &m.model_id),
        uplift: m.uplift.clone(),
        survival: m.survival.clone(),
    })
}

fn day(d: NaiveDate) -> f64 {
    f64::from(epoch_day(d))
}

/// Render the report.
pub fn render(r: &EvaluationReport) -> Result<Doc> {
    let mut d = Doc::new(
        &format!("Model evaluation: {}", r.model_id),
        &format!(
            "Trained {} with {} ({} churn trees, {} CLV trees) on {} ({} transactions, {} customers). \
             Holdout snapshot {}: {} customers.",
            r.created_at.format("%Y-%m-%d %H:%M UTC"),
            r.engine,
            r.churn_trees,
            r.clv_trees,
            r.data_path,
            int(r.transactions as i64),
            int(r.customers as i64),
            r.holdout_snapshot,
            int(r.churn.n as i64)
        ),
    );

    // Summary.
    section_summary(&mut d, r)?;
    section_data(&mut d, r)?;
    section_roc(&mut d, r)?;
    section_calibration(&mut d, r)?;
    section_lift(&mut d, r)?;
    section_decision(&mut d, r)?;
    section_features(&mut d, r)?;
    section_clv(&mut d, r)?;
    if let Some(s) = &r.survival {
        super::survival::section(&mut d, s)?;
    }
    section_comparison(&mut d, r)?;
    if let Some(u) = &r.uplift {
        super::uplift::section(&mut d, u)?;
    }
    Ok(d)
}

fn section_summary(d: &mut Doc, r: &EvaluationReport) -> Result<()> {
    d.section("summary", "Summary");
    let best_baseline = r
        .comparison
        .iter()
        .skip(1)
        .filter_map(|m| m.churn_holdout.map(|c| (m.model.as_str(), c.roc_auc)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let mut summary = vec![
        vec!["churn ROC AUC (holdout)".into(), f4(r.churn.roc_auc)],
        vec!["churn PR AUC (holdout)".into(), f4(r.churn.pr_auc)],
        vec!["churn Brier score".into(), f4(r.churn.brier)],
        vec!["holdout churn rate".into(), pct(r.churn.churn_rate)],
        vec![
            "top-10% capture / lift".into(),
            format!("{} / {:.2}", pct(r.churn.top10_capture), r.churn.top10_lift),
        ],
        vec!["CLV normalized Gini (holdout)".into(), f4(r.clv.normalized_gini)],
        vec!["CLV Spearman / RMSE".into(), format!("{} / {:.1}", f4(r.clv.spearman), r.clv.rmse)],
        vec![
            "calibration".into(),
            format!(
                "{} (ECE {} -> {})",
                r.calibration.method,
                f4(r.calibration.ece_before),
                f4(r.calibration.ece_after)
            ),
        ],
        vec!["contact threshold".into(), opt4(r.decision.threshold)],
        vec!["holdout net value at the threshold".into(), money(r.decision.holdout.net_value)],
    ];
    if let Some((name, auc)) = best_baseline {
        summary.push(vec![format!("best churn baseline ({name})"), f4(auc)]);
    }
    d.table(&["metric", "value"], &summary, None);
    if let Some((name, auc)) = best_baseline {
        d.reading(&baseline_sentence(r.churn.roc_auc, name, auc));
    }

    // Data and split.
    Ok(())
}

/// What calibration did to the holdout's expected calibration error, as the numbers print
/// (four decimals): no "worsened" for an error that reads the same, no claim for method "none".
fn calibration_sentence(method: &str, before: f64, after: f64) -> String {
    let (b, a) = (f4(before), f4(after));
    if method == "none" {
        return format!(
            "No calibrator is applied (none beat the raw probabilities out of time): expected calibration error {b}."
        );
    }
    let verdict = if a == b {
        "left the expected calibration error unchanged"
    } else if after < before {
        "improved the expected calibration error"
    } else {
        "worsened the expected calibration error"
    };
    format!("Calibration ({method}) {verdict}: {b} -> {a}.")
}

/// The shipped model's ROC AUC against the best baseline's, with a difference that is only
/// claimed when it shows at four decimals.
fn baseline_sentence(auc: f64, name: &str, baseline: f64) -> String {
    let diff = auc - baseline;
    let lead = format!(
        "The shipped model ranks a random churner above a random stayer {:.1}% of the time",
        100.0 * auc
    );
    if f4(diff.abs()) == f4(0.0) {
        format!("{lead}, level with the best baseline ({name}, {:.1}%).", 100.0 * baseline)
    } else {
        let side = if diff > 0.0 { "ahead of" } else { "behind" };
        format!("{lead}, {side} the best baseline ({name}, {:.1}%) by {}.", 100.0 * baseline, f4(diff.abs()))
    }
}

fn section_data(d: &mut Doc, r: &EvaluationReport) -> Result<()> {
    d.section("data", "Data and split");
    let rows: Vec<Vec<String>> = r
        .snapshots
        .iter()
        .map(|s| {
            vec![
                s.snapshot.to_string(),
                format!("{:?}", s.role).to_lowercase(),
                int(s.eligible as i64),
                pct(s.churn_rate),
                money(s.mean_clv),
            ]
        })
        .collect();
    let fit: Vec<&SnapshotStats> =
        r.snapshots.iter().filter(|s| format!("{:?}", s.role).to_lowercase() == "fit").collect();
    let rates: Vec<f64> = r.snapshots.iter().map(|s| s.churn_rate).collect();
    let svg = chart::line_chart(&LineChart {
        title: "Eligible customers' churn rate per snapshot".into(),
        x_label: "snapshot".into(),
        y_label: "churn rate".into(),
        lines: vec![Line::new(
            "churn rate",
            r.snapshots.iter().map(|s| (day(s.snapshot), s.churn_rate)).collect(),
            0,
        )
        .dots()],
        markers: vec![
            Marker {
                x: day(r.validation_snapshot),
                label: format!("validation {}", r.validation_snapshot),
                color: 1,
            },
            Marker { x: day(r.holdout_snapshot), label: format!("holdout {}", r.holdout_snapshot), color: 5 },
        ],
        dates: true,
        y: Some(0.0..(rates.iter().cloned().fold(0.0, f64::max) * 1.15).max(0.05)),
        ..LineChart::default()
    })?;
    let reading = format!(
        "{} fit snapshots from {} to {}, validation at {}, holdout at {}; churn rate between {} and {} across snapshots.",
        fit.len(),
        fit.first().map_or("-".into(), |s| s.snapshot.to_string()),
        fit.last().map_or("-".into(), |s| s.snapshot.to_string()),
        r.validation_snapshot,
        r.holdout_snapshot,
        pct(rates.iter().cloned().fold(f64::INFINITY, f64::min)),
        pct(rates.iter().cloned().fold(0.0, f64::max)),
    );
    d.chart("snapshots", svg, &reading);
    d.table(&["snapshot", "role", "eligible customers", "churn rate", "mean CLV"], &rows, None);
    for note in &r.notes {
        d.para(&format!("Note: {note}."));
    }
    if !r.deployed.is_empty() {
        d.para(&format!("Deployed model (what `fidelis score` uses): {}.", r.deployed));
    }

    // ROC and PR.
    Ok(())
}

fn section_roc(d: &mut Doc, r: &EvaluationReport) -> Result<()> {
    d.section("roc", "ROC and precision-recall");
    let lines = |curves: &[Curve], name: &str| -> Vec<Line> {
        curves
            .iter()
            .enumerate()
            .map(|(i, c)| Line::new(format!("{} ({name} {})", c.model, f4(c.metric)), c.points.clone(), i))
            .collect()
    };
    let mut roc_lines = lines(&r.roc, "AUC");
    roc_lines.push(Line::new("", vec![(0.0, 0.0), (1.0, 1.0)], 6).dashed());
    let svg = chart::line_chart(&LineChart {
        title: "ROC curve, holdout".into(),
        x_label: "false positive rate".into(),
        y_label: "true positive rate".into(),
        x: Some(0.0..1.0),
        y: Some(0.0..1.0),
        lines: roc_lines,
        legend_low: true,
        ..LineChart::default()
    })?;
    let best = r
        .roc
        .iter()
        .max_by(|a, b| a.metric.total_cmp(&b.metric))
        .map_or("-".to_string(), |c| c.model.clone());
    d.chart(
        "roc",
        svg,
        &format!("Highest ROC AUC on the holdout: {best}. The dashed diagonal is a random ranking (0.5)."),
    );
    let svg = chart::line_chart(&LineChart {
        title: "Precision-recall curve, holdout".into(),
        x_label: "recall (share of churners found)".into(),
        y_label: "precision (share of flagged who churn)".into(),
        x: Some(0.0..1.0),
        y: Some(0.0..1.0),
        lines: lines(&r.precision_recall, "PR AUC"),
        hlines: vec![HLine {
            y: r.churn.churn_rate,
            label: format!("base rate {}", pct(r.churn.churn_rate)),
            color: 6,
        }],
        ..LineChart::default()
    })?;
    d.chart(
        "precision_recall",
        svg,
        &format!(
            "PR AUC {} against a base rate of {}: flagging at random would be right {} of the time.",
            f4(r.churn.pr_auc),
            pct(r.churn.churn_rate),
            pct(r.churn.churn_rate)
        ),
    );

    // Calibration.
    Ok(())
}

fn section_calibration(d: &mut Doc, r: &EvaluationReport) -> Result<()> {
    d.section("calibration", "Calibration");
    let bins = |b: &[Bin]| b.iter().map(|x| (x.mean_probability, x.churn_rate)).collect::<Vec<_>>();
    let svg = chart::line_chart(&LineChart {
        title: "Reliability diagram, holdout (10 equal-size bins)".into(),
        x_label: "mean predicted churn probability".into(),
        y_label: "observed churn rate".into(),
        x: Some(0.0..1.0),
        y: Some(0.0..1.0),
        lines: vec![
            Line::new(
                format!("uncalibrated (ECE {})", f4(r.calibration.ece_before)),
                bins(&r.calibration.before),
                1,
            )
            .dots(),
            Line::new(
                format!("calibrated: {} (ECE {})", r.calibration.method, f4(r.calibration.ece_after)),
                bins(&r.calibration.after),
                0,
            )
            .dots(),
            Line::new("", vec![(0.0, 0.0), (1.0, 1.0)], 6).dashed(),
        ],
        legend_low: true,
        ..LineChart::default()
    })?;
    d.chart(
        "calibration",
        svg,
        &format!(
            "Points on the diagonal mean \"a 30% score churns 30% of the time\". {}",
            calibration_sentence(&r.calibration.method, r.calibration.ece_before, r.calibration.ece_after)
        ),
    );

    // Gains and lift.
    Ok(())
}

fn section_lift(d: &mut Doc, r: &EvaluationReport) -> Result<()> {
    d.section("lift", "Cumulative gains and lift");
    let cats: Vec<String> = r.gains.iter().map(|g| format!("{}", g.decile * 10)).collect();
    let svg = chart::bar_chart(&BarChart {
        title: "Churners captured, by riskiest share of customers".into(),
        x_label: "top % of customers by churn probability".into(),
        y_label: "share of all churners".into(),
        categories: cats,
        series: vec![(
            "model cumulative capture".into(),
            r.gains.iter().map(|g| g.cumulative_capture).collect(),
        )],
        overlay: Some(("random".into(), r.gains.iter().map(|g| g.decile as f64 / 10.0).collect())),
    })?;
    let g1 = r.gains.first();
    d.chart(
        "gains",
        svg,
        &format!(
            "The riskiest 10% hold {} of the churners (lift {:.2}); the riskiest 30% hold {}.",
            g1.map_or("-".into(), |g| pct(g.cumulative_capture)),
            g1.map_or(f64::NAN, |g| g.cumulative_lift),
            r.gains.get(2).map_or("-".into(), |g| pct(g.cumulative_capture))
        ),
    );
    let rows: Vec<Vec<String>> = r
        .gains
        .iter()
        .map(|g| {
            vec![
                format!("{}", g.decile),
                int(g.customers as i64),
                int(g.churners as i64),
                pct(g.churn_rate),
                pct(g.cumulative_capture),
                format!("{:.2}", g.cumulative_lift),
            ]
        })
        .collect();
    d.table(
        &["decile", "customers", "churners", "churn rate", "cumulative capture", "cumulative lift"],
        &rows,
        None,
    );

    // Decision.
    Ok(())
}

fn section_decision(d: &mut Doc, r: &EvaluationReport) -> Result<()> {
    d.section("decision", "Net value and the contact threshold");
    let h = &r.decision.holdout;
    let curve_pts = |c: &[CurvePoint]| c.iter().map(|p| (p.threshold, p.net_value)).collect::<Vec<_>>();
    let mut markers = vec![];
    if let Some(t) = r.decision.threshold {
        markers.push(Marker { x: t, label: format!("chosen threshold {}", f4(t)), color: 5 });
    }
    let svg = chart::line_chart(&LineChart {
        title: "Net value of contacting everyone above a threshold".into(),
        x_label: "churn probability threshold".into(),
        y_label: "net value".into(),
        x: Some(0.0..1.0),
        lines: vec![
            Line::new("holdout", curve_pts(&r.decision.holdout_curve), 0),
            Line::new("validation (chosen on)", curve_pts(&r.decision.validation_curve), 1).dashed(),
        ],
        markers,
        hlines: vec![
            HLine { y: h.net_all, label: format!("contact everyone {}", money(h.net_all)), color: 2 },
            HLine { y: h.net_top10, label: format!("top 10% {}", money(h.net_top10)), color: 3 },
        ],
        ..LineChart::default()
    })?;
    d.chart(
        "net_value",
        svg,
        &format!(
            "At the threshold chosen on validation ({}), the holdout nets {} by contacting {} customers ({}); contacting everyone nets {}, the top 10% {}, a perfect oracle {}.",
            opt4(r.decision.threshold),
            money(h.net_value),
            int(h.contacted as i64),
            pct(h.contacted_share),
            money(h.net_all),
            money(h.net_top10),
            money(h.net_oracle)
        ),
    );
    d.para(&r.decision.explanation);
    if let Some(s) = &r.decision.save_rate {
        d.para(&format!("Save rate: {}.", s.why));
        if !s.by_band.is_empty() {
            let rows: Vec<Vec<String>> = s
                .by_band
                .iter()
                .map(|b| {
                    vec![
                        b.band.clone(),
                        int(b.measured.treatment as i64),
                        int(b.measured.control as i64),
                        format!("{:.3} [{:.3}, {:.3}]", b.measured.estimate, b.measured.low, b.measured.high),
                        format!("{:.3}", b.shrunk),
                        format!("{:.3}", b.used),
                    ]
                })
                .collect();
            d.table(
                &["band", "treated", "control", "measured save rate [95%]", "shrunk toward pooled", "used"],
                &rows,
                None,
            );
        }
    }
    let c = &r.decision.confusion;
    d.table(
        &["at the threshold", "churned", "stayed", "total"],
        &[
            vec![
                "contacted".into(),
                int(c.true_positive as i64),
                int(c.false_positive as i64),
                int((c.true_positive + c.false_positive) as i64),
            ],
            vec![
                "not contacted".into(),
                int(c.false_negative as i64),
                int(c.true_negative as i64),
                int((c.false_negative + c.true_negative) as i64),
            ],
        ],
        Some(&[
            vec![Tone::Plain, Tone::Good, Tone::Warn, Tone::Plain],
            vec![Tone::Plain, Tone::Bad, Tone::Good, Tone::Plain],
        ]),
    );
    d.reading(&format!(
        "Confusion matrix on the holdout: precision {} (contacted who churned), recall {} (churners contacted).",
        pct(h.precision),
        pct(h.recall)
    ));

    // Features.
    Ok(())
}

fn section_features(d: &mut Doc, r: &EvaluationReport) -> Result<()> {
    d.section("features", "What drives the scores");
    let top: Vec<&FeatureRow> = r.features.iter().take(15).collect();
    let mut series = vec![
        ("churn: share of split gain".to_string(), top.iter().map(|f| f.churn_gain).collect::<Vec<_>>()),
        ("CLV: share of split gain".to_string(), top.iter().map(|f| f.clv_gain).collect()),
    ];
    let svg = chart::hbar_chart(&HBarChart {
        title: "Feature importance (total gain, normalized)".into(),
        x_label: "share of total gain".into(),
        labels: top.iter().map(|f| f.feature.clone()).collect(),
        series: std::mem::take(&mut series),
    })?;
    d.chart(
        "importance",
        svg,
        &format!(
            "{} carries {} of the churn model's split gain; the CLV model leans most on {}.",
            top.first().map_or("-", |f| f.feature.as_str()),
            top.first().map_or("-".into(), |f| pct(f.churn_gain)),
            r.features
                .iter()
                .max_by(|a, b| a.clv_gain.total_cmp(&b.clv_gain))
                .map_or("-", |f| f.feature.as_str())
        ),
    );
    if r.features.iter().any(|f| f.churn_mean_abs_contribution.is_some()) {
        let mut by_contrib: Vec<&FeatureRow> = r.features.iter().collect();
        by_contrib.sort_by(|a, b| {
            b.churn_mean_abs_contribution
                .unwrap_or(0.0)
                .total_cmp(&a.churn_mean_abs_contribution.unwrap_or(0.0))
        });
        let top: Vec<&FeatureRow> = by_contrib.into_iter().take(15).collect();
        let what = if r.contributions_shap { "SHAP value" } else { "contribution" };
        let svg = chart::hbar_chart(&HBarChart {
            title: format!("Mean |{what}| to the churn log-odds, holdout"),
            x_label: format!("mean absolute {what} (log-odds)"),
            labels: top.iter().map(|f| f.feature.clone()).collect(),
            series: vec![(
                "churn".into(),
                top.iter().map(|f| f.churn_mean_abs_contribution.unwrap_or(0.0)).collect(),
            )],
        })?;
        d.chart(
            "contributions",
            svg,
            &format!(
                "Per customer, {} moves the churn score the most (on average {:.3} log-odds); these contributions ({}) are the `top_reasons` of the weekly scores.",
                top.first().map_or("-", |f| f.feature.as_str()),
                top.first().and_then(|f| f.churn_mean_abs_contribution).unwrap_or(f64::NAN),
                if r.contributions_shap {
                    "exact SHAP values by TreeSHAP"
                } else {
                    "path attributions: a model trained before fidelis stored its trees' covers"
                }
            ),
        );
    }
    for (i, dep) in r.dependence.iter().enumerate() {
        let svg = chart::line_chart(&LineChart {
            title: format!("SHAP dependence: {}", dep.feature),
            x_label: dep.feature.clone(),
            y_label: "SHAP value (churn log-odds)".into(),
            lines: vec![Line::new("", dep.points.clone(), 0).scatter()],
            hlines: vec![HLine { y: 0.0, label: "no effect".into(), color: 5 }],
            ..Default::default()
        })?;
        let raises = dep.points.iter().filter(|p| p.1 > 0.0).count();
        d.chart(
            &format!("dependence-{}", i + 1),
            svg,
            &format!(
                "Each dot is a holdout customer ({} shown): the value of {} and how much it moved that customer's churn log-odds; it raised the score for {} of them.",
                dep.points.len(),
                dep.feature,
                raises
            ),
        );
    }

    // CLV.
    Ok(())
}

fn section_clv(d: &mut Doc, r: &EvaluationReport) -> Result<()> {
    d.section("clv", "Customer lifetime value");
    let svg = chart::bar_chart(&BarChart {
        title: "Predicted vs actual revenue by predicted-CLV decile, holdout".into(),
        x_label: "decile of predicted CLV (1 = highest)".into(),
        y_label: "mean revenue over the horizon".into(),
        categories: r.clv_deciles.iter().map(|c| c.decile.to_string()).collect(),
        series: vec![
            ("predicted".into(), r.clv_deciles.iter().map(|c| c.mean_predicted).collect()),
            ("actual".into(), r.clv_deciles.iter().map(|c| c.mean_actual).collect()),
        ],
        overlay: None,
    })?;
    d.chart(
        "clv_deciles",
        svg,
        &format!(
            "The top predicted decile spent {} on average against {} predicted and brought {} of the holdout revenue.",
            money(r.clv_deciles.first().map_or(f64::NAN, |c| c.mean_actual)),
            money(r.clv_deciles.first().map_or(f64::NAN, |c| c.mean_predicted)),
            pct(r.clv_deciles.first().map_or(f64::NAN, |c| c.revenue_share))
        ),
    );
    let mut cap_lines: Vec<Line> = r
        .revenue_capture
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let name = if c.model.starts_with("oracle") {
                c.model.clone()
            } else {
                format!("{} (Gini {})", c.model, f4(c.metric))
            };
            let l =
                Line::new(name, c.points.clone(), if c.model.starts_with("oracle") { 6 } else { i.min(5) });
            if c.model.starts_with("oracle") {
                l.dashed()
            } else {
                l
            }
        })
        .collect();
    cap_lines.push(Line::new("", vec![(0.0, 0.0), (1.0, 1.0)], 6).dashed());
    let svg = chart::line_chart(&LineChart {
        title: "Revenue capture, holdout".into(),
        x_label: "share of customers, highest predicted CLV first".into(),
        y_label: "share of realized revenue".into(),
        x: Some(0.0..1.0),
        lines: cap_lines,
        legend_low: true,
        ..LineChart::default()
    })?;
    d.chart(
        "revenue_capture",
        svg,
        &format!(
            "The 10% of customers with the highest predicted CLV brought {} of the holdout revenue (normalized Gini {}; 1 = the oracle ordering).",
            pct(r.clv.top10_revenue_share),
            f4(r.clv.normalized_gini)
        ),
    );
    d.table(
        &["decile", "customers", "mean predicted", "mean actual", "revenue share"],
        &r.clv_deciles
            .iter()
            .map(|c| {
                vec![
                    c.decile.to_string(),
                    int(c.customers as i64),
                    money(c.mean_predicted),
                    money(c.mean_actual),
                    pct(c.revenue_share),
                ]
            })
            .collect::<Vec<_>>(),
        None,
    );

    // Comparison.
    Ok(())
}

fn section_comparison(d: &mut Doc, r: &EvaluationReport) -> Result<()> {
    d.section("comparison", "Model comparison");
    let churn = |m: Option<ChurnMetrics>, f: fn(&ChurnMetrics) -> f64| {
        m.as_ref().map_or("-".to_string(), |c| f4(f(c)))
    };
    let clv =
        |m: Option<ClvMetrics>, f: fn(&ClvMetrics) -> f64| m.as_ref().map_or("-".to_string(), |c| f4(f(c)));
    let rows: Vec<Vec<String>> = r
        .comparison
        .iter()
        .map(|m| {
            vec![
                m.model.clone(),
                churn(m.churn_validation, |c| c.roc_auc),
                churn(m.churn_holdout, |c| c.roc_auc),
                churn(m.churn_holdout, |c| c.pr_auc),
                churn(m.churn_holdout, |c| c.brier),
                churn(m.churn_holdout, |c| c.top10_capture),
                clv(m.clv_validation, |c| c.normalized_gini),
                clv(m.clv_holdout, |c| c.normalized_gini),
                clv(m.clv_holdout, |c| c.spearman),
            ]
        })
        .collect();
    d.table(
        &[
            "model",
            "churn AUC (validation)",
            "churn AUC (holdout)",
            "PR AUC",
            "Brier",
            "top-10% capture",
            "CLV Gini (validation)",
            "CLV Gini (holdout)",
            "CLV Spearman",
        ],
        &rows,
        None,
    );
    d.reading("Every model is fitted on the same snapshots and judged on the same holdout customers; the shipped model is chosen before the holdout is looked at (next section).");

    // Candidates.
    section_candidates(d, r);
    section_champion(d, r);
    Ok(())
}

/// The candidates and how the shipped ones were chosen (models with candidates only).
fn section_candidates(d: &mut Doc, r: &EvaluationReport) {
    let c = &r.candidates;
    if !c.churn.is_empty() {
        d.section("candidates", "Candidates and the choice");
        d.para(&format!("Chosen on {}. Rule: {}.", c.basis, c.rule));
        let mark = |chosen: bool| if chosen { "shipped" } else { "" }.to_string();
        let rows: Vec<Vec<String>> = c
            .rows()
            .into_iter()
            .map(|k| {
                vec![
                    k.task.into(),
                    k.name.into(),
                    opt4(k.choice),
                    opt4(k.standard_error),
                    f4(k.validation),
                    f4(k.holdout),
                    mark(k.chosen),
                ]
            })
            .collect();
        d.table(
            &["task", "candidate", "choice metric (out of time)", "SE vs best", "validation", "holdout", ""],
            &rows,
            None,
        );
        if let Some(line) = c.penalty_line() {
            d.para(&format!("{line}."));
        }
        d.reading("Metrics are ROC AUC for churn (before calibration) and normalized Gini for CLV. Validation favours the GBDT (its tree count is early-stopped there, and its fit labels overlap the validation window), which is why the choice is made on out-of-time predictions instead. \"SE vs best\" is the standard error of the candidate's per-snapshot (or per-fold) difference to the best one: a simpler candidate within it is shipped, since a gain smaller than its own noise does not carry to the next snapshot.");
    }
}

/// This model against the previous one in the models directory.
fn section_champion(d: &mut Doc, r: &EvaluationReport) {
    match &r.previous {
        Some(p) => {
            d.section("champion", "Champion vs challenger");
            let rows = vec![
                vec!["model".into(), p.model_id.clone(), r.model_id.clone()],
                vec![
                    "holdout snapshot".into(),
                    p.holdout_snapshot.to_string(),
                    r.holdout_snapshot.to_string(),
                ],
                vec!["churn ROC AUC".into(), f4(p.churn_holdout.roc_auc), f4(r.churn.roc_auc)],
                vec!["churn PR AUC".into(), f4(p.churn_holdout.pr_auc), f4(r.churn.pr_auc)],
                vec!["churn Brier".into(), f4(p.churn_holdout.brier), f4(r.churn.brier)],
                vec![
                    "CLV normalized Gini".into(),
                    f4(p.clv_holdout.normalized_gini),
                    f4(r.clv.normalized_gini),
                ],
                vec!["threshold".into(), opt4(p.threshold), opt4(r.decision.threshold)],
                vec![
                    "holdout net value".into(),
                    money(p.holdout_net_value),
                    money(r.decision.holdout.net_value),
                ],
            ];
            d.table(&["", "previous (champion)", "this model (challenger)"], &rows, None);
            let same = p.holdout_snapshot == r.holdout_snapshot;
            d.reading(&format!(
                "Churn ROC AUC {} by {:.4}{}",
                if r.churn.roc_auc >= p.churn_holdout.roc_auc { "up" } else { "down" },
                (r.churn.roc_auc - p.churn_holdout.roc_auc).abs(),
                if same {
                    " on the same holdout snapshot."
                } else {
                    "; the holdout snapshots differ, so part of the change is the period, not the model."
                }
            ));
        }
        None => {
            d.section("champion", "Champion vs challenger");
            d.para("No earlier model in this models directory: this is the first.");
        }
    }
}

/// Evaluate the model in `model_dir` and write `reports_dir/<model_id>/evaluation.*`.
pub fn write_evaluation(model_dir: &Path, models_dir: &Path, reports_dir: &Path) -> Result<PathBuf> {
    let report = evaluate(model_dir, models_dir)?;
    let doc = render(&report)?;
    super::write(&reports_dir.join(&report.model_id), "evaluation", &doc, &report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_sentences_say_what_their_numbers_show() {
        let same = calibration_sentence("platt", 0.025_91, 0.025_93);
        assert!(same.contains("unchanged") && !same.contains("worsened"), "{same}");
        assert!(calibration_sentence("platt", 0.03, 0.02).contains("improved"));
        assert!(calibration_sentence("isotonic", 0.02, 0.03).contains("worsened"));
        let none = calibration_sentence("none", 0.0259, 0.0259);
        assert!(none.starts_with("No calibrator is applied") && !none.contains("->"), "{none}");
        let level = baseline_sentence(0.81234, "bgnbd", 0.81233);
        assert!(level.contains("level with") && !level.contains("0.0000"), "{level}");
        assert!(baseline_sentence(0.82, "forest", 0.80)
            .contains("ahead of the best baseline (forest, 80.0%) by 0.0200"));
        assert!(baseline_sentence(0.79, "forest", 0.80).contains("behind"));
    }

    use super::*;

    #[test]
    fn curves_by_hand() {
        let y = [1.0, 0.0, 1.0, 0.0];
        let s = [0.9, 0.8, 0.8, 0.1];
        // Tie at 0.8 is one step.
        assert_eq!(roc_points(&y, &s), vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        assert_eq!(pr_points(&y, &s), vec![(0.5, 1.0), (1.0, 2.0 / 3.0), (1.0, 0.5)]);
        let g = gains(&[1.0; 10], &[0.5; 10]);
        assert!((g[9].cumulative_capture - 1.0).abs() < 1e-12);
        let bins = reliability(&[0.0, 1.0, 0.0, 1.0], &[0.1, 0.2, 0.3, 0.9], 2);
        assert_eq!(bins.len(), 2);
        assert!((bins[0].mean_probability - 0.15).abs() < 1e-12 && (bins[0].churn_rate - 0.5).abs() < 1e-12);
        let cap = capture_curve(&[10.0, 0.0, 30.0], &[1.0, 2.0, 3.0]);
        assert_eq!(cap.last(), Some(&(1.0, 1.0)));
        assert!((cap[1].1 - 0.75).abs() < 1e-12);
        // ECE from these bins equals the library's ECE.
        let (yy, pp): (Vec<f64>, Vec<f64>) =
            (0..100).map(|i| (f64::from(i % 3 == 0), f64::from(i) / 100.0)).unzip();
        let bins = reliability(&yy, &pp, 10);
        let ece: f64 =
            bins.iter().map(|b| b.customers as f64 / 100.0 * (b.mean_probability - b.churn_rate).abs()).sum();
        assert!((ece - crate::calibration::ece(&yy, &pp, 10)).abs() < 1e-12);
    }
}
