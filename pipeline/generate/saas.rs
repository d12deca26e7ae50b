//! Synthetic subscription (SaaS) data: monthly payments as transactions, product events,
//! and a customer table, where churn follows a hidden hazard driven by the same signals the
//! events show, so usage and sentiment features have something true to find.
//!
//! Per customer, week by week from its signup:
//! - a latent health `h` in [0, 1] (start ~ N(0.7, 0.15)) drifts (N(0, 0.04) a week, mild
//!   pull to 0.65) and takes a shock (-0.3) with probability 2% a week;
//! - events: `login` ~ Poisson(6 h) a week, `feature_used` ~ Poisson(3 h) with a feature id
//!   1..10 as value (more distinct features when healthy), `email_sent` weekly and
//!   `email_opened` with probability h, `ticket` ~ Poisson(0.3 (1.2 - h)) of which
//!   `ticket_critical` when h < 0.4 (half of them), `nps` every 13 weeks with value
//!   round(10 h + N(0, 1)) in 0..10, `onboarding_completed` in the first two weeks with
//!   probability 0.4 + 0.6 h, `payment_failed` at a billing with probability
//!   0.02 + 0.15 [h < 0.3], `downgrade` (MRR halves) with probability 0.05 a month when
//!   h < 0.35, `escalation` with probability 0.3 after a critical ticket;
//! - churn: weekly hazard sigmoid(-5.3 + 7 (0.55 - h) + 1.2 [payment failed in the last 4
//!   weeks] + 0.8 [critical ticket in the last 4 weeks]); after churning nothing more
//!   happens;
//! - transactions: the MRR paid every 30 days from signup while subscribed;
//! - the CSM's sentiment, reviewed every 4 weeks: green when h + N(0, 0.12) > 0.5, red below
//!   0.3, yellow between; the customer table keeps the latest with its date.
//!
//! Plans: basic (MRR ~ 50, 60%), pro (~ 200, 30%), enterprise (~ 1,200, 10%).
//!
//! The subscription table (`subscriptions.parquet`) follows each life: one row per stretch of
//! constant MRR of a monthly subscription, one per term of an annual contract (`start`,
//! `end`: null while a monthly subscription runs on; `billing_period`, `mrr`, `cancelled_at`:
//! the day notice was given; `status` as of the end of the data: `active`, `renewed`,
//! `cancelling` (notice given, the term not over), `ended`). A monthly subscriber who leaves
//! gives notice at the end of the week it decides and has paid through 30 days after its last
//! payment.
//!
//! With contracts ([`GenerateOptions::contracts`]; the tables above are otherwise unchanged,
//! drawn from the same numbers): 45% of pro and enterprise and 15% of basic subscribers sign
//! annual contracts (a 365-day term paid up front, 12 x MRR; renewed at its end unless notice
//! was given, at the MRR reached meanwhile); a subscriber that decides to leave gives notice
//! that day, and an annual one stays, using the product at its health less 0.3, until the
//! term ends; with health above 0.8 an account expands (MRR x 1.5) with probability 0.03 at
//! a billing date (an annual account's MRR changes at renewal). The true weekly hazard of each
//! subscriber, while it has not given notice, goes to `hazard.parquet` (`customer_id`,
//! `week_start`, `hazard`) for tests.
//!
//! A campaign (`fidelis generate --kind saas --campaign`, [`generate_saas_campaign`]): a
//! contact acts at the end of the week it falls in. A subscriber who already cancelled is a
//! lost cause; an unhealthy one (h < 0.45) is won back with probability 0.15 + 0.45
//! min(tenure / 365, 1) + 0.15 [not basic] (health back to at least 0.75, its payment
//! failure and critical ticket resolved), else not persuaded; a healthy basic subscriber
//! younger than 180 days cancels with probability 0.35 (a sleeping dog reminded of a
//! subscription it barely uses); the rest are sure things.

use polars::prelude::*;
use rayon::prelude::*;

use super::{pick, ContactEffect, GenerateOptions, Odds, Response};
use crate::error::{Error, PolarsContext, Result};
use crate::math::sigmoid;
use crate::rng::Rng;

/// The three tables of a SaaS dataset.
pub struct SaasData {
    pub transactions: DataFrame,
    pub events: DataFrame,
    pub customers: DataFrame,
    pub subscriptions: DataFrame,
    /// The true weekly hazard (contracts only; empty otherwise).
    pub hazard: DataFrame,
}

fn poisson(r: &mut Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    let l = (-lambda).exp();
    let (mut k, mut p) = (0u32, 1.0);
    loop {
        p *= r.uniform();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

#[derive(Default)]
struct Out {
    tx: Vec<(u32, i64, f64)>,
    ev: Vec<(u32, i64, &'static str, Option<f64>)>,
    cust: Vec<CustomerRow>,
    subs: Vec<SubRow>,
    /// (subscriber, first day of the week, weekly hazard): contracts only.
    hazard: Vec<(u32, i32, f64)>,
}

/// One row of the subscription table (days after the start).
struct SubRow {
    idx: u32,
    start: i32,
    end: Option<i32>,
    annual: bool,
    mrr: f64,
    cancelled_at: Option<i32>,
}

struct CustomerRow {
    idx: u32,
    signup: i32,
    plan: &'static str,
    mrr: f64,
    csm: &'static str,
    sentiment: Option<(&'static str, i32)>,
}

const CSMS: [&str; 6] = ["Ana", "Ben", "Chloe", "Dev", "Eli", "Fay"];

/// One week of a customer's life, as `product_events` sees it.
struct Week {
    idx: u32,
    day0: i32,
    days: i32,
    start_ms: i64,
    /// Health in [0, 1].
    h: f64,
    week: i32,
}

impl Week {
    fn at(&self, r: &mut Rng, day: i32) -> i64 {
        time_on(self.start_ms, r, day)
    }
}

/// A time during office hours on day `day` after `start_ms`.
fn time_on(start_ms: i64, r: &mut Rng, day: i32) -> i64 {
    start_ms + day as i64 * 86_400_000 + ((8.0 + 12.0 * r.uniform()) * 3_600_000.0) as i64
}

/// The product events of one week (logins, features, e-mails, tickets, NPS, onboarding);
/// returns the day of a critical ticket, if any.
fn product_events(r: &mut Rng, w: &Week, out: &mut Out) -> Option<i32> {
    let mut last_critical = None;
    let day = |r: &mut Rng| (w.day0 + r.below(7) as i32).min(w.days - 1);
    for _ in 0..poisson(r, 6.0 * w.h) {
        let d = day(r);
        out.ev.push((w.idx, w.at(r, d), "login", None));
    }
    for _ in 0..poisson(r, 3.0 * w.h) {
        let d = day(r);
        let feature = 1 + r.below((2.0 + 8.0 * w.h) as u64) as i32;
        out.ev.push((w.idx, w.at(r, d), "feature_used", Some(f64::from(feature))));
    }
    let d = day(r);
    out.ev.push((w.idx, w.at(r, d), "email_sent", None));
    if r.bernoulli(w.h) {
        out.ev.push((w.idx, w.at(r, d), "email_opened", None));
    }
    for _ in 0..poisson(r, 0.3 * (1.2 - w.h)) {
        let d = day(r);
        if w.h < 0.4 && r.bernoulli(0.5) {
            out.ev.push((w.idx, w.at(r, d), "ticket_critical", None));
            last_critical = Some(d);
            if r.bernoulli(0.3) {
                out.ev.push((w.idx, w.at(r, d), "escalation", None));
            }
        } else {
            out.ev.push((w.idx, w.at(r, d), "ticket", None));
        }
    }
    if w.week % 13 == 6 {
        let score = (10.0 * w.h + r.normal()).round().clamp(0.0, 10.0);
        let d = day(r);
        out.ev.push((w.idx, w.at(r, d), "nps", Some(score)));
    }
    if w.week < 2 && r.bernoulli((0.4 + 0.6 * w.h) / 2.0) {
        let d = day(r);
        out.ev.push((w.idx, w.at(r, d), "onboarding_completed", None));
    }
    last_critical
}

/// What a contact at day `c` may do to a subscriber in this state (`state`: the contact day,
/// signup day, health, plan), with the probabilities; the subscriber's own draw on its effect
/// stream (separate from its life's stream, so the draws before the contact are the same on
/// both paths) picks one, unless `force` names it.
fn contact_effect(
    opts: &GenerateOptions,
    idx: u32,
    state: (i32, i32, f64, &str),
    response: Response,
    force: Option<ContactEffect>,
) -> (ContactEffect, Odds) {
    let (day, signup, h, plan) = state;
    let tenure = f64::from(day - signup);
    let leaving = h < 0.45;
    let certain = |e| vec![(e, 1.0)];
    let odds = match response {
        Response::Nil if leaving => certain(ContactEffect::NotPersuaded),
        Response::Nil => certain(ContactEffect::SureThing),
        Response::Harmful if leaving => certain(ContactEffect::NotPersuaded),
        Response::Harmful => vec![(ContactEffect::Annoyed, 0.3), (ContactEffect::SureThing, 0.7)],
        Response::Mixed if leaving => {
            // A CSM call wins back long-standing accounts on paid-up plans most often.
            let p = 0.15 + 0.45 * (tenure / 365.0).min(1.0) + if plan == "basic" { 0.0 } else { 0.15 };
            vec![(ContactEffect::Persuaded, p), (ContactEffect::NotPersuaded, 1.0 - p)]
        }
        // A young basic subscriber reminded of a subscription it barely uses cancels it.
        Response::Mixed if tenure < 180.0 && plan == "basic" => {
            vec![(ContactEffect::Annoyed, 0.35), (ContactEffect::SureThing, 0.65)]
        }
        Response::Mixed => certain(ContactEffect::SureThing),
    };
    let u = Rng::for_item(opts.seed ^ 0x5341_4153_4341_4d50, u64::from(idx)).uniform();
    (force.unwrap_or_else(|| pick(&odds, u)), odds)
}

/// The CSM's view of a subscriber of health `h`: green above 0.5, red below 0.3 (seen with
/// noise), yellow between.
fn csm_review(r: &mut Rng, h: f64) -> &'static str {
    let seen = h + 0.12 * r.normal();
    if seen > 0.5 {
        "green"
    } else if seen < 0.3 {
        "red"
    } else {
        "yellow"
    }
}

fn customer(opts: &GenerateOptions, idx: u32, out: &mut Out) {
    customer_path(opts, idx, None, Response::Mixed, out);
}

/// One subscriber's life, contacted on day `contact` or never: everything up to the end of
/// the week of the contact is the uncontacted customer's (same draws), then the contact acts
/// (see [`contact_effect`]): a persuaded customer's health recovers (to at least 0.75, its
/// recent payment failure and critical ticket resolved), an annoyed one cancels, the others
/// go on as they would have. A customer who cancelled before the contact is a lost cause.
fn customer_path(
    opts: &GenerateOptions,
    idx: u32,
    contact: Option<(i32, Option<ContactEffect>)>,
    response: Response,
    out: &mut Out,
) -> Option<(ContactEffect, Odds)> {
    let force = contact.and_then(|(_, f)| f);
    let mut pending = contact.map(|(day, _)| day);
    let before = || (ContactEffect::Before, vec![(ContactEffect::Before, 1.0)]);
    let mut effect = contact.map(|_| before());
    let mut r = Rng::for_item(opts.seed ^ 0x5AA5, idx as u64);
    let start_ms = opts.start.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis();
    let at = |r: &mut Rng, day: i32| time_on(start_ms, r, day);
    let signup = (r.uniform() * 0.85 * opts.days as f64) as i32;
    let u = r.uniform();
    let (plan, base) = if u < 0.6 {
        ("basic", 50.0)
    } else if u < 0.9 {
        ("pro", 200.0)
    } else {
        ("enterprise", 1200.0)
    };
    let mut mrr = (base * (0.8 + 0.4 * r.uniform()) * 100.0).round() / 100.0;
    let csm = CSMS[r.below(CSMS.len() as u64) as usize];
    let mut h = (0.7 + 0.15 * r.normal()).clamp(0.05, 1.0);
    let mut sentiment = None;
    let (mut last_fail, mut last_critical) = (i32::MIN / 2, i32::MIN / 2);
    // Contracts draw from their own stream: without them every other table is unchanged.
    let mut cr = Rng::for_item(opts.seed ^ 0xC047_AC75, u64::from(idx));
    let annual = opts.contracts && cr.bernoulli(if plan == "basic" { 0.15 } else { 0.45 });
    let mut sub =
        Subscription { start: signup, mrr, annual, term_end: signup + 365, ..Subscription::default() };
    if annual {
        out.tx.push((idx, at(&mut r, signup), 12.0 * mrr));
    }
    let mut week = 0;
    loop {
        let day0 = signup + 7 * week;
        if day0 >= opts.days || sub.notice.is_some_and(|_| annual && day0 >= sub.term_end) {
            break;
        }
        let mut billing = Billing { idx, signup, start_ms, h, mrr, last_fail, sub };
        billing.week(opts, day0, (&mut r, &mut cr), out);
        Billing { mrr, last_fail, sub, .. } = billing;
        // Having given notice, an annual subscriber uses the product less until its term ends.
        let used = if sub.notice.is_some() { (h - 0.3).max(0.0) } else { h };
        let w = Week { idx, day0, days: opts.days, start_ms, h: used, week };
        if let Some(d) = product_events(&mut r, &w, out) {
            last_critical = d;
        }
        if week % 4 == 3 {
            sentiment = Some((csm_review(&mut r, used), day0));
        }
        if sub.notice.is_some() {
            week += 1;
            continue;
        }
        if let Some(c) = pending.filter(|&c| c < day0 + 7) {
            pending = None;
            let (e, odds) = if c < signup {
                before()
            } else {
                contact_effect(opts, idx, (c, signup, h, plan), response, force)
            };
            effect = Some((e, odds));
            match e {
                ContactEffect::Persuaded => {
                    h = h.max(0.75);
                    (last_fail, last_critical) = (i32::MIN / 2, i32::MIN / 2);
                }
                ContactEffect::Annoyed => {
                    sub.notice = Some(day0 + 7);
                    if annual {
                        week += 1;
                        continue;
                    }
                    break;
                }
                _ => {}
            }
        }
        // Health moves, then the customer may leave.
        h = (h + 0.04 * r.normal() + 0.05 * (0.65 - h)).clamp(0.0, 1.0);
        if r.bernoulli(0.02) {
            h = (h - 0.3).max(0.0);
        }
        let end = day0 + 7;
        let hazard = sigmoid(
            -5.3 + 7.0 * (0.55 - h)
                + if end - last_fail <= 28 { 1.2 } else { 0.0 }
                + if end - last_critical <= 28 { 0.8 } else { 0.0 },
        );
        // The weeks that end within the data are at risk; a notice after its end is not given yet.
        if opts.contracts && end <= opts.days {
            out.hazard.push((idx, day0, hazard));
        }
        if r.bernoulli(hazard) {
            // Cancelled before a contact later in the period: nothing to win back.
            if pending.is_some_and(|c| c >= signup && c < opts.days) {
                effect = Some((ContactEffect::LostCause, vec![(ContactEffect::LostCause, 1.0)]));
            }
            sub.notice = Some(end);
            if !annual {
                break;
            }
        }
        week += 1;
    }
    sub.close_last(idx, opts.days, out);
    out.cust.push(CustomerRow { idx, signup, plan, mrr, csm, sentiment });
    effect
}

/// A subscriber's billing: payments, failed payments, MRR changes, renewals.
struct Billing {
    idx: u32,
    signup: i32,
    start_ms: i64,
    /// Health this week.
    h: f64,
    mrr: f64,
    last_fail: i32,
    sub: Subscription,
}

impl Billing {
    /// The billing days of the week from `day0`: an annual term renewed at its end (unless
    /// notice was given), then every 30 days a payment attempt (failures are events), the
    /// monthly payment, and a downgrade or (with contracts) an expansion. `r` is the life's
    /// stream, `cr` the contracts' own.
    fn week(&mut self, opts: &GenerateOptions, day0: i32, (r, cr): (&mut Rng, &mut Rng), out: &mut Out) {
        let (idx, h) = (self.idx, self.h);
        let sub = &mut self.sub;
        let at = |r: &mut Rng, d: i32| time_on(self.start_ms, r, d);
        for d in day0..(day0 + 7).min(opts.days) {
            if sub.annual && d == sub.term_end && d > self.signup {
                // Renewed (no notice): a new term at the MRR reached meanwhile.
                if sub.notice.is_some() {
                    break;
                }
                sub.close(idx, d, out);
                sub.start = d;
                sub.mrr = self.mrr;
                sub.term_end = d + 365;
                out.tx.push((idx, at(r, d), 12.0 * self.mrr));
            }
            if (d - self.signup) % 30 != 0 || sub.notice.is_some() {
                continue;
            }
            if r.bernoulli(0.02 + if h < 0.3 { 0.15 } else { 0.0 }) {
                out.ev.push((idx, at(r, d), "payment_failed", None));
                self.last_fail = d;
            }
            if !sub.annual {
                if self.mrr != sub.mrr {
                    sub.close(idx, d, out);
                    sub.start = d;
                    sub.mrr = self.mrr;
                }
                out.tx.push((idx, at(r, d), self.mrr));
                sub.paid_through = d + 30;
            }
            if h < 0.35 && r.bernoulli(0.05) {
                out.ev.push((idx, at(r, d), "downgrade", None));
                self.mrr = (self.mrr * 50.0).round() / 100.0;
            }
            if opts.contracts && h > 0.8 && cr.bernoulli(0.03) {
                out.ev.push((idx, at(r, d), "expansion", None));
                self.mrr = (self.mrr * 150.0).round() / 100.0;
            }
        }
    }
}

/// The subscription being lived: its current row and what ends it.
#[derive(Default)]
struct Subscription {
    start: i32,
    mrr: f64,
    annual: bool,
    /// The end of an annual term.
    term_end: i32,
    /// A monthly subscription's paid-through day.
    paid_through: i32,
    /// The day notice was given.
    notice: Option<i32>,
}

impl Subscription {
    /// The current row ends on `day` (a renewal or an MRR change).
    fn close(&self, idx: u32, day: i32, out: &mut Out) {
        out.subs.push(SubRow {
            idx,
            start: self.start,
            end: Some(day),
            annual: self.annual,
            mrr: self.mrr,
            cancelled_at: None,
        });
    }

    /// The last row, at the end of the life or of the data (`days`): a notice after the data
    /// is not given yet; an annual term ends when it ends, a cancelled monthly subscription
    /// when it is paid through (at the notice at the earliest), a running one never.
    fn close_last(&mut self, idx: u32, days: i32, out: &mut Out) {
        self.notice = self.notice.filter(|&n| n <= days);
        let end = match (self.annual, self.notice) {
            (true, _) => Some(self.term_end),
            (false, Some(n)) => Some(self.paid_through.max(n).max(self.start + 1)),
            (false, None) => None,
        };
        out.subs.push(SubRow {
            idx,
            start: self.start,
            end,
            annual: self.annual,
            mrr: self.mrr,
            cancelled_at: self.notice,
        });
    }
}

fn id(i: u32) -> String {
    format!("S{:06}", i + 1)
}

/// Generate the three SaaS tables in memory.
pub fn generate_saas(opts: &GenerateOptions) -> Result<SaasData> {
    assemble(opts, |i, out| customer(opts, i, out))
}

/// The SaaS tables of a campaign: subscriber `i` (0-based, id `S{i+1:06}`) first contacted
/// on day `contacts[i]` (days after the start; none = never) lives as its contacted path says
/// ([`customer_path`]); everybody else exactly as [`generate_saas`] makes them.
pub fn generate_saas_campaign(
    opts: &GenerateOptions,
    contacts: &std::collections::HashMap<u32, f64>,
    response: Response,
) -> Result<SaasData> {
    assemble(opts, |i, out| {
        customer_path(opts, i, contacts.get(&i).map(|&d| (d as i32, None)), response, out);
    })
}

/// The days (after the start) with a payment of subscriber `idx`, contacted on `contact` or
/// never (its effect forced when the contact names one): one of its potential outcomes as
/// fidelis reads it, and what the contact did with the odds of each effect.
pub fn payment_days(
    opts: &GenerateOptions,
    idx: u32,
    contact: Option<(f64, Option<ContactEffect>)>,
    response: Response,
) -> (Vec<i32>, Option<(ContactEffect, Odds)>) {
    let mut out = Out::default();
    let effect = customer_path(opts, idx, contact.map(|(d, f)| (d as i32, f)), response, &mut out);
    let start = opts.start.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis();
    let mut days: Vec<i32> = out.tx.iter().map(|t| ((t.1 - start) / 86_400_000) as i32).collect();
    days.sort_unstable();
    days.dedup();
    (days, effect)
}

fn assemble(opts: &GenerateOptions, one: impl Fn(u32, &mut Out) + Sync) -> Result<SaasData> {
    if opts.customers == 0 || opts.customers > 10_000_000 {
        return Err(Error::Data(format!(
            "--customers must be in 1..=10000000 for --kind saas, got {}",
            opts.customers
        )));
    }
    let n = opts.customers as u32;
    let chunk = 1024u32;
    let parts: Vec<Out> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let mut out = Out::default();
            for i in c * chunk..((c + 1) * chunk).min(n) {
                one(i, &mut out);
            }
            out
        })
        .collect();
    let ms = |v: Vec<i64>, name: &str| {
        Int64Chunked::from_vec(name.into(), v).into_datetime(TimeUnit::Milliseconds, None).into_column()
    };
    let tx: Vec<&(u32, i64, f64)> = parts.iter().flat_map(|p| p.tx.iter()).collect();
    let transactions = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), tx.iter().map(|t| id(t.0)).collect::<Vec<_>>()),
        ms(tx.iter().map(|t| t.1).collect(), "ts"),
        Column::new("amount".into(), tx.iter().map(|t| t.2).collect::<Vec<_>>()),
    ])
    .polars("assembling SaaS transactions")?;
    let ev: Vec<&(u32, i64, &str, Option<f64>)> = parts.iter().flat_map(|p| p.ev.iter()).collect();
    let events = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ev.iter().map(|e| id(e.0)).collect::<Vec<_>>()),
        ms(ev.iter().map(|e| e.1).collect(), "ts"),
        Column::new("event".into(), ev.iter().map(|e| e.2).collect::<Vec<_>>()),
        Column::new("value".into(), ev.iter().map(|e| e.3).collect::<Vec<_>>()),
    ])
    .polars("assembling SaaS events")?;
    let cs: Vec<&CustomerRow> = parts.iter().flat_map(|p| p.cust.iter()).collect();
    let date = |d: i32| crate::schema::epoch_day(opts.start) + d;
    let segment = |plan: &str| match plan {
        "enterprise" => "Enterprise",
        "pro" => "Mid-market",
        _ => "SMB",
    };
    let customers = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), cs.iter().map(|c| id(c.idx)).collect::<Vec<_>>()),
        Column::new("signup_date".into(), cs.iter().map(|c| date(c.signup)).collect::<Vec<_>>())
            .cast(&DataType::Date)
            .polars("signup dates")?,
        Column::new("plan".into(), cs.iter().map(|c| c.plan).collect::<Vec<_>>()),
        Column::new("segment".into(), cs.iter().map(|c| segment(c.plan)).collect::<Vec<_>>()),
        Column::new("mrr".into(), cs.iter().map(|c| c.mrr).collect::<Vec<_>>()),
        Column::new(
            "arr".into(),
            cs.iter().map(|c| (c.mrr * 12.0 * 100.0).round() / 100.0).collect::<Vec<_>>(),
        ),
        Column::new("csm".into(), cs.iter().map(|c| c.csm).collect::<Vec<_>>()),
        Column::new("csm_sentiment".into(), cs.iter().map(|c| c.sentiment.map(|s| s.0)).collect::<Vec<_>>()),
        Column::new(
            "csm_sentiment_date".into(),
            cs.iter().map(|c| c.sentiment.map(|s| date(s.1))).collect::<Vec<_>>(),
        )
        .cast(&DataType::Date)
        .polars("sentiment dates")?,
    ])
    .polars("assembling SaaS customers")?;
    let (subscriptions, hazard) = subscription_frames(opts, &parts)?;
    Ok(SaasData { transactions, events, customers, subscriptions, hazard })
}

/// The subscription table and the true hazard of the generated lives.
fn subscription_frames(opts: &GenerateOptions, parts: &[Out]) -> Result<(DataFrame, DataFrame)> {
    let date = |d: i32| crate::schema::epoch_day(opts.start) + d;
    let subs: Vec<&SubRow> = parts.iter().flat_map(|p| p.subs.iter()).collect();
    let status: Vec<&str> = subs
        .iter()
        .enumerate()
        .map(|(i, r)| match (subs.get(i + 1).is_some_and(|n| n.idx == r.idx), r.end) {
            (true, _) => "renewed",
            (false, Some(e)) if e <= opts.days => "ended",
            (false, _) if r.cancelled_at.is_some() => "cancelling",
            (false, _) => "active",
        })
        .collect();
    let dates = |v: Vec<Option<i32>>, name: &str| -> Result<Column> {
        Column::new(name.into(), v.into_iter().map(|d| d.map(date)).collect::<Vec<_>>())
            .cast(&DataType::Date)
            .polars("subscription dates")
    };
    let subscriptions = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), subs.iter().map(|r| id(r.idx)).collect::<Vec<_>>()),
        dates(subs.iter().map(|r| Some(r.start)).collect(), "start")?,
        dates(subs.iter().map(|r| r.end).collect(), "end")?,
        Column::new(
            "billing_period".into(),
            subs.iter().map(|r| if r.annual { "annual" } else { "monthly" }).collect::<Vec<_>>(),
        ),
        Column::new("mrr".into(), subs.iter().map(|r| r.mrr).collect::<Vec<_>>()),
        dates(subs.iter().map(|r| r.cancelled_at).collect(), "cancelled_at")?,
        Column::new("status".into(), status),
    ])
    .polars("assembling SaaS subscriptions")?;
    let hz: Vec<&(u32, i32, f64)> = parts.iter().flat_map(|p| p.hazard.iter()).collect();
    let hazard = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), hz.iter().map(|h| id(h.0)).collect::<Vec<_>>()),
        dates(hz.iter().map(|h| Some(h.1)).collect(), "week_start")?,
        Column::new("hazard".into(), hz.iter().map(|h| h.2).collect::<Vec<_>>()),
    ])
    .polars("assembling the true hazard")?;
    Ok((subscriptions, hazard))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SaaS campaign changes nothing for the subscribers it does not contact, nothing before
    /// the week of a contact, and after it what the contact's effect says; every kind of
    /// response occurs.
    #[test]
    fn a_saas_campaign_changes_only_what_follows_each_contact() {
        let opts = GenerateOptions { customers: 3000, ..GenerateOptions::default() };
        let plain = generate_saas(&opts).unwrap();
        let none = generate_saas_campaign(&opts, &Default::default(), Response::Mixed).unwrap();
        assert!(plain.transactions.equals_missing(&none.transactions));
        assert!(plain.events.equals_missing(&none.events));
        assert!(plain.customers.equals_missing(&none.customers));
        let day = 500.0;
        let mut seen = std::collections::BTreeMap::new();
        for idx in 0..3000u32 {
            let (before, _) = payment_days(&opts, idx, None, Response::Mixed);
            let (after, effect) = payment_days(&opts, idx, Some((day, None)), Response::Mixed);
            let (effect, odds) = effect.unwrap();
            assert!(odds.iter().any(|o| o.0 == effect), "{effect:?} drawn from {odds:?}");
            let (forced, _) = payment_days(&opts, idx, Some((day, Some(effect))), Response::Mixed);
            assert_eq!(forced, after, "forcing the drawn effect follows the same path");
            *seen.entry(format!("{effect:?}")).or_insert(0) += 1;
            let upto = |d: &Vec<i32>| d.iter().filter(|&&x| f64::from(x) < day).copied().collect::<Vec<_>>();
            assert_eq!(upto(&before), upto(&after), "subscriber {idx}: the past is the same");
            match effect {
                // Payments stop within the week of the contact.
                ContactEffect::Annoyed => {
                    assert!(after.iter().all(|&x| f64::from(x) < day + 7.0), "subscriber {idx}")
                }
                ContactEffect::Persuaded => {}
                _ => assert_eq!(before, after, "subscriber {idx}: no effect"),
            }
        }
        for kind in ["Persuaded", "NotPersuaded", "Annoyed", "SureThing", "LostCause", "Before"] {
            assert!(seen.get(kind).copied().unwrap_or(0) > 20, "{seen:?}");
        }
        // With no effect, both paths are the same for everybody.
        for idx in 0..300u32 {
            let (a, _) = payment_days(&opts, idx, None, Response::Nil);
            let (b, _) = payment_days(&opts, idx, Some((day, None)), Response::Nil);
            assert_eq!(a, b);
        }
    }

    /// The subscription table follows the payments, notices come before the ends, annual
    /// contracts are paid up front per term, and the hazard written beside the data is the one
    /// the notices were drawn from (their count is its sum over the weeks at risk).
    #[test]
    fn contracts_follow_the_payments_and_the_written_hazard_is_the_true_one() {
        let opts = GenerateOptions { customers: 3000, contracts: true, ..GenerateOptions::default() };
        let data = generate_saas(&opts).unwrap();
        let plain = generate_saas(&GenerateOptions { contracts: false, ..opts.clone() }).unwrap();
        assert_eq!(plain.hazard.height(), 0);
        let monthly = plain.subscriptions.column("billing_period").unwrap().str().unwrap().clone();
        assert!(monthly.iter().all(|p| p == Some("monthly")));
        let subs = &data.subscriptions;
        let col = |n: &str| subs.column(n).unwrap().clone();
        let ids = col("customer_id");
        let ids = ids.str().unwrap();
        let day = |n: &str| -> Vec<Option<i32>> { col(n).date().unwrap().physical().iter().collect() };
        let (start, end, notice) = (day("start"), day("end"), day("cancelled_at"));
        let period = col("billing_period");
        let period = period.str().unwrap();
        let status = col("status");
        let status = status.str().unwrap();
        let mut annual_rows = 0;
        for i in 0..subs.height() {
            let next_same = i + 1 < subs.height() && ids.get(i + 1) == ids.get(i);
            if let Some(e) = end[i] {
                assert!(e > start[i].unwrap(), "row {i}");
            }
            if let Some(n) = notice[i] {
                assert!(!next_same, "row {i}: a notice is on the last row of a subscription");
                assert!(end[i].is_some_and(|e| n <= e), "row {i}: notice after the end");
            }
            if period.get(i) == Some("annual") {
                annual_rows += 1;
                assert_eq!(end[i].unwrap() - start[i].unwrap(), 365, "row {i}: an annual term is 365 days");
            }
            let expected = match (next_same, end[i]) {
                (true, _) => "renewed",
                (false, Some(e)) if e <= crate::schema::epoch_day(opts.start) + opts.days => "ended",
                (false, _) if notice[i].is_some() => "cancelling",
                (false, _) => "active",
            };
            assert_eq!(status.get(i), Some(expected), "row {i}");
        }
        let customers = data.customers.height() as f64;
        assert!(annual_rows as f64 > 0.15 * customers, "{annual_rows} annual terms");
        // Every annual term starts with its payment of 12 x MRR.
        let tx_ids = data.transactions.column("customer_id").unwrap().str().unwrap().clone();
        let tx_amount = data.transactions.column("amount").unwrap().f64().unwrap().clone();
        let paid: std::collections::HashSet<(String, u64)> = (0..tx_ids.len())
            .map(|i| (tx_ids.get(i).unwrap().to_string(), tx_amount.get(i).unwrap().to_bits()))
            .collect();
        let mrr = col("mrr");
        let mrr = mrr.f64().unwrap();
        for i in (0..subs.height()).filter(|&i| period.get(i) == Some("annual")) {
            let key = (ids.get(i).unwrap().to_string(), (12.0 * mrr.get(i).unwrap()).to_bits());
            assert!(paid.contains(&key), "row {i}: no payment of 12 x MRR for the term");
        }
        // Notices drawn from the hazard: their count is the hazard's sum over the weeks at risk
        // (within 4 standard deviations).
        let h = data.hazard.column("hazard").unwrap().f64().unwrap().clone();
        let expected: f64 = h.iter().flatten().sum();
        let sd: f64 = h.iter().flatten().map(|p| p * (1.0 - p)).sum::<f64>().sqrt();
        let notices = notice.iter().filter(|n| n.is_some()).count() as f64;
        assert!(
            (notices - expected).abs() < 4.0 * sd,
            "{notices} notices, hazard sums to {expected:.1} (sd {sd:.1})"
        );
        assert!(notices > 0.2 * customers, "{notices}");
    }
}
