//! Monitor: feature and score drift against the model's reference, realized performance of
//! past runs once their outcome window has closed, and retrain advice.
//!
//! **Reference** (`reference.json`, written by `train`): per feature, for the calibrated
//! churn probability and for the CLV prediction, over the customers eligible at the *end of
//! the training data* (the day after its last transaction), scored by the model: exactly the
//! population the first scoring run after training sees. Drift is then change since the
//! model was trained. Comparing against the training snapshots instead would report the
//! months between the holdout and the data end, and the base's normal ageing over the
//! training window (tenure and lifetime counts grow snapshot after snapshot), as drift.
//! Stored per item: the decile cut points, the share of each bin, the missing (NaN) share,
//! the mean, and 1,000 evenly spaced order statistics (for KS).
//!
//! **PSI** = sum over bins of `(a - e) * ln(a / e)`, with `e` the reference share and `a` the
//! current share of each bin; bins are the reference deciles `(c[i-1], c[i]]` (ties merge
//! cut points, so a discrete feature may have fewer than 10 bins) plus one bin for missing
//! values; a share of 0 is replaced by `1e-4` (PSI_EPS) so an empty bin costs a large but
//! finite amount. Status: `ok` below `psi_warn` (0.1), `warn` up to `psi_alert` (0.25),
//! `alert` above.
//!
//! **KS** = the largest gap between the empirical CDFs of the reference sample and of all
//! current (non-missing) values: the two-sample Kolmogorov-Smirnov statistic, with the
//! reference known to 1/1000 in CDF.
//!
//! **Realized performance**: a run at `R` is mature at `as_of` when `R + horizon <= as_of`
//! (and the data reaches that far). Its outcome: churned = no transaction in
//! `[R, R + horizon)`. Over the whole run: ROC AUC, PR AUC, Brier, top-10% capture (share of
//! the churners inside the run's top-risk segment), churn rate, and the realized net value
//! of the contact flags it wrote, with the decision settings of the model that scored it.
//! Computed once per run: at the first monitor date where it is mature.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate};
use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::artifact;
use crate::config::{Config, MonitorConfig};
use crate::error::{Error, PolarsContext, Result};
use crate::features::{self, FeatureMatrix, FeatureSpec, CUSTOMER};
use crate::ingest;
use crate::lock::RunLock;
use crate::metrics;
use crate::progress::Progress;
use crate::score::{self, LoadedModel, Scored};
use crate::signals::SignalData;
use crate::sink::sql;
use crate::sink::ScoreParquet;
use crate::threshold;
use crate::train::{DecisionArtifact, TrainMetrics};

pub const REFERENCE_FILE: &str = "reference.json";
/// Replaces an empty bin's share in PSI.
pub const PSI_EPS: f64 = 1e-4;
const BINS: usize = 10;
const SAMPLE: usize = 1000;
/// Items of the model's outputs in the reference and the drift table.
pub const CHURN_SCORE: &str = "churn_probability";
pub const CLV_SCORE: &str = "predicted_clv";

/// The reference distribution of one feature or score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub name: String,
    /// `feature` or `score`.
    pub kind: String,
    pub n: usize,
    pub missing_share: f64,
    pub mean: f64,
    /// Inner cut points, strictly increasing; bin i is `(edges[i-1], edges[i]]`.
    pub edges: Vec<f64>,
    /// Share of the non-missing values in each bin (`edges.len() + 1` bins).
    pub shares: Vec<f64>,
    /// Sorted, at most 1,000 evenly spaced order statistics.
    pub sample: Vec<f64>,
}

fn bin_of(edges: &[f64], v: f64) -> usize {
    edges.partition_point(|&e| e < v)
}

fn sorted_present(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_unstable_by(f64::total_cmp);
    v
}

/// Bin shares of the non-missing values, the missing share and the mean of the present ones.
fn shares(edges: &[f64], values: &[f64]) -> (Vec<f64>, f64, f64) {
    let mut counts = vec![0usize; edges.len() + 1];
    let (mut missing, mut sum) = (0usize, 0.0);
    for &v in values {
        if v.is_nan() {
            missing += 1;
        } else {
            counts[bin_of(edges, v)] += 1;
            sum += v;
        }
    }
    let present = values.len() - missing;
    let share = |c: usize| if present == 0 { 0.0 } else { c as f64 / present as f64 };
    let missing_share = if values.is_empty() { 0.0 } else { missing as f64 / values.len() as f64 };
    let mean = if present == 0 { f64::NAN } else { sum / present as f64 };
    (counts.into_iter().map(share).collect(), missing_share, mean)
}

impl Distribution {
    pub fn of(name: &str, kind: &str, values: &[f64]) -> Distribution {
        let sorted = sorted_present(values);
        let n = sorted.len();
        let mut edges: Vec<f64> = Vec::new();
        if n > 0 {
            for k in 1..BINS {
                let e = sorted[(k * n).div_ceil(BINS) - 1];
                if edges.last().is_none_or(|&last| e > last) {
                    edges.push(e);
                }
            }
            // A last cut at the maximum would leave an always-empty top bin.
            if edges.last() == sorted.last() {
                edges.pop();
            }
        }
        let (shares, missing_share, mean) = shares(&edges, values);
        let m = n.min(SAMPLE);
        let sample = (0..m).map(|i| sorted[((2 * i + 1) * n) / (2 * m)]).collect();
        Distribution {
            name: name.into(),
            kind: kind.into(),
            n: values.len(),
            missing_share,
            mean,
            edges,
            shares,
            sample,
        }
    }

    /// Reference shares with the missing bin last (they sum to 1).
    fn with_missing(shares: &[f64], missing: f64) -> Vec<f64> {
        let mut v: Vec<f64> = shares.iter().map(|s| s * (1.0 - missing)).collect();
        v.push(missing);
        v
    }
}

/// Population stability index of `actual` against `expected` shares (same bins).
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(PSI_EPS), a.max(PSI_EPS));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Two-sample Kolmogorov-Smirnov statistic of two sorted samples.
pub fn ks(a: &[f64], b: &[f64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return f64::NAN;
    }
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        let x = if a[i] <= b[j] { a[i] } else { b[j] };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
    }
    d
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Alert,
    /// Reported, no threshold.
    Info,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Alert => "alert",
            Status::Info => "info",
        }
    }

    pub fn of_psi(psi: f64, cfg: &MonitorConfig) -> Status {
        if psi > cfg.psi_alert {
            Status::Alert
        } else if psi >= cfg.psi_warn {
            Status::Warn
        } else {
            Status::Ok
        }
    }
}

/// `reference.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    /// The date the reference population was taken at (the end of the training data).
    pub snapshot: NaiveDate,
    pub rows: usize,
    pub items: Vec<Distribution>,
}

impl Reference {
    /// Reference of the feature columns of `x` and the two model outputs.
    pub fn build(snapshot: NaiveDate, x: &FeatureMatrix, churn: &[f64], clv: &[f64]) -> Reference {
        let mut inputs: Vec<(&str, &str, &[f64])> =
            x.names.iter().enumerate().map(|(c, n)| (n.as_str(), "feature", x.column(c))).collect();
        inputs.push((CHURN_SCORE, "score", churn));
        inputs.push((CLV_SCORE, "score", clv));
        let items = inputs.par_iter().map(|(n, k, v)| Distribution::of(n, k, v)).collect();
        Reference { snapshot, rows: x.rows, items }
    }
}

/// Drift of one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub item: String,
    pub kind: String,
    pub psi: f64,
    pub ks: f64,
    pub missing_reference: f64,
    pub missing_current: f64,
    pub mean_reference: f64,
    pub mean_current: f64,
    pub status: Status,
}

/// Features that grow by one a day for every customer by definition: their drift is
/// reported (PSI, KS, mean) with status `info` and never alerts. Compared as observed, a
/// closed cohort's tenure "drifts" every week; compared net of the elapsed days, every new
/// customer of a growing base does. Neither is a change in behaviour; a real change in the
/// acquisition mix shows in the lifetime and recency features, which do alert.
pub const CLOCK_FEATURES: &[&str] = &["tenure_days"];

/// Drift of every reference item found in `current` (name -> values), in reference order.
pub fn drift(reference: &Reference, current: &BTreeMap<&str, &[f64]>, cfg: &MonitorConfig) -> Vec<Drift> {
    reference
        .items
        .par_iter()
        .filter_map(|r| {
            let values = current.get(r.name.as_str())?;
            let (cur, missing, mean) = shares(&r.edges, values);
            let psi = psi(
                &Distribution::with_missing(&r.shares, r.missing_share),
                &Distribution::with_missing(&cur, missing),
            );
            let ks = ks(&r.sample, &sorted_present(values));
            let status = if CLOCK_FEATURES.contains(&r.name.as_str()) {
                Status::Info
            } else {
                Status::of_psi(psi, cfg)
            };
            Some(Drift {
                item: r.name.clone(),
                kind: r.kind.clone(),
                psi,
                ks,
                missing_reference: r.missing_share,
                missing_current: missing,
                mean_reference: r.mean,
                mean_current: mean,
                status,
            })
        })
        .collect()
}

/// Realized performance of one past run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Realized {
    pub run: NaiveDate,
    pub model_id: String,
    pub customers: usize,
    pub churn_rate: f64,
    pub roc_auc: f64,
    pub pr_auc: f64,
    pub brier: f64,
    pub top10_capture: f64,
    pub contacted: usize,
    pub net_value: f64,
}

fn col_f64(df: &DataFrame, name: &str, ctx: &str) -> Result<Vec<f64>> {
    let c = df.column(name).polars(ctx)?.cast(&DataType::Float64).polars(ctx)?;
    Ok(c.f64().polars(ctx)?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

fn col_bool(df: &DataFrame, name: &str, ctx: &str) -> Result<Vec<bool>> {
    Ok(df.column(name).polars(ctx)?.bool().polars(ctx)?.iter().map(|v| v.unwrap_or(false)).collect())
}

/// Realized metrics of the run `scores` (a run's scores table) given who was active in its
/// outcome window.
pub fn realized(
    run: NaiveDate,
    scores: &DataFrame,
    active: &HashSet<String>,
    decision: &DecisionArtifact,
) -> Result<Realized> {
    let ctx = format!("the scores of the run at {run}");
    let ids = scores.column(CUSTOMER).polars(&ctx)?.str().polars(&ctx)?;
    let y: Vec<f64> =
        ids.iter().map(|id| f64::from(u8::from(!id.is_some_and(|id| active.contains(id))))).collect();
    let p = col_f64(scores, "churn_probability", &ctx)?;
    let clv = col_f64(scores, "predicted_clv", &ctx)?;
    let contact = col_bool(scores, "contact", &ctx)?;
    let top = col_bool(scores, "in_top_decile", &ctx)?;
    let model_id =
        scores.column("model_id").polars(&ctx)?.str().polars(&ctx)?.get(0).unwrap_or_default().to_string();
    let churners = y.iter().sum::<f64>();
    let captured: f64 = y.iter().zip(&top).filter(|(_, &t)| t).map(|(v, _)| v).sum();
    let values = threshold::tp_values(&decision.config, &clv);
    Ok(Realized {
        run,
        model_id,
        customers: y.len(),
        churn_rate: metrics::mean(&y),
        roc_auc: metrics::roc_auc(&y, &p),
        pr_auc: metrics::average_precision(&y, &p),
        brier: metrics::brier(&y, &p),
        top10_capture: if churners > 0.0 { captured / churners } else { f64::NAN },
        contacted: contact.iter().filter(|&&c| c).count(),
        net_value: threshold::net_value_of(&contact, &y, &values, &decision.config),
    })
}

/// Customers with at least one transaction in `[from, to)`.
pub fn active_between(tx: &DataFrame, from: NaiveDate, to: NaiveDate) -> Result<HashSet<String>> {
    let at = |d: NaiveDate| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis();
    let ctx = "customers active in an outcome window";
    let ids = tx
        .clone()
        .lazy()
        .filter(
            col("ts")
                .cast(DataType::Int64)
                .gt_eq(lit(at(from)))
                .and(col("ts").cast(DataType::Int64).lt(lit(at(to)))),
        )
        .select([col(CUSTOMER)])
        .unique(None, UniqueKeepStrategy::Any)
        .collect()
        .polars(ctx)?;
    let ids = ids.column(CUSTOMER).polars(ctx)?.str().polars(ctx)?;
    Ok(ids.iter().flatten().map(str::to_string).collect())
}

/// One monitoring result: what goes into the history and what is printed.
#[derive(Debug, Clone)]
pub struct MonitorReport {
    pub as_of: NaiveDate,
    pub model_id: String,
    pub drift: Vec<Drift>,
    /// Runs that matured at this as_of (computed now).
    pub realized: Vec<Realized>,
    /// Realized AUC of every mature run so far (history included), oldest first.
    pub auc_history: Vec<(NaiveDate, f64)>,
    pub holdout_auc: f64,
    pub model_age_days: i64,
    pub alerts: Vec<String>,
    pub retrain: bool,
    pub advice: String,
    /// `monitor.auc_drop_alert` in force.
    pub auc_drop: f64,
}

impl MonitorReport {
    pub fn has_alert(&self) -> bool {
        !self.alerts.is_empty()
    }

    /// The history rows of this as_of: one per metric x item.
    pub fn history_frame(&self) -> Result<DataFrame> {
        let mut kind: Vec<&str> = Vec::new();
        let mut item: Vec<String> = Vec::new();
        let mut metric: Vec<&str> = Vec::new();
        let mut value: Vec<f64> = Vec::new();
        let mut status: Vec<&str> = Vec::new();
        let mut push = |k: &'static str, i: &str, m: &'static str, v: f64, s: Status| {
            kind.push(k);
            item.push(i.to_string());
            metric.push(m);
            value.push(v);
            status.push(s.as_str());
        };
        for d in &self.drift {
            push("drift", &d.item, "psi", d.psi, d.status);
            push("drift", &d.item, "ks", d.ks, Status::Info);
            push(
                "drift",
                &d.item,
                "missing_share_change",
                d.missing_current - d.missing_reference,
                Status::Info,
            );
            push("drift", &d.item, "mean", d.mean_current, Status::Info);
        }
        for r in &self.realized {
            let run = r.run.to_string();
            let auc_status = if auc_dropped(r.roc_auc, self.holdout_auc, self.auc_drop) {
                Status::Alert
            } else {
                Status::Ok
            };
            push("realized", &run, "roc_auc", r.roc_auc, auc_status);
            push("realized", &run, "pr_auc", r.pr_auc, Status::Info);
            push("realized", &run, "brier", r.brier, Status::Info);
            push("realized", &run, "top10_capture", r.top10_capture, Status::Info);
            push("realized", &run, "net_value", r.net_value, Status::Info);
            push("realized", &run, "churn_rate", r.churn_rate, Status::Info);
            push("realized", &run, "customers", r.customers as f64, Status::Info);
        }
        push("model", "model", "age_days", self.model_age_days as f64, Status::Info);
        push("model", "model", "holdout_roc_auc", self.holdout_auc, Status::Info);
        let retrain_status = if self.retrain { Status::Warn } else { Status::Ok };
        push("model", "model", "retrain", f64::from(u8::from(self.retrain)), retrain_status);
        let n = kind.len();
        let as_of = Column::new("as_of".into(), vec![features::epoch_day(self.as_of); n])
            .cast(&DataType::Date)
            .polars("as_of column")?;
        DataFrame::new_infer_height(vec![
            as_of,
            Column::new("model_id".into(), vec![self.model_id.as_str(); n]),
            Column::new("kind".into(), kind),
            Column::new("item".into(), item),
            Column::new("metric".into(), metric),
            Column::new("value".into(), value),
            Column::new("status".into(), status),
        ])
        .polars("assembling the monitoring rows")
    }
}

fn auc_dropped(auc: f64, holdout: f64, drop: f64) -> bool {
    auc.is_finite() && auc < holdout - drop
}

/// The monitoring history: `<output.dir>/monitoring/metrics_history.parquet`.
pub struct History {
    pub path: PathBuf,
}

pub const HISTORY_FILE: &str = "metrics_history.parquet";

impl History {
    pub fn new(output_dir: &Path) -> History {
        History { path: output_dir.join("monitoring").join(HISTORY_FILE) }
    }

    /// The whole history (empty frame when there is none yet).
    pub fn read(&self) -> Result<Option<DataFrame>> {
        if !self.path.is_file() {
            return Ok(None);
        }
        crate::sink::read_parquet(&self.path).map(Some)
    }

    /// Replace the rows of `as_of` with `rows` (written to a temp file and renamed).
    pub fn replace(&self, as_of: NaiveDate, rows: &DataFrame) -> Result<()> {
        let ctx = format!("updating {}", self.path.display());
        let mut all = match self.read()? {
            Some(old) => {
                let day = features::epoch_day(as_of);
                let kept = old
                    .lazy()
                    .filter(col("as_of").cast(DataType::Int32).neq(lit(day)))
                    .collect()
                    .polars(&ctx)?;
                concat([kept.lazy(), rows.clone().lazy()], UnionArgs::default())
                    .polars(&ctx)?
                    .sort(["as_of"], SortMultipleOptions::default().with_maintain_order(true))
                    .collect()
                    .polars(&ctx)?
            }
            None => rows.clone(),
        };
        crate::sink::write_parquet_atomic(&mut all, &self.path)
    }

    /// Realized ROC AUC per run recorded at a monitor date other than `as_of`.
    pub fn realized_auc(&self, except: NaiveDate) -> Result<BTreeMap<NaiveDate, f64>> {
        let mut out = BTreeMap::new();
        let Some(df) = self.read()? else { return Ok(out) };
        let ctx = format!("reading {}", self.path.display());
        let df = df
            .lazy()
            .filter(
                col("kind")
                    .eq(lit("realized"))
                    .and(col("metric").eq(lit("roc_auc")))
                    .and(col("as_of").cast(DataType::Int32).neq(lit(features::epoch_day(except)))),
            )
            .collect()
            .polars(&ctx)?;
        let items = df.column("item").polars(&ctx)?.str().polars(&ctx)?;
        let values = df.column("value").polars(&ctx)?.f64().polars(&ctx)?;
        for (i, v) in items.iter().zip(values.iter()) {
            if let (Some(d), Some(v)) = (i.and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()), v) {
                out.insert(d, v);
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Default)]
pub struct MonitorOptions {
    pub as_of: Option<NaiveDate>,
    pub model: Option<String>,
}

/// Everything `monitor` needs that a caller may already hold.
#[derive(Clone, Copy)]
pub struct MonitorInputs<'a> {
    pub model: &'a LoadedModel,
    pub tx: &'a DataFrame,
    pub signals: &'a SignalData,
    /// Day after the last transaction: outcome windows must end by then.
    pub data_end: NaiveDate,
    /// Features and predictions already made at the monitored date (by the weekly batch).
    pub scored: Option<&'a Scored>,
}

/// Features and predictions of every customer eligible at `as_of`.
fn predict_at(model: &LoadedModel, tx: &DataFrame, signals: &SignalData, as_of: NaiveDate) -> Result<Scored> {
    let spec = FeatureSpec::from_config(&model.info.config);
    let names = score::check_features(model, &spec)?;
    let daily = features::daily_activity(tx)?;
    let mut frame = features::features_with(&daily, &spec, &[as_of], model.probabilistic()?)?;
    crate::signals::append(&mut frame, &model.info.signals, signals)?;
    if frame.height() == 0 {
        return Err(Error::Data(format!("no customer is eligible at {as_of}: nothing to monitor")));
    }
    let x = FeatureMatrix::from_frame(&frame, &names)?;
    let churn_probability = model.calibrator.apply_all(&model.churn.predict(&x));
    let predicted_clv = model.clv.predict(&x);
    Ok(Scored { as_of, x, churn_probability, predicted_clv })
}

/// Load the reference of a model directory.
pub fn load_reference(dir: &Path) -> Result<Reference> {
    let path = dir.join(REFERENCE_FILE);
    if !path.is_file() {
        return Err(Error::Artifact {
            path,
            message: "the model has no drift reference (trained by an older fidelis); retrain it".into(),
        });
    }
    artifact::read_json(&path)
}

/// Monitor at `as_of` (drift, realized performance, advice) and write the history
/// (Parquet + every SQL sink). The caller holds the output lock.
pub fn monitor_at(
    cfg: &Config,
    inputs: &MonitorInputs,
    as_of: NaiveDate,
    progress: &Progress,
) -> Result<MonitorReport> {
    let model = inputs.model;
    let mcfg = &cfg.monitor;
    let reference = load_reference(&model.dir)?;
    let train_metrics: TrainMetrics = crate::train::load_metrics(&model.dir)?;
    let holdout_auc = train_metrics.churn.holdout.roc_auc;

    let drift = progress.step("drift", &format!("drift at {as_of}"), || -> Result<Vec<Drift>> {
        let computed;
        let s = match inputs.scored.filter(|s| s.as_of == as_of) {
            Some(s) => s,
            None => {
                computed = predict_at(model, inputs.tx, inputs.signals, as_of)?;
                &computed
            }
        };
        let x = &s.x;
        let mut current: BTreeMap<&str, &[f64]> =
            x.names.iter().enumerate().map(|(c, n)| (n.as_str(), x.column(c))).collect();
        current.insert(CHURN_SCORE, &s.churn_probability);
        current.insert(CLV_SCORE, &s.predicted_clv);
        Ok(drift(&reference, &current, mcfg))
    })?;

    let out_dir = Path::new(&cfg.output.dir);
    let history = History::new(out_dir);
    let mut auc_history = history.realized_auc(as_of)?;
    let horizon = Duration::days(i64::from(model.info.config.snapshots.horizon_days));
    let parquet = ScoreParquet::new(out_dir);
    let mut realized_now = Vec::new();
    progress.step("realized", "realized performance of matured runs", || -> Result<()> {
        for run in parquet.run_dates()? {
            if auc_history.contains_key(&run) || run + horizon > as_of || run + horizon > inputs.data_end {
                continue;
            }
            let scores = parquet.read_scores(run)?;
            let active = active_between(inputs.tx, run, run + horizon)?;
            let decision = run_decision(cfg, &scores, model)?;
            let r = realized(run, &scores, &active, &decision)?;
            auc_history.insert(run, r.roc_auc);
            realized_now.push(r);
        }
        Ok(())
    })?;

    let model_end = model.info.snapshots.last_ts.date();
    let model_age_days = (as_of - model_end).num_days();
    let mut alerts = Vec::new();
    for d in &drift {
        if d.status == Status::Alert {
            alerts.push(format!(
                "ALERT drift {} {}: PSI {:.3} > {} (KS {:.3}, mean {:.4} -> {:.4})",
                d.kind, d.item, d.psi, mcfg.psi_alert, d.ks, d.mean_reference, d.mean_current
            ));
        }
    }
    for r in &realized_now {
        if auc_dropped(r.roc_auc, holdout_auc, mcfg.auc_drop_alert) {
            alerts.push(format!(
                "ALERT realized AUC of the run at {}: {:.4}, more than {} below the holdout AUC {:.4}",
                r.run, r.roc_auc, mcfg.auc_drop_alert, holdout_auc
            ));
        }
    }
    let too_old = model_age_days > mcfg.max_model_age_days;
    let retrain = !alerts.is_empty() || too_old;
    let mut reasons = Vec::new();
    if !alerts.is_empty() {
        reasons.push(format!("{} alert(s)", alerts.len()));
    }
    if too_old {
        reasons.push(format!(
            "the model's data ends {model_age_days} days before {as_of} (max_model_age_days {})",
            mcfg.max_model_age_days
        ));
    }
    let advice = if retrain {
        format!("retrain: yes ({})", reasons.join("; "))
    } else {
        format!(
            "retrain: no (no alert; the model's data ends {model_age_days} days before {as_of}, limit {})",
            mcfg.max_model_age_days
        )
    };
    let report = MonitorReport {
        as_of,
        model_id: model.info.model_id.clone(),
        drift,
        realized: realized_now,
        auc_history: auc_history.into_iter().collect(),
        holdout_auc,
        model_age_days,
        alerts,
        retrain,
        advice,
        auc_drop: mcfg.auc_drop_alert,
    };

    let rows = report.history_frame()?;
    progress.step("history", "writing the monitoring history", || history.replace(as_of, &rows))?;
    let tables = cfg.output.sql_tables();
    for target in cfg.output.sql_targets()? {
        progress.step("sql", &format!("writing {}", target.display()), || {
            sql::replace_as_of(&target, &tables, &tables.monitoring, &rows, sql::MONITORING_KEY, as_of)
        })?;
    }
    Ok(report)
}

/// The decision settings of the model that scored a run (the current model's when that
/// model is no longer in the models directory).
fn run_decision(cfg: &Config, scores: &DataFrame, current: &LoadedModel) -> Result<DecisionArtifact> {
    let id =
        scores.column("model_id").ok().and_then(|c| c.str().ok().and_then(|s| s.get(0).map(str::to_string)));
    if let Some(id) = id.filter(|id| *id != current.info.model_id) {
        let path = cfg.models_dir().join(&id).join("decision.json");
        if path.is_file() {
            return artifact::read_json(&path);
        }
    }
    Ok(current.decision.clone())
}

/// `fidelis monitor`: load, lock, monitor at `as_of` (default: the day after the last
/// transaction).
pub fn run_monitor(cfg: &Config, opts: &MonitorOptions, progress: &Progress) -> Result<MonitorReport> {
    let s = score::open_session(cfg, opts.model.as_deref(), progress)?;
    let inputs = MonitorInputs {
        model: &s.model,
        tx: &s.tx.frame,
        signals: &s.signals,
        data_end: s.data_end,
        scored: None,
    };
    monitor_at(cfg, &inputs, opts.as_of.unwrap_or(s.data_end), progress)
}

#[derive(Debug, Clone)]
pub struct BacktestOptions {
    pub from: NaiveDate,
    /// Last run date; default: the last date whose outcome window the data covers.
    pub to: Option<NaiveDate>,
    pub every_days: i64,
    /// Output directory; default `<output.dir>/backtest`.
    pub out: Option<PathBuf>,
}

pub struct BacktestOutcome {
    pub model_id: String,
    pub out_dir: PathBuf,
    /// One report per run date, then the closing pass at the end of the data.
    pub reports: Vec<MonitorReport>,
    pub scored: Vec<(NaiveDate, usize)>,
}

/// `fidelis backtest`: train one model on the transactions before `from`, then replay the
/// weekly job (score + monitor) every `every_days` from `from` to `to`, as if it had run
/// then, and close with a monitoring pass at the end of the data, which computes the realized
/// metrics of every run whose outcome window the data covers. Everything goes to `out`
/// (Parquet partitions, the monitoring history, the model under `out/models`); SQL sinks
/// are not written. A rerun replaces the previous backtest in `out`.
pub fn run_backtest(cfg: &Config, opts: &BacktestOptions, progress: &Progress) -> Result<BacktestOutcome> {
    if opts.every_days < 1 {
        return Err(Error::Data(format!("--every must be at least 1 day, got {}", opts.every_days)));
    }
    let out = opts.out.clone().unwrap_or_else(|| Path::new(&cfg.output.dir).join("backtest"));
    if out == Path::new(&cfg.output.dir) {
        return Err(Error::Data(format!(
            "the backtest output {} is the live output directory; choose another --out",
            out.display()
        )));
    }
    let mut bcfg = cfg.clone();
    bcfg.output.dir = out.display().to_string();
    bcfg.output.parquet = true;
    bcfg.output.sql = Vec::new();
    bcfg.output.no_env_sinks = true;
    bcfg.paths.models_dir = out.join("models").display().to_string();
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    let _lock = RunLock::acquire(&out)?;
    for sub in ["scores", "monitoring", "models"] {
        let p = out.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
        }
    }

    let trained = crate::train::train_until(&bcfg, Some(opts.from), progress)?;
    let model = score::load_model(&bcfg.models_dir(), Some(&trained.model_id))?;
    let tx = progress.step("ingest", "reading and validating transactions", || {
        ingest::load_transactions(&cfg.input.transactions)
    })?;
    let data_end = score::default_as_of(&tx.frame)?;
    let horizon = Duration::days(i64::from(model.info.config.snapshots.horizon_days));
    let to = opts.to.unwrap_or(data_end - horizon);
    if to < opts.from {
        return Err(Error::Data(format!(
            "nothing to replay: --to {to} is before --from {} (by default --to is the last date \
             whose {}-day outcome window the data covers)",
            opts.from,
            horizon.num_days()
        )));
    }
    let signals = SignalData::load(cfg)?;
    let inputs = MonitorInputs { model: &model, tx: &tx.frame, signals: &signals, data_end, scored: None };
    let quiet = Progress::hidden();
    let (mut reports, mut scored) = (Vec::new(), Vec::new());
    let mut d = opts.from;
    while d <= to {
        let batch = progress.step("replay", &format!("replaying the weekly job at {d}"), || {
            score::score_and_write(&bcfg, &model, &tx.frame, &signals, d, &quiet)
        })?;
        scored.push((d, batch.summary.scored));
        let inputs = MonitorInputs { scored: Some(&batch.scored), ..inputs };
        reports.push(monitor_at(&bcfg, &inputs, d, &quiet)?);
        d += Duration::days(opts.every_days);
    }
    if data_end > to {
        reports.push(progress.step("close", "closing pass at the end of the data", || {
            monitor_at(&bcfg, &inputs, data_end, &quiet)
        })?);
    }
    Ok(BacktestOutcome { model_id: trained.model_id, out_dir: out, reports, scored })
}

/// The backtest table: per replayed date, customers scored, drift, alerts, and the run's
/// realized AUC (known at the end).
pub fn backtest_summary(b: &BacktestOutcome) -> String {
    let last = b.reports.last();
    let auc: BTreeMap<NaiveDate, f64> =
        last.map(|r| r.auc_history.iter().copied().collect()).unwrap_or_default();
    let holdout = last.map_or(f64::NAN, |r| r.holdout_auc);
    let mut out = format!(
        "backtest with model {} (trained on data before the first date; holdout AUC {holdout:.4})\n",
        b.model_id
    );
    out.push_str(&format!(
        "{:<12} {:>9} {:>9} {:>6} {:>6}  {:<24} {:>12}\n",
        "as_of", "scored", "max PSI", "warn", "alert", "most drifted", "realized AUC"
    ));
    for (r, (d, n)) in b.reports.iter().zip(&b.scored) {
        let worst = r.drift.iter().max_by(|a, c| a.psi.total_cmp(&c.psi));
        let count = |s: Status| r.drift.iter().filter(|x| x.status == s).count();
        let realized = auc.get(d).map_or("-".to_string(), |a| format!("{a:.4}"));
        out.push_str(&format!(
            "{:<12} {:>9} {:>9.4} {:>6} {:>6}  {:<24} {:>12}\n",
            d.to_string(),
            n,
            worst.map_or(f64::NAN, |w| w.psi),
            count(Status::Warn),
            count(Status::Alert),
            worst.map_or("-", |w| w.item.as_str()),
            realized
        ));
    }
    let alerts: usize = b.reports.iter().map(|r| r.alerts.len()).sum();
    out.push_str(&format!(
        "{alerts} alert line(s) over {} monitoring passes; history in {}",
        b.reports.len(),
        b.out_dir.join("monitoring").join(HISTORY_FILE).display()
    ));
    out
}

/// The printed summary: one line per alert, the drift table, realized AUC, advice.
pub fn summary(r: &MonitorReport) -> String {
    let mut out = format!("monitoring at {} with model {}\n", r.as_of, r.model_id);
    let count = |s: Status| r.drift.iter().filter(|d| d.status == s).count();
    out.push_str(&format!(
        "drift: {} items, {} ok, {} warn, {} alert\n",
        r.drift.len(),
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Alert)
    ));
    let mut worst: Vec<&Drift> = r.drift.iter().collect();
    worst.sort_by(|a, b| b.psi.total_cmp(&a.psi));
    out.push_str(&format!("  {:<24} {:>8} {:>8}  {}\n", "item (highest PSI first)", "PSI", "KS", "status"));
    for d in worst.iter().take(5) {
        out.push_str(&format!("  {:<24} {:>8.4} {:>8.4}  {}\n", d.item, d.psi, d.ks, d.status.as_str()));
    }
    if r.auc_history.is_empty() {
        out.push_str("realized AUC: no run has a closed outcome window yet\n");
    } else {
        let shown: Vec<String> =
            r.auc_history.iter().rev().take(6).rev().map(|(d, a)| format!("{d} {a:.4}")).collect();
        out.push_str(&format!(
            "realized AUC by run (holdout {:.4}): {}{}\n",
            r.holdout_auc,
            if r.auc_history.len() > 6 { "... " } else { "" },
            shown.join(", ")
        ));
    }
    for a in &r.alerts {
        out.push_str(a);
        out.push('\n');
    }
    out.push_str(&r.advice);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn psi_hand_computed() {
        // (0.3-0.2) ln(0.3/0.2) + (0.5-0.5) ln 1 + (0.2-0.3) ln(0.2/0.3)
        let v = psi(&[0.2, 0.5, 0.3], &[0.3, 0.5, 0.2]);
        let want = 0.1 * (1.5f64).ln() - 0.1 * (2.0f64 / 3.0).ln();
        assert!((v - want).abs() < 1e-12, "{v} vs {want}");
        // An empty bin counts as PSI_EPS.
        let v = psi(&[0.5, 0.5], &[1.0, 0.0]);
        let want = 0.5 * (1.0f64 / 0.5).ln() + (PSI_EPS - 0.5) * (PSI_EPS / 0.5).ln();
        assert!((v - want).abs() < 1e-12);
    }

    #[test]
    fn ks_hand_computed() {
        // CDFs at 1, 2, 3, 4: a 1/2, 1, 1, 1; b 0, 0, 1/2, 1 -> largest gap 1.
        assert_eq!(ks(&[1.0, 2.0], &[3.0, 4.0]), 1.0);
        // a = {1, 2, 3}, b = {2, 4}: at 1: 1/3 vs 0; at 2: 2/3 vs 1/2; at 3: 1 vs 1/2 -> 0.5.
        assert!((ks(&[1.0, 2.0, 3.0], &[2.0, 4.0]) - 0.5).abs() < 1e-12);
        assert_eq!(ks(&[1.0, 1.0, 2.0], &[1.0, 1.0, 2.0]), 0.0);
    }

    #[test]
    fn deciles_ties_and_missing() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let d = Distribution::of("x", "feature", &v);
        assert_eq!(d.edges, vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0]);
        assert!(d.shares.iter().all(|&s| (s - 0.1).abs() < 1e-12), "{:?}", d.shares);
        assert_eq!(d.sample.len(), 100);
        // A 0/1 feature: one cut point, two bins; missing values are their own share.
        let b = [0.0, 0.0, 0.0, 1.0, f64::NAN];
        let d = Distribution::of("b", "feature", &b);
        assert_eq!(d.edges, vec![0.0]);
        assert_eq!(d.shares, vec![0.75, 0.25]);
        assert!((d.missing_share - 0.2).abs() < 1e-12);
        // A constant: no cut point, one bin.
        assert!(Distribution::of("c", "feature", &[3.0; 7]).edges.is_empty());
    }

    fn reference_of(values: &[f64]) -> Reference {
        let x = FeatureMatrix { names: vec!["f".into()], rows: values.len(), data: values.to_vec() };
        Reference::build(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(), &x, values, values)
    }

    #[test]
    fn a_sample_against_itself_is_stable_and_a_shift_alerts() {
        let mut r = Rng::new(3);
        let base: Vec<f64> = (0..20_000).map(|_| r.gamma(2.0, 1.0)).collect();
        let reference = reference_of(&base);
        let cfg = MonitorConfig::default();
        let same = drift(&reference, &BTreeMap::from([("f", base.as_slice())]), &cfg);
        assert_eq!(same.len(), 1);
        assert!(same[0].psi.abs() < 1e-12 && same[0].status == Status::Ok, "{same:?}");
        assert!(same[0].ks < 0.002, "{same:?}");
        // A fresh sample of the same distribution stays ok.
        let fresh: Vec<f64> = (0..20_000).map(|_| r.gamma(2.0, 1.0)).collect();
        let d = drift(&reference, &BTreeMap::from([("f", fresh.as_slice())]), &cfg);
        assert!(d[0].psi < 0.01 && d[0].status == Status::Ok, "{d:?}");
        // Every value x 1.5: alert.
        let shifted: Vec<f64> = fresh.iter().map(|v| v * 1.5).collect();
        let d = drift(&reference, &BTreeMap::from([("f", shifted.as_slice())]), &cfg);
        assert!(d[0].psi > 0.25 && d[0].status == Status::Alert, "{d:?}");
        assert!(d[0].ks > 0.1, "{d:?}");
        // Items the current data lacks are left out, not invented.
        let d = drift(&reference, &BTreeMap::from([(CHURN_SCORE, base.as_slice())]), &cfg);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].item, CHURN_SCORE);
    }

    #[test]
    fn tenure_drift_is_reported_but_never_alerts() {
        // A closed cohort 70 days later: everyone's tenure is 70 days longer.
        let mut r = Rng::new(8);
        let tenure: Vec<f64> = (0..5000).map(|_| (r.uniform() * 90.0).floor()).collect();
        let x = FeatureMatrix { names: vec!["tenure_days".into()], rows: tenure.len(), data: tenure.clone() };
        let reference = Reference::build(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(), &x, &tenure, &tenure);
        let later: Vec<f64> = tenure.iter().map(|t| t + 70.0).collect();
        let cfg = MonitorConfig::default();
        let d = drift(&reference, &BTreeMap::from([("tenure_days", later.as_slice())]), &cfg);
        assert!(d[0].psi > 0.25 && d[0].status == Status::Info, "{d:?}");
        assert!((d[0].mean_current - d[0].mean_reference - 70.0).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn statuses_follow_the_thresholds() {
        let cfg = MonitorConfig::default();
        assert_eq!(Status::of_psi(0.05, &cfg), Status::Ok);
        assert_eq!(Status::of_psi(0.1, &cfg), Status::Warn);
        assert_eq!(Status::of_psi(0.25, &cfg), Status::Warn);
        assert_eq!(Status::of_psi(0.26, &cfg), Status::Alert);
    }
}
