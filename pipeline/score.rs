//! Score: apply a trained model to every customer eligible at `as_of` (at least one
//! transaction in the eligibility window before it), with the same features the model was
//! trained on, and turn the predictions into what a retention team acts on.
//!
//! One row per customer:
//!
//! | column | meaning |
//! |---|---|
//! | `as_of`, `customer_id`, `model_id` | |
//! | `churn_probability` | calibrated probability of no transaction in the next horizon |
//! | `risk_score`, `risk_level`, `playbook` | 0-100 score, its band and the band's playbook |
//! | `predicted_clv` | revenue predicted over the next horizon |
//! | `expected_loss` | `churn_probability * max(predicted_clv, 0)` |
//! | `uplift` | estimated reduction in churn probability if contacted (null until an uplift model ships) |
//! | `incremental_value` | `uplift * max(predicted_clv, 0) - contact_cost`, what a call is worth (null likewise) |
//! | `contact` | the model's cost-weighted threshold applied, control group held out |
//! | `experiment_group` | `treatment`, `control`, `exempt`, or null outside the experiment (`experiment`) |
//! | `risk_rank`, `in_top_decile` | 1 = riskiest by `output.rank_by`; in the top `round(top_share * n)` |
//! | `score_change` | risk score minus the customer's score in the previous run (null if none) |
//! | `rfm_r`, `rfm_f`, `rfm_m`, `rfm_segment` | quintiles 1-5 over the scored base, and the segment |
//! | `top_reasons` | up to three features pushing this customer's churn score up the most, as `name=value (+contribution)` |
//!
//! `top_reasons` come from exact SHAP values of the churn log-odds (`ChurnModel::shap_values`:
//! TreeSHAP for the GBDT, the logistic regression's and the BG/NBD's own, a blend's weighted
//! sum), so they add up to the log-odds that is scored. A model trained before fidelis stored
//! its trees' covers explains with path attributions (Saabas: each split on the customer's
//! path credits its feature with the change in the node value), the reasons it always had.
//!
//! RFM: R from `recency_days` (recent = 5), F from `count_life`, M from `amount_life`, each
//! the quintile of the customer's average rank. Segments by (R, F), the usual table:
//! Champions R5 F4-5; Loyal R3-4 F4-5; Potential Loyalists R4-5 F2-3; New R5 F1;
//! Promising R4 F1; Need Attention R3 F3; About to Sleep R3 F1-2; Can't Lose Them R1-2 F5;
//! At Risk R1-2 F3-4; Hibernating R1-2 F1-2 except Lost R1 F1.

use std::collections::HashMap;

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Serialize;

use crate::config::{Config, RankBy};
use crate::error::{PolarsContext, Result};
use crate::experiment::{self, Group, HeldOut};
use crate::metrics;
use crate::model::LoadedModel;
use crate::predict::Predictions;
use crate::schema::{self, CHURN_SCORE, CLV_SCORE, CUSTOMER};
use crate::signals::SignalData;
use crate::sink::PreviousRun;

/// Customers per risk level, the top segment and its expected loss: the run's summary.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreSummary {
    pub as_of: NaiveDate,
    pub model_id: String,
    pub scored: usize,
    /// Customers the cost-weighted threshold selects.
    pub selected: usize,
    /// Customers to contact: the selected ones but the control group, plus exploration.
    pub contacted: usize,
    pub per_level: Vec<(String, usize)>,
    pub top_size: usize,
    pub top_expected_loss: f64,
    /// The control group of this run (None without one: `experiment.control_share = 0` and
    /// no exploration).
    pub experiment: Option<HeldOut>,
    pub previous_run: Option<NaiveDate>,
    /// Which health components the event log feeds, and which were dropped (weights
    /// renormalized over the rest); `None` without events.
    pub health: Option<String>,
    /// Warnings about the run (e.g. a date inside the model's training data).
    pub notes: Vec<String>,
}

/// One scoring run: the scores table, its top-risk segment, and the summary.
pub struct ScoreRun {
    pub scores: DataFrame,
    pub top_risk: DataFrame,
    pub summary: ScoreSummary,
}

/// Quintile 1-5 of each value by its mid-rank percentile `(rank - 0.5) / n`, with average
/// ranks for ties (tied values share a quintile; all equal values land in the middle one).
pub fn quintiles(v: &[f64]) -> Vec<i32> {
    metrics::average_ranks(v).into_iter().map(|r| quintile_of(r, v.len())).collect()
}

/// The quintile (1-5) of an average rank among `n` values: `ceil(5 (rank - 0.5) / n)`.
pub fn quintile_of(average_rank: f64, n: usize) -> i32 {
    ((5.0 * (average_rank - 0.5) / n as f64).ceil() as i32).clamp(1, 5)
}

/// The RFM segment of an (R, F) pair of quintile scores (see the module docs).
pub fn rfm_segment(r: i32, f: i32) -> &'static str {
    match (r, f) {
        (5, 4..=5) => "Champions",
        (3..=4, 4..=5) => "Loyal",
        (4..=5, 2..=3) => "Potential Loyalists",
        (5, 1) => "New",
        (4, 1) => "Promising",
        (3, 3) => "Need Attention",
        (3, 1..=2) => "About to Sleep",
        (1..=2, 5) => "Can't Lose Them",
        (1..=2, 3..=4) => "At Risk",
        (1, 1) => "Lost",
        _ => "Hibernating",
    }
}

/// Up to `k` features with the largest positive contributions in a row of contributions
/// (`names.len() + 1` values, the last being the bias), each as `name=value (+contribution)`
/// (`recency_days=84 (+0.92)`), joined by `, `; `value(i)` is the customer's value of
/// feature `i`.
fn top_reasons(row: &[f64], names: &[String], value: impl Fn(usize) -> f64, k: usize) -> String {
    let mut idx: Vec<usize> = (0..names.len()).filter(|&i| row[i] > 0.0).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.iter()
        .take(k)
        .map(|&i| format!("{}={} ({:+.2})", names[i], feature_value(value(i)), row[i]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A feature value as a reason shows it: whole numbers without decimals, others to two
/// decimals (three significant digits below 1), `missing` for no value.
fn feature_value(v: f64) -> String {
    if !v.is_finite() {
        "missing".into()
    } else if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Score every customer eligible at `as_of` in `tx` (the ingest contract frame).
/// `previous` is the previous run's scores (for `score_change`).
pub fn score(
    cfg: &Config,
    model: &LoadedModel,
    preds: &Predictions,
    signals: &SignalData,
    previous: Option<&PreviousRun>,
    health_history: &HashMap<String, [f64; 2]>,
) -> Result<ScoreRun> {
    let (as_of, n) = (preds.as_of, preds.x.rows);
    let local = local_scores(cfg, model, preds, signals)?;
    let global = whole_base(&local, cfg, previous)?;
    let rank = global.risk_rank.clone();
    let mut scores = assemble(&local, global)?;
    let level: Vec<&str> = {
        let c = local.column("risk_level").polars("risk levels")?.str().polars("risk levels")?;
        c.iter().map(|v| v.unwrap_or_default()).collect()
    };
    add_signal_columns(&mut scores, cfg, signals, preds, health_history)?;
    let top_risk = scores
        .clone()
        .lazy()
        .filter(col("in_top_decile"))
        .sort(["risk_rank"], SortMultipleOptions::default())
        .collect()
        .polars("selecting the top-risk segment")?;
    let bands = &model.decision.bands;
    let expected_loss = features_of(&local, "expected_loss")?;
    let top_n = top_size(cfg.output.top_share, n);
    let summary = ScoreSummary {
        as_of,
        model_id: model.info.model_id.clone(),
        scored: n,
        selected: bool_column(&local, DECIDED)?.iter().filter(|&&c| c).count(),
        contacted: bool_column(&scores, "contact")?.iter().filter(|&&c| c).count(),
        per_level: bands
            .bands
            .iter()
            .map(|b| (b.name.clone(), level.iter().filter(|&&l| l == b.name).count()))
            .collect(),
        top_size: top_risk.height(),
        top_expected_loss: (0..n).filter(|&i| rank[i] <= top_n).map(|i| expected_loss[i]).sum(),
        experiment: held_out(cfg, model, &scores)?,
        previous_run: previous.map(|p| p.as_of),
        health: signals.events.as_ref().map(|e| health_note(&cfg.health, e, as_of)),
        notes: in_sample_note(model, as_of).into_iter().collect(),
    };
    Ok(ScoreRun { scores, top_risk, summary })
}

fn features_of(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    crate::features::column_f64(df, name)
}

fn bool_column(df: &DataFrame, name: &str) -> Result<Vec<bool>> {
    let c = df.column(name).polars(name)?.bool().polars(name)?;
    Ok(c.iter().map(|v| v.unwrap_or(false)).collect())
}

fn text_column(df: &DataFrame, name: &str) -> Result<Vec<Option<String>>> {
    let c = df.column(name).polars(name)?.str().polars(name)?;
    Ok(c.iter().map(|v| v.map(str::to_string)).collect())
}

/// [`HeldOut`] of a run's scores (rows in the order of `preds`); None outside an experiment.
fn held_out(cfg: &Config, model: &LoadedModel, scores: &DataFrame) -> Result<Option<HeldOut>> {
    let e = &cfg.experiment;
    if e.control_share <= 0.0 && e.explore_share <= 0.0 {
        return Ok(None);
    }
    Ok(Some(held_out_of(cfg, model, scores)?.unwrap_or_default()))
}

/// The control group of a run's scores (None when they have no group column or nobody is in
/// the experiment): what `score` prints and the weekly report shows.
pub fn held_out_of(cfg: &Config, model: &LoadedModel, scores: &DataFrame) -> Result<Option<HeldOut>> {
    let Ok(column) = scores.column(EXPERIMENT_GROUP) else {
        return Ok(None);
    };
    let groups: Vec<Option<Group>> =
        column.str().polars("experiment groups")?.iter().map(|g| g.and_then(Group::parse)).collect();
    if groups.iter().all(Option::is_none) {
        return Ok(None);
    }
    let p = features_of(scores, CHURN_SCORE)?;
    let uplift: Option<Vec<Option<f64>>> = match scores.column(UPLIFT) {
        Ok(c) => {
            let c = c.cast(&DataType::Float64).polars(UPLIFT)?;
            Some(c.f64().polars(UPLIFT)?.iter().collect())
        }
        Err(_) => None,
    };
    let never_below = cfg.uplift.never_contact_below;
    let decided: Vec<bool> = (0..p.len())
        .map(|i| model.decision.contacts_with(p[i], uplift.as_ref().and_then(|u| u[i]), never_below))
        .collect();
    let d = &model.decision.config;
    let values = crate::threshold::tp_values(d, &p, &features_of(scores, CLV_SCORE)?);
    Ok(Some(experiment::held_out(d, &groups, &decided, &p, &values)))
}

fn in_sample_note(model: &LoadedModel, as_of: NaiveDate) -> Option<String> {
    let end = model.info.snapshots.last_ts.date();
    (as_of <= end).then(|| {
        format!(
            "warning: {as_of} is inside the data model {} was trained on (up to {end}): these scores \
             are in-sample, better than a real forecast would be",
            model.info.model_id
        )
    })
}

/// Risk rank of each customer by `key`: 1 = the largest; ties keep customer order (rows are
/// in customer order).
pub fn risk_ranks(key: &[f64]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..key.len()).collect();
    order.sort_by(|&a, &b| key[b].total_cmp(&key[a]));
    let mut rank = vec![0u32; key.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r as u32 + 1;
    }
    rank
}

/// The size of the top-risk segment: `round(top_share * n)` (half away from zero).
pub fn top_size(top_share: f64, n: usize) -> u32 {
    (top_share * n as f64).round() as u32
}

/// The helper columns of [`local_scores`] the whole-base columns are computed from: the
/// ranking key (`output.rank_by`) and the RFM values (minus recency, lifetime count and
/// amount).
pub const RANK_KEY: &str = "rank_key";
pub const RFM_VALUES: [&str; 3] = ["rfm_r_value", "rfm_f_value", "rfm_m_value"];
/// Helper columns of the control group: the customer's draw and whether the decision
/// contacts them (the group is balanced per band over the whole base, [`experiment::balance`]).
pub const EXPERIMENT_DRAW: &str = "experiment_draw";
pub const DECIDED: &str = "decided";
/// The estimated reduction in churn probability if contacted (null without an uplift model).
pub const UPLIFT: &str = "uplift";
/// `uplift x max(predicted_clv, 0) - contact_cost` (null without an uplift model).
pub const INCREMENTAL_VALUE: &str = "incremental_value";
pub use crate::schema::EXPERIMENT_GROUP;

/// The columns of the scores table, in order (the optional signal columns follow).
pub const SCORE_COLUMNS: [&str; 21] = [
    "as_of",
    CUSTOMER,
    CHURN_SCORE,
    "risk_score",
    "risk_level",
    "playbook",
    CLV_SCORE,
    "expected_loss",
    UPLIFT,
    INCREMENTAL_VALUE,
    "contact",
    EXPERIMENT_GROUP,
    "risk_rank",
    "in_top_decile",
    "score_change",
    "rfm_r",
    "rfm_f",
    "rfm_m",
    "rfm_segment",
    "top_reasons",
    "model_id",
];

/// The type of a score column, named as Spark SQL names it (`date`, `string`, `double`,
/// `int`, `boolean`): what a reader that needs the schema before any row (Spark) declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Date,
    String,
    Double,
    Int,
    Boolean,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Date => "date",
            ColumnType::String => "string",
            ColumnType::Double => "double",
            ColumnType::Int => "int",
            ColumnType::Boolean => "boolean",
        }
    }

    pub fn dtype(self) -> DataType {
        match self {
            ColumnType::Date => DataType::Date,
            ColumnType::String => DataType::String,
            ColumnType::Double => DataType::Float64,
            ColumnType::Int => DataType::Int32,
            ColumnType::Boolean => DataType::Boolean,
        }
    }
}

/// The columns of [`local_scores`], in order, with their types.
pub const LOCAL_COLUMNS: [(&str, ColumnType); 20] = [
    ("as_of", ColumnType::Date),
    (CUSTOMER, ColumnType::String),
    (CHURN_SCORE, ColumnType::Double),
    ("risk_score", ColumnType::Int),
    ("risk_level", ColumnType::String),
    ("playbook", ColumnType::String),
    (CLV_SCORE, ColumnType::Double),
    ("expected_loss", ColumnType::Double),
    (UPLIFT, ColumnType::Double),
    (INCREMENTAL_VALUE, ColumnType::Double),
    ("contact", ColumnType::Boolean),
    (EXPERIMENT_GROUP, ColumnType::String),
    ("top_reasons", ColumnType::String),
    ("model_id", ColumnType::String),
    (RANK_KEY, ColumnType::Double),
    (RFM_VALUES[0], ColumnType::Double),
    (RFM_VALUES[1], ColumnType::Double),
    (RFM_VALUES[2], ColumnType::Double),
    (EXPERIMENT_DRAW, ColumnType::Double),
    (DECIDED, ColumnType::Boolean),
];

/// The columns [`signal_columns`] adds, in order: `(name, type, needs an event log, needs a
/// customer table)`; none without either input.
pub const SIGNAL_COLUMNS: [(&str, ColumnType, bool, bool); 7] = [
    ("health_score", ColumnType::Double, true, false),
    ("health_colour", ColumnType::String, true, false),
    ("usage_drop", ColumnType::Boolean, true, false),
    ("csm_sentiment", ColumnType::String, false, true),
    ("review_flag", ColumnType::Boolean, false, false),
    ("review_reason", ColumnType::String, false, false),
    ("escalation", ColumnType::String, false, false),
];

/// The columns scores gain with a subscription table, after the signal columns: the MRR of
/// the customer's live subscription at `as_of` and the days to its next renewal (a fixed
/// term's end, a monthly subscription's next billing day), null without one.
pub const SUBSCRIPTION_COLUMNS: [(&str, ColumnType); 3] =
    [("mrr", ColumnType::Double), ("billing_months", ColumnType::Int), ("days_to_renewal", ColumnType::Int)];

/// The columns a model with a survival model (churn as a cancellation) adds after them: the
/// probability of still being subscribed 30, 60, 90, 180 and 365 days on, the expected days
/// subscribed over the year (restricted mean), the subscription CLV (a year of MRR times the
/// probability of being subscribed at each month's start, discounted at
/// `decision.annual_discount_rate`), and the probability of being subscribed at the next
/// renewal (null beyond a year or without one).
pub const SURVIVAL_COLUMNS: [(&str, ColumnType); 8] = [
    ("survival_30d", ColumnType::Double),
    ("survival_60d", ColumnType::Double),
    ("survival_90d", ColumnType::Double),
    ("survival_180d", ColumnType::Double),
    ("survival_365d", ColumnType::Double),
    ("expected_lifetime_days", ColumnType::Double),
    ("subscription_clv", ColumnType::Double),
    ("renewal_probability", ColumnType::Double),
];

/// The signal columns scores gain with an event log and/or a customer table, then the
/// subscription columns with a subscription table (and the survival columns with a survival
/// model), in order.
pub fn signal_schema(
    events: bool,
    customers: bool,
    subscriptions: bool,
    survival: bool,
) -> Vec<(&'static str, ColumnType)> {
    let mut out: Vec<(&'static str, ColumnType)> = Vec::new();
    if events || customers {
        out.extend(
            SIGNAL_COLUMNS
                .iter()
                .filter(|(_, _, e, c)| (!e || events) && (!c || customers))
                .map(|&(n, t, _, _)| (n, t)),
        );
    }
    if subscriptions {
        out.extend(SUBSCRIPTION_COLUMNS);
        if survival {
            out.extend(SURVIVAL_COLUMNS);
        }
    }
    out
}

/// The per-customer columns of the scores, which no other customer changes (a bucket of
/// customers scored apart, on a Spark executor, gives exactly these), with the helper
/// columns [`RANK_KEY`], [`RFM_VALUES`], [`EXPERIMENT_DRAW`] and [`DECIDED`] the whole-base
/// columns are computed from. The group and `contact` are before the per-band balance.
pub fn local_scores(
    cfg: &Config,
    model: &LoadedModel,
    preds: &Predictions,
    signals: &SignalData,
) -> Result<DataFrame> {
    let (p, n, bands) = (&preds.churn_probability, preds.x.rows, &model.decision.bands);
    let uplift = preds.uplift.as_deref();
    let decided: Vec<bool> = (0..n)
        .map(|i| model.decision.contacts_with(p[i], uplift.map(|u| u[i]), cfg.uplift.never_contact_below))
        .collect();
    // What a call is worth once the uplift model ships: the churn it prevents times the value
    // at stake, minus the cost of the call.
    let incremental: Option<Vec<f64>> = uplift.map(|u| {
        u.iter()
            .zip(&preds.predicted_clv)
            .map(|(u, c)| u * c.max(0.0) - model.decision.config.contact_cost)
            .collect()
    });
    let draws: Vec<f64> =
        preds.customers.iter().map(|id| experiment::draw(&cfg.experiment.name, id)).collect();
    let arr = |id: &str| signals.customers.as_ref().and_then(|c| c.rows.get(id)).and_then(|c| c.arr());
    let groups: Vec<Option<Group>> = (0..n)
        .map(|i| experiment::assign(&cfg.experiment, decided[i], draws[i], arr(&preds.customers[i])))
        .collect();
    let expected_loss: Vec<f64> = p.iter().zip(&preds.predicted_clv).map(|(q, c)| q * c.max(0.0)).collect();
    let feature = |name: &str| -> Result<Vec<f64>> {
        let c = preds.x.names.iter().position(|n| n == name).ok_or_else(|| {
            crate::error::Error::Data(format!("the model has no feature `{name}`, which RFM needs"))
        })?;
        Ok(preds.x.column(c).to_vec())
    };
    let k = preds.x.names.len() + 1;
    let reasons: Vec<String> = match &preds.contributions {
        Some(c) => (0..n)
            .map(|i| top_reasons(&c[i * k..(i + 1) * k], &preds.x.names, |f| preds.x.get(i, f), 3))
            .collect(),
        None => vec![String::new(); n],
    };
    // `+ 0.0` turns -0.0 into 0.0: one zero, whose ties every engine breaks by customer id.
    let key: Vec<f64> = match (cfg.output.rank_by, &incremental) {
        (RankBy::Probability, _) => p.iter().map(|v| v + 0.0).collect(),
        (RankBy::IncrementalValue, Some(v)) => v.iter().map(|v| v + 0.0).collect(),
        // Until an uplift model ships, incremental value ranks as expected loss does.
        (RankBy::ExpectedLoss | RankBy::IncrementalValue, _) => {
            expected_loss.iter().map(|v| v + 0.0).collect()
        }
    };
    let as_of_col = Column::new("as_of".into(), vec![schema::epoch_day(preds.as_of); n])
        .cast(&DataType::Date)
        .polars("as_of column")?;
    DataFrame::new_infer_height(vec![
        as_of_col,
        Column::new(CUSTOMER.into(), preds.customers.clone()),
        Column::new(CHURN_SCORE.into(), p.clone()),
        Column::new("risk_score".into(), p.iter().map(|&q| i32::from(bands.score(q))).collect::<Vec<_>>()),
        Column::new("risk_level".into(), p.iter().map(|&q| bands.band(q).name.as_str()).collect::<Vec<_>>()),
        Column::new(
            "playbook".into(),
            p.iter().map(|&q| bands.band(q).playbook.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(CLV_SCORE.into(), preds.predicted_clv.clone()),
        Column::new("expected_loss".into(), expected_loss),
        Column::new(
            UPLIFT.into(),
            uplift.map_or_else(|| vec![None; n], |u| u.iter().copied().map(Some).collect()),
        ),
        Column::new(
            INCREMENTAL_VALUE.into(),
            incremental
                .map_or_else(|| vec![None; n], |v| v.into_iter().map(Some).collect::<Vec<Option<f64>>>()),
        ),
        Column::new("contact".into(), groups.iter().map(|&g| Group::contacted(g)).collect::<Vec<_>>()),
        Column::new(EXPERIMENT_GROUP.into(), groups.iter().map(|g| g.map(Group::as_str)).collect::<Vec<_>>()),
        Column::new("top_reasons".into(), reasons),
        Column::new("model_id".into(), vec![model.info.model_id.as_str(); n]),
        Column::new(RANK_KEY.into(), key),
        Column::new(RFM_VALUES[0].into(), feature("recency_days")?.iter().map(|v| -v).collect::<Vec<_>>()),
        Column::new(RFM_VALUES[1].into(), feature("count_life")?),
        Column::new(RFM_VALUES[2].into(), feature("amount_life")?),
        Column::new(EXPERIMENT_DRAW.into(), draws),
        Column::new(DECIDED.into(), decided),
    ])
    .polars("assembling scores")
}

/// Adds the signal columns ([`signal_columns`], typed as [`SIGNAL_COLUMNS`] says) to `df`, a
/// frame of the scored customers in `preds` order with their `risk_level`; nothing without
/// an event log or a customer table.
pub fn add_signal_columns(
    df: &mut DataFrame,
    cfg: &Config,
    signals: &SignalData,
    preds: &Predictions,
    history: &HashMap<String, [f64; 2]>,
) -> Result<()> {
    if signals.events.is_some() || signals.customers.is_some() {
        let ctx = "risk levels";
        let levels = df.column("risk_level").polars(ctx)?.str().polars(ctx)?.clone();
        let level: Vec<&str> = levels.iter().map(|v| v.unwrap_or_default()).collect();
        for c in signal_columns(cfg, signals, &preds.customers, &level, preds.as_of, history)? {
            df.with_column(c).polars("adding signal columns")?;
        }
    }
    if let Some(subs) = &signals.subscriptions {
        let td = schema::epoch_day(preds.as_of);
        let states: Vec<Option<crate::activity::subscriptions::State>> =
            preds.customers.iter().map(|id| subs.state_at(id, td).filter(|s| s.live)).collect();
        let mrr: Vec<Option<f64>> = states.iter().map(|s| s.as_ref().map(|s| s.mrr)).collect();
        let renewal: Vec<Option<i32>> =
            states.iter().map(|s| s.as_ref().and_then(|s| s.days_to_renewal)).collect();
        let mut cols = vec![
            Column::new("mrr".into(), mrr.as_slice()),
            Column::new(
                "billing_months".into(),
                states
                    .iter()
                    .map(|s| s.as_ref().and_then(|s| s.months).map(|m| m as i32))
                    .collect::<Vec<_>>(),
            ),
            Column::new("days_to_renewal".into(), renewal.as_slice()),
        ];
        if let Some(curves) = &preds.survival {
            let n = preds.customers.len();
            for d in crate::train::survival::REPORTED {
                cols.push(Column::new(
                    format!("survival_{d}d").into(),
                    (0..n).map(|i| curves.at(i, d)).collect::<Vec<_>>(),
                ));
            }
            cols.push(Column::new(
                "expected_lifetime_days".into(),
                (0..n).map(|i| curves.rmst(i)).collect::<Vec<_>>(),
            ));
            let rate = cfg.decision.annual_discount_rate;
            let clv: Vec<f64> =
                (0..n).map(|i| curves.subscription_clv(i, mrr[i].unwrap_or(0.0), rate)).collect();
            cols.push(Column::new("subscription_clv".into(), clv));
            let at_renewal: Vec<Option<f64>> =
                (0..n).map(|i| renewal[i].and_then(|d| curves.interpolate(i, d))).collect();
            cols.push(Column::new("renewal_probability".into(), at_renewal));
        }
        for c in cols {
            df.with_column(c).polars("adding the subscription columns")?;
        }
    }
    Ok(())
}

/// The columns that depend on the whole scored base: rank and top segment, RFM quintiles
/// and segment, and the change since the previous run.
pub struct WholeBase {
    pub risk_rank: Vec<u32>,
    pub in_top_decile: Vec<bool>,
    pub score_change: Vec<Option<i32>>,
    pub rfm: [Vec<i32>; 3],
    /// The groups after the per-band balance ([`experiment::balance`]).
    pub groups: Vec<Option<Group>>,
}

/// [`WholeBase`] of the local scores of every customer (rows in customer order).
pub fn whole_base(local: &DataFrame, cfg: &Config, previous: Option<&PreviousRun>) -> Result<WholeBase> {
    let top_share = cfg.output.top_share;
    let risk_rank = risk_ranks(&features_of(local, RANK_KEY)?);
    let top_n = top_size(top_share, local.height());
    let ctx = "the local scores";
    let ids = local.column(CUSTOMER).polars(ctx)?.str().polars(ctx)?;
    let scores = local.column("risk_score").polars(ctx)?.i32().polars(ctx)?;
    let score_change = match previous {
        Some(prev) => ids
            .iter()
            .zip(scores.iter())
            .map(|(id, s)| Some(s? - prev.risk_scores.get(id.unwrap_or_default())?))
            .collect(),
        None => vec![None; local.height()],
    };
    let rfm = [
        quintiles(&features_of(local, RFM_VALUES[0])?),
        quintiles(&features_of(local, RFM_VALUES[1])?),
        quintiles(&features_of(local, RFM_VALUES[2])?),
    ];
    let in_top_decile = risk_rank.iter().map(|&r| r <= top_n).collect();
    let mut groups: Vec<Option<Group>> =
        text_column(local, EXPERIMENT_GROUP)?.iter().map(|g| g.as_deref().and_then(Group::parse)).collect();
    let levels = text_column(local, "risk_level")?;
    let band: Vec<&str> = levels.iter().map(|l| l.as_deref().unwrap_or_default()).collect();
    experiment::balance(
        &cfg.experiment,
        &mut groups,
        &bool_column(local, DECIDED)?,
        &band,
        &features_of(local, EXPERIMENT_DRAW)?,
    );
    Ok(WholeBase { risk_rank, in_top_decile, score_change, rfm, groups })
}

/// The scores table (columns [`SCORE_COLUMNS`]) of the local scores and the whole-base
/// columns.
pub fn assemble(local: &DataFrame, w: WholeBase) -> Result<DataFrame> {
    let [r, f, m] = w.rfm;
    let segment: Vec<&str> = r.iter().zip(&f).map(|(&a, &b)| rfm_segment(a, b)).collect();
    let mut df = local.clone();
    for c in [
        Column::new("risk_rank".into(), w.risk_rank),
        Column::new("in_top_decile".into(), w.in_top_decile),
        Column::new("score_change".into(), w.score_change),
        Column::new("rfm_r".into(), r),
        Column::new("rfm_f".into(), f),
        Column::new("rfm_m".into(), m),
        Column::new("rfm_segment".into(), segment),
        Column::new("contact".into(), w.groups.iter().map(|&g| Group::contacted(g)).collect::<Vec<_>>()),
        Column::new(
            EXPERIMENT_GROUP.into(),
            w.groups.iter().map(|g| g.map(Group::as_str)).collect::<Vec<_>>(),
        ),
    ] {
        df.with_column(c).polars("assembling scores")?;
    }
    df.select(SCORE_COLUMNS).polars("ordering the score columns")
}

/// The columns the optional inputs add: `health_score`, `health_colour`, `usage_drop`
/// (with events), `csm_sentiment` (with a customer table), `review_flag`, `review_reason`,
/// `escalation`.
pub fn signal_columns(
    cfg: &Config,
    signals: &SignalData,
    ids: &[String],
    level: &[&str],
    as_of: NaiveDate,
    history: &HashMap<String, [f64; 2]>,
) -> Result<Vec<Column>> {
    use crate::signals;
    let mut cols = Vec::new();
    let health: Option<Vec<signals::Health>> = signals.events.as_ref().map(|e| {
        let fc = signals::feature_count(&cfg.health, e);
        ids.iter().map(|id| signals::health(&cfg.health, e, id, as_of, fc)).collect()
    });
    if let (Some(h), Some(e)) = (&health, &signals.events) {
        cols.push(Column::new("health_score".into(), h.iter().map(|x| x.score).collect::<Vec<_>>()));
        cols.push(Column::new("health_colour".into(), h.iter().map(|x| x.colour).collect::<Vec<_>>()));
        let td = schema::epoch_day(as_of);
        let drop: Vec<bool> = ids
            .iter()
            .map(|id| {
                let days = e.by_customer.get(id).map_or(&[][..], |r| &e.day[r.clone()]);
                let before = &days[..days.partition_point(|&d| d < td)];
                signals::usage_drop(before, td, cfg.health.usage_drop_share)
            })
            .collect();
        cols.push(Column::new("usage_drop".into(), drop));
    }
    let customers = signals.customers.as_ref();
    let sentiment: Vec<Option<crate::activity::Sentiment>> = ids
        .iter()
        .map(|id| customers.and_then(|c| c.rows.get(id)).and_then(|c| c.sentiment_at(as_of)))
        .collect();
    if customers.is_some() {
        cols.push(Column::new(
            "csm_sentiment".into(),
            sentiment.iter().map(|s| s.map(|s| s.as_str())).collect::<Vec<_>>(),
        ));
    }
    let (subs, td) = (signals.subscriptions.as_ref(), schema::epoch_day(as_of));
    let mut flag = Vec::with_capacity(ids.len());
    let mut reason = Vec::with_capacity(ids.len());
    let mut escalation = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        let h = health.as_ref().map(|h| &h[i]);
        let past = history.get(id).map_or(&[][..], |v| &v[..]);
        let why = signals::review_reasons(level[i], h, sentiment[i], past);
        flag.push(!why.is_empty());
        reason.push((!why.is_empty()).then(|| why.join("; ")));
        // ARR from the customer table, else 12 x the live subscription's MRR.
        let sub = subs.and_then(|s| s.state_at(id, td).filter(|s| s.live));
        let arr = customers
            .and_then(|c| c.rows.get(id))
            .and_then(|c| c.arr())
            .or(sub.as_ref().map(|s| 12.0 * s.mrr));
        escalation.push(signals::escalation(
            &cfg.escalation,
            level[i],
            arr,
            sub.and_then(|s| s.days_to_renewal),
        ));
    }
    cols.push(Column::new("review_flag".into(), flag));
    cols.push(Column::new("review_reason".into(), reason));
    cols.push(Column::new("escalation".into(), escalation));
    Ok(cols)
}

/// "components usage (35), ...; dropped (none of their events in the log): ...".
pub fn health_note(
    cfg: &crate::config::HealthConfig,
    events: &crate::activity::Events,
    t: NaiveDate,
) -> String {
    let used = crate::signals::health_components(cfg, events, t);
    let all = ["usage", "adoption", "engagement", "financial", "sentiment"];
    let dropped: Vec<&str> = all.iter().copied().filter(|c| !used.iter().any(|u| u.0 == *c)).collect();
    let total: f64 = used.iter().map(|u| u.1).sum();
    let parts: Vec<String> = used.iter().map(|(c, w)| format!("{c} {:.0}%", 100.0 * w / total)).collect();
    let mut note = format!("components {}", parts.join(", "));
    if !dropped.is_empty() {
        note.push_str(&format!(
            "; dropped (none of their events in the log, weights renormalized): {}",
            dropped.join(", ")
        ));
    }
    note
}

impl std::fmt::Display for ScoreSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "scored {} customers eligible at {} with model {}",
            self.scored, self.as_of, self.model_id
        )?;
        for (level, count) in &self.per_level {
            let share = if self.scored > 0 { 100.0 * *count as f64 / self.scored as f64 } else { 0.0 };
            writeln!(f, "  {level:<10} {count:>9}  ({share:.1}%)")?;
        }
        writeln!(
            f,
            "  selected by the cost-weighted threshold: {}; to contact: {}",
            self.selected, self.contacted
        )?;
        if let Some(e) = &self.experiment {
            writeln!(f, "  {e}")?;
        }
        write!(
            f,
            "  top-risk segment: {} customers, expected loss {:.0}",
            self.top_size, self.top_expected_loss
        )?;
        if let Some(d) = self.previous_run {
            write!(f, "\n  score_change against the run of {d}")?;
        }
        if let Some(h) = &self.health {
            write!(f, "\n  health score: {h}")?;
        }
        for n in &self.notes {
            write!(f, "\n{n}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfm_segments_cover_the_grid() {
        assert_eq!(rfm_segment(5, 5), "Champions");
        assert_eq!(rfm_segment(4, 5), "Loyal");
        assert_eq!(rfm_segment(5, 2), "Potential Loyalists");
        assert_eq!(rfm_segment(5, 1), "New");
        assert_eq!(rfm_segment(4, 1), "Promising");
        assert_eq!(rfm_segment(3, 3), "Need Attention");
        assert_eq!(rfm_segment(3, 2), "About to Sleep");
        assert_eq!(rfm_segment(2, 5), "Can't Lose Them");
        assert_eq!(rfm_segment(1, 4), "At Risk");
        assert_eq!(rfm_segment(2, 1), "Hibernating");
        assert_eq!(rfm_segment(1, 1), "Lost");
        // Every cell has a segment.
        for r in 1..=5 {
            for f in 1..=5 {
                assert!(!rfm_segment(r, f).is_empty());
            }
        }
    }

    #[test]
    fn quintiles_with_ties() {
        let q = quintiles(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!(q, vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        // All equal: one shared (middle) quintile.
        assert_eq!(quintiles(&[3.0; 4]), vec![3; 4]);
        // Ties share the quintile of their average rank; one value is the middle quintile.
        assert_eq!(quintiles(&[1.0, 1.0, 2.0, 3.0, 4.0]), vec![1, 1, 3, 4, 5]);
        assert_eq!(quintiles(&[7.0]), vec![3]);
    }

    #[test]
    fn top_reasons_are_the_largest_positive_contributions() {
        let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let values = [84.0, 0.5, 1234.56, f64::NAN];
        let value = |f: usize| values[f];
        // The bias (9.0) is never a reason; ties in contribution go by feature order.
        assert_eq!(
            top_reasons(&[0.1, -0.5, 0.7, 0.3, 9.0], &names, value, 3),
            "c=1235 (+0.70), d=missing (+0.30), a=84 (+0.10)"
        );
        assert_eq!(top_reasons(&[-0.1, -0.5, 0.7, 0.0, 9.0], &names, value, 3), "c=1235 (+0.70)");
        assert_eq!(top_reasons(&[0.2, 0.2, 0.0, 0.0, 0.0], &names, value, 1), "a=84 (+0.20)");
        assert_eq!(feature_value(2.345), "2.35");
        assert_eq!(feature_value(0.01234), "0.012");
        assert_eq!(feature_value(-3.0), "-3");
    }
}
