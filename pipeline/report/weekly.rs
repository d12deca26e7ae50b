//! The weekly page: who to call this week and why, what changed since last week, whether
//! the model can still be trusted (drift, realized AUC), and the base's retention KPIs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Serialize;

use super::chart::{self, BarChart, HLine, Line, LineChart};
use super::kpi::{self, Kpis, COHORT_OFFSETS};
use super::{Doc, Tone};
use crate::config::Config;
use crate::error::{PolarsContext, Result};
use crate::experiment::Effect;
use crate::features::Daily;
use crate::format::{f4, int, money, pct};
use crate::model::LoadedModel;
use crate::monitor::estimate::Figures;
use crate::monitor::{Drift, Estimated, MonitorReport, Status};
use crate::schema::{epoch_day, CUSTOMER};
use crate::sink::ScoreParquet;
use crate::threshold::RiskBands;

/// Score rise (points) since last week that puts a customer on the risers list.
pub const RISE_POINTS: i32 = 20;
/// Rows shown in the top-risk and risers tables (the files hold them all).
pub const SHOWN: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct LevelRow {
    pub level: String,
    pub playbook: String,
    pub customers: usize,
    pub previous: Option<usize>,
    pub change: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CustomerRow {
    pub risk_rank: u32,
    pub customer_id: String,
    pub churn_probability: f64,
    pub risk_score: i32,
    pub risk_level: String,
    pub score_change: Option<i32>,
    pub predicted_clv: f64,
    pub expected_loss: f64,
    pub rfm_segment: String,
    pub top_reasons: String,
    pub playbook: String,
    /// The decision contacts this customer (churn probability above the threshold).
    pub contact: bool,
}

/// An account where the signals disagree, or an escalation fired.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewRow {
    pub risk_rank: u32,
    pub customer_id: String,
    pub risk_level: String,
    pub churn_probability: f64,
    pub health_score: Option<f64>,
    pub health_colour: Option<String>,
    pub csm_sentiment: Option<String>,
    pub usage_drop: Option<bool>,
    pub review_reason: Option<String>,
    pub escalation: Option<String>,
}

/// Health, flags and escalations (when events or a customer table are configured).
#[derive(Debug, Clone, Serialize)]
pub struct SignalsView {
    /// Health components used and dropped.
    pub health_components: Option<String>,
    /// Customers per health colour (red, yellow, green).
    pub health: Vec<(String, usize)>,
    pub usage_drop: usize,
    pub flagged_total: usize,
    pub flagged: Vec<ReviewRow>,
    pub escalations: Vec<ReviewRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentRow {
    pub segment: String,
    pub customers: usize,
    pub revenue_share_365d: f64,
    pub mean_churn_probability: f64,
    pub action: String,
}

/// `reports/weekly/<as_of>.json`.
#[derive(Debug, Clone, Serialize)]
pub struct WeeklyReport {
    pub as_of: NaiveDate,
    pub model_id: String,
    pub model_age_days: i64,
    pub previous_run: Option<NaiveDate>,
    pub scored: usize,
    pub contacted: usize,
    pub top_size: usize,
    pub top_expected_loss: f64,
    pub levels: Vec<LevelRow>,
    pub top: Vec<CustomerRow>,
    /// Customers the decision contacts, highest expected loss first: the most worth saving
    /// (the riskiest are often already gone and worth little).
    pub worth_saving: Vec<CustomerRow>,
    /// What the contact list is ranked by (incremental value once an uplift model scores).
    #[serde(default)]
    pub worth_saving_by_uplift: bool,
    pub risers_total: usize,
    pub risers: Vec<CustomerRow>,
    pub segments: Vec<SegmentRow>,
    pub drift: Vec<Drift>,
    pub auc_history: Vec<(NaiveDate, f64)>,
    pub holdout_auc: f64,
    pub auc_alert_below: f64,
    pub alerts: Vec<String>,
    pub retrain: bool,
    pub advice: String,
    pub kpis: Kpis,
    pub signals: Option<SignalsView>,
    /// The control group of this run (None outside an experiment or for scores written
    /// before it).
    pub experiment: Option<crate::experiment::HeldOut>,
    /// What orders `risk_rank` and the top-risk segment (`output.rank_by`).
    pub rank_by: String,
    /// The measured effect of contacting of every matured run with a control group so far.
    pub effects: Vec<(NaiveDate, Effect)>,
    /// The effect pooled over those runs, each customer at its first selection.
    #[serde(default)]
    pub pooled: Option<crate::monitor::PooledEffect>,
    /// Every run's performance estimated when it was scored, and realized once it matured,
    /// oldest first (this run's included).
    pub performance: Vec<RunPerformance>,
    /// What the estimated AUC is compared with, and the alert line below it.
    pub estimate_reference: f64,
    pub estimate_alert_below: f64,
    /// Renewals of the next 90 days (with subscriptions).
    #[serde(default)]
    pub renewals: Option<super::renewals::RenewalsView>,
    /// MRR, NRR, GRR and the MRR movements (with subscriptions).
    #[serde(default)]
    pub revenue: Option<crate::activity::subscriptions::RevenueKpis>,
}

/// One run's estimated performance and, once it matured, its realized figures.
#[derive(Debug, Clone, Serialize)]
pub struct RunPerformance {
    pub estimated: Estimated,
    /// ROC AUC, precision, recall, net value (None until the run matures).
    pub realized: Option<Figures>,
}

/// What marketing does with each RFM segment (the usual playbook).
pub fn segment_action(segment: &str) -> &'static str {
    match segment {
        "Champions" => "Reward them; ask for reviews and referrals; early access to new products.",
        "Loyal" => "Upsell higher-value products; loyalty programme; ask for reviews.",
        "Potential Loyalists" => "Membership or loyalty offer; personalised recommendations.",
        "New" => "Onboarding and early success; build the relationship.",
        "Promising" => "Create brand awareness; free trials or samples.",
        "Need Attention" => "Limited-time offers based on past purchases; reactivate them.",
        "About to Sleep" => "Share popular products; renewed discounts; reconnect.",
        "At Risk" => "Personalised win-back messages; renewals; helpful resources.",
        "Can't Lose Them" => "Win them back with renewals or newer products; talk to them.",
        "Hibernating" => "Offer other relevant products and special discounts.",
        "Lost" => "One reach-out campaign to revive interest; otherwise do not spend.",
        _ => "",
    }
}

fn str_col(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = df.column(name).polars(name)?.cast(&DataType::String).polars(name)?;
    Ok(c.str().polars(name)?.iter().map(|v| v.unwrap_or_default().to_string()).collect())
}

fn f64_col(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let c = df.column(name).polars(name)?.cast(&DataType::Float64).polars(name)?;
    Ok(c.f64().polars(name)?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// The review columns of a scores table, when it has them.
fn signals_view(scores: &DataFrame) -> Result<Option<SignalsView>> {
    if scores.column("review_flag").is_err() {
        return Ok(None);
    }
    let opt_str = |name: &str| -> Result<Option<Vec<Option<String>>>> {
        match scores.column(name) {
            Ok(c) => {
                let c = c.cast(&DataType::String).polars(name)?;
                Ok(Some(c.str().polars(name)?.iter().map(|v| v.map(str::to_string)).collect()))
            }
            Err(_) => Ok(None),
        }
    };
    let opt_bool = |name: &str| -> Option<Vec<Option<bool>>> {
        scores.column(name).ok().and_then(|c| c.bool().ok().map(|b| b.iter().collect()))
    };
    let health = scores.column("health_score").ok().map(|_| f64_col(scores, "health_score")).transpose()?;
    let colour = opt_str("health_colour")?;
    let sentiment = opt_str("csm_sentiment")?;
    let reason = opt_str("review_reason")?.unwrap_or_default();
    let escalation = opt_str("escalation")?.unwrap_or_default();
    let drop = opt_bool("usage_drop");
    let flag = opt_bool("review_flag").unwrap_or_default();
    let ids = str_col(scores, CUSTOMER)?;
    let level = str_col(scores, "risk_level")?;
    let p = f64_col(scores, "churn_probability")?;
    let rank = i32_col(scores, "risk_rank")?;
    let row = |i: usize| ReviewRow {
        risk_rank: rank[i].unwrap_or(0) as u32,
        customer_id: ids[i].clone(),
        risk_level: level[i].clone(),
        churn_probability: p[i],
        health_score: health.as_ref().map(|h| h[i]),
        health_colour: colour.as_ref().and_then(|c| c[i].clone()),
        csm_sentiment: sentiment.as_ref().and_then(|c| c[i].clone()),
        usage_drop: drop.as_ref().and_then(|d| d[i]),
        review_reason: reason.get(i).cloned().flatten(),
        escalation: escalation.get(i).cloned().flatten(),
    };
    let mut order: Vec<usize> = (0..scores.height()).collect();
    order.sort_by_key(|&i| rank[i].unwrap_or(i32::MAX));
    let flagged_idx: Vec<usize> =
        order.iter().copied().filter(|&i| flag.get(i).copied().flatten() == Some(true)).collect();
    let health_counts = match &colour {
        Some(c) => ["red", "yellow", "green"]
            .iter()
            .map(|k| (k.to_string(), c.iter().filter(|v| v.as_deref() == Some(*k)).count()))
            .collect(),
        None => Vec::new(),
    };
    Ok(Some(SignalsView {
        health_components: None,
        health: health_counts,
        usage_drop: drop.as_ref().map_or(0, |d| d.iter().filter(|v| **v == Some(true)).count()),
        flagged_total: flagged_idx.len(),
        flagged: flagged_idx.iter().take(SHOWN).map(|&i| row(i)).collect(),
        escalations: order
            .iter()
            .copied()
            .filter(|&i| escalation.get(i).is_some_and(|e| e.is_some()))
            .map(row)
            .collect(),
    }))
}

fn i32_col(df: &DataFrame, name: &str) -> Result<Vec<Option<i32>>> {
    let c = df.column(name).polars(name)?.cast(&DataType::Int32).polars(name)?;
    Ok(c.i32().polars(name)?.iter().collect())
}

/// The columns of a scores table the page reads, borrowed (text columns are read in place;
/// a row is copied out only when the page shows it).
struct ScoreColumns<'a> {
    ids: Vec<&'a str>,
    p: Vec<f64>,
    score: Vec<Option<i32>>,
    level: Vec<&'a str>,
    change: Vec<Option<i32>>,
    clv: Vec<f64>,
    loss: Vec<f64>,
    rank: Vec<u32>,
    segment: Vec<&'a str>,
    reasons: Vec<&'a str>,
    playbook: Vec<&'a str>,
    contact: Vec<bool>,
    /// `incremental_value` when an uplift model scored the run (None: the column is absent or
    /// empty).
    incremental: Option<Vec<f64>>,
}

/// A text column's values in place (missing ones empty).
fn str_refs<'a>(df: &'a DataFrame, name: &str) -> Result<Vec<&'a str>> {
    Ok(df.column(name).polars(name)?.str().polars(name)?.iter().map(|v| v.unwrap_or_default()).collect())
}

impl<'a> ScoreColumns<'a> {
    fn of(scores: &'a DataFrame) -> Result<Self> {
        let contact: Vec<bool> = match scores.column("contact") {
            Ok(c) => c.bool().polars("reading contact")?.iter().map(|v| v.unwrap_or(false)).collect(),
            Err(_) => vec![false; scores.height()],
        };
        Ok(ScoreColumns {
            ids: str_refs(scores, CUSTOMER)?,
            p: f64_col(scores, "churn_probability")?,
            score: i32_col(scores, "risk_score")?,
            level: str_refs(scores, "risk_level")?,
            change: i32_col(scores, "score_change")?,
            clv: f64_col(scores, "predicted_clv")?,
            loss: f64_col(scores, "expected_loss")?,
            rank: i32_col(scores, "risk_rank")?.into_iter().map(|r| r.unwrap_or(0) as u32).collect(),
            segment: str_refs(scores, "rfm_segment")?,
            reasons: str_refs(scores, "top_reasons")?,
            playbook: str_refs(scores, "playbook")?,
            contact,
            incremental: match scores.column(crate::score::INCREMENTAL_VALUE) {
                Ok(c) if c.null_count() < c.len() => Some(f64_col(scores, crate::score::INCREMENTAL_VALUE)?),
                _ => None,
            },
        })
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn row(&self, i: usize) -> CustomerRow {
        CustomerRow {
            risk_rank: self.rank[i],
            customer_id: self.ids[i].to_string(),
            churn_probability: self.p[i],
            risk_score: self.score[i].unwrap_or(0),
            risk_level: self.level[i].to_string(),
            score_change: self.change[i],
            predicted_clv: self.clv[i],
            expected_loss: self.loss[i],
            rfm_segment: self.segment[i].to_string(),
            top_reasons: self.reasons[i].to_string(),
            playbook: self.playbook[i].to_string(),
            contact: self.contact[i],
        }
    }
}

/// Everything the weekly page is made of.
pub struct WeeklyInputs<'a> {
    /// Health components used / dropped (see `score::health_note`).
    pub health_note: Option<String>,
    pub scores: &'a DataFrame,
    /// The previous run's scores (for the per-level change), with its date.
    pub previous: Option<(NaiveDate, DataFrame)>,
    pub monitor: &'a MonitorReport,
    pub bands: &'a RiskBands,
    pub daily: &'a Daily,
    pub active_days: i32,
    pub gross_margin: f64,
    pub top_share: f64,
    /// The run's control group (see [`crate::experiment::held_out`]).
    pub experiment: Option<crate::experiment::HeldOut>,
    pub rank_by: crate::config::RankBy,
    pub effects: Vec<(NaiveDate, Effect)>,
    pub performance: Vec<RunPerformance>,
}

/// The customers a scores table contacts.
fn contacted_count(scores: &DataFrame) -> usize {
    scores
        .column("contact")
        .ok()
        .and_then(|c| c.bool().ok().map(|b| b.sum().unwrap_or(0) as usize))
        .unwrap_or(0)
}

/// The RFM segments of the scored customers: size, share of the last 365 days' revenue
/// (`revenue` per customer), mean churn probability; largest first.
fn segment_rows(c: &ScoreColumns, revenue: &HashMap<&str, f64>) -> Vec<SegmentRow> {
    let n = c.len();
    let revenue_of = |i: usize| revenue.get(c.ids[i]).copied().unwrap_or(0.0);
    let total_revenue: f64 = (0..n).map(revenue_of).sum();
    let mut seg: BTreeMap<&str, (usize, f64, f64)> = BTreeMap::new();
    for i in 0..n {
        let e = seg.entry(c.segment[i]).or_default();
        e.0 += 1;
        e.1 += revenue_of(i);
        e.2 += c.p[i];
    }
    let mut segments: Vec<SegmentRow> = seg
        .into_iter()
        .map(|(s, (count, rev, p))| SegmentRow {
            segment: s.to_string(),
            customers: count,
            revenue_share_365d: if total_revenue != 0.0 { rev / total_revenue } else { f64::NAN },
            mean_churn_probability: p / count as f64,
            action: segment_action(s).to_string(),
        })
        .collect();
    segments.sort_by_key(|s| std::cmp::Reverse(s.customers));
    segments
}

pub fn build(w: &WeeklyInputs) -> Result<WeeklyReport> {
    let m = w.monitor;
    let c = ScoreColumns::of(w.scores)?;
    let n = c.len();
    let level_counts = |levels: &[&str]| {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for l in levels {
            *counts.entry(l).or_default() += 1;
        }
        w.bands.bands.iter().map(|b| counts.get(b.name.as_str()).copied().unwrap_or(0)).collect::<Vec<_>>()
    };
    let now = level_counts(&c.level);
    let before = match &w.previous {
        Some((_, df)) => Some(level_counts(&str_refs(df, "risk_level")?)),
        None => None,
    };
    let levels = w
        .bands
        .bands
        .iter()
        .enumerate()
        .map(|(i, b)| LevelRow {
            level: b.name.clone(),
            playbook: b.playbook.clone(),
            customers: now[i],
            previous: before.as_ref().map(|p| p[i]),
            change: before.as_ref().map(|p| now[i] as i64 - p[i] as i64),
        })
        .collect();

    let top_n = (w.top_share * n as f64).round() as u32;
    let mut by_rank: Vec<usize> = (0..n).collect();
    by_rank.sort_by_key(|&i| c.rank[i]);
    let top: Vec<CustomerRow> = by_rank.iter().take(SHOWN.min(top_n as usize)).map(|&i| c.row(i)).collect();
    let top_expected_loss = (0..n).filter(|&i| c.rank[i] <= top_n).map(|i| c.loss[i]).sum();
    let mut worth_saving: Vec<usize> = (0..n).filter(|&i| c.contact[i]).collect();
    // What a call is worth: its incremental value once an uplift model scores, else the
    // expected loss.
    let worth = c.incremental.as_ref().unwrap_or(&c.loss);
    worth_saving.sort_by(|&a, &b| worth[b].total_cmp(&worth[a]).then(c.rank[a].cmp(&c.rank[b])));
    let worth_saving = worth_saving.into_iter().take(SHOWN).map(|i| c.row(i)).collect();
    let mut risers: Vec<usize> = (0..n).filter(|&i| c.change[i].is_some_and(|d| d >= RISE_POINTS)).collect();
    risers.sort_by(|&a, &b| c.change[b].cmp(&c.change[a]).then(c.rank[a].cmp(&c.rank[b])));
    let risers_total = risers.len();
    let risers = risers.into_iter().take(SHOWN).map(|i| c.row(i)).collect();

    let (kpis, revenue) = kpi::compute(w.daily, m.as_of, w.active_days, w.gross_margin);
    let kpis = kpi::Kpis {
        nrr: m.revenue.and_then(|r| r.trailing_12_months.nrr),
        grr: m.revenue.and_then(|r| r.trailing_12_months.grr),
        ..kpis
    };
    let segments = segment_rows(&c, &revenue);

    Ok(WeeklyReport {
        as_of: m.as_of,
        model_id: m.model_id.clone(),
        model_age_days: m.model_age_days,
        previous_run: w.previous.as_ref().map(|p| p.0),
        scored: n,
        contacted: contacted_count(w.scores),
        top_size: top_n as usize,
        top_expected_loss,
        levels,
        top,
        worth_saving,
        worth_saving_by_uplift: c.incremental.is_some(),
        risers_total,
        risers,
        segments,
        drift: m.drift.clone(),
        auc_history: m.auc_history.clone(),
        holdout_auc: m.holdout_auc,
        auc_alert_below: m.holdout_auc - m.thresholds.auc_drop_alert,
        alerts: m.alerts.clone(),
        retrain: m.retrain,
        advice: m.advice.clone(),
        kpis,
        signals: signals_view(w.scores)?.map(|mut v| {
            v.health_components = w.health_note.clone();
            v
        }),
        experiment: w.experiment,
        rank_by: rank_by_words(w.rank_by).to_string(),
        effects: w.effects.clone(),
        pooled: m.pooled.clone(),
        performance: w.performance.clone(),
        estimate_reference: m.estimate_reference(),
        estimate_alert_below: m.estimate_reference() - m.thresholds.estimated_auc_drop_alert,
        renewals: super::renewals::renewals(w.scores)?,
        revenue: m.revenue,
    })
}

fn status_tone(s: Status) -> Tone {
    match s {
        Status::Ok => Tone::Good,
        Status::Warn => Tone::Warn,
        Status::Alert => Tone::Bad,
        Status::Info => Tone::Plain,
    }
}

fn customer_table(d: &mut Doc, rows: &[CustomerRow]) {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.risk_rank.to_string(),
                r.customer_id.clone(),
                pct(r.churn_probability),
                r.risk_score.to_string(),
                r.risk_level.clone(),
                r.score_change.map_or("new".into(), |c| format!("{c:+}")),
                money(r.predicted_clv),
                money(r.expected_loss),
                r.rfm_segment.clone(),
                r.top_reasons.clone(),
                r.playbook.clone(),
            ]
        })
        .collect();
    d.table(
        &[
            "rank",
            "customer",
            "churn prob.",
            "score",
            "level",
            "change",
            "predicted CLV",
            "expected loss",
            "RFM segment",
            "top reasons",
            "playbook",
        ],
        &body,
        None,
    );
}

fn review_table(d: &mut Doc, rows: &[ReviewRow]) {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.risk_rank.to_string(),
                r.customer_id.clone(),
                r.risk_level.clone(),
                pct(r.churn_probability),
                r.health_score.map_or("-".into(), |h| {
                    format!("{h:.0} ({})", r.health_colour.as_deref().unwrap_or("-"))
                }),
                r.csm_sentiment.clone().unwrap_or_else(|| "-".into()),
                r.usage_drop.map_or("-".into(), |u| if u { "yes".into() } else { "no".into() }),
                r.review_reason.clone().unwrap_or_default(),
                r.escalation.clone().unwrap_or_default(),
            ]
        })
        .collect();
    d.table(
        &[
            "rank",
            "customer",
            "level",
            "churn prob.",
            "health",
            "CSM",
            "usage drop",
            "why review",
            "escalation",
        ],
        &body,
        None,
    );
}

pub fn render(r: &WeeklyReport) -> Result<Doc> {
    let mut d = Doc::new(
        &format!("Weekly retention report: {}", r.as_of),
        &format!(
            "{} customers scored with model {} (its data ends {} day(s) before this run){}.",
            int(r.scored as i64),
            r.model_id,
            r.model_age_days,
            r.previous_run.map_or(String::new(), |p| format!("; compared with the run of {p}"))
        ),
    );

    section_status(&mut d, r)?;
    section_levels(&mut d, r)?;
    section_worth_saving(&mut d, r)?;
    if let Some(v) = &r.renewals {
        super::renewals::section_renewals(&mut d, v);
    }
    section_top(&mut d, r)?;
    section_risers(&mut d, r)?;
    section_rfm(&mut d, r)?;
    section_drift(&mut d, r)?;
    section_auc(&mut d, r)?;
    section_estimated(&mut d, r)?;
    section_effect(&mut d, r)?;
    if let Some(k) = &r.revenue {
        super::renewals::section_revenue(&mut d, k);
    }
    section_kpis(&mut d, r)?;
    Ok(d)
}

fn section_status(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("status", "Alerts and advice");
    if r.alerts.is_empty() {
        d.alert(
            "No alert: no feature or score drifted past the alert line and no matured run lost AUC.",
            Tone::Good,
        );
    }
    for a in &r.alerts {
        d.alert(a, Tone::Bad);
    }
    d.alert(&r.advice, if r.retrain { Tone::Warn } else { Tone::Plain });

    if let Some(sv) = &r.signals {
        d.section("review", "Accounts to review: where the model, the health score and the CSM disagree");
        if !sv.health.is_empty() {
            let text: Vec<String> =
                sv.health.iter().map(|(c, n)| format!("{c} {}", int(*n as i64))).collect();
            d.reading(&format!(
                "Health (0-100; red < 40, yellow 40-70, green > 70): {}; {} customers with a usage drop (activity down 30% or more in each of the last two 30-day windows).",
                text.join(", "),
                int(sv.usage_drop as i64)
            ));
            if let Some(h) = &sv.health_components {
                d.para(&format!("Health score {h}."));
            }
        }
        d.reading(&format!(
            "{} accounts flagged for review ({} listed, riskiest first); {} escalations.",
            int(sv.flagged_total as i64),
            sv.flagged.len(),
            int(sv.escalations.len() as i64)
        ));
        review_table(d, &sv.flagged);
        if !sv.escalations.is_empty() {
            d.section("escalations", "Escalations");
            review_table(d, &sv.escalations);
        }
    }
    Ok(())
}

fn section_levels(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("levels", "Customers per risk level");
    let rows: Vec<Vec<String>> = r
        .levels
        .iter()
        .map(|l| {
            vec![
                l.level.clone(),
                int(l.customers as i64),
                pct(l.customers as f64 / r.scored.max(1) as f64),
                l.previous.map_or("-".into(), |p| int(p as i64)),
                l.change.map_or("-".into(), |c| format!("{c:+}")),
                l.playbook.clone(),
            ]
        })
        .collect();
    d.table(&["risk level", "customers", "share", "last week", "change", "playbook"], &rows, None);
    let svg = chart::bar_chart(&BarChart {
        title: "Customers per risk level".into(),
        x_label: "risk level".into(),
        y_label: "customers".into(),
        categories: r.levels.iter().map(|l| l.level.clone()).collect(),
        series: {
            let mut s = vec![(
                "this week".to_string(),
                r.levels.iter().map(|l| l.customers as f64).collect::<Vec<_>>(),
            )];
            if r.levels.iter().all(|l| l.previous.is_some()) {
                s.insert(
                    0,
                    ("last week".into(), r.levels.iter().map(|l| l.previous.unwrap_or(0) as f64).collect()),
                );
            }
            s
        },
        overlay: None,
    })?;
    let worst = r.levels.iter().rev().take(2).map(|l| l.customers).sum::<usize>();
    d.chart(
        "levels",
        svg,
        &format!(
            "{} customers are critical or imminent; {} are flagged for contact by the cost-weighted threshold.",
            int(worst as i64),
            int(r.contacted as i64)
        ),
    );
    Ok(())
}

fn section_top(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("top", "Top 10% risk segment");
    d.reading(&format!(
        "{} customers in the top-risk segment, ranked by {} (output.rank_by), expected loss {} (churn probability x predicted CLV). The first {} are listed; the full list is in top_risk.parquet / churn_top_risk.",
        int(r.top_size as i64),
        r.rank_by,
        money(r.top_expected_loss),
        r.top.len()
    ));
    customer_table(d, &r.top);
    Ok(())
}

fn section_worth_saving(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("worth-saving", "Contact list: most worth a call");
    let ranked = if r.worth_saving_by_uplift {
        "ranked by incremental value (the churn a call prevents, from the uplift model, x predicted CLV, \
         minus the contact cost): the customers a call changes most"
    } else {
        "ranked by expected loss (churn probability x predicted CLV; by incremental value once an uplift \
         model ships)"
    };
    d.reading(&format!(
        "Of the {} customers to contact this week, the {} with the most at stake, {ranked}. The riskiest \
         customers are often already gone and worth little; these are where a call pays most. The full \
         list is the scores' contact = true.",
        int(r.contacted as i64),
        r.worth_saving.len()
    ));
    if let Some(e) = &r.experiment {
        d.para(&format!(
            "Control group: {} customer(s) the decision selects are held out (scored, not contacted, not \
             listed here, not pushed to the CRM) so that the effect of contacting can be measured when \
             their outcomes mature; at the decision's assumed value of a contact this forgoes an expected \
             {} this run.{}{}",
            int(e.control as i64),
            money(e.forgone_value),
            if e.exempt > 0 {
                format!(" {} account(s) are never held out (exempt).", int(e.exempt as i64))
            } else {
                String::new()
            },
            if e.explored > 0 {
                format!(
                    " {} customer(s) below the threshold are contacted to explore.",
                    int(e.explored as i64)
                )
            } else {
                String::new()
            },
        ));
    }
    customer_table(d, &r.worth_saving);
    Ok(())
}

fn section_risers(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("risers", &format!("Scores up {RISE_POINTS} points or more since last week"));
    if r.previous_run.is_none() {
        d.para("No previous run to compare with: this list starts next week.");
    } else {
        d.reading(&format!(
            "{} customers' risk score rose by {RISE_POINTS} points or more since {}; a jump is a signal even below the top 10%.",
            int(r.risers_total as i64),
            r.previous_run.map_or("-".into(), |p| p.to_string())
        ));
        customer_table(d, &r.risers);
    }
    Ok(())
}

fn section_rfm(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("rfm", "RFM segments");
    let rows: Vec<Vec<String>> = r
        .segments
        .iter()
        .map(|s| {
            vec![
                s.segment.clone(),
                int(s.customers as i64),
                pct(s.revenue_share_365d),
                pct(s.mean_churn_probability),
                s.action.clone(),
            ]
        })
        .collect();
    d.table(
        &["segment", "customers", "revenue share (365 d)", "expected churn rate", "suggested action"],
        &rows,
        None,
    );
    if let Some(big) = r.segments.iter().max_by(|a, b| a.revenue_share_365d.total_cmp(&b.revenue_share_365d))
    {
        d.reading(&format!(
            "{} bring {} of the last year's revenue with an expected churn rate of {}.",
            big.segment,
            pct(big.revenue_share_365d),
            pct(big.mean_churn_probability)
        ));
    }
    Ok(())
}

fn section_drift(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("drift", "Drift against the training reference");
    let mut drift = r.drift.clone();
    drift.sort_by(|a, b| b.psi.total_cmp(&a.psi));
    let rows: Vec<Vec<String>> = drift
        .iter()
        .map(|x| {
            vec![
                x.item.clone(),
                x.kind.clone(),
                f4(x.psi),
                f4(x.ks),
                format!("{:.3}", x.mean_reference),
                format!("{:.3}", x.mean_current),
                x.status.as_str().to_string(),
            ]
        })
        .collect();
    let tones: Vec<Vec<Tone>> = drift
        .iter()
        .map(|x| {
            vec![
                Tone::Plain,
                Tone::Plain,
                status_tone(x.status),
                Tone::Plain,
                Tone::Plain,
                Tone::Plain,
                status_tone(x.status),
            ]
        })
        .collect();
    d.table(&["item", "kind", "PSI", "KS", "mean (reference)", "mean (now)", "status"], &rows, Some(&tones));
    let worst = drift.iter().find(|x| x.status != Status::Info);
    d.reading(&worst.map_or("Nothing to compare.".into(), |w| {
        format!("Largest shift: {} (PSI {}, status {}); PSI < 0.1 is stable, 0.1-0.25 a moderate shift, > 0.25 a large one.", w.item, f4(w.psi), w.status.as_str())
    }));
    Ok(())
}

fn section_effect(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("effect", "Is contacting working?");
    if r.effects.is_empty() {
        d.para(
            "No run with a control group has matured yet: the effect of contacting is measured once a \
             run's outcome window (the horizon) has passed, churn of the contacted customers against the \
             held-out control group of the same run.",
        );
        return Ok(());
    }
    let pts = |f: fn(&Effect) -> f64| {
        r.effects.iter().map(|(run, e)| (f64::from(epoch_day(*run)), 100.0 * f(e))).collect::<Vec<_>>()
    };
    let svg = chart::line_chart(&LineChart {
        title: "Churn prevented by contacting, per matured run: its customers new to the experiment (points, 95% interval)".into(),
        x_label: "run date".into(),
        y_label: "control minus treatment churn (points)".into(),
        lines: vec![
            Line::new("measured", pts(|e| e.reduction), 0).dots(),
            Line::new("95% low", pts(|e| e.reduction_low), 1).dashed(),
            Line::new("95% high", pts(|e| e.reduction_high), 1).dashed(),
        ],
        hlines: vec![HLine { y: 0.0, label: "no effect".into(), color: 5 }],
        dates: true,
        legend_low: true,
        ..LineChart::default()
    })?;
    let Some((last_run, last)) = r.effects.last() else { return Ok(()) };
    let verdict = |e: &Effect| {
        if e.reduction_low > 0.0 {
            "contacting measurably reduced churn"
        } else if e.reduction_high < 0.0 {
            "contacting measurably increased churn"
        } else {
            "the effect is not distinguishable from zero at this size"
        }
    };
    let mut caption = format!(
        "In the latest matured run ({}), {:.1}% of the contacted customers new to the experiment churned \
         against {:.1}% of the control group's: {} ({:+.1} points, 95% interval {:+.1} to {:+.1}, Newcombe).",
        last_run,
        100.0 * last.churn_treatment,
        100.0 * last.churn_control,
        verdict(last),
        100.0 * last.reduction,
        100.0 * last.reduction_low,
        100.0 * last.reduction_high
    );
    if let Some(p) = &r.pooled {
        let e = &p.effect;
        caption.push_str(&format!(
            " Pooled over {} matured run{}, each customer once at the run that first selected it ({} treated, \
             {} control): {} ({:+.1} points, 95% interval {:+.1} to {:+.1}). The pooled figure is the one \
             to act on: from its second selection on, a customer's group has already changed who is \
             selected again (a saved customer drops out, a control at the same risk stays), so a single \
             later run compares groups that are no longer alike.",
            p.runs,
            if p.runs == 1 { "" } else { "s" },
            int(e.treatment as i64),
            int(e.control as i64),
            verdict(e),
            100.0 * e.reduction,
            100.0 * e.reduction_low,
            100.0 * e.reduction_high
        ));
    }
    d.chart("effect", svg, &caption);
    effect_table(d, r);
    Ok(())
}

/// The effect section's table: every matured run, then the pooled row.
fn effect_table(d: &mut Doc, r: &WeeklyReport) {
    let pooled =
        r.pooled.as_ref().map(|p| (format!("pooled ({} runs, each customer once)", p.runs), &p.effect));
    let rows: Vec<Vec<String>> = r
        .effects
        .iter()
        .map(|(run, e)| (run.to_string(), e))
        .chain(pooled.iter().map(|(k, e)| (k.clone(), *e)))
        .map(|(run, e)| {
            vec![
                run,
                int(e.treatment as i64),
                int(e.control as i64),
                pct(e.churn_treatment),
                pct(e.churn_control),
                format!(
                    "{:+.1} [{:+.1}, {:+.1}]",
                    100.0 * e.reduction,
                    100.0 * e.reduction_low,
                    100.0 * e.reduction_high
                ),
                money(e.incremental_net_value),
            ]
        })
        .collect();
    d.table(
        &[
            "run",
            "treated",
            "control",
            "churn treated",
            "churn control",
            "reduction, points [95%]",
            "incremental net value",
        ],
        &rows,
        None,
    );
}

fn section_auc(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("auc", "Realized AUC over time");
    if r.auc_history.is_empty() {
        d.para(
            "No run has matured yet: a run's AUC is known once its outcome window (the horizon) has passed.",
        );
    } else {
        let pts: Vec<(f64, f64)> =
            r.auc_history.iter().map(|(d, a)| (f64::from(epoch_day(*d)), *a)).collect();
        let lo = pts.iter().map(|p| p.1).fold(r.auc_alert_below, f64::min) - 0.03;
        let hi = pts.iter().map(|p| p.1).fold(r.holdout_auc, f64::max) + 0.03;
        let svg = chart::line_chart(&LineChart {
            title: "Realized churn ROC AUC of past runs".into(),
            x_label: "run date".into(),
            y_label: "ROC AUC".into(),
            y: Some(lo.max(0.0)..hi.min(1.0)),
            lines: vec![Line::new("realized", pts, 0).dots()],
            hlines: vec![
                HLine { y: r.holdout_auc, label: format!("holdout {}", f4(r.holdout_auc)), color: 2 },
                HLine {
                    y: r.auc_alert_below,
                    label: format!("alert below {}", f4(r.auc_alert_below)),
                    color: 5,
                },
            ],
            dates: true,
            legend_low: true,
            ..LineChart::default()
        })?;
        let last = r.auc_history.last().copied().unwrap_or((r.as_of, f64::NAN));
        d.chart(
            "realized_auc",
            svg,
            &format!(
                "The latest matured run ({}) realized AUC {} against {} on the holdout.",
                last.0,
                f4(last.1),
                f4(r.holdout_auc)
            ),
        );
    }
    Ok(())
}

/// Runs shown in the estimated-vs-realized table (the newest).
const PERFORMANCE_ROWS: usize = 12;

fn section_estimated(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("estimated", "Performance before the labels: estimated when scored, realized later");
    let Some(last) = r.performance.last() else {
        d.para("No run has an estimate yet: each weekly run estimates its performance from its calibrated probabilities.");
        return Ok(());
    };
    let e = &last.estimated;
    d.para(&format!(
        "This run's ROC AUC estimated from its calibrated probabilities: {} [95% {}, {}] against the holdout's {} \
         estimated the same way (alert below {}). The estimate assumes the probabilities stay calibrated; \
         its interval allows for the labels' chance and for how far the estimate was off on the model's \
         holdout. A change in who the customers are shows here weeks before the labels mature; a change \
         in how the same customers behave does not, until the realized figures arrive.",
        f4(e.roc_auc.value),
        f4(e.roc_auc.low),
        f4(e.roc_auc.high),
        f4(r.estimate_reference),
        f4(r.estimate_alert_below)
    ));
    let svg = estimated_chart(r)?;
    let matured: Vec<&RunPerformance> = r.performance.iter().filter(|p| p.realized.is_some()).collect();
    let inside =
        matured.iter().filter(|p| p.realized.is_some_and(|f| p.estimated.roc_auc.contains(f[0]))).count();
    d.chart(
        "estimated_auc",
        svg,
        &if matured.is_empty() {
            "No run has matured yet: the realized AUC joins the estimate one horizon after each run.".to_string()
        } else {
            format!("Realized AUC inside the interval estimated when the run was scored: {inside} of {} matured runs.", matured.len())
        },
    );
    let interval = |i: &crate::monitor::estimate::Interval, f: fn(f64) -> String| {
        format!("{} [{}, {}]", f(i.value), f(i.low), f(i.high))
    };
    let real =
        |p: &RunPerformance, k: usize, f: fn(f64) -> String| p.realized.map_or("-".to_string(), |x| f(x[k]));
    let shown = r.performance.iter().rev().take(PERFORMANCE_ROWS);
    let rows: Vec<Vec<String>> = shown
        .map(|p| {
            let e = &p.estimated;
            vec![
                e.run.to_string(),
                interval(&e.roc_auc, f4),
                real(p, 0, f4),
                interval(&e.precision, pct),
                real(p, 1, pct),
                interval(&e.recall, pct),
                real(p, 2, pct),
                interval(&e.net_value, money),
                real(p, 3, money),
            ]
        })
        .collect();
    d.table(
        &[
            "run",
            "AUC estimated [95%]",
            "realized",
            "precision estimated [95%]",
            "realized",
            "recall estimated [95%]",
            "realized",
            "net value estimated [95%]",
            "realized",
        ],
        &rows,
        None,
    );
    Ok(())
}

/// Estimated AUC per run with its interval, the realized AUC of the matured runs, the holdout
/// and the alert line.
fn estimated_chart(r: &WeeklyReport) -> Result<String> {
    let day = |p: &RunPerformance| f64::from(epoch_day(p.estimated.run));
    let line =
        |f: fn(&RunPerformance) -> f64| r.performance.iter().map(|p| (day(p), f(p))).collect::<Vec<_>>();
    let realized: Vec<(f64, f64)> =
        r.performance.iter().filter_map(|p| Some((day(p), p.realized?[0]))).collect();
    let all = r.performance.iter().flat_map(|p| [p.estimated.roc_auc.low, p.estimated.roc_auc.high]);
    let lo = all.clone().fold(r.estimate_alert_below, f64::min) - 0.02;
    let hi = all.fold(r.estimate_reference, f64::max) + 0.02;
    let mut lines = vec![
        Line::new("estimated", line(|p| p.estimated.roc_auc.value), 0).dots(),
        Line::new("95% low", line(|p| p.estimated.roc_auc.low), 0).dashed(),
        Line::new("95% high", line(|p| p.estimated.roc_auc.high), 0).dashed(),
    ];
    if !realized.is_empty() {
        lines.push(Line::new("realized", realized, 1).dots());
    }
    chart::line_chart(&LineChart {
        title: "Churn ROC AUC per run: estimated when scored, realized once matured".into(),
        x_label: "run date".into(),
        y_label: "ROC AUC".into(),
        y: Some(lo.max(0.0)..hi.min(1.0)),
        lines,
        hlines: vec![
            HLine {
                y: r.estimate_reference,
                label: format!("holdout {}", f4(r.estimate_reference)),
                color: 2,
            },
            HLine {
                y: r.estimate_alert_below,
                label: format!("alert below {}", f4(r.estimate_alert_below)),
                color: 5,
            },
        ],
        dates: true,
        legend_low: true,
        ..LineChart::default()
    })
}

fn section_kpis(d: &mut Doc, r: &WeeklyReport) -> Result<()> {
    d.section("kpis", "Retention KPIs");
    let k = &r.kpis;
    let rows = vec![
        vec![
            "customer retention rate, last 90 days".into(),
            pct(k.retention_rate_90d),
            format!(
                "(active now {} - new {}) / active 90 days ago {}",
                int(k.active_at_end as i64),
                int(k.new_customers as i64),
                int(k.active_at_start as i64)
            ),
        ],
        vec![
            "churn rate, monthly".into(),
            pct(k.churn_rate_monthly),
            format!(
                "lapsed in the last 30 days {} / active 30 days ago {}",
                int(k.lapsed_in_30_days as i64),
                int(k.active_30_days_ago as i64)
            ),
        ],
        vec![
            "churn rate, annualized".into(),
            pct(k.churn_rate_annualized),
            "1 - (1 - monthly churn)^12".into(),
        ],
        vec![
            "repeat purchase rate".into(),
            pct(k.repeat_purchase_rate),
            "customers with 2+ purchase days / customers with 1+ (last 365 days)".into(),
        ],
        vec![
            "purchase frequency".into(),
            format!("{:.2}", k.purchase_frequency),
            "transactions / purchasing customers (last 365 days)".into(),
        ],
        vec![
            "average order value".into(),
            format!("{:.2}", k.average_order_value),
            "revenue / transactions (last 365 days)".into(),
        ],
        vec![
            "ARPU, monthly".into(),
            format!("{:.2}", k.arpu_monthly),
            "revenue of the last 90 days / 3 / active customers".into(),
        ],
        vec![
            "simple LTV".into(),
            format!("{:.2}", k.simple_ltv),
            format!("ARPU x gross margin ({}) / monthly churn", k.gross_margin),
        ],
        match (k.nrr, k.grr) {
            (Some(n), Some(g)) => vec![
                "NRR / GRR, last 12 months".into(),
                format!("{} / {}", pct(n), pct(g)),
                "from the subscription table's MRR (section Recurring revenue)".into(),
            ],
            _ => vec![
                "NRR / GRR".into(),
                "-".into(),
                "need recurring revenue (MRR) per customer: `[input.subscriptions]`".into(),
            ],
        },
    ];
    d.table(&["KPI", "value", "formula"], &rows, None);
    d.para(&format!(
        "\"Active\" means at least one transaction in the {} days before the date, the rule that decides who is scored.",
        k.active_days
    ));
    let mut headers = vec!["first purchase month".to_string(), "customers".to_string()];
    headers.extend(COHORT_OFFSETS.iter().map(|o| format!("+{o} d")));
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let rows: Vec<Vec<String>> = k
        .cohorts
        .iter()
        .map(|c| {
            let mut row = vec![c.month.clone(), int(c.customers as i64)];
            row.extend(c.retained.iter().map(|v| v.map_or("".into(), pct)));
            row
        })
        .collect();
    d.table(&header_refs, &rows, None);
    d.reading("Cohort retention: the share of each first-purchase month's customers with a purchase in the 30 days up to +N days after their first one; blank until every member has reached +N.");
    Ok(())
}

/// Write `reports_dir/weekly/<as_of>.{html,md,json}`.
pub fn write_weekly(report: &WeeklyReport, reports_dir: &Path) -> Result<PathBuf> {
    let doc = render(report)?;
    super::write(&reports_dir.join("weekly"), &report.as_of.to_string(), &doc, report)
}

/// The weekly report of a run (that just happened, or regenerated), not yet written
/// ([`write_weekly`] writes it): `scores` is the run's scores table,
/// `monitor` its monitoring result; last week's scores come from the Parquet partitions when
/// that sink is on.
fn rank_by_words(r: crate::config::RankBy) -> &'static str {
    match r {
        crate::config::RankBy::Probability => "churn probability",
        crate::config::RankBy::ExpectedLoss => "expected loss",
        crate::config::RankBy::IncrementalValue => {
            "incremental value (expected loss until an uplift model ships)"
        }
    }
}

/// The effect of every matured run so far among its customers new to the experiment (the
/// overall one for runs recorded without it): the history's, and the runs matured now.
fn effects_of(cfg: &Config, monitor: &MonitorReport) -> Result<Vec<(NaiveDate, Effect)>> {
    let history = crate::sink::History::new(Path::new(&cfg.output.dir));
    let mut out = history.effects(monitor.as_of)?;
    for ((run, band), e) in history.first_effects_until(monitor.as_of)? {
        if band.is_empty() {
            out.insert(run, e);
        }
    }
    for r in &monitor.realized {
        if let Some(e) = r.effect.as_ref().and_then(crate::experiment::RunEffect::headline) {
            out.insert(r.run, e.clone());
        }
    }
    Ok(out.into_iter().collect())
}

pub fn build_for_run(
    cfg: &Config,
    model: &LoadedModel,
    daily: &Daily,
    scores: &DataFrame,
    monitor: &MonitorReport,
    health_note: Option<String>,
) -> Result<WeeklyReport> {
    let as_of = monitor.as_of;
    let parquet = ScoreParquet::new(Path::new(&cfg.output.dir));
    let previous = match parquet.run_dates()?.into_iter().rfind(|&d| d < as_of) {
        Some(d) if cfg.output.parquet => Some((d, parquet.read_scores(d)?)),
        _ => None,
    };
    build(&WeeklyInputs {
        health_note,
        scores,
        previous,
        monitor,
        bands: &model.decision.bands,
        daily,
        active_days: model.info.feature_spec.eligibility_days,
        gross_margin: cfg.report.gross_margin,
        top_share: cfg.output.top_share,
        experiment: crate::score::held_out_of(cfg, model, scores)?,
        rank_by: cfg.output.rank_by,
        effects: effects_of(cfg, monitor)?,
        performance: performance_of(cfg, monitor)?,
    })
}

/// Every run's estimated performance up to the report's date (the history's and this run's),
/// with the realized figures of those that matured.
fn performance_of(cfg: &Config, monitor: &MonitorReport) -> Result<Vec<RunPerformance>> {
    let history = crate::sink::History::new(Path::new(&cfg.output.dir));
    let rows = history.rows_of_kind_until("estimated", monitor.as_of)?;
    let mut estimated =
        crate::monitor::estimate::by_run(rows.iter().map(|(i, m, v)| (i.as_str(), m.as_str(), *v)));
    if let Some(e) = &monitor.estimated {
        estimated.insert(e.run, e.clone());
    }
    let mut realized: BTreeMap<NaiveDate, BTreeMap<&str, f64>> = BTreeMap::new();
    let rows = history.rows_of_kind_until("realized", monitor.as_of)?;
    for (item, metric, value) in &rows {
        if let Ok(run) = NaiveDate::parse_from_str(item, "%Y-%m-%d") {
            realized.entry(run).or_default().insert(metric.as_str(), *value);
        }
    }
    let mut figures: BTreeMap<NaiveDate, Figures> = realized
        .into_iter()
        .map(|(run, m)| {
            let v = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            (run, [v("roc_auc"), v("precision"), v("recall"), v("net_value")])
        })
        .collect();
    for r in &monitor.realized {
        figures.insert(r.run, r.figures());
    }
    Ok(estimated
        .into_values()
        .map(|e| RunPerformance { realized: figures.get(&e.run).copied(), estimated: e })
        .collect())
}
