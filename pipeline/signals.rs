//! Signals beyond purchases: event features (point-in-time, like the transaction features),
//! static customer fields as features, the configurable health score, the review flags
//! where the model, the health score and the CSM disagree, and escalation rules.
//!
//! Event features at snapshot `t`, from events with `day < t` only, for each event name the
//! model was trained with (the most frequent [`MAX_EVENT_NAMES`] in the training log):
//!
//! | feature | definition |
//! |---|---|
//! | `ev_{e}_30d`, `ev_{e}_90d` | events named `e` in `[t-30, t)`, `[t-90, t)` |
//! | `ev_{e}_trend` | count in `[t-45, t)` / (count in `[t-90, t-45)` + 1) |
//! | `ev_{e}_days_since` | `t` minus the day of the last `e` (-1 if none) |
//! | `events_active_days_30d` | distinct days with any event in `[t-30, t)` |
//! | `usage_drop` | 1 when events in `[t-60, t-30)` <= (1 - share) x events in `[t-90, t-60)` and events in `[t-30, t)` <= (1 - share) x events in `[t-60, t-30)` (share `health.usage_drop_share`, 0.3), with some activity in `[t-90, t-60)` |
//! | `nps_last` | value of the last NPS event before `t` (-1 if none) |
//!
//! Customer fields: `plan_{p}`, `segment_{s}` one-hot (categories seen in training), `mrr`
//! (-1 if unknown), `days_since_signup` (-1 if unknown; only signups before `t` count). Plan,
//! segment and MRR are taken as the table states them today (a customer table has no
//! history): keep fields that change with churn (a "cancelled" plan) out of it.
//! `[input.customers].attributes` adds any further columns the same way: a numeric column
//! (numeric in the file, or every cell a number) as `attr_{column}` (NaN if unknown), any
//! other one-hot as `attr_{column}_{value}` for its [`MAX_CATEGORIES`] most frequent values
//! in training plus `attr_{column}_other` for the rest and for values first seen at scoring
//! (a customer without a value: 0 in every column).
//!
//! The CSM sentiment is deliberately not a feature: a table holds only the latest sentiment,
//! so at past snapshots it is known mostly for customers who later left (their last review
//! predates their churn) and unknown for those who stayed; trained on, it leaks the label
//! (measured on the SaaS generator: half the base scored "imminent" at the end of the data).
//! It feeds the review flags instead, where a human read is the point.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::activity::{Attribute, Customers, Events, Sentiment, Subscriptions};
use crate::config::HealthConfig;
use crate::error::{Error, PolarsContext, Result};
use crate::schema::{epoch_day, CUSTOMER, SNAPSHOT};

/// Event names that get features, at most.
pub const MAX_EVENT_NAMES: usize = 12;
/// Categories of a customer field that get a one-hot column, at most.
pub const MAX_CATEGORIES: usize = 10;

/// The optional inputs, as loaded.
#[derive(Debug, Clone, Default)]
pub struct SignalData {
    pub events: Option<Events>,
    pub customers: Option<Customers>,
    pub subscriptions: Option<Subscriptions>,
}

impl SignalData {
    pub fn load(cfg: &crate::config::Config) -> Result<SignalData> {
        use crate::config::InputSource;
        let batch = cfg.input.sql_batch_rows;
        let events = if cfg.input.events.is_given() {
            Some(crate::activity::load_events(&cfg.input.events, batch)?)
        } else {
            None
        };
        let customers = if cfg.input.customers.is_given() {
            Some(crate::activity::load_customers(&cfg.input.customers, batch)?)
        } else {
            None
        };
        let subscriptions = if cfg.input.subscriptions.is_given() {
            Some(crate::activity::load_subscriptions(&cfg.input.subscriptions, batch)?)
        } else {
            None
        };
        Ok(SignalData { events, customers, subscriptions })
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_none() && self.customers.is_none() && self.subscriptions.is_none()
    }

    /// The subscription table that decides churn under `spec`: `Some` when churn is a
    /// cancellation (and the table was read).
    pub fn churn_subscriptions(&self, spec: &crate::features::FeatureSpec) -> Option<&Subscriptions> {
        (spec.churn == crate::config::ChurnRule::Cancellation)
            .then_some(self.subscriptions.as_ref())
            .flatten()
    }
}

/// Which signal features a model has (decided from the training data, stored with it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SignalSpec {
    pub events: Vec<String>,
    pub nps_event: Option<String>,
    pub usage_drop_share: f64,
    pub plans: Vec<String>,
    pub segments: Vec<String>,
    pub mrr: bool,
    pub signup: bool,
    /// `[input.customers].attributes`, in configuration order.
    #[serde(default)]
    pub attributes: Vec<AttributeSpec>,
    /// The subscription features ([`SUBSCRIPTION_FEATURES`]), from `[input.subscriptions]`.
    #[serde(default)]
    pub subscriptions: bool,
}

/// The subscription features, when the model was trained with a subscription table: what is
/// known at `t` ([`Subscriptions::state_at`]); -1 for a customer without a subscription then.
pub const SUBSCRIPTION_FEATURES: [&str; 7] = [
    "sub_mrr",
    "sub_mrr_change_90d",
    "sub_tenure_days",
    "sub_days_to_renewal",
    "sub_billing_months",
    "sub_renewals",
    "sub_noticed",
];

/// How one customer attribute becomes features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeSpec {
    pub column: String,
    /// `None`: numeric (`attr_{column}`, NaN when unknown). Otherwise the categories that get
    /// a one-hot column `attr_{column}_{category}`, and `attr_{column}_other` for any other
    /// value (seen in training or not); a missing value is 0 in every column.
    pub categories: Option<Vec<String>>,
}

/// One attribute column's counts: whether it is numeric in every part of the table, and how
/// many customers have each value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttributeCounts {
    pub column: String,
    pub numeric: bool,
    pub values: BTreeMap<String, usize>,
}

fn key(s: &str) -> String {
    let k: String =
        s.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    k.trim_matches('_').to_string()
}

fn top(counts: BTreeMap<String, usize>, k: usize) -> Vec<String> {
    let mut v: Vec<(String, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().take(k).map(|x| x.0).collect()
}

/// What a model's signal features are chosen from: rows per event name, customers per plan
/// and segment, the customer table's optional columns. Counts add up over parts of the inputs
/// split by customer ([`SignalCounts::merge`]), so a partitioned engine chooses the same
/// features as one machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignalCounts {
    /// `None` without an event log.
    pub events: Option<BTreeMap<String, usize>>,
    /// `None` without a customer table.
    pub plans: Option<BTreeMap<String, usize>>,
    pub segments: BTreeMap<String, usize>,
    pub customer_columns: std::collections::BTreeSet<String>,
    /// The attribute columns, in configuration order.
    pub attributes: Vec<AttributeCounts>,
    /// A subscription table was given.
    pub subscriptions: bool,
}

impl SignalCounts {
    pub fn of(data: &SignalData) -> SignalCounts {
        let mut c = SignalCounts {
            events: data.events.as_ref().map(|e| e.summary.events.clone()),
            subscriptions: data.subscriptions.is_some(),
            ..Default::default()
        };
        if let Some(t) = &data.customers {
            let mut plans = BTreeMap::new();
            for row in t.rows.values() {
                if let Some(p) = &row.plan {
                    *plans.entry(p.clone()).or_default() += 1;
                }
                if let Some(s) = &row.segment {
                    *c.segments.entry(s.clone()).or_default() += 1;
                }
            }
            c.plans = Some(plans);
            c.customer_columns = t.columns.iter().cloned().collect();
            c.attributes = t
                .attributes
                .iter()
                .enumerate()
                .map(|(k, column)| {
                    // Every value is counted, numbers too: a part of the table whose column
                    // reads as numbers can merge with one where it does not.
                    let mut values = BTreeMap::new();
                    for row in t.rows.values() {
                        if let Some(v) = row.attributes.get(k).and_then(|a| a.text()) {
                            *values.entry(v).or_default() += 1;
                        }
                    }
                    AttributeCounts { column: column.name.clone(), numeric: column.numeric, values }
                })
                .collect();
        }
        c
    }

    /// The counts of two disjoint parts of the inputs together.
    pub fn merge(&mut self, other: &SignalCounts) {
        let add = |a: &mut BTreeMap<String, usize>, b: &BTreeMap<String, usize>| {
            for (k, v) in b {
                *a.entry(k.clone()).or_default() += v;
            }
        };
        if let Some(b) = &other.events {
            add(self.events.get_or_insert_with(BTreeMap::new), b);
        }
        if let Some(b) = &other.plans {
            add(self.plans.get_or_insert_with(BTreeMap::new), b);
        }
        add(&mut self.segments, &other.segments);
        self.subscriptions |= other.subscriptions;
        self.customer_columns.extend(other.customer_columns.iter().cloned());
        for b in &other.attributes {
            match self.attributes.iter_mut().find(|a| a.column == b.column) {
                Some(a) => {
                    a.numeric &= b.numeric;
                    add(&mut a.values, &b.values);
                }
                None => self.attributes.push(b.clone()),
            }
        }
    }
}

impl SignalSpec {
    pub fn from_data(data: &SignalData, health: &HealthConfig) -> SignalSpec {
        SignalSpec::from_counts(&SignalCounts::of(data), health)
    }

    pub fn from_counts(c: &SignalCounts, health: &HealthConfig) -> SignalSpec {
        let mut s = SignalSpec {
            usage_drop_share: health.usage_drop_share,
            subscriptions: c.subscriptions,
            ..SignalSpec::default()
        };
        if let Some(events) = &c.events {
            s.events = top(events.clone(), MAX_EVENT_NAMES);
            s.events.sort();
            s.nps_event = events.contains_key(&health.events.nps).then(|| health.events.nps.clone());
        }
        if let Some(plans) = &c.plans {
            let cats = |counts: &BTreeMap<String, usize>| {
                let mut t = top(counts.clone(), MAX_CATEGORIES);
                t.sort();
                t
            };
            s.plans = cats(plans);
            s.segments = cats(&c.segments);
            s.mrr = c.customer_columns.iter().any(|k| k == "mrr" || k == "arr");
            s.signup = c.customer_columns.contains("signup_date");
            s.attributes = c
                .attributes
                .iter()
                .map(|a| AttributeSpec {
                    column: a.column.clone(),
                    categories: (!a.numeric).then(|| {
                        let mut t = top(a.values.clone(), MAX_CATEGORIES);
                        t.sort();
                        t
                    }),
                })
                .collect();
        }
        s
    }

    /// Whether the features need an event log.
    pub fn needs_events(&self) -> bool {
        !self.events.is_empty() || self.nps_event.is_some()
    }

    /// Whether the features need a subscription table.
    pub fn needs_subscriptions(&self) -> bool {
        self.subscriptions
    }

    /// Whether the features need a customer table.
    pub fn needs_customers(&self) -> bool {
        !self.plans.is_empty()
            || !self.segments.is_empty()
            || self.mrr
            || self.signup
            || !self.attributes.is_empty()
    }

    pub fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for e in &self.events {
            let k = key(e);
            for suffix in ["30d", "90d", "trend", "days_since"] {
                v.push(format!("ev_{k}_{suffix}"));
            }
        }
        if !self.events.is_empty() {
            v.push("events_active_days_30d".into());
            v.push("usage_drop".into());
        }
        if self.nps_event.is_some() {
            v.push("nps_last".into());
        }
        v.extend(self.plans.iter().map(|p| format!("plan_{}", key(p))));
        v.extend(self.segments.iter().map(|p| format!("segment_{}", key(p))));
        if self.mrr {
            v.push("mrr".into());
        }
        if self.signup {
            v.push("days_since_signup".into());
        }
        for a in &self.attributes {
            let k = key(&a.column);
            match &a.categories {
                None => v.push(format!("attr_{k}")),
                Some(cats) => {
                    v.extend(cats.iter().map(|c| format!("attr_{k}_{}", key(c))));
                    v.push(format!("attr_{k}_other"));
                }
            }
        }
        if self.subscriptions {
            v.extend(SUBSCRIPTION_FEATURES.iter().map(|s| s.to_string()));
        }
        v
    }
}

/// The events of one customer before `td` (day-sorted): `(days, names, values)`.
fn events_before<'a>(e: &'a Events, id: &str, td: i32) -> (&'a [i32], &'a [u16], &'a [f64]) {
    match e.by_customer.get(id) {
        Some(r) => {
            let days = &e.day[r.clone()];
            let n = days.partition_point(|&d| d < td);
            (&days[..n], &e.name[r.start..r.start + n], &e.value[r.start..r.start + n])
        }
        None => (&[], &[], &[]),
    }
}

/// Whether activity fell by `share` or more in each of the last two 30-day windows.
pub fn usage_drop(days: &[i32], td: i32, share: f64) -> bool {
    let count = |lo: i32, hi: i32| days.iter().filter(|&&d| d >= td - lo && d < td - hi).count() as f64;
    let (w3, w2, w1) = (count(90, 60), count(60, 30), count(30, 0));
    w3 > 0.0 && w2 <= (1.0 - share) * w3 && w1 <= (1.0 - share) * w2
}

/// One row's signal features, in [`SignalSpec::names`] order.
fn row_features(
    spec: &SignalSpec,
    data: &SignalData,
    index: &HashMap<&str, u16>,
    id: &str,
    t: NaiveDate,
    attributes: &[Option<usize>],
    out: &mut Vec<f64>,
) {
    let td = epoch_day(t);
    if let Some(e) = &data.events {
        let (days, names, values) = events_before(e, id, td);
        for name in &spec.events {
            let k = index.get(name.as_str()).copied();
            let of = |lo: i32, hi: i32| {
                days.iter().zip(names).filter(|(&d, &n)| Some(n) == k && d >= td - lo && d < td - hi).count()
                    as f64
            };
            let last = days.iter().zip(names).rev().find(|(_, &n)| Some(n) == k).map(|(&d, _)| d);
            out.push(of(30, 0));
            out.push(of(90, 0));
            out.push(of(45, 0) / (of(90, 45) + 1.0));
            out.push(last.map_or(-1.0, |d| f64::from(td - d)));
        }
        if !spec.events.is_empty() {
            let mut active: Vec<i32> = days.iter().copied().filter(|&d| d >= td - 30).collect();
            active.dedup();
            out.push(active.len() as f64);
            out.push(f64::from(u8::from(usage_drop(days, td, spec.usage_drop_share))));
        }
        if let Some(nps) = &spec.nps_event {
            let k = index.get(nps.as_str()).copied();
            let last =
                days.iter().zip(names).zip(values).rev().find(|((_, &n), v)| Some(n) == k && v.is_finite());
            out.push(last.map_or(-1.0, |(_, &v)| v));
        }
    } else {
        // A model trained with events scored without them: every event feature unknown.
        let n = spec.events.len() * 4
            + if spec.events.is_empty() { 0 } else { 2 }
            + usize::from(spec.nps_event.is_some());
        out.extend(std::iter::repeat_n(-1.0, n));
    }
    let c = data.customers.as_ref().and_then(|c| c.rows.get(id));
    for p in &spec.plans {
        out.push(f64::from(u8::from(c.and_then(|c| c.plan.as_ref()) == Some(p))));
    }
    for s in &spec.segments {
        out.push(f64::from(u8::from(c.and_then(|c| c.segment.as_ref()) == Some(s))));
    }
    if spec.mrr {
        out.push(c.and_then(|c| c.mrr.or(c.arr.map(|a| a / 12.0))).unwrap_or(-1.0));
    }
    if spec.signup {
        out.push(c.and_then(|c| c.signup).filter(|&s| s < t).map_or(-1.0, |s| (t - s).num_days() as f64));
    }
    for (a, &k) in spec.attributes.iter().zip(attributes) {
        let cell = c.and_then(|c| k.and_then(|k| c.attributes.get(k)));
        match (&a.categories, cell) {
            (None, Some(Attribute::Number(v))) => out.push(*v),
            (None, _) => out.push(f64::NAN),
            (Some(cats), cell) => {
                let text = match cell {
                    Some(Attribute::Text(v)) => Some(v.as_str()),
                    _ => None,
                };
                let hit = text.and_then(|v| cats.iter().position(|c| c == v));
                out.extend((0..cats.len()).map(|i| f64::from(u8::from(hit == Some(i)))));
                out.push(f64::from(u8::from(text.is_some() && hit.is_none())));
            }
        }
    }
    if spec.subscriptions {
        let state = data.subscriptions.as_ref().and_then(|s| Some((s.state_at(id, td)?, s)));
        match state {
            Some((now, subs)) => {
                let before = subs.state_at(id, td - 90).map_or(0.0, |s| s.mrr);
                out.push(now.mrr);
                out.push(now.mrr - before);
                out.push(f64::from(now.tenure_days));
                out.push(now.days_to_renewal.map_or(-1.0, f64::from));
                out.push(now.months.map_or(-1.0, f64::from));
                out.push(f64::from(now.renewals));
                out.push(f64::from(u8::from(now.noticed)));
            }
            None => out.extend(std::iter::repeat_n(-1.0, SUBSCRIPTION_FEATURES.len())),
        }
    }
}

/// Where each of the spec's attributes is in the customer table's attributes. A model's
/// attribute must be configured, and numeric in the table when it was numeric in training (a
/// column read as text would leave every value unknown: a silently wrong answer).
fn attribute_columns(spec: &SignalSpec, customers: Option<&Customers>) -> Result<Vec<Option<usize>>> {
    let Some(t) = customers else { return Ok(vec![None; spec.attributes.len()]) };
    spec.attributes
        .iter()
        .map(|a| {
            let k = t.attributes.iter().position(|c| c.name == a.column).ok_or_else(|| {
                Error::config(
                    "(config)",
                    "input.customers.attributes",
                    format!("the model was trained with the customer attribute `{}`; list it", a.column),
                )
            })?;
            if let (None, Some((row, v))) = (&a.categories, &t.attributes[k].first_text) {
                return Err(Error::InvalidRows {
                    path: t.path.clone(),
                    message: format!(
                        "column `{}`, row {row}: {v:?} is not a number (the model learned this \
                         attribute as a number)",
                        a.column
                    ),
                });
            }
            Ok(Some(k))
        })
        .collect()
}

/// Append the signal features to a features frame (`customer_id`, `snapshot`, ...).
pub fn append(frame: &mut DataFrame, spec: &SignalSpec, data: &SignalData) -> Result<()> {
    let names = spec.names();
    if names.is_empty() {
        return Ok(());
    }
    let ctx = "adding event and customer features";
    let ids = frame.column(CUSTOMER).polars(ctx)?.str().polars(ctx)?.clone();
    let snaps = frame.column(SNAPSHOT).polars(ctx)?.date().polars(ctx)?.physical().clone();
    let index: HashMap<&str, u16> = data
        .events
        .as_ref()
        .map(|e| e.names.iter().enumerate().map(|(i, n)| (n.as_str(), i as u16)).collect())
        .unwrap_or_default();
    let attributes = attribute_columns(spec, data.customers.as_ref())?;
    let n = frame.height();
    let f = names.len();
    let rows: Vec<usize> = (0..n).collect();
    let values: Vec<f64> = rows
        .par_chunks(4096)
        .flat_map_iter(|chunk| {
            let mut out = Vec::with_capacity(chunk.len() * f);
            for &i in chunk {
                let id = ids.get(i).unwrap_or_default();
                let t = crate::schema::date_of_day(snaps.get(i).unwrap_or(0)).expect("valid date");
                row_features(spec, data, &index, id, t, &attributes, &mut out);
            }
            out
        })
        .collect();
    for (j, name) in names.iter().enumerate() {
        let col: Vec<f64> = values.iter().skip(j).step_by(f).copied().collect();
        frame.with_column(Column::new(name.into(), col)).polars(ctx)?;
    }
    Ok(())
}

/// Health score components, their inputs, and which were available.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub score: f64,
    pub colour: &'static str,
}

/// Colour of a health score: red < 40, yellow 40-70, green > 70.
pub fn colour(score: f64) -> &'static str {
    if score < 40.0 {
        "red"
    } else if score <= 70.0 {
        "yellow"
    } else {
        "green"
    }
}

/// Which health components the data can feed at `t` (a component none of whose events
/// occurs in the log before `t` is dropped and the weights renormalized; deciding on the log
/// before `t` keeps the score point-in-time).
pub fn health_components(cfg: &HealthConfig, events: &Events, t: NaiveDate) -> Vec<(&'static str, f64)> {
    let td = epoch_day(t);
    let has = |name: &str| events.seen_before(name, td);
    let e = &cfg.events;
    [
        ("usage", cfg.usage, has(&e.login) || events.any_before(td)),
        ("adoption", cfg.adoption, has(&e.feature_used) || has(&e.onboarding)),
        ("engagement", cfg.engagement, has(&e.nps) || has(&e.email_sent)),
        ("financial", cfg.financial, has(&e.payment_failed) || has(&e.downgrade)),
        ("sentiment", cfg.sentiment, has(&e.ticket_critical) || has(&e.escalation)),
    ]
    .into_iter()
    .filter(|c| c.2 && c.1 > 0.0)
    .map(|c| (c.0, c.1))
    .collect()
}

/// The health score of one customer at `t` (see `fidelis.example.toml` `[health]` for the
/// inputs and their normalization). `feature_count` is the number of distinct features in
/// the whole log (the adoption denominator).
pub fn health(cfg: &HealthConfig, events: &Events, id: &str, t: NaiveDate, feature_count: usize) -> Health {
    let td = epoch_day(t);
    let (days, names, values) = events_before(events, id, td);
    let idx = |name: &str| events.names.iter().position(|n| n == name).map(|i| i as u16);
    let e = &cfg.events;
    let count = |name: &str, window: i32| {
        let k = idx(name);
        days.iter().zip(names).filter(|(&d, &n)| Some(n) == k && d >= td - window).count() as f64
    };
    let has = |name: &str| events.seen_before(name, td);
    let mean = |v: &[Option<f64>]| {
        let got: Vec<f64> = v.iter().flatten().copied().collect();
        (!got.is_empty()).then(|| got.iter().sum::<f64>() / got.len() as f64)
    };
    let clip = |v: f64| v.clamp(0.0, 1.0);
    // usage: recency of the last login, active days in 30, logins per week over 28 days.
    let login = idx(&e.login);
    let last_login = days.iter().zip(names).rev().find(|(_, &n)| Some(n) == login).map(|(&d, _)| td - d);
    let mut active: Vec<i32> = days.iter().copied().filter(|&d| d >= td - 30).collect();
    active.dedup();
    let usage = mean(&[
        has(&e.login).then(|| last_login.map_or(0.0, |d| clip(1.0 - f64::from(d) / 30.0))),
        Some(clip(active.len() as f64 / 20.0)),
        has(&e.login).then(|| clip(count(&e.login, 28) / 4.0 / 5.0)),
    ]);
    // adoption: share of the product's features used in 90 days, onboarding completed.
    let fk = idx(&e.feature_used);
    let mut used: Vec<i64> = days
        .iter()
        .zip(names)
        .zip(values)
        .filter(|((&d, &n), v)| Some(n) == fk && d >= td - 90 && v.is_finite())
        .map(|(_, v)| *v as i64)
        .collect();
    used.sort_unstable();
    used.dedup();
    let adoption = mean(&[
        (has(&e.feature_used) && feature_count > 0).then(|| clip(used.len() as f64 / feature_count as f64)),
        has(&e.onboarding).then(|| f64::from(u8::from(count(&e.onboarding, i32::MAX / 2) > 0.0))),
    ]);
    // engagement: last NPS / 10, email open rate over 90 days.
    let nk = idx(&e.nps);
    let nps = days
        .iter()
        .zip(names)
        .zip(values)
        .rev()
        .find(|((_, &n), v)| Some(n) == nk && v.is_finite())
        .map(|(_, &v)| v);
    let sent = count(&e.email_sent, 90);
    let engagement =
        mean(&[nps.map(|v| clip(v / 10.0)), (sent > 0.0).then(|| clip(count(&e.email_opened, 90) / sent))]);
    // financial: payment failures and downgrades over 90 days.
    let financial = mean(&[
        has(&e.payment_failed).then(|| clip(1.0 - count(&e.payment_failed, 90) / 3.0)),
        has(&e.downgrade).then(|| f64::from(u8::from(count(&e.downgrade, 90) == 0.0))),
    ]);
    // sentiment: critical tickets and escalations over 90 days.
    let sentiment = mean(&[
        has(&e.ticket_critical).then(|| clip(1.0 - count(&e.ticket_critical, 90) / 2.0)),
        has(&e.escalation).then(|| f64::from(u8::from(count(&e.escalation, 90) == 0.0))),
    ]);
    let parts = [
        (cfg.usage, usage),
        (cfg.adoption, adoption),
        (cfg.engagement, engagement),
        (cfg.financial, financial),
        (cfg.sentiment, sentiment),
    ];
    let (mut sum, mut weight) = (0.0, 0.0);
    for (w, v) in parts {
        if let Some(v) = v {
            sum += w * v;
            weight += w;
        }
    }
    let score = if weight > 0.0 { (100.0 * sum / weight).round() } else { 50.0 };
    Health { score, colour: colour(score) }
}

/// Distinct values of the feature-usage event in the whole log.
pub fn feature_count(cfg: &HealthConfig, events: &Events) -> usize {
    events.distinct_values(&cfg.events.feature_used).len()
}

/// Why the numbers and the people disagree about a customer, if they do.
pub fn review_reasons(
    level: &str,
    health: Option<&Health>,
    sentiment: Option<Sentiment>,
    history: &[f64],
) -> Vec<String> {
    let mut why = Vec::new();
    if let Some(h) = health {
        if matches!(level, "high" | "critical" | "imminent") && h.colour == "green" {
            why.push(format!("model risk {level} but health green ({})", h.score));
        }
        // Health falling three weekly runs in a row while still green.
        if let [a, b] = history {
            if *a > *b && *b > h.score && h.colour == "green" {
                why.push(format!(
                    "health falling three runs in a row ({a} -> {b} -> {}) while green",
                    h.score
                ));
            }
        }
    }
    if let Some(s) = sentiment {
        if matches!(s, Sentiment::Yellow | Sentiment::Red) && level == "low" {
            why.push(format!("CSM says {} but the model says low", s.as_str()));
        }
    }
    why
}

/// The first escalation rule that fires for a customer of `arr` in risk `level` whose next
/// renewal is `days_to_renewal` away.
pub fn escalation(
    rules: &crate::config::EscalationConfig,
    level: &str,
    arr: Option<f64>,
    days_to_renewal: Option<i32>,
) -> Option<String> {
    let arr = arr?;
    rules.rule_for(level, Some(arr), days_to_renewal).map(|r| {
        let renewal = r.max_days_to_renewal.map_or(String::new(), |m| {
            let d = days_to_renewal.unwrap_or_default();
            format!(", renewal in {d} day{} (<= {m})", if d == 1 { "" } else { "s" })
        });
        format!(
            "ARR {} > {} in {level}{renewal}: {}",
            crate::format::int(arr.round() as i128),
            crate::format::int(r.min_arr.round() as i128),
            r.action
        )
    })
}
