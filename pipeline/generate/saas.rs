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

use polars::prelude::*;
use rayon::prelude::*;

use super::GenerateOptions;
use crate::error::{Error, PolarsContext, Result};
use crate::math::sigmoid;
use crate::rng::Rng;

/// The three tables of a SaaS dataset.
pub struct SaasData {
    pub transactions: DataFrame,
    pub events: DataFrame,
    pub customers: DataFrame,
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

fn customer(opts: &GenerateOptions, idx: u32, out: &mut Out) {
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
    let mut week = 0;
    loop {
        let day0 = signup + 7 * week;
        if day0 >= opts.days {
            break;
        }
        // Billing days in this week.
        for d in day0..(day0 + 7).min(opts.days) {
            if (d - signup) % 30 == 0 {
                if r.bernoulli(0.02 + if h < 0.3 { 0.15 } else { 0.0 }) {
                    out.ev.push((idx, at(&mut r, d), "payment_failed", None));
                    last_fail = d;
                }
                out.tx.push((idx, at(&mut r, d), mrr));
                if h < 0.35 && r.bernoulli(0.05) {
                    out.ev.push((idx, at(&mut r, d), "downgrade", None));
                    mrr = (mrr * 50.0).round() / 100.0;
                }
            }
        }
        let w = Week { idx, day0, days: opts.days, start_ms, h, week };
        if let Some(d) = product_events(&mut r, &w, out) {
            last_critical = d;
        }
        if week % 4 == 3 {
            let seen = h + 0.12 * r.normal();
            let s = if seen > 0.5 {
                "green"
            } else if seen < 0.3 {
                "red"
            } else {
                "yellow"
            };
            sentiment = Some((s, day0));
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
        if r.bernoulli(hazard) {
            break;
        }
        week += 1;
    }
    out.cust.push(CustomerRow { idx, signup, plan, mrr, csm, sentiment });
}

fn id(i: u32) -> String {
    format!("S{:06}", i + 1)
}

/// Generate the three SaaS tables in memory.
pub fn generate_saas(opts: &GenerateOptions) -> Result<SaasData> {
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
                customer(opts, i, &mut out);
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
    Ok(SaasData { transactions, events, customers })
}
