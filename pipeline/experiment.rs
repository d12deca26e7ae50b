//! The control group: who the decision would contact but is held out, so that the effect of
//! contacting can be measured when the outcomes mature.
//!
//! Every customer has a **draw** in `[0, 1)`, a keyed hash (xxh3-64) of the experiment's
//! name and the customer id: the same in every weekly run of one experiment, whatever the row
//! order, the thread count or the engine (CLI, `fidelis.Model.score`, Spark), and a new set of
//! draws when the experiment is renamed. With `c = control_share` and `e = explore_share`:
//!
//! | customer | draw | group | contacted |
//! |---|---|---|---|
//! | the decision contacts them, ARR above `never_hold_out_above_arr` | any | `exempt` | yes |
//! | the decision contacts them | `< c` | `control` | no |
//! | the decision contacts them | `>= c` | `treatment` | yes |
//! | below the threshold, `e > 0` | `< c` | `control` | no |
//! | below the threshold, `e > 0` | `c <= draw < c + e` | `treatment` (exploration) | yes |
//! | anybody else | | empty | no |
//!
//! Control is a property of the customer within an experiment (draw below `c`), so a customer
//! who moves across the threshold between runs never switches from control to treatment; the
//! exploration sample compares with the control customers below the threshold. `exempt`
//! accounts are always contacted and left out of every effect estimate.
//!
//! **Stratified by risk band**: among the customers the decision contacts (exempt ones
//! aside), every band with at least two of them has both groups. The draws give each band
//! about `c` controls; when a band has none (a small band), the customer with the smallest
//! draw becomes control, and when it has no treatment, the control with the largest draw
//! becomes treatment ([`balance`]). Only such small bands ever move, and only by one customer.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use xxhash_rust::xxh3::xxh3_64;

use serde::{Deserialize, Serialize};

use crate::config::{DecisionConfig, ExperimentConfig, SaveRate};

/// A customer's group, as the scores' `experiment_group` column writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Treatment,
    Control,
    Exempt,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Treatment => "treatment",
            Group::Control => "control",
            Group::Exempt => "exempt",
        }
    }

    pub fn parse(s: &str) -> Option<Group> {
        match s {
            "treatment" => Some(Group::Treatment),
            "control" => Some(Group::Control),
            "exempt" => Some(Group::Exempt),
            _ => None,
        }
    }

    /// Whether a customer of this group is contacted.
    pub fn contacted(group: Option<Group>) -> bool {
        matches!(group, Some(Group::Treatment | Group::Exempt))
    }
}

/// The customer's draw in `[0, 1)`: the top 53 bits of xxh3-64 over
/// `<experiment name> NUL <customer id>`.
pub fn draw(experiment: &str, customer_id: &str) -> f64 {
    let mut key = Vec::with_capacity(experiment.len() + 1 + customer_id.len());
    key.extend_from_slice(experiment.as_bytes());
    key.push(0);
    key.extend_from_slice(customer_id.as_bytes());
    (xxh3_64(&key) >> 11) as f64 / (1u64 << 53) as f64
}

/// The group of one customer (before [`balance`]): `decided` = the decision contacts them,
/// `arr` = their annual recurring revenue if the customer table has it.
pub fn assign(cfg: &ExperimentConfig, decided: bool, draw: f64, arr: Option<f64>) -> Option<Group> {
    let (c, e) = (cfg.control_share, cfg.explore_share);
    if decided {
        if cfg.never_hold_out_above_arr.is_some_and(|limit| arr.is_some_and(|a| a > limit)) {
            return Some(Group::Exempt);
        }
        if c <= 0.0 {
            return Some(Group::Treatment);
        }
        return Some(if draw < c { Group::Control } else { Group::Treatment });
    }
    if e <= 0.0 {
        return None;
    }
    if draw < c {
        Some(Group::Control)
    } else if draw < c + e {
        Some(Group::Treatment)
    } else {
        None
    }
}

/// What one band of the decided customers holds (exempt ones aside): the counts per group,
/// the smallest draw among its treatment customers and the largest among its controls. The
/// Spark job aggregates these per band and asks [`flips`] what to change.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BandStats {
    pub control: usize,
    pub treatment: usize,
    pub min_treatment_draw: Option<f64>,
    pub max_control_draw: Option<f64>,
}

impl BandStats {
    pub fn add(&mut self, group: Group, draw: f64) {
        match group {
            Group::Control => {
                self.control += 1;
                self.max_control_draw = Some(self.max_control_draw.map_or(draw, |d| d.max(draw)));
            }
            Group::Treatment => {
                self.treatment += 1;
                self.min_treatment_draw = Some(self.min_treatment_draw.map_or(draw, |d| d.min(draw)));
            }
            Group::Exempt => {}
        }
    }

    /// The customer (by draw) of this band that changes group, and its new group: a band of
    /// at least two with no control gives its smallest-draw treatment customer to control;
    /// one with no treatment gives its largest-draw control to treatment.
    pub fn flip(&self) -> Option<(f64, Group)> {
        if self.control + self.treatment < 2 {
            return None;
        }
        if self.control == 0 {
            return self.min_treatment_draw.map(|d| (d, Group::Control));
        }
        if self.treatment == 0 {
            return self.max_control_draw.map(|d| (d, Group::Treatment));
        }
        None
    }
}

/// The changes of [`BandStats::flip`] for each band's stats, none when the experiment has no
/// control group (everybody decided is treated then).
pub fn flips<'a>(
    cfg: &ExperimentConfig,
    stats: impl IntoIterator<Item = (&'a str, BandStats)>,
) -> Vec<(&'a str, f64, Group)> {
    if cfg.control_share <= 0.0 {
        return Vec::new();
    }
    stats.into_iter().filter_map(|(b, s)| s.flip().map(|(d, g)| (b, d, g))).collect()
}

/// Stratify: `groups[i]` of the customers the decision contacts (`decided[i]`), per band
/// (`band[i]`), changed where a band lacks a group (see [`BandStats::flip`]).
pub fn balance(
    cfg: &ExperimentConfig,
    groups: &mut [Option<Group>],
    decided: &[bool],
    band: &[&str],
    draws: &[f64],
) {
    let mut stats: BTreeMap<&str, BandStats> = Default::default();
    for i in 0..groups.len() {
        if let (true, Some(g)) = (decided[i], groups[i]) {
            stats.entry(band[i]).or_default().add(g, draws[i]);
        }
    }
    for (b, d, to) in flips(cfg, stats) {
        for i in 0..groups.len() {
            if decided[i] && band[i] == b && draws[i] == d && groups[i] != Some(Group::Exempt) {
                groups[i] = Some(to);
            }
        }
    }
}

/// The expected net value of contacting a customer of churn probability `p` and value `v`
/// (what a contacted churner is worth under the decision's policy), as the threshold's net
/// value counts it: `p * v - (1 - p) * fp_cost - contact_cost`.
pub fn expected_gain(cfg: &DecisionConfig, p: f64, v: f64) -> f64 {
    p * v - (1.0 - p) * cfg.fp_cost - cfg.contact_cost
}

/// What the control group held out in one run: customers, and the net value their contacts
/// would have brought at the decision's assumed value of a contact (the price of measuring).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HeldOut {
    pub control: usize,
    pub treatment: usize,
    pub exempt: usize,
    /// Exploration contacts (treatment below the threshold).
    pub explored: usize,
    /// Expected net value forgone by not contacting the decided control customers.
    pub forgone_value: f64,
}

/// [`HeldOut`] of a run: each customer's group (after the balance), whether the decision
/// contacts them, their churn probability and the value of a saved churner under the
/// decision's policy (`threshold::tp_values`).
pub fn held_out(
    d: &DecisionConfig,
    groups: &[Option<Group>],
    decided: &[bool],
    p: &[f64],
    value: &[f64],
) -> HeldOut {
    let mut out = HeldOut::default();
    for i in 0..groups.len() {
        match (groups[i], decided[i]) {
            (Some(Group::Control), true) => {
                out.control += 1;
                out.forgone_value += expected_gain(d, p[i], value[i]);
            }
            (Some(Group::Control), false) => out.control += 1,
            (Some(Group::Treatment), true) => out.treatment += 1,
            (Some(Group::Treatment), false) => out.explored += 1,
            (Some(Group::Exempt), _) => out.exempt += 1,
            (None, _) => {}
        }
    }
    out
}

impl std::fmt::Display for HeldOut {
    /// One sentence: who is held out and what it costs at the assumed value of a contact.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "control group: {} held out, {} treated{}{}; holding them out forgoes an expected {:.0} \
             this run at the decision's assumed value of a contact",
            self.control,
            self.treatment,
            if self.exempt > 0 {
                format!(", {} exempt (never held out)", self.exempt)
            } else {
                String::new()
            },
            if self.explored > 0 {
                format!(", {} contacted below the threshold (exploration)", self.explored)
            } else {
                String::new()
            },
            self.forgone_value
        )
    }
}

/// 95% two-sided normal quantile.
const Z95: f64 = 1.959_963_984_540_054;

/// Wilson score interval of a proportion `k / n` at 95% (`(NaN, NaN)` when `n = 0`).
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let (n, p, z2) = (n as f64, k as f64 / n as f64, Z95 * Z95);
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Newcombe's hybrid score interval (his method 10, 1998) of `k1/n1 - k2/n2` at 95%: from the
/// two Wilson intervals, good coverage at small counts and near 0 or 1, unlike the Wald
/// interval.
pub fn newcombe(k1: usize, n1: usize, k2: usize, n2: usize) -> (f64, f64) {
    let (p1, p2) = (k1 as f64 / n1 as f64, k2 as f64 / n2 as f64);
    let ((l1, u1), (l2, u2)) = (wilson(k1, n1), wilson(k2, n2));
    let d = p1 - p2;
    (d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(), d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt())
}

/// One customer of a matured run in the experiment: its group, whether it churned over the
/// horizon after the run, its revenue over that horizon, the value of a saved churner under
/// the run's decision (`threshold::saved_values`), and its stratum (risk band, playbook).
#[derive(Debug, Clone)]
pub struct Outcome<'a> {
    pub group: Group,
    pub churned: bool,
    pub revenue: f64,
    pub value: f64,
    pub band: &'a str,
    pub playbook: &'a str,
    /// The customer entered the experiment at this run (no group in any earlier run): the
    /// customers [`pooled`] counts.
    pub first: bool,
    /// Whether a contact reached the customer after the run (None without a contact log).
    pub reached: Option<bool>,
    /// The channel of the first contact that reached it (None when not reached or the log
    /// has no channels).
    pub channel: Option<&'a str>,
}

/// The measured effect of contacting in a set of customers: treatment against control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    pub treatment: usize,
    pub control: usize,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub churn_treatment: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub churn_control: f64,
    /// Churn rate of control minus treatment: the churn contacting prevents (negative =
    /// contacting causes churn), with its 95% interval (Newcombe).
    #[serde(with = "crate::metrics::nan_as_null")]
    pub reduction: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub reduction_low: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub reduction_high: f64,
    /// `reduction / churn_control`.
    #[serde(with = "crate::metrics::nan_as_null")]
    pub relative_reduction: f64,
    /// Mean revenue over the horizon per customer, and treatment minus control with its 95%
    /// interval (normal, unequal variances).
    #[serde(with = "crate::metrics::nan_as_null")]
    pub revenue_treatment: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub revenue_control: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub revenue_difference: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub revenue_low: f64,
    #[serde(with = "crate::metrics::nan_as_null")]
    pub revenue_high: f64,
    /// Churners saved among the treated (`reduction x treated`) times the mean value of a
    /// saved churner, minus what the treated contacts cost (`contact_cost` each, `fp_cost`
    /// for each treated customer who stayed).
    #[serde(with = "crate::metrics::nan_as_null")]
    pub incremental_net_value: f64,
    /// With a contact log, who was reached and the effect among them.
    #[serde(flatten)]
    pub reach: Reach,
}

/// With a contact log: the share of each group a contact reached after the run, and the
/// effect among the reached (the Wald estimator: the reduction over the difference in reach,
/// its interval the reduction's over the same difference); NaN without one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reach {
    #[serde(
        rename = "reach_treatment",
        default = "crate::metrics::nan",
        with = "crate::metrics::nan_as_null"
    )]
    pub treatment: f64,
    #[serde(rename = "reach_control", default = "crate::metrics::nan", with = "crate::metrics::nan_as_null")]
    pub control: f64,
    #[serde(
        rename = "reached_reduction",
        default = "crate::metrics::nan",
        with = "crate::metrics::nan_as_null"
    )]
    pub reduction: f64,
    #[serde(rename = "reached_low", default = "crate::metrics::nan", with = "crate::metrics::nan_as_null")]
    pub low: f64,
    #[serde(rename = "reached_high", default = "crate::metrics::nan", with = "crate::metrics::nan_as_null")]
    pub high: f64,
}

impl Default for Reach {
    /// Nothing known (no contact log).
    fn default() -> Reach {
        Reach { treatment: f64::NAN, control: f64::NAN, reduction: f64::NAN, low: f64::NAN, high: f64::NAN }
    }
}

/// Below this difference in reach between the groups the Wald estimator is not computed
/// (it divides by it).
const MIN_REACH_DIFFERENCE: f64 = 0.01;

impl Effect {
    /// Set the reach fields from the reach of each group.
    fn with_reach(mut self, treatment: f64, control: f64) -> Effect {
        self.reach = Reach { treatment, control, ..Reach::default() };
        let diff = treatment - control;
        if diff.is_finite() && diff >= MIN_REACH_DIFFERENCE {
            self.reach.reduction = self.reduction / diff;
            self.reach.low = self.reduction_low / diff;
            self.reach.high = self.reduction_high / diff;
        }
        self
    }
}

impl Effect {
    /// None without both groups.
    pub fn of(rows: &[&Outcome], d: &DecisionConfig) -> Option<Effect> {
        let (t, c): (Vec<&Outcome>, Vec<&Outcome>) =
            rows.iter().filter(|o| o.group != Group::Exempt).partition(|o| o.group == Group::Treatment);
        if t.is_empty() || c.is_empty() {
            return None;
        }
        let churned = |v: &[&Outcome]| v.iter().filter(|o| o.churned).count();
        let (kt, kc) = (churned(&t), churned(&c));
        let (nt, nc) = (t.len(), c.len());
        let (ct, cc) = (kt as f64 / nt as f64, kc as f64 / nc as f64);
        let (low, high) = newcombe(kc, nc, kt, nt);
        let revenue = |v: &[&Outcome]| v.iter().map(|o| o.revenue).collect::<Vec<f64>>();
        let (rt, rc) = (revenue(&t), revenue(&c));
        let (mt, mc) = (crate::metrics::mean(&rt), crate::metrics::mean(&rc));
        let var = |v: &[f64], m: f64| {
            if v.len() < 2 {
                0.0
            } else {
                v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
            }
        };
        let se = (var(&rt, mt) / nt as f64 + var(&rc, mc) / nc as f64).sqrt();
        let value = t.iter().map(|o| o.value).sum::<f64>() / nt as f64;
        let reduction = cc - ct;
        let reach = |v: &[&Outcome]| -> f64 {
            if v.iter().any(|o| o.reached.is_none()) {
                return f64::NAN;
            }
            v.iter().filter(|o| o.reached == Some(true)).count() as f64 / v.len() as f64
        };
        let (reach_t, reach_c) = (reach(&t), reach(&c));
        let effect = Effect {
            treatment: nt,
            control: nc,
            churn_treatment: ct,
            churn_control: cc,
            reduction,
            reduction_low: low,
            reduction_high: high,
            relative_reduction: if cc > 0.0 { reduction / cc } else { f64::NAN },
            revenue_treatment: mt,
            revenue_control: mc,
            revenue_difference: mt - mc,
            revenue_low: mt - mc - Z95 * se,
            revenue_high: mt - mc + Z95 * se,
            incremental_net_value: reduction * nt as f64 * value
                - nt as f64 * d.contact_cost
                - (nt - kt) as f64 * d.fp_cost,
            reach: Reach::default(),
        };
        Some(effect.with_reach(reach_t, reach_c))
    }

    /// The names of [`Effect::metrics`], as the monitoring history stores them.
    pub const METRICS: [&'static str; 18] = [
        "treatment",
        "control",
        "churn_treatment",
        "churn_control",
        "reduction",
        "reduction_low",
        "reduction_high",
        "revenue_treatment",
        "revenue_control",
        "revenue_difference",
        "revenue_low",
        "revenue_high",
        "incremental_net_value",
        "reach_treatment",
        "reach_control",
        "reached_reduction",
        "reached_low",
        "reached_high",
    ];

    /// The values of [`Effect::METRICS`] (`relative_reduction` follows from two of them).
    pub fn metrics(&self) -> [f64; 18] {
        [
            self.treatment as f64,
            self.control as f64,
            self.churn_treatment,
            self.churn_control,
            self.reduction,
            self.reduction_low,
            self.reduction_high,
            self.revenue_treatment,
            self.revenue_control,
            self.revenue_difference,
            self.revenue_low,
            self.revenue_high,
            self.incremental_net_value,
            self.reach.treatment,
            self.reach.control,
            self.reach.reduction,
            self.reach.low,
            self.reach.high,
        ]
    }

    /// The effect from its metrics by name (None when one is missing; the reach ones, which
    /// histories from before contact logs lack, are NaN then).
    pub fn from_metrics(v: impl Fn(&str) -> Option<f64>) -> Option<Effect> {
        let (reduction, churn_control) = (v("reduction")?, v("churn_control")?);
        Some(Effect {
            treatment: v("treatment")? as usize,
            control: v("control")? as usize,
            churn_treatment: v("churn_treatment")?,
            churn_control,
            reduction,
            reduction_low: v("reduction_low")?,
            reduction_high: v("reduction_high")?,
            relative_reduction: if churn_control > 0.0 { reduction / churn_control } else { f64::NAN },
            revenue_treatment: v("revenue_treatment")?,
            revenue_control: v("revenue_control")?,
            revenue_difference: v("revenue_difference")?,
            revenue_low: v("revenue_low")?,
            revenue_high: v("revenue_high")?,
            incremental_net_value: v("incremental_net_value")?,
            reach: Reach {
                treatment: v("reach_treatment").unwrap_or(f64::NAN),
                control: v("reach_control").unwrap_or(f64::NAN),
                reduction: v("reached_reduction").unwrap_or(f64::NAN),
                low: v("reached_low").unwrap_or(f64::NAN),
                high: v("reached_high").unwrap_or(f64::NAN),
            },
        })
    }

    /// Whether contacting measurably causes churn: the whole interval of the reduction is
    /// below zero.
    pub fn harmful(&self) -> bool {
        self.reduction_high < 0.0
    }
}

/// The monitoring history's item of a run's effect among the customers new to the
/// experiment: `<run> first`.
pub const FIRST: &str = "first";
/// The monitoring history's item of the pooled effect.
pub const POOLED: &str = "pooled";

/// The effects per run of the monitoring history's `effect` rows `(item, metric, value)`
/// whose item is a run date followed by `suffix` (`""` for the overall effects); a run
/// missing a metric is left out.
pub fn effects_by_run<'a>(
    rows: impl IntoIterator<Item = (&'a str, &'a str, f64)>,
    suffix: &str,
) -> BTreeMap<NaiveDate, Effect> {
    let mut metrics: BTreeMap<NaiveDate, BTreeMap<&str, f64>> = Default::default();
    for (item, metric, value) in rows {
        let run = item.strip_suffix(suffix).and_then(|r| NaiveDate::parse_from_str(r, "%Y-%m-%d").ok());
        if let Some(run) = run {
            metrics.entry(run).or_default().insert(metric, value);
        }
    }
    metrics
        .into_iter()
        .filter_map(|(run, m)| Some((run, Effect::from_metrics(|k| m.get(k).copied())?)))
        .collect()
}

/// Each run's effect among the customers new to the experiment, by (run, band): band `""`
/// for all of them ([`RunEffect::first`]), else one band's ([`RunEffect::first_by_band`]).
pub type FirstEffects = BTreeMap<(NaiveDate, String), Effect>;

/// The [`FirstEffects`] of the monitoring history's `effect` rows `(item, metric, value)`
/// (items `<run> first` and `<run> first band=<band>`).
pub fn first_effects<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, f64)>) -> FirstEffects {
    let mut metrics: BTreeMap<(NaiveDate, String), BTreeMap<&str, f64>> = Default::default();
    for (item, metric, value) in rows {
        let Some((run, rest)) = item.split_once(' ') else { continue };
        let Ok(run) = NaiveDate::parse_from_str(run, "%Y-%m-%d") else { continue };
        let band = match rest.strip_prefix(FIRST) {
            Some("") => String::new(),
            Some(b) => match b.strip_prefix(" band=") {
                Some(b) => b.to_string(),
                None => continue,
            },
            None => continue,
        };
        metrics.entry((run, band)).or_default().insert(metric, value);
    }
    metrics.into_iter().filter_map(|(k, m)| Some((k, Effect::from_metrics(|k| m.get(k).copied())?))).collect()
}

/// The effect in one matured run: overall, per risk band and per playbook, and among the
/// customers who entered the experiment at this run (`first`, what [`pooled`] adds up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEffect {
    pub overall: Option<Effect>,
    pub by_band: Vec<(String, Effect)>,
    pub by_playbook: Vec<(String, Effect)>,
    #[serde(default)]
    pub first: Option<Effect>,
    /// Among the new customers, per risk band.
    #[serde(default)]
    pub first_by_band: Vec<(String, Effect)>,
    /// Per channel of the contact log: the treated customers that channel reached first
    /// against the whole control group. Channels are not randomized (who a channel reaches
    /// differs from who it does not), so this compares channels; it does not measure their
    /// effects. No reach figures.
    #[serde(default)]
    pub by_channel: Vec<(String, Effect)>,
}

impl RunEffect {
    /// The run's effect to read and act on: among its customers new to the experiment
    /// (unbiased: nobody in either group was contacted before), the overall one for runs
    /// recorded without it.
    pub fn headline(&self) -> Option<&Effect> {
        self.first.as_ref().or(self.overall.as_ref())
    }

    pub fn of(rows: &[Outcome], d: &DecisionConfig) -> RunEffect {
        let all: Vec<&Outcome> = rows.iter().collect();
        let first: Vec<&Outcome> = rows.iter().filter(|o| o.first).collect();
        let by = |rows: &[&Outcome], playbook: bool| {
            let mut groups: BTreeMap<&str, Vec<&Outcome>> = Default::default();
            for o in rows {
                groups.entry(if playbook { o.playbook } else { o.band }).or_default().push(o);
            }
            groups.into_iter().filter_map(|(k, v)| Effect::of(&v, d).map(|e| (k.to_string(), e))).collect()
        };
        let control: Vec<&Outcome> = rows.iter().filter(|o| o.group == Group::Control).collect();
        let mut channels: BTreeMap<&str, Vec<&Outcome>> = Default::default();
        for o in rows.iter().filter(|o| o.group == Group::Treatment) {
            if let Some(c) = o.channel {
                channels.entry(c).or_default().push(o);
            }
        }
        let by_channel = channels
            .into_iter()
            .filter_map(|(c, mut v)| {
                v.extend(&control);
                let e = Effect::of(&v, d)?;
                Some((c.to_string(), Effect { reach: Reach::default(), ..e }))
            })
            .collect();
        RunEffect {
            overall: Effect::of(&all, d),
            by_band: by(&all, false),
            by_playbook: by(&all, true),
            first: Effect::of(&first, d),
            first_by_band: by(&first, false),
            by_channel,
        }
    }
}

/// The effect pooled over matured runs, each customer once: at the run where it entered the
/// experiment (each run's [`RunEffect::first`]).
///
/// Why not every customer of every run: a customer the decision contacts again and again is
/// selected again *because of* what earlier contacts did (a treated customer who was saved
/// drops below the threshold, a control customer at the same risk stays above it), so from
/// the second run on the two groups of a run are no longer alike. At its first selection
/// nobody in either group has been contacted, and the draw alone decides the group.
///
/// Churn: the counts of the runs added up (the control share is the same in every run), the
/// interval Newcombe's. Revenue: the runs' differences weighted by their customers, the
/// standard error from the runs' (`se_r = (high - low) / (2 x 1.96)`). Incremental net value:
/// the sum over the runs.
pub fn pooled(runs: &[&Effect]) -> Option<Effect> {
    if runs.is_empty() {
        return None;
    }
    let count = |rate: f64, n: usize| (rate * n as f64).round() as usize;
    let (mut nt, mut nc, mut kt, mut kc) = (0, 0, 0, 0);
    for e in runs {
        nt += e.treatment;
        nc += e.control;
        kt += count(e.churn_treatment, e.treatment);
        kc += count(e.churn_control, e.control);
    }
    if nt == 0 || nc == 0 {
        return None;
    }
    let n: f64 = runs.iter().map(|e| (e.treatment + e.control) as f64).sum();
    let w = |e: &Effect| (e.treatment + e.control) as f64 / n;
    let difference: f64 = runs.iter().map(|e| w(e) * e.revenue_difference).sum();
    let se = runs
        .iter()
        .map(|e| (w(e) * (e.revenue_high - e.revenue_low) / (2.0 * Z95)).powi(2))
        .sum::<f64>()
        .sqrt();
    let mean = |f: fn(&Effect) -> (f64, usize), total: usize| {
        runs.iter().map(|e| f(e).0 * f(e).1 as f64).sum::<f64>() / total as f64
    };
    let (ct, cc) = (kt as f64 / nt as f64, kc as f64 / nc as f64);
    let (low, high) = newcombe(kc, nc, kt, nt);
    let reach_t = mean(|e| (e.reach.treatment, e.treatment), nt);
    let reach_c = mean(|e| (e.reach.control, e.control), nc);
    let effect = Effect {
        treatment: nt,
        control: nc,
        churn_treatment: ct,
        churn_control: cc,
        reduction: cc - ct,
        reduction_low: low,
        reduction_high: high,
        relative_reduction: if cc > 0.0 { (cc - ct) / cc } else { f64::NAN },
        revenue_treatment: mean(|e| (e.revenue_treatment, e.treatment), nt),
        revenue_control: mean(|e| (e.revenue_control, e.control), nc),
        revenue_difference: difference,
        revenue_low: difference - Z95 * se,
        revenue_high: difference + Z95 * se,
        incremental_net_value: runs.iter().map(|e| e.incremental_net_value).sum(),
        reach: Reach::default(),
    };
    Some(effect.with_reach(reach_t, reach_c))
}

/// The measured effect a decision can use: the pooled effect at the latest monitoring date
/// that has one (`as_of`), over `runs` runs, overall and per risk band.
#[derive(Debug, Clone, Copy)]
pub struct Measured<'a> {
    pub as_of: NaiveDate,
    pub runs: usize,
    pub effect: &'a Effect,
    pub by_band: &'a [(String, Effect)],
}

/// A measured save rate: the share of would-be churners a contact saved (the relative
/// reduction, `(churn_control - churn_treatment) / churn_control`) with its 95% interval (the
/// reduction's Newcombe interval over the control churn rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateEstimate {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    pub treatment: usize,
    pub control: usize,
}

impl RateEstimate {
    pub fn of(e: &Effect) -> Option<RateEstimate> {
        let cc = e.churn_control;
        (cc > 0.0 && e.reduction.is_finite()).then(|| RateEstimate {
            estimate: e.reduction / cc,
            low: e.reduction_low / cc,
            high: e.reduction_high / cc,
            treatment: e.treatment,
            control: e.control,
        })
    }

    fn se(&self) -> f64 {
        (self.high - self.low) / (2.0 * Z95)
    }
}

/// One band's measured save rate: its own estimate, shrunk toward the pooled one, and the
/// rate the decision uses (the lower end of the shrunk estimate's 95% interval, in [0, 1]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandRate {
    pub band: String,
    pub measured: RateEstimate,
    pub shrunk: f64,
    pub used: f64,
}

/// Where the decision's save rate came from, as the decision artifact, the evaluation report
/// and `fidelis train` say it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveRateSource {
    /// `assumed` or `measured`.
    pub source: String,
    /// The overall save rate the threshold was chosen with.
    pub rate: f64,
    /// What the control group measured (pooled over `runs` matured runs, at `as_of`), if
    /// anything.
    pub measured: Option<RateEstimate>,
    pub runs: usize,
    pub as_of: Option<NaiveDate>,
    /// Per band, when the decision uses the measured rates.
    pub by_band: Vec<BandRate>,
    /// One sentence: which rate and why.
    pub why: String,
}

/// The decision settings to train with, given what the control group measured: with
/// `save_rate = "measured"` (or an assumed rate once the measured one's 95% interval is
/// narrower than `measured_save_rate_width`), the overall save rate becomes the lower end of
/// the measured rate's 95% interval (in `[0, 1]`), and every band with a measurement gets its
/// own: its estimate shrunk toward the pooled one by how much the bands really differ
/// (DerSimonian-Laird between-band variance: bands that differ no more than their noise all
/// get the pooled rate), again the lower end of its interval. The lower end, not the estimate:
/// fidelis pays for contacts only as far as the control group has shown that they work, so a
/// campaign with no effect stops mass contact instead of following its noise.
pub fn resolve_save_rate(d: &DecisionConfig, measured: Option<Measured>) -> (DecisionConfig, SaveRateSource) {
    let estimate = measured.and_then(|m| RateEstimate::of(m.effect).map(|r| (m, r)));
    let width = d.measured_save_rate_width;
    let wanted = matches!(d.save_rate, SaveRate::Measured);
    let narrow = |r: &RateEstimate| width > 0.0 && r.high - r.low < width;
    let assumed = |why: String, measured: Option<(Measured, RateEstimate)>| {
        let source = SaveRateSource {
            source: "assumed".into(),
            rate: d.save_rate.assumed(),
            runs: measured.as_ref().map_or(0, |(m, _)| m.runs),
            as_of: measured.as_ref().map(|(m, _)| m.as_of),
            measured: measured.map(|(_, r)| r),
            by_band: Vec::new(),
            why,
        };
        (d.clone(), source)
    };
    let Some((m, overall)) = estimate else {
        let why = if wanted {
            "save_rate = \"measured\" but no run with a control group has matured yet: assumed 1.0 until one has"
                .to_string()
        } else {
            format!("assumed save_rate {} (nothing measured yet)", d.save_rate.assumed())
        };
        return assumed(why, None);
    };
    if !wanted && !narrow(&overall) {
        let why = format!(
            "assumed save_rate {}; measured {:.3} [95% {:.3}, {:.3}] over {}, an interval wider than \
             measured_save_rate_width {width}",
            d.save_rate.assumed(),
            overall.estimate,
            overall.low,
            overall.high,
            runs_words(m.runs)
        );
        return assumed(why, Some((m, overall)));
    }
    let used = overall.low.clamp(0.0, 1.0);
    let bands: Vec<(String, RateEstimate)> =
        m.by_band.iter().filter_map(|(b, e)| Some((b.clone(), RateEstimate::of(e)?))).collect();
    let by_band = shrink(&overall, &bands);
    let mut out = d.clone();
    out.save_rate = SaveRate::Assumed(used);
    for b in &mut out.bands {
        b.save_rate = by_band.iter().find(|r| r.band == b.name).map(|r| r.used);
    }
    let why = format!(
        "measured save_rate: {:.3}, the lower end of the 95% interval [{:.3}, {:.3}] of the effect the control \
         group measured ({} treated, {} control, pooled over {}, at {}){}",
        used,
        overall.low,
        overall.high,
        overall.treatment,
        overall.control,
        runs_words(m.runs),
        m.as_of,
        if wanted { "" } else { "; used because its interval is narrower than measured_save_rate_width" }
    );
    let source = SaveRateSource {
        source: "measured".into(),
        rate: used,
        measured: Some(overall),
        runs: m.runs,
        as_of: Some(m.as_of),
        by_band,
        why,
    };
    (out, source)
}

fn runs_words(n: usize) -> String {
    format!("{n} run{}", if n == 1 { "" } else { "s" })
}

/// Each band's estimate shrunk toward the pooled one (random effects, DerSimonian-Laird).
fn shrink(pooled: &RateEstimate, bands: &[(String, RateEstimate)]) -> Vec<BandRate> {
    let usable: Vec<(&String, &RateEstimate, f64)> =
        bands.iter().filter(|(_, r)| r.se() > 0.0).map(|(b, r)| (b, r, r.se().powi(2))).collect();
    let tau2 = if usable.len() < 2 {
        0.0
    } else {
        let w: Vec<f64> = usable.iter().map(|u| 1.0 / u.2).collect();
        let sw: f64 = w.iter().sum();
        let mean = usable.iter().zip(&w).map(|(u, w)| w * u.1.estimate).sum::<f64>() / sw;
        let q: f64 = usable.iter().zip(&w).map(|(u, w)| w * (u.1.estimate - mean).powi(2)).sum();
        let c = sw - w.iter().map(|w| w * w).sum::<f64>() / sw;
        ((q - (usable.len() - 1) as f64) / c).max(0.0)
    };
    let se2 = pooled.se().powi(2);
    usable
        .into_iter()
        .map(|(band, r, v)| {
            // b = the weight of the pooled rate.
            let b = v / (tau2 + v);
            let shrunk = b * pooled.estimate + (1.0 - b) * r.estimate;
            let var = (1.0 - b) * v + b * b * se2;
            BandRate {
                band: band.clone(),
                measured: r.clone(),
                shrunk,
                used: (shrunk - Z95 * var.sqrt()).clamp(0.0, 1.0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(c: f64, e: f64) -> ExperimentConfig {
        ExperimentConfig { control_share: c, explore_share: e, ..ExperimentConfig::default() }
    }

    #[test]
    fn a_draw_is_uniform_stable_and_keyed_by_the_experiment() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("C{i:06}")).collect();
        let d: Vec<f64> = ids.iter().map(|id| draw("retention", id)).collect();
        assert!(d.iter().all(|&x| (0.0..1.0).contains(&x)));
        let below = d.iter().filter(|&&x| x < 0.1).count();
        assert!((1800..2200).contains(&below), "{below} of 20000 draws below 0.1");
        assert_eq!(draw("retention", "C000001"), d[1], "the same id draws the same");
        let renamed = ids.iter().filter(|id| (draw("q3", id) < 0.1) != (draw("retention", id) < 0.1)).count();
        assert!(renamed > 2_500, "a new experiment name draws new groups ({renamed} changed)");
    }

    #[test]
    fn groups_follow_the_table_in_the_module_docs() {
        let c = cfg(0.1, 0.05);
        assert_eq!(assign(&c, true, 0.05, None), Some(Group::Control));
        assert_eq!(assign(&c, true, 0.5, None), Some(Group::Treatment));
        assert_eq!(assign(&c, false, 0.05, None), Some(Group::Control));
        assert_eq!(assign(&c, false, 0.12, None), Some(Group::Treatment));
        assert_eq!(assign(&c, false, 0.2, None), None);
        assert_eq!(assign(&cfg(0.1, 0.0), false, 0.05, None), None, "no exploration: no group below");
        assert_eq!(assign(&cfg(0.0, 0.0), true, 0.05, None), Some(Group::Treatment), "off: all treated");
        let exempt = ExperimentConfig { never_hold_out_above_arr: Some(50_000.0), ..cfg(0.1, 0.0) };
        assert_eq!(assign(&exempt, true, 0.05, Some(80_000.0)), Some(Group::Exempt));
        assert_eq!(assign(&exempt, true, 0.05, Some(20_000.0)), Some(Group::Control));
        assert_eq!(assign(&exempt, true, 0.05, None), Some(Group::Control), "no ARR: randomized");
    }

    #[test]
    fn every_band_of_two_or_more_gets_both_groups_and_only_one_customer_moves() {
        // band "a": three treated; band "b": two controls; band "c": one; band "d": mixed.
        let band = ["a", "a", "a", "b", "b", "c", "d", "d"];
        let draws = [0.5, 0.3, 0.9, 0.01, 0.05, 0.7, 0.02, 0.4];
        let decided = [true; 8];
        let c = cfg(0.1, 0.0);
        let mut g: Vec<Option<Group>> = draws.iter().map(|&d| assign(&c, true, d, None)).collect();
        let before = g.clone();
        balance(&c, &mut g, &decided, &band, &draws);
        assert_eq!(g[1], Some(Group::Control), "the smallest draw of band a");
        assert_eq!(g[4], Some(Group::Treatment), "the largest control draw of band b");
        let moved = g.iter().zip(&before).filter(|(a, b)| a != b).count();
        assert_eq!(moved, 2);
        assert_eq!(g[5], before[5], "a band of one keeps its group");
        assert_eq!(&g[6..], &before[6..], "a band with both groups is left alone");
        let off = cfg(0.0, 0.0);
        let mut all: Vec<Option<Group>> = draws.iter().map(|&d| assign(&off, true, d, None)).collect();
        balance(&off, &mut all, &decided, &band, &draws);
        assert!(all.iter().all(|&g| g == Some(Group::Treatment)), "no control group: nobody is held out");
    }

    #[test]
    fn newcombe_matches_his_published_example_and_covers_the_true_difference() {
        // Newcombe (1998), Table II example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339.
        let (l, u) = newcombe(56, 70, 48, 80);
        assert!((l - 0.0524).abs() < 5e-4 && (u - 0.3339).abs() < 5e-4, "{l} {u}");
        // Coverage of a known difference on simulated groups (0.30 vs 0.25, 400 and 3,600).
        let mut r = crate::rng::Rng::for_item(7, 0);
        let trials = 2_000;
        let covered = (0..trials)
            .filter(|_| {
                let kc = (0..400).filter(|_| r.bernoulli(0.30)).count();
                let kt = (0..3_600).filter(|_| r.bernoulli(0.25)).count();
                let (l, u) = newcombe(kc, 400, kt, 3_600);
                l <= 0.05 && 0.05 <= u
            })
            .count();
        let rate = covered as f64 / trials as f64;
        assert!((0.93..0.97).contains(&rate), "coverage {rate}");
    }

    #[test]
    fn the_effect_is_control_minus_treatment_per_stratum_and_harm_is_flagged() {
        let d = DecisionConfig { contact_cost: 1.0, fp_cost: 3.0, ..DecisionConfig::default() };
        let o = |group, churned, band| Outcome {
            group,
            churned,
            revenue: if churned { 0.0 } else { 100.0 },
            value: 65.0,
            band,
            playbook: band,
            first: true,
            reached: None,
            channel: None,
        };
        let mut rows = Vec::new();
        // Band "high": control churns 6/10, treatment 30/100: contacting prevents 0.3.
        rows.extend((0..10).map(|i| o(Group::Control, i < 6, "high")));
        rows.extend((0..100).map(|i| o(Group::Treatment, i < 30, "high")));
        // Band "low": contacting causes churn: control 0/200, treatment 400/2000.
        rows.extend((0..200).map(|_| o(Group::Control, false, "low")));
        rows.extend((0..2000).map(|i| o(Group::Treatment, i < 400, "low")));
        rows.push(o(Group::Exempt, true, "high"));
        let e = RunEffect::of(&rows, &d);
        let high = &e.by_band.iter().find(|(b, _)| b == "high").unwrap().1;
        assert_eq!((high.treatment, high.control), (100, 10), "exempt left out");
        assert!((high.reduction - 0.3).abs() < 1e-12 && (high.relative_reduction - 0.5).abs() < 1e-12);
        assert!((high.incremental_net_value - (0.3 * 100.0 * 65.0 - 100.0 - 70.0 * 3.0)).abs() < 1e-9);
        assert!((high.revenue_difference - 30.0).abs() < 1e-9);
        assert!(!high.harmful());
        let low = &e.by_band.iter().find(|(b, _)| b == "low").unwrap().1;
        assert!(low.harmful(), "{low:?}");
        let all = e.overall.unwrap();
        assert_eq!((all.treatment, all.control), (2100, 210));
    }

    #[test]
    fn pooled_adds_the_runs_counts_and_weights_their_revenue_differences() {
        let d = DecisionConfig::default();
        let o = |group, churned: bool, revenue| Outcome {
            group,
            churned,
            revenue,
            value: 65.0,
            band: "high",
            playbook: "call",
            first: true,
            reached: None,
            channel: None,
        };
        // Run 1: control 8/20 churn, treatment 30/100; run 2: control 5/10, treatment 20/100.
        let run = |kc: usize, nc: usize, kt: usize, nt: usize, lift: f64| -> Vec<Outcome> {
            (0..nc)
                .map(|i| o(Group::Control, i < kc, (i % 7) as f64))
                .chain((0..nt).map(|i| o(Group::Treatment, i < kt, lift + (i % 5) as f64)))
                .collect()
        };
        let (a, b) = (run(8, 20, 30, 100, 2.0), run(5, 10, 20, 100, 6.0));
        let (ea, eb) = (
            Effect::of(&a.iter().collect::<Vec<_>>(), &d).unwrap(),
            Effect::of(&b.iter().collect::<Vec<_>>(), &d).unwrap(),
        );
        assert_eq!(pooled(&[&ea]).unwrap().reduction, ea.reduction, "one run pools to itself");
        let p = pooled(&[&ea, &eb]).unwrap();
        assert_eq!((p.treatment, p.control), (200, 30));
        assert!(
            (p.churn_control - 13.0 / 30.0).abs() < 1e-12 && (p.churn_treatment - 50.0 / 200.0).abs() < 1e-12
        );
        assert_eq!((p.reduction_low, p.reduction_high), newcombe(13, 30, 50, 200));
        let w = |e: &Effect| (e.treatment + e.control) as f64 / 230.0;
        assert!(
            (p.revenue_difference - (w(&ea) * ea.revenue_difference + w(&eb) * eb.revenue_difference)).abs()
                < 1e-9
        );
        assert!(
            p.revenue_high - p.revenue_low < ea.revenue_high - ea.revenue_low,
            "two runs narrow the interval"
        );
        assert!((p.incremental_net_value - ea.incremental_net_value - eb.incremental_net_value).abs() < 1e-9);
        assert!(pooled(&[]).is_none());
    }

    /// A customer new to the experiment in band "b", playbook "p", worth 65, no revenue.
    fn plain(group: Group, churned: bool, reached: Option<bool>) -> Outcome<'static> {
        Outcome {
            group,
            churned,
            revenue: 0.0,
            value: 65.0,
            band: "b",
            playbook: "p",
            first: true,
            reached,
            channel: None,
        }
    }

    /// An effect with control churn `kc/nc` and treatment churn `kt/nt`.
    fn effect(kc: usize, nc: usize, kt: usize, nt: usize) -> Effect {
        let o = |group, churned| plain(group, churned, None);
        let rows: Vec<Outcome> = (0..nc)
            .map(|i| o(Group::Control, i < kc))
            .chain((0..nt).map(|i| o(Group::Treatment, i < kt)))
            .collect();
        Effect::of(&rows.iter().collect::<Vec<_>>(), &DecisionConfig::default()).unwrap()
    }

    #[test]
    fn the_save_rate_is_assumed_until_measured_then_the_lower_end_of_what_was_measured() {
        let day = NaiveDate::from_ymd_opt(2024, 12, 31).unwrap();
        let measured = |e: &'static Effect, bands: &'static [(String, Effect)]| Measured {
            as_of: day,
            runs: 3,
            effect: e,
            by_band: bands,
        };
        let d = DecisionConfig::default();
        let (same, source) = resolve_save_rate(&d, None);
        assert_eq!((same, source.source.as_str(), source.rate), (d.clone(), "assumed", 1.0));
        // No effect: control and treatment churn alike; the interval covers zero.
        let none: &'static Effect = Box::leak(Box::new(effect(60, 200, 540, 1800)));
        let (kept, source) = resolve_save_rate(&d, Some(measured(none, &[])));
        assert_eq!(source.source, "assumed", "wide interval, assumed rate kept: {}", source.why);
        assert_eq!(kept.save_rate, SaveRate::Assumed(1.0));
        let wanted = DecisionConfig { save_rate: SaveRate::Measured, ..d.clone() };
        let (zero, source) = resolve_save_rate(&wanted, Some(measured(none, &[])));
        assert_eq!(
            (source.source.as_str(), zero.save_rate),
            ("measured", SaveRate::Assumed(0.0)),
            "{}",
            source.why
        );
        assert!(source.why.contains("lower end"), "{}", source.why);
        // A large, clear effect: 30% -> 15% churn, save rate 0.5; narrow enough to switch on
        // its own at width 0.2.
        let clear: &'static Effect = Box::leak(Box::new(effect(3_000, 10_000, 13_500, 90_000)));
        let d2 = DecisionConfig { measured_save_rate_width: 0.2, ..d.clone() };
        let (used, source) = resolve_save_rate(&d2, Some(measured(clear, &[])));
        let SaveRate::Assumed(rate) = used.save_rate else { panic!() };
        assert_eq!(source.source, "measured");
        assert!((0.45..0.5).contains(&rate), "{rate}");
        let m = source.measured.unwrap();
        assert!((m.estimate - 0.5).abs() < 1e-9 && m.low < 0.5 && m.high > 0.5);
    }

    #[test]
    fn band_rates_shrink_to_the_pooled_one_unless_the_bands_really_differ() {
        let day = NaiveDate::from_ymd_opt(2024, 12, 31).unwrap();
        let wanted = DecisionConfig { save_rate: SaveRate::Measured, ..DecisionConfig::default() };
        let pooled = effect(1_200, 4_000, 9_000, 36_000);
        // Bands alike (both 30% -> 25%, save rate 1/6): every band gets the pooled rate.
        let alike = vec![
            ("high".to_string(), effect(600, 2_000, 4_500, 18_000)),
            ("critical".to_string(), effect(600, 2_000, 4_500, 18_000)),
        ];
        let (cfg, source) = resolve_save_rate(
            &wanted,
            Some(Measured { as_of: day, runs: 2, effect: &pooled, by_band: &alike }),
        );
        for b in &source.by_band {
            assert!((b.shrunk - 1.0 / 6.0).abs() < 1e-9, "{b:?}");
        }
        let rate_of = |name: &str| cfg.bands.iter().find(|b| b.name == name).unwrap().save_rate;
        assert!(
            rate_of("high").is_some() && rate_of("low").is_none(),
            "unmeasured bands use the overall rate"
        );
        // Bands that differ far beyond their noise (0.8 vs 0.0): each keeps about its own.
        let apart = vec![
            ("high".to_string(), effect(1_000, 2_000, 1_800, 18_000)),
            ("critical".to_string(), effect(600, 2_000, 5_400, 18_000)),
        ];
        let (_, source) = resolve_save_rate(
            &wanted,
            Some(Measured { as_of: day, runs: 2, effect: &pooled, by_band: &apart }),
        );
        let high = source.by_band.iter().find(|b| b.band == "high").unwrap();
        let critical = source.by_band.iter().find(|b| b.band == "critical").unwrap();
        assert!((high.shrunk - 0.8).abs() < 0.02 && critical.shrunk.abs() < 0.02, "{high:?} {critical:?}");
        assert_eq!(critical.used, 0.0, "no measured effect in this band: contacting it is not paid for");
    }

    #[test]
    fn an_effect_with_undefined_parts_survives_json() {
        // No control churns: the relative reduction is undefined (NaN, written as null).
        let e = effect(0, 10, 5, 90);
        assert!(e.relative_reduction.is_nan());
        let back: Effect = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert!(back.relative_reduction.is_nan());
        assert_eq!((back.treatment, back.reduction), (e.treatment, e.reduction));
    }

    #[test]
    fn the_effect_among_the_reached_is_the_reduction_over_the_difference_in_reach() {
        let o = |group, churned, reached| plain(group, churned, Some(reached));
        // Control 300/1000 churn, nobody reached; treatment 2000/8000, half of them reached:
        // the list prevents 5 points of churn, a reached contact 10.
        let rows: Vec<Outcome> = (0..1000)
            .map(|i| o(Group::Control, i < 300, false))
            .chain((0..8000).map(|i| o(Group::Treatment, i < 2000, i % 2 == 0)))
            .collect();
        let e = Effect::of(&rows.iter().collect::<Vec<_>>(), &DecisionConfig::default()).unwrap();
        assert!(
            (e.reduction - 0.05).abs() < 1e-12
                && (e.reach.treatment - 0.5).abs() < 1e-12
                && e.reach.control == 0.0
        );
        assert!((e.reach.reduction - 0.1).abs() < 1e-12);
        assert!(
            (e.reach.low - 2.0 * e.reduction_low).abs() < 1e-12
                && (e.reach.high - 2.0 * e.reduction_high).abs() < 1e-12
        );
        let back =
            Effect::from_metrics(|m| Effect::METRICS.iter().position(|k| *k == m).map(|k| e.metrics()[k]))
                .unwrap();
        assert_eq!(back.reach.reduction, e.reach.reduction);
        // No contact log: no reach, no Wald.
        let plain = effect(300, 1000, 2000, 8000);
        assert!(plain.reach.treatment.is_nan() && plain.reach.reduction.is_nan());
    }

    /// Per channel: the treated customers each channel reached first against the whole
    /// control group; treated customers no channel reached are in no channel's row.
    #[test]
    fn each_channel_compares_the_treated_it_reached_with_the_whole_control_group() {
        let o =
            |group, churned, channel| Outcome { channel, ..plain(group, churned, Some(channel.is_some())) };
        // Control 30/100; phone reached 200 (20 churn), email 100 (25 churn), 700 unreached.
        let rows: Vec<Outcome> = (0..100)
            .map(|i| o(Group::Control, i < 30, None))
            .chain((0..200).map(|i| o(Group::Treatment, i < 20, Some("phone"))))
            .chain((0..100).map(|i| o(Group::Treatment, i < 25, Some("email"))))
            .chain((0..700).map(|i| o(Group::Treatment, i < 300, None)))
            .collect();
        let r = RunEffect::of(&rows, &DecisionConfig::default());
        let names: Vec<&str> = r.by_channel.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["email", "phone"]);
        let phone = &r.by_channel[1].1;
        assert_eq!((phone.treatment, phone.control), (200, 100));
        assert!((phone.reduction - 0.2).abs() < 1e-12 && (phone.churn_treatment - 0.1).abs() < 1e-12);
        assert_eq!((phone.reduction_low, phone.reduction_high), newcombe(30, 100, 20, 200));
        assert!(phone.reach.treatment.is_nan(), "no reach figures on a channel's row");
        let email = &r.by_channel[0].1;
        assert_eq!((email.treatment, (email.reduction * 100.0).round()), (100, 5.0));
        assert_eq!(r.overall.as_ref().map(|e| e.treatment), Some(1000));
    }
}
