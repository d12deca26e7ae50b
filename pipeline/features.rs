//! Features and labels, point-in-time correct.
//!
//! Transactions are first reduced to one row per customer and active day ([`Daily`]): the
//! number of transactions, their amount and how many were negative, grouped by customer and
//! sorted by day. For each snapshot `t` the features aggregate the daily rows with `day < t`
//! only; the labels aggregate the rows with `t <= day < t + horizon` only. A customer's
//! features at `t` are one pass over a prefix of its own days (found by binary search), so
//! they never depend on other customers' rows; customers are processed in parallel chunks.
//!
//! Windows `[t - w, t)` are on calendar days: `ts >= t - w days` and `ts < t`, at midnight.
//!
//! | feature | definition at snapshot `t` |
//! |---|---|
//! | `count_{w}d`, `amount_{w}d` | transactions and amount sum in `[t-w, t)` |
//! | `mean_amount_{w}d` | `amount_{w}d / count_{w}d`, 0 when the count is 0 |
//! | `active_days_{w}d` | distinct days with a transaction in `[t-w, t)` |
//! | `recency_days` | `t` minus the last active day (>= 1) |
//! | `tenure_days` | `t` minus the first active day |
//! | `count_life`, `amount_life`, `mean_amount_life`, `active_days_life` | over all days before `t` |
//! | `trend_ratio` | count in `[t-d, t)` / (count in `[t-2d, t-d)` + 1), `d = trend_days` (45) |
//! | `gap_mean_days`, `gap_std_days` | mean and population std of gaps between distinct active days; -1 with fewer than 2 active days |
//! | `recency_over_gap` | `recency_days / gap_mean_days`; -1 likewise |
//! | `spend_ratio` | `sum[t-30,t) / (sum[t-90,t) * 30/90)`; 0 when `sum[t-90,t) <= 0` |
//! | `refunds_{e}d` | negative-amount transactions in `[t-e, t)`, `e = eligibility_days` |
//! | `bgnbd_p_alive` | BG/NBD probability the customer is alive at `t` |
//! | `bgnbd_p_no_purchase` | BG/NBD probability of no purchase in `[t, t + horizon)` |
//! | `bgnbd_expected_purchases` | BG/NBD expected purchases in `[t, t + horizon)` |
//! | `gg_expected_spend` | Gamma-Gamma expected spend per purchase |
//! | `bgnbd_expected_revenue` | expected purchases x expected spend |
//!
//! The last five (config `features.bgnbd`) come from BG/NBD and Gamma-Gamma models fitted on
//! every customer's days before `t` (see [`crate::bgnbd`]): point-in-time correct like the
//! rest. Scoring uses the parameters stored with the model instead of refitting.
//!
//! Eligible at `t`: at least one transaction in `[t - eligibility_days, t)`.
//! Labels: `churn` = 1 when there is no transaction (of any amount) in `[t, t + horizon)`;
//! `clv` = sum of amounts in `[t, t + horizon)` (`clv_90` with the default horizon), 0 if none.
//!
//! With `[snapshots] churn = "cancellation"` ([`ChurnRule::Cancellation`]) the subscription
//! table decides both instead: eligible at `t` = a transaction before `t` and a live
//! subscription at `t` on which no notice was given before `t`
//! ([`Subscriptions::state_at`]: only what was known then); `churn` = 1 when notice is given
//! or the subscription ends unrenewed in `[t, t + horizon)` ([`Subscriptions::cancels_between`]),
//! and the survival label [`CANCEL_PERIOD`] says in which month of the year after `t` it
//! cancels.
//! The transaction features are the same; a window without transactions is just zeros (an
//! annual contract pays once a year).

use chrono::NaiveDate;
use polars::prelude::*;
use rayon::prelude::*;

use crate::activity::Subscriptions;
use crate::bgnbd::{BgNbd, GammaGamma, Probabilistic, Rfm};
use crate::config::{ChurnRule, Config};
use crate::error::{Error, PolarsContext, Result};
use crate::schema::{epoch_day, CHURN, CLV, CUSTOMER, SNAPSHOT};

/// The feature definitions that vary with configuration.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSpec {
    pub windows: Vec<i32>,
    pub trend_days: i32,
    pub spend_short_days: i32,
    pub spend_long_days: i32,
    pub eligibility_days: i32,
    pub horizon_days: i32,
    /// BG/NBD + Gamma-Gamma features ([`PROBABILISTIC`]).
    pub probabilistic: bool,
    /// Who is eligible and what churn is (models before it: inactivity).
    #[serde(default)]
    pub churn: ChurnRule,
}

/// The BG/NBD + Gamma-Gamma features, after the others when `features.bgnbd` is on.
pub const PROBABILISTIC: [&str; 5] = [
    "bgnbd_p_alive",
    "bgnbd_p_no_purchase",
    "bgnbd_expected_purchases",
    "gg_expected_spend",
    "bgnbd_expected_revenue",
];

/// Customers a BG/NBD fit uses at most (a deterministic, insertion-stable sample by a hash
/// of the customer id: the parameters are population-level).
pub const PROBABILISTIC_FIT_SAMPLE: usize = 20_000;

impl FeatureSpec {
    pub fn from_config(cfg: &Config) -> Self {
        FeatureSpec {
            windows: cfg.features.windows.clone(),
            trend_days: cfg.features.trend_days,
            spend_short_days: cfg.features.spend_short_days,
            spend_long_days: cfg.features.spend_long_days,
            eligibility_days: cfg.snapshots.eligibility_days,
            horizon_days: cfg.snapshots.horizon_days,
            probabilistic: cfg.features.bgnbd,
            churn: cfg.snapshots.churn,
        }
    }

    /// Feature column names, in model order.
    pub fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        for w in &self.windows {
            v.push(format!("count_{w}d"));
            v.push(format!("amount_{w}d"));
            v.push(format!("mean_amount_{w}d"));
            v.push(format!("active_days_{w}d"));
        }
        for n in [
            "recency_days",
            "tenure_days",
            "count_life",
            "amount_life",
            "mean_amount_life",
            "active_days_life",
            "trend_ratio",
            "gap_mean_days",
            "gap_std_days",
            "recency_over_gap",
            "spend_ratio",
        ] {
            v.push(n.to_string());
        }
        v.push(format!("refunds_{}d", self.eligibility_days));
        if self.probabilistic {
            v.extend(PROBABILISTIC.iter().map(|s| s.to_string()));
        }
        v
    }
}

/// Per (customer, active day) activity, grouped by customer: the customers in id order, and
/// for each its active days in day order (`start[c]..start[c + 1]` indexes the day columns).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Daily {
    pub customers: Vec<String>,
    pub start: Vec<usize>,
    pub day: Vec<i32>,
    pub n_tx: Vec<u32>,
    pub amount: Vec<f64>,
    pub n_neg: Vec<u32>,
}

impl Daily {
    /// Number of (customer, day) rows.
    pub fn len(&self) -> usize {
        self.day.len()
    }

    pub fn is_empty(&self) -> bool {
        self.day.is_empty()
    }

    fn range(&self, c: usize) -> std::ops::Range<usize> {
        self.start[c]..self.start[c + 1]
    }

    /// The active days of customer `c` (index into `customers`), sorted.
    pub fn days_of(&self, c: usize) -> &[i32] {
        &self.day[self.range(c)]
    }
}

/// One row per (customer, active day): transactions, amount, negative-amount transactions. Input: the ingest contract frame (rows with a
/// null id or timestamp are skipped).
///
/// Linear passes over the rows in (customer, ts, amount) order, which is how `ingest`
/// leaves them (other frames are sorted first, the same way): no hashing of 30 million string
/// keys, and each customer id is stored once. Blocks of rows that start where a customer
/// starts are counted, then filled, in parallel: the same vectors, to the bit, as one pass.
pub fn daily_activity(tx: &DataFrame) -> Result<Daily> {
    daily_in_blocks(tx, DAILY_BLOCK)
}

/// [`daily_activity`] with blocks of about `block` rows.
fn daily_in_blocks(tx: &DataFrame, block: usize) -> Result<Daily> {
    let rows = ActivityRows::of(tx)?;
    let blocks = rows.blocks(block);
    let counts: Option<Vec<(usize, usize)>> =
        blocks.par_iter().map(|&(lo, hi)| rows.count(lo, hi, true)).collect();
    match counts {
        Some(counts) => Ok(rows.fill(&blocks, &counts)),
        None => {
            let sorted = tx
                .clone()
                .lazy()
                .sort([CUSTOMER, "ts", "amount"], SortMultipleOptions::default().with_maintain_order(true))
                .collect()
                .polars("aggregating transactions per customer and day")?;
            let rows = ActivityRows::of(&sorted)?;
            let blocks = rows.blocks(block);
            // Sorted: counted without the order check (polars and `total_cmp` may place a
            // NaN amount differently; the rows are taken in the sorted order, as one pass did).
            let counts: Vec<(usize, usize)> =
                blocks.par_iter().map(|&(lo, hi)| rows.count(lo, hi, false).unwrap_or_default()).collect();
            Ok(rows.fill(&blocks, &counts))
        }
    }
}

/// Rows per block of [`daily_activity`] (a block ends where a customer ends).
const DAILY_BLOCK: usize = 1 << 20;

/// The columns [`daily_activity`] reads.
struct ActivityRows {
    ids: StringChunked,
    /// Milliseconds since the epoch.
    ts: Int64Chunked,
    amount: Float64Chunked,
}

impl ActivityRows {
    fn of(tx: &DataFrame) -> Result<Self> {
        let ctx = "aggregating transactions per customer and day";
        let ms_type = DataType::Datetime(TimeUnit::Milliseconds, None);
        let ts = tx.column("ts").polars(ctx)?.cast(&ms_type).polars(ctx)?;
        let amount = tx.column("amount").polars(ctx)?.cast(&DataType::Float64).polars(ctx)?;
        Ok(ActivityRows {
            ids: tx.column(CUSTOMER).polars(ctx)?.str().polars(ctx)?.clone(),
            ts: ts.datetime().polars(ctx)?.physical().clone(),
            amount: amount.f64().polars(ctx)?.clone(),
        })
    }

    /// Row ranges that start where a customer starts; one range when ids or times have
    /// nulls (rows skipped there make the boundaries harder to place, and such frames are
    /// rare: ingest leaves none).
    fn blocks(&self, size: usize) -> Vec<(usize, usize)> {
        let n = self.ids.len();
        let size = size.max(1);
        if self.ids.null_count() > 0 || self.ts.null_count() > 0 {
            return vec![(0, n)];
        }
        let mut cuts = vec![0];
        let mut at = size;
        while at < n {
            let before = self.ids.get(at - 1);
            let mut b = at;
            while b < n && self.ids.get(b) == before {
                b += 1;
            }
            if b < n {
                cuts.push(b);
            }
            at = b + size;
        }
        cuts.push(n);
        cuts.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// The row before `lo` as (id, ms, amount), when it has an id and a time.
    fn before(&self, lo: usize) -> Option<(&str, i64, f64)> {
        let i = lo.checked_sub(1)?;
        Some((self.ids.get(i)?, self.ts.get(i)?, self.amount.get(i).unwrap_or(0.0)))
    }

    /// Customers and (customer, day) rows of rows `lo..hi`; with `check`, `None` when a row
    /// is out of (customer, ts, amount) order (against the row before it; the first against
    /// the row before the block).
    fn count(&self, lo: usize, hi: usize, check: bool) -> Option<(usize, usize)> {
        let (ids, ts, amount) = self.slices(lo, hi);
        let mut prev = self.before(lo);
        let (mut customers, mut days) = (0usize, 0usize);
        let mut current: Option<(&str, i32)> = None;
        for ((id, t), a) in ids.iter().zip(ts.iter()).zip(amount.iter()) {
            let (Some(id), Some(t)) = (id, t) else { continue };
            let a = a.unwrap_or(0.0);
            if let Some((pid, pt, pa)) = prev.filter(|_| check) {
                let out_of_order = match (pid, pt).cmp(&(id, t)) {
                    std::cmp::Ordering::Equal => pa.total_cmp(&a).is_gt(),
                    o => o.is_gt(),
                };
                if out_of_order {
                    return None;
                }
            }
            prev = Some((id, t, a));
            let day = t.div_euclid(86_400_000) as i32;
            match current {
                Some((cid, cday)) if cid == id => {
                    if cday != day {
                        days += 1;
                        current = Some((id, day));
                    }
                }
                _ => {
                    customers += 1;
                    days += 1;
                    current = Some((id, day));
                }
            }
        }
        Some((customers, days))
    }

    fn slices(&self, lo: usize, hi: usize) -> (StringChunked, Int64Chunked, Float64Chunked) {
        let len = hi - lo;
        (self.ids.slice(lo as i64, len), self.ts.slice(lo as i64, len), self.amount.slice(lo as i64, len))
    }

    /// The daily rows of `blocks` (ordered, counted by [`ActivityRows::count`]), each block
    /// written into its own part of the vectors in parallel.
    fn fill(&self, blocks: &[(usize, usize)], counts: &[(usize, usize)]) -> Daily {
        let (nc, nd) = counts.iter().fold((0, 0), |(c, d), &(x, y)| (c + x, d + y));
        let mut d = Daily {
            customers: vec![String::new(); nc],
            start: vec![0; nc + 1],
            day: vec![0; nd],
            n_tx: vec![0; nd],
            amount: vec![0.0; nd],
            n_neg: vec![0; nd],
        };
        let mut parts = Vec::with_capacity(blocks.len());
        let mut rest = DailyParts {
            customers: &mut d.customers[..],
            start: &mut d.start[..nc],
            day: &mut d.day[..],
            n_tx: &mut d.n_tx[..],
            amount: &mut d.amount[..],
            n_neg: &mut d.n_neg[..],
        };
        let mut offset = 0;
        for (&range, &(c, k)) in blocks.iter().zip(counts) {
            let (part, tail) = rest.split(c, k);
            parts.push((range, offset, part));
            rest = tail;
            offset += k;
        }
        parts.into_par_iter().for_each(|((lo, hi), offset, part)| self.fill_block(lo, hi, offset, part));
        d.start[nc] = nd;
        d
    }

    fn fill_block(&self, lo: usize, hi: usize, offset: usize, p: DailyParts) {
        let (ids, ts, amount) = self.slices(lo, hi);
        let mut current: Option<&str> = None;
        let (mut c, mut k) = (0usize, 0usize);
        for ((id, t), a) in ids.iter().zip(ts.iter()).zip(amount.iter()) {
            let (Some(id), Some(t)) = (id, t) else { continue };
            let a = a.unwrap_or(0.0);
            let neg = u32::from(a < 0.0);
            let day = t.div_euclid(86_400_000) as i32;
            if current == Some(id) {
                if p.day[k - 1] == day {
                    p.n_tx[k - 1] += 1;
                    p.amount[k - 1] += a;
                    p.n_neg[k - 1] += neg;
                    continue;
                }
            } else {
                current = Some(id);
                p.customers[c] = id.to_string();
                p.start[c] = offset + k;
                c += 1;
            }
            p.day[k] = day;
            p.n_tx[k] = 1;
            p.amount[k] = a;
            p.n_neg[k] = neg;
            k += 1;
        }
    }
}

/// Disjoint parts of a [`Daily`]'s vectors: one block's customers and daily rows.
struct DailyParts<'a> {
    customers: &'a mut [String],
    start: &'a mut [usize],
    day: &'a mut [i32],
    n_tx: &'a mut [u32],
    amount: &'a mut [f64],
    n_neg: &'a mut [u32],
}

impl<'a> DailyParts<'a> {
    /// The first `c` customers and `k` daily rows, and the rest.
    fn split(self, c: usize, k: usize) -> (DailyParts<'a>, DailyParts<'a>) {
        let (customers, customers_rest) = self.customers.split_at_mut(c);
        let (start, start_rest) = self.start.split_at_mut(c);
        let (day, day_rest) = self.day.split_at_mut(k);
        let (n_tx, n_tx_rest) = self.n_tx.split_at_mut(k);
        let (amount, amount_rest) = self.amount.split_at_mut(k);
        let (n_neg, n_neg_rest) = self.n_neg.split_at_mut(k);
        (
            DailyParts { customers, start, day, n_tx, amount, n_neg },
            DailyParts {
                customers: customers_rest,
                start: start_rest,
                day: day_rest,
                n_tx: n_tx_rest,
                amount: amount_rest,
                n_neg: n_neg_rest,
            },
        )
    }
}

/// The features of one customer at snapshot day `td` from its days `rows` (day-sorted), or
/// `None` when it is not eligible (no day before `td`; under the inactivity rule, none in the
/// eligibility window). Writes `out` in [`FeatureSpec::names`] order; returns the number of
/// rows before `td` (where the label window starts).
/// `acc` is scratch space of `3 * spec.windows.len()` values.
fn customer_features(
    daily: &Daily,
    rows: std::ops::Range<usize>,
    spec: &FeatureSpec,
    td: i32,
    acc: &mut [f64],
    model: Option<&Probabilistic>,
    out: &mut [f64],
) -> Option<usize> {
    let days = &daily.day[rows.clone()];
    let before = days.partition_point(|&d| d < td);
    if before == 0 || (spec.churn == ChurnRule::Inactivity && days[before - 1] < td - spec.eligibility_days) {
        return None;
    }
    let nw = spec.windows.len();
    acc.fill(0.0);
    let (count, rest) = acc.split_at_mut(nw);
    let (amount, active) = rest.split_at_mut(nw);
    let (mut life_n, mut life_amount) = (0.0, 0.0);
    let (mut recent, mut prior, mut short, mut long, mut refunds) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut gap_sum, mut gap_sq) = (0.0, 0.0);
    let d = spec.trend_days;
    for i in rows.start..rows.start + before {
        let (day, n, a) = (daily.day[i], f64::from(daily.n_tx[i]), daily.amount[i]);
        life_n += n;
        life_amount += a;
        if i > rows.start {
            let g = f64::from(day - daily.day[i - 1]);
            gap_sum += g;
            gap_sq += g * g;
        }
        for (k, &w) in spec.windows.iter().enumerate() {
            if day >= td - w {
                count[k] += n;
                amount[k] += a;
                active[k] += 1.0;
            }
        }
        if day >= td - d {
            recent += n;
        } else if day >= td - 2 * d {
            prior += n;
        }
        if day >= td - spec.spend_short_days {
            short += a;
        }
        if day >= td - spec.spend_long_days {
            long += a;
        }
        if day >= td - spec.eligibility_days {
            refunds += f64::from(daily.n_neg[i]);
        }
    }
    let safe_div = |num: f64, den: f64, default: f64| if den > 0.0 { num / den } else { default };
    let mut o = 0;
    let mut put = |v: f64| {
        out[o] = v;
        o += 1;
    };
    for k in 0..nw {
        put(count[k]);
        put(amount[k]);
        put(safe_div(amount[k], count[k], 0.0));
        put(active[k]);
    }
    let recency = f64::from(td - days[before - 1]);
    let n_gaps = (before - 1) as f64;
    let gap_mean = safe_div(gap_sum, n_gaps, -1.0);
    put(recency);
    put(f64::from(td - days[0]));
    put(life_n);
    put(life_amount);
    put(safe_div(life_amount, life_n, 0.0));
    put(before as f64);
    put(recent / (prior + 1.0));
    put(gap_mean);
    put(if n_gaps > 0.0 {
        let variance = gap_sq / n_gaps - gap_mean * gap_mean;
        if variance > 0.0 {
            variance.sqrt()
        } else {
            0.0
        }
    } else {
        -1.0
    });
    put(if n_gaps > 0.0 { recency / gap_mean } else { -1.0 });
    put(safe_div(short, long * (spec.spend_short_days as f64 / spec.spend_long_days as f64), 0.0));
    put(refunds);
    if let Some(m) = model {
        let (rfm, spend) = rfm_of(daily, rows.start, before, td);
        let h = f64::from(spec.horizon_days);
        let purchases = m.bgnbd.expected_purchases(&rfm, h);
        let spend = m.gamma_gamma.map_or(spend.1, |g| g.expected_spend(rfm.x, spend.0));
        put(m.bgnbd.p_alive(&rfm));
        put(m.bgnbd.p_no_purchase(&rfm, h));
        put(purchases);
        put(spend);
        put(purchases * spend);
    }
    Some(before)
}

/// A customer's BG/NBD summary at `td` from its first `before` days starting at row
/// `start`, and (mean amount of the repeat days, mean amount of all days).
fn rfm_of(daily: &Daily, start: usize, before: usize, td: i32) -> (Rfm, (f64, f64)) {
    let days = &daily.day[start..start + before];
    let amounts = &daily.amount[start..start + before];
    let x = (before - 1) as f64;
    let rfm = Rfm { x, t_x: f64::from(days[before - 1] - days[0]), t: f64::from(td - days[0]) };
    let total: f64 = amounts.iter().sum();
    let repeat = if before > 1 { (total - amounts[0]) / x } else { 0.0 };
    (rfm, (repeat, total / before as f64))
}

/// What a BG/NBD + Gamma-Gamma fit at `t` takes from one customer with history before `t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitInput {
    pub rfm: Rfm,
    /// Mean amount of the repeat days (0 without a repeat).
    pub repeat_spend: f64,
}

/// Every customer with an active day before `t`: its index in `daily` and its fit input,
/// in customer order.
pub fn probabilistic_inputs(daily: &Daily, t: NaiveDate) -> Vec<(usize, FitInput)> {
    let td = epoch_day(t);
    (0..daily.customers.len())
        .filter_map(|c| {
            let r = daily.range(c);
            let before = daily.day[r.clone()].partition_point(|&d| d < td);
            (before > 0).then(|| {
                let (rfm, (repeat_spend, _)) = rfm_of(daily, r.start, before, td);
                (c, FitInput { rfm, repeat_spend })
            })
        })
        .collect()
}

/// Whether a customer at `share` ([`crate::rng::customer_share`]) is in the BG/NBD fit sample
/// when `n` customers have history: everyone up to [`PROBABILISTIC_FIT_SAMPLE`], then a
/// sample of about that many.
pub fn in_probabilistic_sample(share: f64, n: usize) -> bool {
    crate::rng::sample_fraction(PROBABILISTIC_FIT_SAMPLE, n).is_none_or(|f| share < f)
}

/// BG/NBD (and Gamma-Gamma when enough customers repeat) on the sampled customers' inputs,
/// in customer-id order (the likelihood is summed in that order).
pub fn fit_probabilistic_on(sample: &[FitInput]) -> Probabilistic {
    let rfm: Vec<Rfm> = sample.iter().map(|s| s.rfm).collect();
    let spend: Vec<(f64, f64)> = sample.iter().map(|s| (s.rfm.x, s.repeat_spend)).collect();
    Probabilistic { bgnbd: BgNbd::fit(&rfm), gamma_gamma: GammaGamma::fit(&spend) }
}

/// Fit BG/NBD (and Gamma-Gamma when enough customers repeat) on every customer with an
/// active day before `t` (at most about [`PROBABILISTIC_FIT_SAMPLE`] of them, chosen by a
/// hash of the id so that adding customers later never changes who is in the sample).
/// `None` when nobody has history before `t`.
pub fn fit_probabilistic(daily: &Daily, t: NaiveDate) -> Option<Probabilistic> {
    let inputs = probabilistic_inputs(daily, t);
    if inputs.is_empty() {
        return None;
    }
    let n = inputs.len();
    let sample: Vec<FitInput> = inputs
        .into_iter()
        .filter(|(c, _)| in_probabilistic_sample(crate::rng::customer_share(&daily.customers[*c]), n))
        .map(|(_, f)| f)
        .collect();
    Some(fit_probabilistic_on(&sample))
}

/// Where the BG/NBD features of each snapshot come from.
#[derive(Clone, Copy)]
enum Models<'a> {
    /// Fitted here on the data before each snapshot (training on one machine).
    Fit,
    /// One model for every snapshot (a trained model's: scoring).
    Fixed(Option<&'a Probabilistic>),
    /// Given per snapshot date (fitted on the whole base by a partitioned engine).
    PerSnapshot(&'a [(NaiveDate, Option<Probabilistic>)]),
}

/// The rows one chunk of customers contributes at one snapshot.
#[derive(Default)]
struct Part {
    customer: Vec<u32>,
    /// Row-major, `names().len()` values per row.
    values: Vec<f64>,
    churn: Vec<i32>,
    clv: Vec<f64>,
    cancel_period: Vec<i32>,
}

/// The subscription table that decides eligibility and churn under `spec` (`None` under the
/// inactivity rule); an error when churn is a cancellation and there is none.
fn churn_table<'a>(
    spec: &FeatureSpec,
    subscriptions: Option<&'a Subscriptions>,
) -> Result<Option<&'a Subscriptions>> {
    match (spec.churn, subscriptions) {
        (ChurnRule::Inactivity, _) => Ok(None),
        (ChurnRule::Cancellation, Some(s)) => Ok(Some(s)),
        (ChurnRule::Cancellation, None) => Err(Error::Data(
            "churn is a cancellation here (snapshots.churn = \"cancellation\"): the subscription table is \
             needed ([input.subscriptions])"
                .into(),
        )),
    }
}

/// One customer's labels at snapshot day `td` from its days `after` (those from `td` on):
/// churned, revenue over the horizon, and (churn as a cancellation) the period it cancels in.
fn customer_labels(
    daily: &Daily,
    after: std::ops::Range<usize>,
    id: &str,
    td: i32,
    spec: &FeatureSpec,
    subscriptions: Option<&Subscriptions>,
) -> (bool, f64, Option<i32>) {
    let (mut future_tx, mut clv) = (0.0, 0.0);
    for i in after {
        if daily.day[i] >= td + spec.horizon_days {
            break;
        }
        future_tx += f64::from(daily.n_tx[i]);
        clv += daily.amount[i];
    }
    match subscriptions {
        Some(subs) => {
            let k = PERIOD_ENDS.iter().position(|&e| subs.cancels_between(id, td, td + e));
            (subs.cancels_between(id, td, td + spec.horizon_days), clv, Some(k.map_or(-1, |k| k as i32)))
        }
        None => (future_tx == 0.0, clv, None),
    }
}

/// The survival periods after a snapshot, by their last day (days after it): monthly for a
/// year, the first three ending on the horizons reported (30, 60, 90 days) and the sixth on
/// 180, the last on 365.
pub const PERIOD_ENDS: [i32; 12] = [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 330, 365];

/// Survival label column (churn as a cancellation): the period of [`PERIOD_ENDS`] in which the
/// customer cancels (0-based), -1 when it does not within the year (as far as the data shows:
/// the trainer censors at the end of the data).
pub const CANCEL_PERIOD: &str = "cancel_period";

const CHUNK: usize = 4096;

/// Features (and labels when `labels`) of every eligible customer at each snapshot, in
/// (snapshot, customer) order. Customers are processed in parallel chunks, each customer in
/// one pass over its own days: no per-row allocation, sums in day order (so a customer's
/// features never depend on other customers' rows).
fn build(
    daily: &Daily,
    spec: &FeatureSpec,
    snapshots: &[NaiveDate],
    labels: bool,
    models: Models,
    subscriptions: Option<&Subscriptions>,
) -> Result<DataFrame> {
    if snapshots.is_empty() {
        return Err(Error::Data("no snapshot dates to build features for".into()));
    }
    let subscriptions = churn_table(spec, subscriptions)?;
    let names = spec.names();
    let f = names.len();
    let mut snaps: Vec<i32> = snapshots.iter().map(|&t| epoch_day(t)).collect();
    snaps.sort_unstable();
    let n_customers = daily.customers.len();
    let chunks = n_customers.div_ceil(CHUNK);
    // The probabilistic models of each snapshot: the fixed ones (scoring), given per snapshot
    // (fitted elsewhere on the whole base: a partitioned engine), or fitted on the data
    // before the snapshot (training), in parallel over snapshots.
    let models: Vec<Option<Probabilistic>> = match models {
        _ if !spec.probabilistic => vec![None; snaps.len()],
        Models::Fixed(p) => vec![p.copied(); snaps.len()],
        Models::PerSnapshot(given) => {
            let mut given = given.to_vec();
            given.sort_by_key(|(t, _)| *t);
            if given.iter().map(|(t, _)| epoch_day(*t)).ne(snaps.iter().copied()) {
                return Err(Error::Data("the BG/NBD models given do not match the snapshot dates".into()));
            }
            given.into_iter().map(|(_, p)| p).collect()
        }
        Models::Fit => {
            let dates: Vec<NaiveDate> =
                snaps.iter().map(|&td| crate::schema::date_of_day(td).expect("valid snapshot day")).collect();
            dates.par_iter().map(|&t| fit_probabilistic(daily, t)).collect()
        }
    };
    let mut parts: Vec<(i32, Part)> = Vec::new();
    for (&td, model) in snaps.iter().zip(&models) {
        let model = model.as_ref();
        if spec.probabilistic && model.is_none() {
            continue; // nobody has history before td: nobody is eligible either
        }
        let per_chunk: Vec<Part> = (0..chunks)
            .into_par_iter()
            .map(|ch| {
                let mut part = Part::default();
                let mut acc = vec![0.0; 3 * spec.windows.len()];
                let mut row = vec![0.0; f];
                for c in ch * CHUNK..((ch + 1) * CHUNK).min(n_customers) {
                    let id = daily.customers[c].as_str();
                    if let Some(subs) = subscriptions {
                        if !subs.state_at(id, td).is_some_and(|s| s.live && !s.noticed) {
                            continue;
                        }
                    }
                    let range = daily.range(c);
                    let Some(before) =
                        customer_features(daily, range.clone(), spec, td, &mut acc, model, &mut row)
                    else {
                        continue;
                    };
                    part.customer.push(c as u32);
                    part.values.extend_from_slice(&row);
                    if labels {
                        let (churned, clv, cancel) = customer_labels(
                            daily,
                            range.start + before..range.end,
                            id,
                            td,
                            spec,
                            subscriptions,
                        );
                        part.churn.push(i32::from(churned));
                        part.clv.push(clv);
                        part.cancel_period.extend(cancel);
                    }
                }
                part
            })
            .collect();
        parts.extend(per_chunk.into_iter().map(|p| (td, p)));
    }
    let total: usize = parts.iter().map(|(_, p)| p.customer.len()).sum();
    let mut ids: Vec<&str> = Vec::with_capacity(total);
    let mut snapshot: Vec<i32> = Vec::with_capacity(total);
    for (td, p) in &parts {
        ids.extend(p.customer.iter().map(|&c| daily.customers[c as usize].as_str()));
        snapshot.extend(std::iter::repeat_n(*td, p.customer.len()));
    }
    let ctx = "assembling features";
    let mut columns = vec![
        Column::new(CUSTOMER.into(), ids),
        Column::new(SNAPSHOT.into(), snapshot).cast(&DataType::Date).polars(ctx)?,
    ];
    for (j, name) in names.iter().enumerate() {
        let mut v: Vec<f64> = Vec::with_capacity(total);
        for (_, p) in &parts {
            v.extend(p.values.iter().skip(j).step_by(f));
        }
        columns.push(Column::new(name.into(), v));
    }
    if labels {
        columns.extend(label_columns(&parts, subscriptions.is_some()));
    }
    DataFrame::new_infer_height(columns).polars(ctx)
}

/// The label columns of the parts: churn, CLV and, with churn as a cancellation, the period
/// it cancels in.
fn label_columns(parts: &[(i32, Part)], survival: bool) -> Vec<Column> {
    let churn: Vec<i32> = parts.iter().flat_map(|(_, p)| p.churn.iter().copied()).collect();
    let clv: Vec<f64> = parts.iter().flat_map(|(_, p)| p.clv.iter().copied()).collect();
    let mut out = vec![Column::new(CHURN.into(), churn), Column::new(CLV.into(), clv)];
    if survival {
        let k: Vec<i32> = parts.iter().flat_map(|(_, p)| p.cancel_period.iter().copied()).collect();
        out.push(Column::new(CANCEL_PERIOD.into(), k));
    }
    out
}

/// Features of every eligible customer at each snapshot: `customer_id`, `snapshot` (Date),
/// then [`FeatureSpec::names`]. Sorted by snapshot, then customer.
/// BG/NBD features use models fitted on the data before each snapshot.
/// `subscriptions`: needed when the spec's churn is a cancellation (who is eligible).
pub fn features_at(
    daily: &Daily,
    spec: &FeatureSpec,
    snapshots: &[NaiveDate],
    subscriptions: Option<&Subscriptions>,
) -> Result<DataFrame> {
    build(daily, spec, snapshots, false, Models::Fit, subscriptions)
}

/// [`features_at`] with the BG/NBD features from given (a trained model's) parameters, so a
/// customer's scores never depend on who else is scored.
pub fn features_with(
    daily: &Daily,
    spec: &FeatureSpec,
    snapshots: &[NaiveDate],
    probabilistic: Option<&Probabilistic>,
    subscriptions: Option<&Subscriptions>,
) -> Result<DataFrame> {
    build(daily, spec, snapshots, false, Models::Fixed(probabilistic), subscriptions)
}

/// Features and labels (`churn`: 0/1 as Int32, `clv`: f64) of every eligible customer at each
/// snapshot. Every snapshot needs `horizon_days` of observed data after it.
pub fn dataset_at(
    daily: &Daily,
    spec: &FeatureSpec,
    snapshots: &[NaiveDate],
    subscriptions: Option<&Subscriptions>,
) -> Result<DataFrame> {
    build(daily, spec, snapshots, true, Models::Fit, subscriptions)
}

/// Features and labels at `snapshots` with one BG/NBD model for all of them (the one fitted
/// at the end of the data, as scoring uses): the uplift model's rows at the experiment's runs.
pub fn labelled_with(
    daily: &Daily,
    spec: &FeatureSpec,
    snapshots: &[NaiveDate],
    probabilistic: Option<&Probabilistic>,
    subscriptions: Option<&Subscriptions>,
) -> Result<DataFrame> {
    build(daily, spec, snapshots, true, Models::Fixed(probabilistic), subscriptions)
}

/// [`dataset_at`] with the BG/NBD models of each snapshot given (fitted on the whole base by
/// [`fit_probabilistic_on`] where the rows are partitioned): a customer's rows then equal
/// [`dataset_at`]'s on the whole base.
pub fn dataset_with(
    daily: &Daily,
    spec: &FeatureSpec,
    models: &[(NaiveDate, Option<Probabilistic>)],
    subscriptions: Option<&Subscriptions>,
) -> Result<DataFrame> {
    let snapshots: Vec<NaiveDate> = models.iter().map(|(t, _)| *t).collect();
    build(daily, spec, &snapshots, true, Models::PerSnapshot(models), subscriptions)
}

/// A dense column-major f64 matrix of features, the hand-off to the models.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    pub names: Vec<String>,
    pub rows: usize,
    /// Column-major: value (row r, column c) is `data[c * rows + r]`.
    pub data: Vec<f64>,
}

impl FeatureMatrix {
    /// Take the named columns of `df` (all must be numeric and non-null).
    pub fn from_frame(df: &DataFrame, names: &[String]) -> Result<Self> {
        let rows = df.height();
        let mut data = Vec::with_capacity(rows * names.len());
        for name in names {
            let c = df
                .column(name)
                .map_err(|_| Error::Data(format!("feature column `{name}` is missing from the frame")))?
                .cast(&DataType::Float64)
                .polars("casting a feature to f64")?;
            let ca = c.f64().polars("reading a feature")?;
            if ca.null_count() > 0 {
                return Err(Error::Data(format!("feature column `{name}` has {} nulls", ca.null_count())));
            }
            data.extend(ca.into_no_null_iter());
        }
        Ok(FeatureMatrix { names: names.to_vec(), rows, data })
    }

    pub fn cols(&self) -> usize {
        self.names.len()
    }

    pub fn column(&self, c: usize) -> &[f64] {
        &self.data[c * self.rows..(c + 1) * self.rows]
    }

    pub fn get(&self, r: usize, c: usize) -> f64 {
        self.data[c * self.rows + r]
    }

    /// The rows at `idx`, in that order.
    pub fn select_rows(&self, idx: &[usize]) -> FeatureMatrix {
        let mut data = Vec::with_capacity(idx.len() * self.cols());
        for c in 0..self.cols() {
            let col = self.column(c);
            data.extend(idx.iter().map(|&r| col[r]));
        }
        FeatureMatrix { names: self.names.clone(), rows: idx.len(), data }
    }
}

/// A numeric column of a frame as `Vec<f64>` (nulls are an error).
pub fn column_f64(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let c = df
        .column(name)
        .map_err(|_| Error::Data(format!("column `{name}` is missing")))?
        .cast(&DataType::Float64)
        .polars("casting to f64")?;
    let ca = c.f64().polars("reading a column")?;
    if ca.null_count() > 0 {
        return Err(Error::Data(format!("column `{name}` has {} nulls", ca.null_count())));
    }
    Ok(ca.into_no_null_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// A log of `customers` customers, several transactions on some days, some negative
    /// amounts, in (customer, ts, amount) order unless `shuffled`.
    fn log(customers: usize, shuffled: bool) -> DataFrame {
        let mut rng = Rng::new(7);
        let mut rows: Vec<(String, i64, f64)> = Vec::new();
        for c in 0..customers {
            for _ in 0..rng.below(12) {
                let ms = (19_000 + rng.below(40) as i64) * 86_400_000 + rng.below(3) as i64 * 3_600_000;
                rows.push((format!("c{c:03}"), ms, (rng.uniform() * 100.0 - 10.0).round() / 4.0));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2)));
        if shuffled {
            rows.reverse();
        }
        let ts = Column::new("ts".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>())
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
            .unwrap();
        DataFrame::new_infer_height(vec![
            Column::new(CUSTOMER.into(), rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>()),
            ts,
            Column::new("amount".into(), rows.iter().map(|r| r.2).collect::<Vec<_>>()),
        ])
        .unwrap()
    }

    fn same(a: &Daily, b: &Daily) {
        assert_eq!(a.customers, b.customers);
        assert_eq!(a.start, b.start);
        assert_eq!(a.day, b.day);
        assert_eq!(a.n_tx, b.n_tx);
        assert_eq!(a.n_neg, b.n_neg);
        let bits = |d: &Daily| d.amount.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b));
    }

    /// Blocks of any size give the one-pass result, to the bit, in order or not.
    #[test]
    fn daily_rows_do_not_depend_on_the_blocks() {
        for shuffled in [false, true] {
            let tx = log(60, shuffled);
            let whole = daily_in_blocks(&tx, usize::MAX).unwrap();
            let ids = tx.column(CUSTOMER).unwrap().str().unwrap().clone();
            let distinct: std::collections::BTreeSet<&str> = ids.iter().flatten().collect();
            assert_eq!(whole.customers, distinct.into_iter().map(str::to_string).collect::<Vec<_>>());
            assert!(whole.n_tx.iter().any(|&n| n > 1), "some days hold several transactions");
            assert_eq!(whole.n_tx.iter().map(|&n| n as usize).sum::<usize>(), tx.height());
            for block in [1, 2, 3, 7, 50, 1000] {
                same(&whole, &daily_in_blocks(&tx, block).unwrap());
            }
        }
    }

    /// Amounts that are not numbers (which polars' sort and `total_cmp` may place
    /// differently) still aggregate, the same for any block size.
    #[test]
    fn nan_amounts_do_not_stop_the_aggregation() {
        let ts = Column::new("ts".into(), vec![86_400_000i64, 86_400_000, 0, 86_400_000, 0])
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
            .unwrap();
        let tx = DataFrame::new_infer_height(vec![
            Column::new(CUSTOMER.into(), vec!["b", "a", "b", "a", "a"]),
            ts,
            Column::new("amount".into(), vec![1.0, f64::NAN, 2.0, -f64::NAN, 3.0]),
        ])
        .unwrap();
        let whole = daily_in_blocks(&tx, usize::MAX).unwrap();
        assert_eq!(whole.customers, ["a", "b"]);
        assert_eq!(whole.n_tx, [1, 2, 1, 1]);
        for block in [1, 2, 3] {
            same(&whole, &daily_in_blocks(&tx, block).unwrap());
        }
    }

    /// The first customer's rows after the second's: the order check at a block boundary
    /// sends the frame to the sort, like an order break inside a block.
    #[test]
    fn an_order_break_at_a_block_boundary_is_sorted() {
        let tx = log(30, false);
        let n = tx.height();
        let first = tx.column(CUSTOMER).unwrap().str().unwrap().get(0).unwrap().to_string();
        let k = (0..n).find(|&i| tx.column(CUSTOMER).unwrap().str().unwrap().get(i) != Some(&first)).unwrap();
        // Rows of customer 2.. first, then customer 1's.
        let swapped = tx.slice(k as i64, n - k).vstack(&tx.slice(0, k)).unwrap();
        let whole = daily_in_blocks(&tx, usize::MAX).unwrap();
        for block in [1, 3, n - k] {
            same(&whole, &daily_in_blocks(&swapped, block).unwrap());
        }
    }
}
