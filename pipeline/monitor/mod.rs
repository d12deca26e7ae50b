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

pub mod estimate;
pub use estimate::{EstimateCounts, Estimated};

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::activity::subscriptions::{Movement, RevenueKpis};
use crate::config::{DecisionConfig, MonitorConfig};
use crate::error::{Error, PolarsContext, Result};
use crate::experiment::{Effect, FirstEffects, Group, Outcome, RunEffect, FIRST, POOLED};
use crate::features::{Daily, FeatureMatrix};
use crate::math::ExactSum;
use crate::metrics;
use crate::schema::{self, CHURN_SCORE, CLV_SCORE, CUSTOMER};
use crate::threshold;

/// Replaces an empty bin's share in PSI.
pub const PSI_EPS: f64 = 1e-4;
const BINS: usize = 10;
const SAMPLE: usize = 1000;

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

    /// The status a history row records (`info` for anything else).
    pub fn parse(s: &str) -> Status {
        match s {
            "ok" => Status::Ok,
            "warn" => Status::Warn,
            "alert" => Status::Alert,
            _ => Status::Info,
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

/// What drift needs of the current values of one item, as counts that add up across any
/// split of the customers (buckets on a cluster) to exactly the counts of the whole: per
/// reference bin, the missing values, and for each distinct point `s` of the reference sample
/// how many values are `<= s` and `< s` (the empirical CDF at and just before it, which is
/// all the two-sample KS against that sample needs). The sum is for the mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftCounts {
    pub item: String,
    pub bins: Vec<u64>,
    pub missing: u64,
    pub at_or_below: Vec<u64>,
    pub below: Vec<u64>,
    pub sum: ExactSum,
}

impl DriftCounts {
    /// Counts of `values` against the reference `r`.
    pub fn of(r: &Distribution, values: &[f64]) -> DriftCounts {
        let points = distinct(&r.sample);
        let mut bins = vec![0u64; r.edges.len() + 1];
        // Values by their place among the sample points: `place[k]` = values in
        // (points[k-1], points[k]) for k < m, `exact[k]` = values equal to points[k].
        let (mut place, mut exact) = (vec![0u64; points.len() + 1], vec![0u64; points.len()]);
        let (mut missing, mut sum) = (0u64, ExactSum::default());
        for &v in values {
            if v.is_nan() {
                missing += 1;
                continue;
            }
            bins[bin_of(&r.edges, v)] += 1;
            sum.add(v);
            let k = points.partition_point(|&p| p < v);
            if k < points.len() && points[k] == v {
                exact[k] += 1;
            } else {
                place[k] += 1;
            }
        }
        let (mut at_or_below, mut below) =
            (Vec::with_capacity(points.len()), Vec::with_capacity(points.len()));
        let mut running = 0u64;
        for k in 0..points.len() {
            running += place[k];
            below.push(running);
            running += exact[k];
            at_or_below.push(running);
        }
        DriftCounts { item: r.name.clone(), bins, missing, at_or_below, below, sum }
    }

    /// The counts of two disjoint sets of customers together.
    pub fn merge(&mut self, other: &DriftCounts) {
        let add = |a: &mut Vec<u64>, b: &[u64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.bins, &other.bins);
        add(&mut self.at_or_below, &other.at_or_below);
        add(&mut self.below, &other.below);
        self.missing += other.missing;
        self.sum.merge(&other.sum);
    }
}

/// The distinct values of a sorted sample.
fn distinct(sorted: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = Vec::with_capacity(sorted.len());
    for &x in sorted {
        if v.last() != Some(&x) {
            v.push(x);
        }
    }
    v
}

/// Drift of one item from its counts: PSI over the reference bins (and the missing bin), KS
/// between the reference sample and the current values, the means and missing shares.
pub fn drift_of(r: &Distribution, c: &DriftCounts, cfg: &MonitorConfig) -> Drift {
    let present = c.bins.iter().sum::<u64>();
    let n = present + c.missing;
    let share = |k: u64| if present == 0 { 0.0 } else { k as f64 / present as f64 };
    let cur: Vec<f64> = c.bins.iter().map(|&k| share(k)).collect();
    let missing = if n == 0 { 0.0 } else { c.missing as f64 / n as f64 };
    let psi = psi(
        &Distribution::with_missing(&r.shares, r.missing_share),
        &Distribution::with_missing(&cur, missing),
    );
    let ks = ks_of_counts(&r.sample, c, present);
    let status =
        if CLOCK_FEATURES.contains(&r.name.as_str()) { Status::Info } else { Status::of_psi(psi, cfg) };
    Drift {
        item: r.name.clone(),
        kind: r.kind.clone(),
        psi,
        ks,
        missing_reference: r.missing_share,
        missing_current: missing,
        mean_reference: r.mean,
        mean_current: if present == 0 { f64::NAN } else { c.sum.value() / present as f64 },
        status,
    }
}

/// The two-sample KS statistic of the sorted reference `sample` and the current values,
/// from their counts at and below each distinct sample point. Between two sample points the
/// reference CDF is flat and the current one rises, so the largest gap is at a sample point
/// or just before one: the same pairs of CDF values [`ks`] compares, and the same result to
/// the bit.
fn ks_of_counts(sample: &[f64], c: &DriftCounts, present: u64) -> f64 {
    if sample.is_empty() || present == 0 {
        return f64::NAN;
    }
    let points = distinct(sample);
    let (na, nb) = (sample.len() as f64, present as f64);
    let mut d = 0.0f64;
    let mut a_below = 0usize;
    for (k, &p) in points.iter().enumerate() {
        let a_at = a_below + sample[a_below..].iter().take_while(|&&x| x == p).count();
        d = d.max((a_below as f64 / na - c.below[k] as f64 / nb).abs());
        d = d.max((a_at as f64 / na - c.at_or_below[k] as f64 / nb).abs());
        a_below = a_at;
    }
    d
}

/// Drift of every reference item found in `current` (name -> values), in reference order.
pub fn drift(reference: &Reference, current: &BTreeMap<&str, &[f64]>, cfg: &MonitorConfig) -> Vec<Drift> {
    drift_of_parts(reference, &[counts(reference, current)], cfg)
}

/// Counts of every reference item found in `current` (name -> values), in reference order:
/// what one part of the customers (a bucket on a cluster) contributes to [`drift_of_parts`].
pub fn counts(reference: &Reference, current: &BTreeMap<&str, &[f64]>) -> Vec<DriftCounts> {
    reference
        .items
        .par_iter()
        .filter_map(|r| Some(DriftCounts::of(r, current.get(r.name.as_str())?)))
        .collect()
}

/// Drift of every reference item from the counts of disjoint parts of the customers, in
/// reference order: the same as [`drift`] of all their values together. An item missing
/// from any part is left out.
pub fn drift_of_parts(reference: &Reference, parts: &[Vec<DriftCounts>], cfg: &MonitorConfig) -> Vec<Drift> {
    reference
        .items
        .iter()
        .filter_map(|r| {
            let mut total: Option<DriftCounts> = None;
            for part in parts {
                let c = part.iter().find(|c| c.item == r.name)?;
                match total.as_mut() {
                    Some(t) => t.merge(c),
                    None => total = Some(c.clone()),
                }
            }
            Some(drift_of(r, &total?, cfg))
        })
        .collect()
}

/// Realized performance of one past run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Realized {
    pub run: NaiveDate,
    pub model_id: String,
    pub customers: usize,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub churn_rate: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub roc_auc: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub pr_auc: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub brier: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub top10_capture: f64,
    pub contacted: usize,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub net_value: f64,
    /// Churners among the contacted over the contacted, and over every churner.
    #[serde(default = "crate::metrics::nan", with = "crate::metrics::nan_as_null")]
    pub precision: f64,
    #[serde(default = "crate::metrics::nan", with = "crate::metrics::nan_as_null")]
    pub recall: f64,
    /// The measured effect of contacting in this run (its scores have a control group).
    #[serde(default)]
    pub effect: Option<RunEffect>,
}

impl Realized {
    /// ROC AUC, precision, recall and net value: what the run estimated when it was scored.
    pub fn figures(&self) -> estimate::Figures {
        [self.roc_auc, self.precision, self.recall, self.net_value]
    }
}

fn col_f64(df: &DataFrame, name: &str, ctx: &str) -> Result<Vec<f64>> {
    let c = df.column(name).polars(ctx)?.cast(&DataType::Float64).polars(ctx)?;
    Ok(c.f64().polars(ctx)?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

fn col_bool(df: &DataFrame, name: &str, ctx: &str) -> Result<Vec<bool>> {
    Ok(df.column(name).polars(ctx)?.bool().polars(ctx)?.iter().map(|v| v.unwrap_or(false)).collect())
}

/// Realized metrics of the run `scores` (a run's scores table, rows in any order: they are
/// taken in customer order, so that every sum is the same whoever stored them) given each
/// customer's outcome over its outcome window (`outcomes`, [`outcomes_between`]; a customer
/// without one churned and spent nothing): with a control group in the scores, the measured
/// effect of contacting too.
pub fn realized(
    run: NaiveDate,
    scores: &DataFrame,
    outcomes: &Outcomes,
    decision: &DecisionConfig,
) -> Result<Realized> {
    let ctx = format!("the scores of the run at {run}");
    let scores = &scores.sort([CUSTOMER], SortMultipleOptions::default()).polars(&ctx)?;
    let ids = scores.column(CUSTOMER).polars(&ctx)?.str().polars(&ctx)?;
    let y: Vec<f64> = ids
        .iter()
        .map(|id| f64::from(u8::from(id.and_then(|id| outcomes.get(id)).is_none_or(|o| o.churned))))
        .collect();
    let p = col_f64(scores, "churn_probability", &ctx)?;
    let clv = col_f64(scores, "predicted_clv", &ctx)?;
    let contact = col_bool(scores, "contact", &ctx)?;
    let top = col_bool(scores, "in_top_decile", &ctx)?;
    let model_id =
        scores.column("model_id").polars(&ctx)?.str().polars(&ctx)?.get(0).unwrap_or_default().to_string();
    let churners = y.iter().sum::<f64>();
    let captured: f64 = y.iter().zip(&top).filter(|(_, &t)| t).map(|(v, _)| v).sum();
    let values = threshold::tp_values(decision, &p, &clv);
    let [roc_auc, precision, recall, net_value] = estimate::figures(&y, &p, &contact, &values, decision);
    Ok(Realized {
        run,
        model_id,
        customers: y.len(),
        churn_rate: metrics::mean(&y),
        roc_auc,
        pr_auc: metrics::average_precision(&y, &p),
        brier: metrics::brier(&y, &p),
        top10_capture: if churners > 0.0 { captured / churners } else { f64::NAN },
        contacted: contact.iter().filter(|&&c| c).count(),
        net_value,
        precision,
        recall,
        effect: run_effect(scores, &y, outcomes, &threshold::saved_values(decision, &clv), decision, &ctx)?,
    })
}

/// The column of a run's scores, as [`realized`] takes them, that says which customers entered
/// the experiment at this run (no group in any earlier run; see [`crate::experiment::pooled`]).
/// The caller adds it ([`first_in_experiment`]); without it no customer counts as first.
pub const FIRST_IN_EXPERIMENT: &str = "first_in_experiment";

/// The column of a run's scores, as [`realized`] takes them, that says which customers a
/// contact reached after the run (from the contact log, [`with_reached`]); without it the
/// effect has no reach figures.
pub const REACHED: &str = "reached";

/// With a contact log that names channels: the channel of the first contact that reached the
/// customer after the run (null when none did), beside [`REACHED`].
pub const REACHED_CHANNEL: &str = "reached_channel";

/// A run's scores with the [`REACHED`] column: a reached contact of the log in the
/// `window_days` after `run`.
pub fn with_reached(
    scores: &DataFrame,
    contacts: &crate::activity::Contacts,
    run: NaiveDate,
    window_days: i64,
) -> Result<DataFrame> {
    let ctx = "marking the customers a contact reached";
    let end = run + chrono::Duration::days(window_days);
    let ids = scores.column(CUSTOMER).polars(ctx)?.str().polars(ctx)?;
    let first: Vec<Option<Option<&str>>> =
        ids.iter().map(|id| id.and_then(|id| contacts.first_reached(id, run, end))).collect();
    let mut out = scores.clone();
    out.with_column(Column::new(REACHED.into(), first.iter().map(Option::is_some).collect::<Vec<_>>()))
        .polars(ctx)?;
    if !contacts.summary.channels.is_empty() {
        let channel: Vec<Option<&str>> = first.iter().map(|c| c.flatten()).collect();
        out.with_column(Column::new(REACHED_CHANNEL.into(), channel)).polars(ctx)?;
    }
    Ok(out)
}

/// A run's scores with the [`FIRST_IN_EXPERIMENT`] column, given the customers that had a
/// group in an earlier run (`earlier`). Scores without a control group are returned as they are.
pub fn with_first_in_experiment(scores: &DataFrame, earlier: &HashSet<String>) -> Result<DataFrame> {
    let ctx = "marking the customers new to the experiment";
    let Ok(groups) = scores.column(schema::EXPERIMENT_GROUP) else {
        return Ok(scores.clone());
    };
    let groups = groups.cast(&DataType::String).polars(ctx)?;
    let ids = scores.column(CUSTOMER).polars(ctx)?.str().polars(ctx)?;
    let first: Vec<bool> = ids
        .iter()
        .zip(groups.str().polars(ctx)?.iter())
        .map(|(id, g)| g.is_some() && id.is_some_and(|id| !earlier.contains(id)))
        .collect();
    let mut out = scores.clone();
    out.with_column(Column::new(FIRST_IN_EXPERIMENT.into(), first)).polars(ctx)?;
    Ok(out)
}

/// The measured effect of a run whose scores carry `experiment_group` (rows in customer order,
/// `y` their churn, `values` the value of a saved churner of each).
fn run_effect(
    scores: &DataFrame,
    y: &[f64],
    outcomes: &Outcomes,
    values: &[f64],
    decision: &DecisionConfig,
    ctx: &str,
) -> Result<Option<RunEffect>> {
    let Ok(groups) = scores.column(schema::EXPERIMENT_GROUP) else {
        return Ok(None);
    };
    let text = |name: &str| -> Result<Vec<Option<String>>> {
        let c = scores.column(name).polars(ctx)?.cast(&DataType::String).polars(ctx)?;
        Ok(c.str().polars(ctx)?.iter().map(|v| v.map(str::to_string)).collect())
    };
    let groups = groups.cast(&DataType::String).polars(ctx)?;
    let groups = groups.str().polars(ctx)?;
    let (ids, band, playbook) = (text(CUSTOMER)?, text("risk_level")?, text("playbook")?);
    let first = match scores.column(FIRST_IN_EXPERIMENT) {
        Ok(_) => col_bool(scores, FIRST_IN_EXPERIMENT, ctx)?,
        Err(_) => vec![false; y.len()],
    };
    let reached: Option<Vec<bool>> = match scores.column(REACHED) {
        Ok(_) => Some(col_bool(scores, REACHED, ctx)?),
        Err(_) => None,
    };
    let channel = match scores.column(REACHED_CHANNEL) {
        Ok(_) => text(REACHED_CHANNEL)?,
        Err(_) => vec![None; y.len()],
    };
    let rows: Vec<Outcome> = (0..y.len())
        .filter_map(|i| {
            let group = Group::parse(groups.get(i)?)?;
            let id = ids[i].as_deref()?;
            Some(Outcome {
                group,
                churned: y[i] > 0.5,
                revenue: outcomes.get(id).map_or(0.0, |o| o.revenue),
                value: values[i],
                band: band[i].as_deref().unwrap_or_default(),
                playbook: playbook[i].as_deref().unwrap_or_default(),
                first: first[i],
                reached: reached.as_ref().map(|r| r[i]),
                channel: channel[i].as_deref(),
            })
        })
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(RunEffect::of(&rows, decision)))
}

/// What one customer did over a run's outcome window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CustomerOutcome {
    /// Churned as the model defines churn.
    pub churned: bool,
    /// The sum of its amounts there, refunds included.
    pub revenue: f64,
}

/// Outcomes by customer; a customer without one churned and spent nothing.
pub type Outcomes = HashMap<String, CustomerOutcome>;

/// The outcomes over `[from, to)`. Churn as an inactivity (`subscriptions` None): the
/// customers with a transaction there, none churned. As a cancellation: every customer with
/// a transaction or a subscription, churned when it gave notice or its subscription ended
/// unrenewed there ([`Subscriptions::cancels_between`]).
pub fn outcomes_between(
    daily: &Daily,
    subscriptions: Option<&crate::activity::Subscriptions>,
    from: NaiveDate,
    to: NaiveDate,
) -> Outcomes {
    let (from, to) = (schema::epoch_day(from), schema::epoch_day(to));
    let mut out: Outcomes = (0..daily.customers.len())
        .filter_map(|c| {
            let days = daily.days_of(c);
            let first = days.partition_point(|&d| d < from);
            let last = days.partition_point(|&d| d < to);
            let id = &daily.customers[c];
            let churned = match subscriptions {
                Some(s) => s.cancels_between(id, from, to),
                None if first < last => false,
                None => return None,
            };
            let base = daily.start[c];
            let revenue = daily.amount[base + first..base + last].iter().sum();
            Some((id.clone(), CustomerOutcome { churned, revenue }))
        })
        .collect();
    if let Some(s) = subscriptions {
        for id in s.by_customer.keys() {
            if !out.contains_key(id) {
                out.insert(
                    id.clone(),
                    CustomerOutcome { churned: s.cancels_between(id, from, to), revenue: 0.0 },
                );
            }
        }
    }
    out
}

/// One monitoring result: what goes into the history and what is printed.
#[derive(Debug, Clone)]
pub struct MonitorReport {
    pub as_of: NaiveDate,
    pub model_id: String,
    pub drift: Vec<Drift>,
    /// The performance of the run at this as_of estimated from its calibrated probabilities
    /// (None when no run was scored at this as_of).
    pub estimated: Option<Estimated>,
    /// Runs that matured at this as_of (computed now).
    pub realized: Vec<Realized>,
    /// What the runs of `realized` estimated the day they were scored (those that did).
    pub matured_estimates: Vec<Estimated>,
    /// The holdout's ROC AUC estimated the same way (NaN for models trained before it was
    /// recorded: the estimate is then compared with the realized holdout AUC).
    pub holdout_estimated_auc: f64,
    /// Realized AUC of every mature run so far (history included), oldest first.
    pub auc_history: Vec<(NaiveDate, f64)>,
    /// The effect of contacting pooled over every matured run so far (history included).
    pub pooled: Option<PooledEffect>,
    pub holdout_auc: f64,
    pub model_age_days: i64,
    pub alerts: Vec<String>,
    pub retrain: bool,
    pub advice: String,
    /// The thresholds in force (`[monitor]`).
    pub thresholds: MonitorConfig,
    /// MRR, NRR, GRR and the MRR movements at `as_of` (with a subscription table).
    pub revenue: Option<RevenueKpis>,
}

/// What monitoring at one date is computed from (the monitor job gathers it).
pub struct Observed<'a> {
    pub as_of: NaiveDate,
    pub model_id: &'a str,
    pub holdout_auc: f64,
    /// Last day of the model's training data.
    pub model_end: NaiveDate,
    pub drift: Vec<Drift>,
    /// The estimated performance of the run at `as_of`.
    pub estimated: Option<Estimated>,
    /// Runs whose outcome window closed by `as_of`, not yet in the history.
    pub realized: Vec<Realized>,
    /// The estimates recorded for earlier runs (by run).
    pub estimates: BTreeMap<NaiveDate, Estimated>,
    pub holdout_estimated_auc: f64,
    /// Realized AUC of the runs already in the history.
    pub auc_history: BTreeMap<NaiveDate, f64>,
    /// The effect among the customers new to the experiment ([`RunEffect::first`], per band
    /// too) of the runs already in the history.
    pub first_effects: FirstEffects,
    /// The recurring revenue at `as_of` (with a subscription table).
    pub revenue: Option<RevenueKpis>,
}

/// The effect of contacting pooled over the matured runs ([`crate::experiment::pooled`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PooledEffect {
    /// Matured runs with both groups among their new customers.
    pub runs: usize,
    pub effect: Effect,
    /// Per risk band, pooled the same way.
    #[serde(default)]
    pub by_band: Vec<(String, Effect)>,
}

impl PooledEffect {
    /// Pooled over each run's effect among its new customers.
    pub fn of(first: &FirstEffects) -> Option<PooledEffect> {
        let mut strata: BTreeMap<&str, Vec<&Effect>> = BTreeMap::new();
        for ((_, band), e) in first {
            strata.entry(band.as_str()).or_default().push(e);
        }
        let all = strata.remove("")?;
        let effect = crate::experiment::pooled(&all)?;
        let by_band = strata
            .into_iter()
            .filter_map(|(b, v)| Some((b.to_string(), crate::experiment::pooled(&v)?)))
            .collect();
        Some(PooledEffect { runs: all.len(), effect, by_band })
    }
}

/// Alerts and retrain advice from what was observed.
pub fn assess(o: Observed, cfg: &MonitorConfig) -> MonitorReport {
    let mut auc_history = o.auc_history;
    for r in &o.realized {
        auc_history.insert(r.run, r.roc_auc);
    }
    let model_age_days = (o.as_of - o.model_end).num_days();
    let mut first = o.first_effects;
    for r in &o.realized {
        let Some(e) = &r.effect else { continue };
        first.retain(|(run, _), _| *run != r.run);
        if let Some(all) = &e.first {
            first.insert((r.run, String::new()), all.clone());
        }
        for (b, be) in &e.first_by_band {
            first.insert((r.run, b.clone()), be.clone());
        }
    }
    let pooled = PooledEffect::of(&first);
    let mut alerts = alerts(&o.drift, o.realized.iter().map(|r| (r.run, r.roc_auc)), o.holdout_auc, cfg);
    alerts.extend(estimate_alert(o.estimated.as_ref(), o.holdout_auc, o.holdout_estimated_auc, cfg));
    alerts.extend(effect_alerts(&o.realized, pooled.as_ref()));
    let (retrain, advice) = advice(alerts.len(), model_age_days, o.as_of, cfg);
    let matured_estimates = o.realized.iter().filter_map(|r| o.estimates.get(&r.run).cloned()).collect();
    MonitorReport {
        as_of: o.as_of,
        model_id: o.model_id.to_string(),
        drift: o.drift,
        estimated: o.estimated,
        realized: o.realized,
        matured_estimates,
        holdout_estimated_auc: o.holdout_estimated_auc,
        auc_history: auc_history.into_iter().collect(),
        pooled,
        holdout_auc: o.holdout_auc,
        model_age_days,
        alerts,
        retrain,
        advice,
        thresholds: cfg.clone(),
        revenue: o.revenue,
    }
}

/// One line per drift item past the alert line and per matured run whose AUC dropped.
fn alerts(
    drift: &[Drift],
    realized: impl Iterator<Item = (NaiveDate, f64)>,
    holdout_auc: f64,
    cfg: &MonitorConfig,
) -> Vec<String> {
    let mut alerts = Vec::new();
    for d in drift.iter().filter(|d| d.status == Status::Alert) {
        alerts.push(format!(
            "ALERT drift {} {}: PSI {:.3} > {} (KS {:.3}, mean {:.4} -> {:.4})",
            d.kind, d.item, d.psi, cfg.psi_alert, d.ks, d.mean_reference, d.mean_current
        ));
    }
    for (run, auc) in realized {
        if auc_dropped(auc, holdout_auc, cfg.auc_drop_alert) {
            alerts.push(format!(
                "ALERT realized AUC of the run at {run}: {auc:.4}, more than {} below the holdout AUC {holdout_auc:.4}",
                cfg.auc_drop_alert
            ));
        }
    }
    alerts
}

/// What an estimate is compared with: the holdout's AUC estimated the same way, else (models
/// trained before it was recorded) the holdout's realized AUC.
pub fn estimate_reference(holdout_auc: f64, holdout_estimated_auc: f64) -> f64 {
    if holdout_estimated_auc.is_finite() {
        holdout_estimated_auc
    } else {
        holdout_auc
    }
}

fn estimate_dropped(
    e: &Estimated,
    holdout_auc: f64,
    holdout_estimated_auc: f64,
    cfg: &MonitorConfig,
) -> bool {
    auc_dropped(
        e.roc_auc.value,
        estimate_reference(holdout_auc, holdout_estimated_auc),
        cfg.estimated_auc_drop_alert,
    )
}

/// The alert when the run's estimated AUC dropped more than `estimated_auc_drop_alert`.
fn estimate_alert(
    e: Option<&Estimated>,
    holdout_auc: f64,
    holdout_estimated_auc: f64,
    cfg: &MonitorConfig,
) -> Option<String> {
    let e = e.filter(|e| estimate_dropped(e, holdout_auc, holdout_estimated_auc, cfg))?;
    let what = if holdout_estimated_auc.is_finite() { "estimated the same way" } else { "realized" };
    Some(format!(
        "ALERT estimated AUC of the run at {}: {:.4} [95% {:.4}, {:.4}] from its calibrated probabilities, more \
         than {} below the holdout's {:.4} ({what}); its labels mature one horizon later",
        e.run,
        e.roc_auc.value,
        e.roc_auc.low,
        e.roc_auc.high,
        cfg.estimated_auc_drop_alert,
        estimate_reference(holdout_auc, holdout_estimated_auc)
    ))
}

/// One line per matured run whose measured effect is harmful, and one when the pooled effect is.
fn effect_alerts(realized: &[Realized], pooled: Option<&PooledEffect>) -> Vec<String> {
    let mut alerts = Vec::new();
    for r in realized {
        if let Some(e) = r.effect.as_ref().and_then(RunEffect::headline).filter(|e| e.harmful()) {
            alerts.push(format!(
                "ALERT contacting increased churn in the run at {} (its customers new to the experiment): {} \
                 (the whole 95% interval is below zero)",
                r.run,
                effect_words(e)
            ));
        }
    }
    if let Some(p) = pooled.filter(|p| p.effect.harmful()) {
        alerts.push(format!(
            "ALERT contacting increased churn, pooled over {} run{}: {} (the whole 95% interval is below zero)",
            p.runs,
            if p.runs == 1 { "" } else { "s" },
            effect_words(&p.effect)
        ));
    }
    alerts
}

/// Retrain when anything alerted or the model's data is older than `max_model_age_days`.
fn advice(alerts: usize, model_age_days: i64, as_of: NaiveDate, cfg: &MonitorConfig) -> (bool, String) {
    let too_old = model_age_days > cfg.max_model_age_days;
    let retrain = alerts > 0 || too_old;
    let mut reasons = Vec::new();
    if alerts > 0 {
        reasons.push(format!("{alerts} alert(s)"));
    }
    if too_old {
        reasons.push(format!(
            "the model's data ends {model_age_days} days before {as_of} (max_model_age_days {})",
            cfg.max_model_age_days
        ));
    }
    if model_age_days < 0 {
        reasons.push(format!(
            "note: {as_of} is inside the model's training data, which ends {} days later",
            -model_age_days
        ));
    }
    let advice = if retrain {
        format!("retrain: yes ({})", reasons.join("; "))
    } else if model_age_days < 0 {
        format!(
            "retrain: no (no alert; {as_of} is inside the model's training data, which ends {} days later)",
            -model_age_days
        )
    } else {
        format!(
            "retrain: no (no alert; the model's data ends {model_age_days} days before {as_of}, limit {})",
            cfg.max_model_age_days
        )
    };
    (retrain, advice)
}

/// An effect in words: churn per group, the reduction with its interval, revenue, net value.
pub fn effect_words(e: &Effect) -> String {
    format!(
        "churn {:.1}% treated (n {}) vs {:.1}% control (n {}), reduction {:+.1} points [95% {:+.1}, {:+.1}], \
         revenue per customer {:+.2}, incremental net value {:.0}",
        100.0 * e.churn_treatment,
        e.treatment,
        100.0 * e.churn_control,
        e.control,
        100.0 * e.reduction,
        100.0 * e.reduction_low,
        100.0 * e.reduction_high,
        e.revenue_difference,
        e.incremental_net_value
    ) + &reach_words(e)
}

/// The reach part of [`effect_words`] (empty without a contact log).
fn reach_words(e: &Effect) -> String {
    if !e.reach.treatment.is_finite() {
        return String::new();
    }
    let among = if e.reach.reduction.is_finite() {
        format!(
            ", among the reached {:+.1} points [95% {:+.1}, {:+.1}] (Wald)",
            100.0 * e.reach.reduction,
            100.0 * e.reach.low,
            100.0 * e.reach.high
        )
    } else {
        String::new()
    };
    format!(
        "; reached {:.0}% of the treated, {:.0}% of the control group{among}",
        100.0 * e.reach.treatment,
        100.0 * e.reach.control
    )
}

/// The history's metrics of a revenue movement (kind `revenue`, items `month` and
/// `trailing_12_months`); NRR and GRR NaN without MRR at the start.
const REVENUE_METRICS: [&str; 7] = ["start_mrr", "new", "expansion", "contraction", "churned", "nrr", "grr"];

fn movement_values(m: &Movement) -> [f64; 7] {
    [
        m.start_mrr,
        m.new,
        m.expansion,
        m.contraction,
        m.churned,
        m.nrr.unwrap_or(f64::NAN),
        m.grr.unwrap_or(f64::NAN),
    ]
}

/// Primary key of the campaign effect table ([`MonitorReport::effect_frame`]).
pub const CAMPAIGN_EFFECT_KEY: &[&str] = &["as_of", "run", "stratum", "stratum_value"];

/// One row of the monitoring history.
struct Row {
    kind: &'static str,
    item: String,
    metric: &'static str,
    value: f64,
    status: Status,
}

/// Drift metrics per item in the history (`missing_share_change` is current minus reference).
const DRIFT_METRICS: [&str; 7] = [
    "psi",
    "ks",
    "missing_share_change",
    "mean",
    "missing_share",
    "missing_share_reference",
    "mean_reference",
];
const REALIZED_METRICS: [&str; 10] = [
    "roc_auc",
    "pr_auc",
    "brier",
    "top10_capture",
    "net_value",
    "churn_rate",
    "customers",
    "contacted",
    "precision",
    "recall",
];

impl MonitorReport {
    pub fn has_alert(&self) -> bool {
        !self.alerts.is_empty()
    }

    /// What this date's estimated AUC is compared with ([`estimate_reference`]).
    pub fn estimate_reference(&self) -> f64 {
        estimate_reference(self.holdout_auc, self.holdout_estimated_auc)
    }

    /// The history rows of the run estimated at this as_of (none without one).
    fn estimated_rows(&self) -> Vec<Row> {
        let Some(e) = &self.estimated else { return Vec::new() };
        let dropped = estimate_dropped(e, self.holdout_auc, self.holdout_estimated_auc, &self.thresholds);
        let status = |m: &str| match m {
            "roc_auc" if dropped => Status::Alert,
            "roc_auc" => Status::Ok,
            _ => Status::Info,
        };
        estimate::METRICS
            .iter()
            .zip(e.metrics())
            .map(|(m, value)| Row {
                kind: "estimated",
                item: e.run.to_string(),
                metric: m,
                value,
                status: status(m),
            })
            .collect()
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = self.estimated_rows();
        let mut push = |kind, item: &str, metric, value, status| {
            rows.push(Row { kind, item: item.to_string(), metric, value, status })
        };
        for d in &self.drift {
            let values = [
                d.psi,
                d.ks,
                d.missing_current - d.missing_reference,
                d.mean_current,
                d.missing_current,
                d.missing_reference,
                d.mean_reference,
            ];
            for (m, v) in DRIFT_METRICS.iter().zip(values) {
                push("drift", d.item.as_str(), *m, v, if *m == "psi" { d.status } else { Status::Info });
            }
        }
        for r in &self.realized {
            let run = r.run.to_string();
            let auc_status = if auc_dropped(r.roc_auc, self.holdout_auc, self.thresholds.auc_drop_alert) {
                Status::Alert
            } else {
                Status::Ok
            };
            let values = [
                r.roc_auc,
                r.pr_auc,
                r.brier,
                r.top10_capture,
                r.net_value,
                r.churn_rate,
                r.customers as f64,
                r.contacted as f64,
                r.precision,
                r.recall,
            ];
            for (m, v) in REALIZED_METRICS.iter().zip(values) {
                push(
                    "realized",
                    run.as_str(),
                    *m,
                    v,
                    if *m == "roc_auc" { auc_status } else { Status::Info },
                );
            }
        }
        for r in &self.realized {
            let Some(effect) = &r.effect else { continue };
            let strata = effect
                .overall
                .iter()
                .map(|e| (r.run.to_string(), e))
                .chain(effect.by_band.iter().map(|(b, e)| (format!("{} band={b}", r.run), e)))
                .chain(effect.by_playbook.iter().map(|(p, e)| (format!("{} playbook={p}", r.run), e)))
                .chain(effect.first.iter().map(|e| (format!("{} {FIRST}", r.run), e)))
                .chain(effect.first_by_band.iter().map(|(b, e)| (format!("{} {FIRST} band={b}", r.run), e)))
                .chain(effect.by_channel.iter().map(|(c, e)| (format!("{} channel={c}", r.run), e)));
            for (item, e) in strata {
                let status = if e.harmful() { Status::Alert } else { Status::Ok };
                for (m, v) in Effect::METRICS.iter().zip(e.metrics()) {
                    push(
                        "effect",
                        item.as_str(),
                        *m,
                        v,
                        if *m == "reduction" { status } else { Status::Info },
                    );
                }
            }
        }
        if let Some(p) = &self.pooled {
            let strata = [(POOLED.to_string(), &p.effect)]
                .into_iter()
                .chain(p.by_band.iter().map(|(b, e)| (format!("{POOLED} band={b}"), e)));
            for (item, e) in strata {
                let status = if e.harmful() { Status::Alert } else { Status::Ok };
                for (m, v) in Effect::METRICS.iter().zip(e.metrics()) {
                    push("effect", &item, *m, v, if *m == "reduction" { status } else { Status::Info });
                }
            }
            push("effect", POOLED, "runs", p.runs as f64, Status::Info);
        }
        let t = &self.thresholds;
        push("model", "model", "age_days", self.model_age_days as f64, Status::Info);
        push("model", "model", "holdout_roc_auc", self.holdout_auc, Status::Info);
        let retrain_status = if self.retrain { Status::Warn } else { Status::Ok };
        push("model", "model", "retrain", f64::from(u8::from(self.retrain)), retrain_status);
        push("model", "model", "psi_warn", t.psi_warn, Status::Info);
        push("model", "model", "psi_alert", t.psi_alert, Status::Info);
        push("model", "model", "auc_drop_alert", t.auc_drop_alert, Status::Info);
        push("model", "model", "estimated_auc_drop_alert", t.estimated_auc_drop_alert, Status::Info);
        if self.holdout_estimated_auc.is_finite() {
            push("model", "model", "holdout_estimated_roc_auc", self.holdout_estimated_auc, Status::Info);
        }
        push("model", "model", "max_model_age_days", t.max_model_age_days as f64, Status::Info);
        rows.extend(self.revenue_rows());
        rows
    }

    /// The recurring revenue's history rows (none without a subscription table).
    fn revenue_rows(&self) -> Vec<Row> {
        let Some(r) = &self.revenue else { return Vec::new() };
        let row = |item: &str, metric, value| Row {
            kind: "revenue",
            item: item.to_string(),
            metric,
            value,
            status: Status::Info,
        };
        let mut rows = vec![row("mrr", "mrr", r.mrr), row("mrr", "customers", r.customers as f64)];
        for (item, m) in [("month", &r.month), ("trailing_12_months", &r.trailing_12_months)] {
            rows.extend(
                REVENUE_METRICS.iter().zip(movement_values(m)).map(|(metric, v)| row(item, metric, v)),
            );
        }
        rows
    }

    /// The history rows of this as_of: one per metric x item (`metrics_history.parquet`,
    /// the SQL table `model_monitoring`).
    pub fn history_frame(&self) -> Result<DataFrame> {
        let rows = self.rows();
        let n = rows.len();
        let as_of = Column::new("as_of".into(), vec![schema::epoch_day(self.as_of); n])
            .cast(&DataType::Date)
            .polars("as_of column")?;
        DataFrame::new_infer_height(vec![
            as_of,
            Column::new("model_id".into(), vec![self.model_id.as_str(); n]),
            Column::new("kind".into(), rows.iter().map(|r| r.kind).collect::<Vec<_>>()),
            Column::new("item".into(), rows.iter().map(|r| r.item.as_str()).collect::<Vec<_>>()),
            Column::new("metric".into(), rows.iter().map(|r| r.metric).collect::<Vec<_>>()),
            Column::new("value".into(), rows.iter().map(|r| r.value).collect::<Vec<_>>()),
            Column::new("status".into(), rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>()),
        ])
        .polars("assembling the monitoring rows")
    }

    /// The measured effect of contacting at this as_of, one row per run x stratum (the SQL
    /// table `campaign_effect`, key [`CAMPAIGN_EFFECT_KEY`]): `run` is the run's date or
    /// `pooled`. A run's strata: `all`, `band` and `playbook` (every customer of its
    /// experiment), `new` and `new_band` (the customers who entered the experiment at that
    /// run), `channel` (the treated customers a channel of the contact log reached first,
    /// against the whole control group: a comparison, channels are not randomized); the pooled
    /// rows (`all`, `band`) count each customer at its first run. The band, playbook or
    /// channel is in `stratum_value` (empty otherwise); `runs` is how many runs the pooled
    /// rows add up (null on a run's rows).
    pub fn effect_frame(&self) -> Result<DataFrame> {
        let mut rows: Vec<(String, &str, &str, &Effect, Option<i64>)> = Vec::new();
        for r in &self.realized {
            let Some(e) = &r.effect else { continue };
            let run = r.run.to_string();
            rows.extend(e.overall.iter().map(|e| (run.clone(), "all", "", e, None)));
            rows.extend(e.first.iter().map(|e| (run.clone(), "new", "", e, None)));
            rows.extend(e.by_band.iter().map(|(b, e)| (run.clone(), "band", b.as_str(), e, None)));
            rows.extend(e.by_playbook.iter().map(|(p, e)| (run.clone(), "playbook", p.as_str(), e, None)));
            rows.extend(e.first_by_band.iter().map(|(b, e)| (run.clone(), "new_band", b.as_str(), e, None)));
            rows.extend(e.by_channel.iter().map(|(c, e)| (run.clone(), "channel", c.as_str(), e, None)));
        }
        if let Some(p) = &self.pooled {
            rows.push((POOLED.to_string(), "all", "", &p.effect, Some(p.runs as i64)));
            rows.extend(
                p.by_band
                    .iter()
                    .map(|(b, e)| (POOLED.to_string(), "band", b.as_str(), e, Some(p.runs as i64))),
            );
        }
        let n = rows.len();
        let as_of = Column::new("as_of".into(), vec![schema::epoch_day(self.as_of); n])
            .cast(&DataType::Date)
            .polars("as_of column")?;
        let mut columns = vec![
            as_of,
            Column::new("model_id".into(), vec![self.model_id.as_str(); n]),
            Column::new("run".into(), rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>()),
            Column::new("stratum".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>()),
            Column::new("stratum_value".into(), rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            Column::new("treatment".into(), rows.iter().map(|r| r.3.treatment as i64).collect::<Vec<_>>()),
            Column::new("control".into(), rows.iter().map(|r| r.3.control as i64).collect::<Vec<_>>()),
        ];
        // The history's metrics but the two counts (above, as integers), then the relative one.
        for (k, name) in Effect::METRICS.iter().enumerate().skip(2) {
            columns.push(Column::new(
                (*name).into(),
                rows.iter().map(|r| r.3.metrics()[k]).collect::<Vec<f64>>(),
            ));
        }
        columns.push(Column::new(
            "relative_reduction".into(),
            rows.iter().map(|r| r.3.relative_reduction).collect::<Vec<f64>>(),
        ));
        columns.push(Column::new("harmful".into(), rows.iter().map(|r| r.3.harmful()).collect::<Vec<_>>()));
        columns.push(Column::new("runs".into(), rows.iter().map(|r| r.4).collect::<Vec<_>>()));
        DataFrame::new_infer_height(columns).polars("assembling the campaign effect rows")
    }

    /// The latest monitoring date of the history with a pooled effect of contacting.
    pub fn latest_pooled_date(history: &DataFrame) -> Result<Option<NaiveDate>> {
        let rows = HistoryRows::read(history)?;
        let day = (0..rows.day.len())
            .filter(|&i| rows.kind[i] == "effect" && rows.item[i] == POOLED)
            .map(|i| rows.day[i])
            .max();
        Ok(day.and_then(schema::date_of_day))
    }

    /// The monitoring result of `as_of` as the history recorded it (what a report shows
    /// later, without monitoring again). Realized AUCs are those recorded up to `as_of`.
    pub fn from_history(history: &DataFrame, as_of: NaiveDate) -> Result<MonitorReport> {
        let rows = HistoryRows::read(history)?;
        let day = schema::epoch_day(as_of);
        let here: Vec<usize> = (0..rows.day.len()).filter(|&i| rows.day[i] == day).collect();
        if here.is_empty() {
            return Err(Error::Data(format!("the monitoring history has no rows for {as_of}")));
        }
        let model = |metric: &str| rows.value_of(&here, "model", "model", metric);
        let missing = |what: &str| Error::Data(format!("the monitoring history of {as_of} has no {what}"));
        let d = MonitorConfig::default();
        let thresholds = MonitorConfig {
            psi_warn: model("psi_warn").unwrap_or(d.psi_warn),
            psi_alert: model("psi_alert").unwrap_or(d.psi_alert),
            auc_drop_alert: model("auc_drop_alert").unwrap_or(d.auc_drop_alert),
            estimated_auc_drop_alert: model("estimated_auc_drop_alert").unwrap_or(d.estimated_auc_drop_alert),
            max_model_age_days: model("max_model_age_days").map_or(d.max_model_age_days, |v| v as i64),
        };
        let holdout_auc = model("holdout_roc_auc").ok_or_else(|| missing("holdout AUC"))?;
        let model_age_days = model("age_days").ok_or_else(|| missing("model age"))? as i64;
        let mut drift = Vec::new();
        for &i in here.iter().filter(|&&i| rows.kind[i] == "drift" && rows.metric[i] == "psi") {
            let item = rows.item[i].as_str();
            let v = |m: &str| rows.value_of(&here, "drift", item, m).unwrap_or(f64::NAN);
            let change = v("missing_share_change");
            let (current, reference) = match (v("missing_share"), v("missing_share_reference")) {
                (c, r) if c.is_finite() && r.is_finite() => (c, r),
                _ => (change, 0.0),
            };
            drift.push(Drift {
                item: item.to_string(),
                kind: if item == CHURN_SCORE || item == CLV_SCORE { "score" } else { "feature" }.into(),
                psi: rows.value[i],
                ks: v("ks"),
                missing_reference: reference,
                missing_current: current,
                mean_reference: v("mean_reference"),
                mean_current: v("mean"),
                status: Status::parse(&rows.status[i]),
            });
        }
        let realized = rows.realized_at(&here)?;
        let holdout_estimated_auc = model("holdout_estimated_roc_auc").unwrap_or(f64::NAN);
        let estimated = rows.estimated_at(&here);
        let upto: Vec<usize> = (0..rows.day.len()).filter(|&i| rows.day[i] <= day).collect();
        let matured_estimates = realized
            .iter()
            .filter_map(|r| {
                let item = r.run.to_string();
                Estimated::from_metrics(r.run, |m| rows.value_of(&upto, "estimated", &item, m))
            })
            .collect();
        let auc_history: BTreeMap<NaiveDate, f64> = (0..rows.day.len())
            .filter(|&i| rows.day[i] <= day && rows.kind[i] == "realized" && rows.metric[i] == "roc_auc")
            .filter_map(|i| Some((NaiveDate::parse_from_str(&rows.item[i], "%Y-%m-%d").ok()?, rows.value[i])))
            .collect();
        let pooled =
            Effect::from_metrics(|m| rows.value_of(&here, "effect", POOLED, m)).map(|effect| PooledEffect {
                runs: rows.value_of(&here, "effect", POOLED, "runs").map_or(0, |v| v as usize),
                effect,
                by_band: rows.strata(&here, POOLED, " band="),
            });
        let mut alerts =
            alerts(&drift, realized.iter().map(|r| (r.run, r.roc_auc)), holdout_auc, &thresholds);
        alerts.extend(estimate_alert(estimated.as_ref(), holdout_auc, holdout_estimated_auc, &thresholds));
        alerts.extend(effect_alerts(&realized, pooled.as_ref()));
        let (retrain, advice) = advice(alerts.len(), model_age_days, as_of, &thresholds);
        let revenue = rows.revenue_at(&here);
        Ok(MonitorReport {
            as_of,
            model_id: rows.model_id[here[0]].clone(),
            drift,
            estimated,
            realized,
            matured_estimates,
            holdout_estimated_auc,
            auc_history: auc_history.into_iter().collect(),
            pooled,
            holdout_auc,
            model_age_days,
            alerts,
            retrain,
            advice,
            thresholds,
            revenue,
        })
    }
}

/// The history table's columns.
struct HistoryRows {
    day: Vec<i32>,
    model_id: Vec<String>,
    kind: Vec<String>,
    item: Vec<String>,
    metric: Vec<String>,
    value: Vec<f64>,
    status: Vec<String>,
}

impl HistoryRows {
    fn read(df: &DataFrame) -> Result<HistoryRows> {
        let ctx = "reading the monitoring history";
        let text = |name: &str| -> Result<Vec<String>> {
            let c = df.column(name).polars(ctx)?.str().polars(ctx)?;
            Ok(c.iter().map(|v| v.unwrap_or_default().to_string()).collect())
        };
        let day = df.column("as_of").polars(ctx)?.cast(&DataType::Int32).polars(ctx)?;
        Ok(HistoryRows {
            day: day.i32().polars(ctx)?.iter().map(|v| v.unwrap_or(i32::MIN)).collect(),
            model_id: text("model_id")?,
            kind: text("kind")?,
            item: text("item")?,
            metric: text("metric")?,
            value: col_f64(df, "value", ctx)?,
            status: text("status")?,
        })
    }

    /// The value of the row of `here` with this kind, item and metric.
    fn value_of(&self, here: &[usize], kind: &str, item: &str, metric: &str) -> Option<f64> {
        here.iter()
            .find(|&&i| self.kind[i] == kind && self.item[i] == item && self.metric[i] == metric)
            .map(|&i| self.value[i])
    }

    /// The recurring revenue of the rows `here` (None when they hold none).
    fn revenue_at(&self, here: &[usize]) -> Option<RevenueKpis> {
        let mrr = self.value_of(here, "revenue", "mrr", "mrr")?;
        let movement = |item: &str| {
            let v = |m: &str| self.value_of(here, "revenue", item, m).unwrap_or(f64::NAN);
            let ratio = |m: &str| Some(v(m)).filter(|x| x.is_finite());
            Movement {
                start_mrr: v("start_mrr"),
                new: v("new"),
                expansion: v("expansion"),
                contraction: v("contraction"),
                churned: v("churned"),
                nrr: ratio("nrr"),
                grr: ratio("grr"),
            }
        };
        Some(RevenueKpis {
            mrr,
            customers: self.value_of(here, "revenue", "mrr", "customers").map_or(0, |v| v as usize),
            month: movement("month"),
            trailing_12_months: movement("trailing_12_months"),
        })
    }

    /// The runs realized at the rows `here`.
    fn realized_at(&self, here: &[usize]) -> Result<Vec<Realized>> {
        let mut out = Vec::new();
        for &i in here.iter().filter(|&&i| self.kind[i] == "realized" && self.metric[i] == "roc_auc") {
            let item = self.item[i].as_str();
            let run = NaiveDate::parse_from_str(item, "%Y-%m-%d").map_err(|_| {
                Error::Data(format!("the monitoring history names a run {item:?}, not a date"))
            })?;
            let v = |m: &str| self.value_of(here, "realized", item, m).unwrap_or(f64::NAN);
            let count = |m: &str| self.value_of(here, "realized", item, m).map_or(0, |v| v as usize);
            out.push(Realized {
                run,
                model_id: self.model_id[i].clone(),
                customers: count("customers"),
                churn_rate: v("churn_rate"),
                roc_auc: self.value[i],
                pr_auc: v("pr_auc"),
                brier: v("brier"),
                top10_capture: v("top10_capture"),
                contacted: count("contacted"),
                net_value: v("net_value"),
                precision: v("precision"),
                recall: v("recall"),
                effect: self.effect_at(here, item),
            });
        }
        Ok(out)
    }

    /// The run estimated at the rows `here` (None when no run was scored there).
    fn estimated_at(&self, here: &[usize]) -> Option<Estimated> {
        let i = here.iter().find(|&&i| self.kind[i] == "estimated")?;
        let item = self.item[*i].as_str();
        let run = NaiveDate::parse_from_str(item, "%Y-%m-%d").ok()?;
        Estimated::from_metrics(run, |m| self.value_of(here, "estimated", item, m))
    }

    /// The effect of the run `run` at the rows `here` (None when the history has none).
    fn effect_at(&self, here: &[usize], run: &str) -> Option<RunEffect> {
        let of = |item: &str| Effect::from_metrics(|m| self.value_of(here, "effect", item, m));
        let overall = of(run);
        let (by_band, by_playbook) = (self.strata(here, run, " band="), self.strata(here, run, " playbook="));
        let first = of(&format!("{run} {FIRST}"));
        let first_by_band = self.strata(here, &format!("{run} {FIRST}"), " band=");
        let by_channel = self.strata(here, run, " channel=");
        (overall.is_some() || !by_band.is_empty()).then_some(RunEffect {
            overall,
            by_band,
            by_playbook,
            first,
            first_by_band,
            by_channel,
        })
    }

    /// The effects at the rows `here` whose item is `<item><prefix><stratum>`, by stratum.
    fn strata(&self, here: &[usize], item: &str, prefix: &str) -> Vec<(String, Effect)> {
        let mut names: Vec<&str> = here
            .iter()
            .filter(|&&i| self.kind[i] == "effect" && self.metric[i] == "reduction")
            .filter_map(|&i| self.item[i].strip_prefix(item)?.strip_prefix(prefix))
            .collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .filter_map(|s| {
                let e = Effect::from_metrics(|m| {
                    self.value_of(here, "effect", &format!("{item}{prefix}{s}"), m)
                })?;
                Some((s.to_string(), e))
            })
            .collect()
    }
}

fn auc_dropped(auc: f64, holdout: f64, drop: f64) -> bool {
    auc.is_finite() && auc < holdout - drop
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A report regenerated from the history (`fidelis report` for a past week) has the same
    /// measured effect as the one monitoring computed: overall, per band and per playbook,
    /// among the new customers, and pooled with the runs already in the history.
    #[test]
    fn the_effect_of_a_run_reads_back_from_the_history() {
        let d = DecisionConfig::default();
        let o = |group, churned, band, first| Outcome {
            group,
            churned,
            revenue: 10.0 * f64::from(u8::from(!churned)),
            value: 65.0,
            band,
            playbook: band,
            first,
            reached: None,
            channel: None,
        };
        let rows: Vec<Outcome> = (0..300)
            .map(|i| {
                o(
                    if i % 10 == 0 { Group::Control } else { Group::Treatment },
                    i % 3 == 0,
                    if i < 150 { "high" } else { "critical" },
                    i >= 100,
                )
            })
            .collect();
        let earlier: Vec<Outcome> = (0..500)
            .map(|i| o(if i % 10 == 0 { Group::Control } else { Group::Treatment }, i % 4 == 0, "high", true))
            .collect();
        let earlier_first = RunEffect::of(&earlier, &d).first.unwrap();
        let run = NaiveDate::from_ymd_opt(2024, 9, 3).unwrap();
        let realized = Realized {
            run,
            model_id: "m".into(),
            customers: 300,
            churn_rate: 0.3,
            roc_auc: 0.8,
            pr_auc: 0.5,
            brier: 0.2,
            top10_capture: 0.3,
            contacted: 270,
            net_value: 1.0,
            precision: 0.4,
            recall: 0.6,
            effect: Some(RunEffect::of(&rows, &d)),
        };
        let as_of = NaiveDate::from_ymd_opt(2024, 12, 31).unwrap();
        let report = assess(
            Observed {
                as_of,
                model_id: "m",
                holdout_auc: 0.8,
                model_end: as_of,
                drift: Vec::new(),
                estimated: None,
                realized: vec![realized.clone()],
                estimates: BTreeMap::new(),
                holdout_estimated_auc: f64::NAN,
                auc_history: BTreeMap::new(),
                first_effects: [((run - chrono::Duration::days(7), String::new()), earlier_first)].into(),
                revenue: Some(RevenueKpis {
                    mrr: 1000.0,
                    customers: 9,
                    month: Movement {
                        start_mrr: 990.0,
                        churned: 40.0,
                        nrr: Some(0.96),
                        grr: Some(0.95),
                        ..Movement::default()
                    },
                    // Nobody subscribed a year before: no NRR.
                    trailing_12_months: Movement { new: 1000.0, ..Movement::default() },
                }),
            },
            &MonitorConfig::default(),
        );
        let first = realized.effect.as_ref().unwrap().first.as_ref().unwrap();
        assert_eq!((first.treatment, first.control), (180, 20), "customers new at this run only");
        let pooled = report.pooled.as_ref().unwrap();
        assert_eq!((pooled.runs, pooled.effect.treatment, pooled.effect.control), (2, 630, 70));
        let back = MonitorReport::from_history(&report.history_frame().unwrap(), as_of).unwrap();
        // Compared as JSON: the reach figures are NaN (no contact log), and NaN != NaN.
        let json = |v: &Option<RunEffect>| serde_json::to_string(v).unwrap();
        assert_eq!(json(&back.realized[0].effect), json(&realized.effect));
        let pooled = |v: &Option<PooledEffect>| serde_json::to_string(v).unwrap();
        assert_eq!(pooled(&back.pooled), pooled(&report.pooled));
        // The recurring revenue comes back from the history as it went in (a regenerated
        // weekly report shows the run's NRR and GRR).
        assert_eq!(back.revenue, report.revenue);
    }

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
    fn counts_give_the_same_drift_as_the_values_and_merge_exactly() {
        let mut r = Rng::new(11);
        let base: Vec<f64> = (0..3000).map(|_| (r.gamma(2.0, 1.0) * 4.0).round()).collect();
        let reference = reference_of(&base);
        let cfg = MonitorConfig::default();
        for current in [
            base.clone(),
            (0..2500).map(|_| (r.gamma(2.0, 1.3) * 4.0).round()).collect::<Vec<_>>(),
            (0..900).map(|i| if i % 7 == 0 { f64::NAN } else { r.gamma(1.0, 1.0) }).collect(),
        ] {
            let item = &reference.items[0];
            let d = drift_of(item, &DriftCounts::of(item, &current), &cfg);
            // KS from counts equals KS over the values themselves, to the bit.
            assert_eq!(d.ks.to_bits(), ks(&item.sample, &sorted_present(&current)).to_bits());
            let (shares, missing, _) = shares(&item.edges, &current);
            let psi_values = psi(
                &Distribution::with_missing(&item.shares, item.missing_share),
                &Distribution::with_missing(&shares, missing),
            );
            assert_eq!(d.psi.to_bits(), psi_values.to_bits());
            // Any split of the customers merges to the same counts.
            let (left, right) = current.split_at(current.len() / 3);
            let mut merged = DriftCounts::of(item, left);
            merged.merge(&DriftCounts::of(item, right));
            let whole = DriftCounts::of(item, &current);
            assert_eq!(
                (&merged.bins, &merged.at_or_below, &merged.below, merged.missing),
                (&whole.bins, &whole.at_or_below, &whole.below, whole.missing)
            );
            let m = drift_of(item, &merged, &cfg);
            assert_eq!(
                (m.psi.to_bits(), m.ks.to_bits(), m.mean_current.to_bits()),
                (d.psi.to_bits(), d.ks.to_bits(), d.mean_current.to_bits())
            );
        }
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
