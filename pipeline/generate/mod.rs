//! Synthetic transaction logs: realistic enough that churn and CLV have something true to
//! find, deterministic for a seed, and fast (parallel over customers; each customer draws
//! from its own seeded stream, so the output does not depend on the thread count).
//!
//! The process per customer:
//! - acquisition day spread over the period (more customers join later: `u^0.8` shape);
//! - purchase rate ~ Gamma(0.9, 1/7.5 per day), spend level ~ Gamma(2, 30);
//! - after every purchase the customer may decide to leave (probability ~ Beta(1, 60) per
//!   customer, the BG/NBD story); 60% of leavers first fade out (rate x 0.35 for about six
//!   weeks) before the last purchase, the usage drop retention teams look for;
//! - yearly seasonality (+-25%) and a pre-Christmas peak, by thinning a Poisson process;
//! - amounts ~ Gamma(4, level/4); 2% of purchases are refunded 1-20 days later (negative);
//! - a few messy rows (default 0.02%): missing customer id, missing timestamp, NaN amount;
//! - optionally a behaviour change (`shift`, off by default): from a given day, a share of
//!   the customers (drawn from a separate stream, so the rest of the data is unchanged) buy
//!   at a fraction of their rate, e.g. a competitor taking most of their business. Used to
//!   test that monitoring sees drift and a realized-AUC drop after it and not before.
//!   With the `acquisition` kind instead, the share are customers of a new channel who all
//!   join after the day and buy at a fraction of the usual rate: the base's mix changes
//!   (more new, irregular buyers, the hardest to call) while each kind of customer behaves
//!   as before, the drift that estimated performance is meant to see before the labels.
//!
//! Output columns: `customer_id` (String, `C0000001`...), `ts` (Datetime ms), `amount` (f64).

pub mod saas;

use chrono::{Datelike, NaiveDate};
use polars::prelude::*;
use rayon::prelude::*;

use crate::error::{Error, PolarsContext, Result};
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub customers: usize,
    pub seed: u64,
    pub start: NaiveDate,
    pub days: i32,
    /// Share of rows made invalid on purpose (to exercise validation).
    pub messy_share: f64,
    /// A behaviour change from a given day (none by default).
    pub shift: Option<Shift>,
    /// SaaS only: contracts as customer-success teams run them (annual terms paid up front
    /// beside monthly ones, cancellation notices ahead of the end, expansions beside
    /// downgrades) and the true weekly hazard written beside the data (`saas` module docs).
    pub contracts: bool,
}

/// From `day` (days after the start), a `share` of the customers buy at `rate_factor` times
/// their rate (`Rate`), or are new customers who join after `day` and buy at `rate_factor`
/// times the rate they would have had (`Acquisition`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    pub day: i32,
    pub share: f64,
    pub rate_factor: f64,
    pub kind: ShiftKind,
}

/// What a [`Shift`] changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShiftKind {
    /// Existing customers' behaviour: the share buy less from the day on.
    #[default]
    Rate,
    /// The acquisition mix: the share join after the day, as slower buyers.
    Acquisition,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            customers: 50_000,
            seed: 42,
            start: NaiveDate::from_ymd_opt(2023, 1, 1).expect("valid date"),
            days: 730,
            messy_share: 0.0002,
            shift: None,
            contracts: false,
        }
    }
}

#[derive(Default)]
struct Chunk {
    customer: Vec<u32>,
    ts_ms: Vec<i64>,
    amount: Vec<f64>,
    /// 0 = clean, 1 = drop customer id, 2 = drop timestamp, 3 = NaN amount.
    mess: Vec<u8>,
}

fn season(day_of_year: u32) -> f64 {
    let yearly = 1.0 + 0.25 * (2.0 * std::f64::consts::PI * (day_of_year as f64 - 80.0) / 365.0).sin();
    let xmas = if (335..=358).contains(&day_of_year) { 0.5 } else { 0.0 };
    yearly + xmas
}

const SEASON_MAX: f64 = 1.8;

fn customer(opts: &GenerateOptions, idx: u32, season_by_day: &[f64], out: &mut Chunk) {
    customer_path(opts, idx, season_by_day, None, Response::Mixed, out);
}

/// How customers respond to a contact in a generated campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Response {
    /// Persuadables, sleeping dogs, lost causes and sure things (see `contact_effect`).
    #[default]
    Mixed,
    /// A contact changes nothing: the true effect is zero.
    Nil,
    /// A contact annoys three in ten active customers into leaving and wins nobody back.
    Harmful,
}

/// What a contact did to a customer (see [`generate_campaign`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactEffect {
    /// Not there yet, or the contact day is past the period.
    Before,
    /// Last purchase more than 120 days before the contact: nothing changes.
    LostCause,
    /// Leaving (fading out or gone) and won back: buys again from the contact day.
    Persuaded,
    /// Leaving and not won back.
    NotPersuaded,
    /// A heavy, recent customer the contact annoys into leaving (a "sleeping dog").
    Annoyed,
    /// Active and staying either way.
    SureThing,
}

/// The effects a contact could have on a customer in its state, with their probabilities;
/// the customer's own draw picks one ([`pick`]). Ranking customers by the expected effect
/// over these is the best any model of the customer's state can do (what no model can know
/// is the draw).
pub type Odds = Vec<(ContactEffect, f64)>;

/// The effect the draw `u` in [0, 1) picks from `odds` (the first whose cumulative
/// probability exceeds it).
fn pick(odds: &Odds, u: f64) -> ContactEffect {
    let mut cumulative = 0.0;
    for &(e, p) in odds {
        cumulative += p;
        if u < cumulative {
            return e;
        }
    }
    odds.last().map_or(ContactEffect::SureThing, |&(e, _)| e)
}

/// What a contact on day `day` (days after the start) may do to a customer in this state
/// (`state`: day, signup day, last purchase day, leaving).
fn contact_odds(state: (f64, f64, f64, bool), rate: f64, response: Response) -> Odds {
    let (day, signup, last, leaving) = state;
    let (recency, tenure) = (day - last, day - signup);
    let certain = |e| vec![(e, 1.0)];
    if day < signup {
        certain(ContactEffect::Before)
    } else if recency > 120.0 {
        certain(ContactEffect::LostCause)
    } else if response == Response::Nil {
        certain(if leaving { ContactEffect::NotPersuaded } else { ContactEffect::SureThing })
    } else if response == Response::Harmful {
        if leaving {
            certain(ContactEffect::NotPersuaded)
        } else {
            vec![(ContactEffect::Annoyed, 0.3), (ContactEffect::SureThing, 0.7)]
        }
    } else if leaving {
        // Long-standing customers on their way out respond most.
        let p = 0.15 + 0.55 * (tenure / 540.0).min(1.0);
        vec![(ContactEffect::Persuaded, p), (ContactEffect::NotPersuaded, 1.0 - p)]
    } else if tenure < 200.0 && rate > 0.2 {
        vec![(ContactEffect::Annoyed, 0.4), (ContactEffect::SureThing, 0.6)]
    } else {
        certain(ContactEffect::SureThing)
    }
}

/// A contact and what it does, decided on the customer's own effect stream (separate from
/// the purchase stream: before the contact the two paths of a customer are the same draws),
/// or `force`d to one of its possible effects; with the odds of each.
fn contact_effect(
    opts: &GenerateOptions,
    idx: u32,
    state: (f64, f64, f64, bool),
    rate: f64,
    response: Response,
    force: Option<ContactEffect>,
) -> (ContactEffect, Odds) {
    let odds = contact_odds(state, rate, response);
    let u = Rng::for_item(opts.seed ^ 0x4341_4d50_4149_474e, u64::from(idx)).uniform();
    (force.unwrap_or_else(|| pick(&odds, u)), odds)
}

/// The customer's [`Shift`], drawn from its own stream (the default data does not depend on
/// whether a shift is set): a rate shift is returned, to apply from its day; an acquisition
/// shift moves the customer's sign-up after its day and scales its rate now (None returned).
fn shift_of(opts: &GenerateOptions, idx: u32, signup: &mut f64, rate: &mut f64) -> Option<Shift> {
    let days = f64::from(opts.days);
    let mut stream = Rng::for_item(opts.seed ^ 0x5348_4946_5400_0000, idx as u64);
    let shifted = opts.shift.filter(|s| stream.uniform() < s.share)?;
    if shifted.kind == ShiftKind::Rate {
        return Some(shifted);
    }
    let from = f64::from(shifted.day).clamp(0.0, days - 1.0);
    *signup = (from + stream.uniform() * 0.9 * (days - from)).floor();
    *rate = (*rate * shifted.rate_factor).max(1e-4);
    None
}

/// One customer's purchases, contacted on day `contact` or never: the draws up to the first
/// purchase after the contact are those of the uncontacted customer, so the two paths are
/// the customer's two potential outcomes. Returns what the contact did.
fn customer_path(
    opts: &GenerateOptions,
    idx: u32,
    season_by_day: &[f64],
    contact: Option<(f64, Option<ContactEffect>)>,
    response: Response,
    out: &mut Chunk,
) -> Option<(ContactEffect, Odds)> {
    let force = contact.and_then(|(_, f)| f);
    let contact = contact.map(|(day, _)| day);
    let mut r = Rng::for_item(opts.seed, idx as u64);
    let days = opts.days as f64;
    let mut signup = (r.uniform().powf(0.8) * 0.9 * days).floor();
    let mut rate = r.gamma(0.9, 1.0 / 7.5).max(1e-4);
    let level = r.gamma(2.0, 30.0).max(2.0);
    let p_leave = r.beta(1.0, 60.0);
    let start_ms = opts.start.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis();
    let emit = |r: &mut Rng, day: f64, amount: f64, out: &mut Chunk| {
        let secs = 8.0 * 3600.0 + r.uniform() * 14.0 * 3600.0;
        let ts = start_ms + (day.floor() as i64) * 86_400_000 + (secs * 1000.0) as i64;
        let mess = if r.bernoulli(opts.messy_share) { 1 + r.below(3) as u8 } else { 0 };
        out.customer.push(idx);
        out.ts_ms.push(ts);
        out.amount.push(amount);
        out.mess.push(mess);
    };
    let shifted = shift_of(opts, idx, &mut signup, &mut rate);
    let mut pending = contact.filter(|&c| c < days);
    let mut effect = contact.map(|_| (ContactEffect::Before, vec![(ContactEffect::Before, 1.0)]));
    let mut t = signup;
    let mut last = signup;
    let mut first = true;
    let mut fade_until: Option<f64> = None;
    // The contact, applied before the first purchase after it (or once the customer is gone):
    // Some(true) = buy again from the contact day, Some(false) = leave at once.
    let apply =
        |pending: &mut Option<f64>, effect: &mut Option<(ContactEffect, Odds)>, leaving: bool, last: f64| {
            let day = pending.take()?;
            let (e, odds) = contact_effect(opts, idx, (day, signup, last, leaving), rate, response, force);
            *effect = Some((e, odds));
            match e {
                ContactEffect::Persuaded => Some(true),
                ContactEffect::Annoyed => Some(false),
                _ => None,
            }
        };
    'life: loop {
        loop {
            if !first {
                let mut current = if fade_until.is_some() { rate * 0.35 } else { rate };
                if let Some(s) = shifted {
                    if t >= s.day as f64 {
                        current *= s.rate_factor;
                    }
                }
                t += r.exponential(current * SEASON_MAX);
                if let Some(c) = pending.filter(|&c| t >= c) {
                    match apply(&mut pending, &mut effect, fade_until.is_some(), last) {
                        Some(true) => {
                            (t, fade_until) = (c, None);
                            continue;
                        }
                        Some(false) => break 'life,
                        None => {}
                    }
                }
                if t >= days {
                    break;
                }
                if let Some(end) = fade_until {
                    if t > end {
                        break;
                    }
                }
                let s = season_by_day[t as usize];
                if !r.bernoulli(s / SEASON_MAX) {
                    continue;
                }
            }
            first = false;
            last = t;
            let amount = (r.gamma(4.0, level / 4.0).max(0.5) * 100.0).round() / 100.0;
            emit(&mut r, t, amount, out);
            if r.bernoulli(0.02) {
                let back = t + 1.0 + r.below(20) as f64;
                if back < days {
                    emit(&mut r, back, -amount, out);
                }
            }
            if fade_until.is_none() && r.bernoulli(p_leave) {
                if r.bernoulli(0.6) {
                    fade_until = Some(t + r.exponential(1.0 / 45.0));
                } else {
                    break;
                }
            }
        }
        // Gone (or the period is over) before the contact: it may still win the customer back.
        if let Some(c) = pending.filter(|&c| c >= signup) {
            if apply(&mut pending, &mut effect, true, last) == Some(true) {
                (t, fade_until, first) = (c, None, false);
                continue 'life;
            }
        }
        break;
    }
    effect
}

/// The transaction log of a campaign: customer `i` (0-based index, id `C{i+1:07}`) first
/// contacted on day `contacts[i]` (days after the start; no entry = never contacted) buys
/// from then on as its contacted path says; everybody else exactly as [`generate`] makes
/// them. Also returns what each contact did.
pub fn generate_campaign(
    opts: &GenerateOptions,
    contacts: &std::collections::HashMap<u32, f64>,
    response: Response,
) -> Result<(DataFrame, std::collections::BTreeMap<u32, ContactEffect>)> {
    let effects = std::sync::Mutex::new(std::collections::BTreeMap::new());
    let df = generate_with(opts, |idx, season, out| {
        let contact = contacts.get(&idx).map(|&day| (day, None));
        if let Some((e, _)) = customer_path(opts, idx, season, contact, response, out) {
            if let Ok(mut m) = effects.lock() {
                m.insert(idx, e);
            }
        }
    })?;
    let effects = effects.into_inner().map_err(|_| Error::Data("a generator thread panicked".into()))?;
    Ok((df, effects))
}

/// The days (after the start) with a valid transaction of customer `idx`, contacted on
/// `contact`'s day (its effect forced when it names one) or never: one of its two potential outcomes, as fidelis would read it (rows made
/// messy on purpose are dropped there, so they are left out here).
pub fn activity_days(
    opts: &GenerateOptions,
    idx: u32,
    contact: Option<(f64, Option<ContactEffect>)>,
    response: Response,
) -> (Vec<i32>, Option<(ContactEffect, Odds)>) {
    let season: Vec<f64> =
        (0..opts.days).map(|d| season((opts.start + chrono::Duration::days(d as i64)).ordinal())).collect();
    let mut out = Chunk::default();
    let effect = customer_path(opts, idx, &season, contact, response, &mut out);
    let start = opts.start.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis();
    let mut days: Vec<i32> = (0..out.ts_ms.len())
        .filter(|&i| out.mess[i] == 0)
        .map(|i| ((out.ts_ms[i] - start) / 86_400_000) as i32)
        .collect();
    days.sort_unstable();
    days.dedup();
    (days, effect)
}

/// Generate the transaction log in memory.
pub fn generate(opts: &GenerateOptions) -> Result<DataFrame> {
    generate_with(opts, |idx, season, out| customer(opts, idx, season, out))
}

fn generate_with(opts: &GenerateOptions, one: impl Fn(u32, &[f64], &mut Chunk) + Sync) -> Result<DataFrame> {
    if opts.customers == 0 || opts.customers > u32::MAX as usize {
        return Err(Error::Data(format!("--customers must be in 1..=4294967295, got {}", opts.customers)));
    }
    if let Some(s) = opts.shift {
        let valid = s.share > 0.0 && s.share <= 1.0 && s.rate_factor >= 0.0 && s.rate_factor.is_finite();
        if !valid {
            return Err(Error::Data(format!(
                "--shift-share must be in (0, 1] and --shift-rate >= 0, got {} and {}",
                s.share, s.rate_factor
            )));
        }
    }
    if opts.days < 30 {
        return Err(Error::Data(format!("--days must be at least 30, got {}", opts.days)));
    }
    let season_by_day: Vec<f64> =
        (0..opts.days).map(|d| season((opts.start + chrono::Duration::days(d as i64)).ordinal())).collect();
    let n = opts.customers as u32;
    let chunk = 4096u32;
    let chunks: Vec<Chunk> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .map(|c| {
            let mut out = Chunk::default();
            for idx in c * chunk..((c + 1) * chunk).min(n) {
                one(idx, &season_by_day, &mut out);
            }
            out
        })
        .collect();
    let total: usize = chunks.iter().map(|c| c.customer.len()).sum();
    let mut ids: Vec<Option<String>> = Vec::with_capacity(total);
    let mut ts: Vec<Option<i64>> = Vec::with_capacity(total);
    let mut amount: Vec<f64> = Vec::with_capacity(total);
    for c in &chunks {
        for i in 0..c.customer.len() {
            let m = c.mess[i];
            ids.push((m != 1).then(|| format!("C{:07}", c.customer[i] + 1)));
            ts.push((m != 2).then_some(c.ts_ms[i]));
            amount.push(if m == 3 { f64::NAN } else { c.amount[i] });
        }
    }
    drop(chunks);
    let ts = Int64Chunked::from_iter_options("ts".into(), ts.into_iter())
        .into_datetime(TimeUnit::Milliseconds, None)
        .into_column();
    DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ids),
        ts,
        Column::new("amount".into(), amount),
    ])
    .polars("assembling generated data")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_plausible() {
        let opts = GenerateOptions { customers: 2000, messy_share: 0.01, ..GenerateOptions::default() };
        let a = generate(&opts).unwrap();
        let b = generate(&opts).unwrap();
        assert!(a.equals_missing(&b), "same seed, same data");
        let per_customer = a.height() as f64 / 2000.0;
        assert!((10.0..60.0).contains(&per_customer), "{per_customer} transactions per customer");
        let amounts = a.column("amount").unwrap().f64().unwrap();
        assert!(amounts.iter().flatten().any(|v| v < 0.0), "has refunds");
        assert!(a.column("customer_id").unwrap().null_count() > 0, "has messy rows");
        let other = generate(&GenerateOptions { seed: 7, ..opts.clone() }).unwrap();
        assert!(!a.equals_missing(&other));
        // A shift changes only what happens after its day, and only for its share.
        let shift = Shift { day: 400, share: 0.5, rate_factor: 0.1, kind: ShiftKind::Rate };
        let s = generate(&GenerateOptions { shift: Some(shift), ..opts.clone() }).unwrap();
        let cut = (opts.start + chrono::Duration::days(400))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis();
        let count = |df: &DataFrame, before: bool| {
            let ts = df.column("ts").unwrap().datetime().unwrap().physical().clone();
            ts.iter().flatten().filter(|&t| (t < cut) == before).count()
        };
        assert_eq!(count(&a, true), count(&s, true), "nothing changes before the shift");
        let (after_a, after_s) = (count(&a, false) as f64, count(&s, false) as f64);
        assert!(after_s < 0.7 * after_a, "{after_s} vs {after_a} transactions after the shift");
    }

    /// A campaign changes nothing for the customers it does not contact, nothing before a
    /// contact, and after it exactly what the contact's effect says: persuaded leavers buy
    /// again, annoyed customers stop, the others buy as they would have.
    #[test]
    fn a_campaign_changes_only_what_follows_each_contact() {
        let opts = GenerateOptions { customers: 3000, ..GenerateOptions::default() };
        let none = generate_campaign(&opts, &Default::default(), Response::Mixed).unwrap().0;
        assert!(none.equals_missing(&generate(&opts).unwrap()), "no contact: the same data as generate");
        let day = 500.0;
        let contacts: std::collections::HashMap<u32, f64> = (0..3000).map(|i| (i, day)).collect();
        let (_, effects) = generate_campaign(&opts, &contacts, Response::Mixed).unwrap();
        let mut seen = std::collections::BTreeMap::new();
        for idx in 0..3000u32 {
            let (plain, _) = activity_days(&opts, idx, None, Response::Mixed);
            let (contacted, effect) = activity_days(&opts, idx, Some((day, None)), Response::Mixed);
            let (effect, odds) = effect.unwrap();
            assert_eq!(Some(&effect), effects.get(&idx));
            assert!((odds.iter().map(|o| o.1).sum::<f64>() - 1.0).abs() < 1e-12);
            assert!(odds.iter().any(|o| o.0 == effect), "{effect:?} drawn from {odds:?}");
            // Forcing the effect the draw picked follows the same path.
            let (forced, _) = activity_days(&opts, idx, Some((day, Some(effect))), Response::Mixed);
            assert_eq!(forced, contacted);
            *seen.entry(format!("{effect:?}")).or_insert(0) += 1;
            let before =
                |d: &Vec<i32>| d.iter().filter(|&&x| f64::from(x) < day).copied().collect::<Vec<_>>();
            assert_eq!(before(&plain), before(&contacted), "customer {idx}: the past is the same");
            let after = |d: &Vec<i32>| d.iter().filter(|&&x| f64::from(x) >= day).count();
            match effect {
                // Only refunds of earlier purchases (at most 20 days later) may follow.
                ContactEffect::Annoyed => {
                    assert!(contacted.iter().all(|&x| f64::from(x) < day + 21.0), "customer {idx}")
                }
                ContactEffect::Persuaded => {
                    assert!(after(&contacted) > 0 || day + 30.0 > f64::from(opts.days))
                }
                ContactEffect::LostCause
                | ContactEffect::Before
                | ContactEffect::NotPersuaded
                | ContactEffect::SureThing => assert_eq!(plain, contacted, "customer {idx}: no effect"),
            }
        }
        for kind in ["Persuaded", "NotPersuaded", "Annoyed", "SureThing", "LostCause", "Before"] {
            assert!(seen.get(kind).copied().unwrap_or(0) > 20, "{seen:?}");
        }
    }
}
