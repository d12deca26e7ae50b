//! The subscription table (`[input.subscriptions]`): contracts, their terms, MRR and
//! cancellation notices, read and validated like the customer table (a bad cell is an error
//! naming the file, column and row), and what of it is known at a date.
//!
//! Point in time: at a snapshot `t`, a period is known once it has started (`start <= t`...
//! strictly, `start < t` for what happened before the snapshot day); a notice once it was
//! given (`cancelled_at < t`); a period's end once it has passed or notice was given before
//! `t` (a contract may renew, a running subscription may be stopped early: an end the export
//! shows in the future is not known before); the next renewal from the start and the billing
//! period. The export's `status` is never read.

use std::collections::HashMap;
use std::path::PathBuf;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::{cell_error, read_source, require, Table};
use crate::config::{InputSource, SubscriptionsInput};
use crate::error::{Error, Result};
use crate::schema::epoch_day;

/// One period of a subscription (days since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Period {
    pub start: i32,
    /// The day after its last day; `None`: running on at the end of the data.
    pub end: Option<i32>,
    /// Months per billing period (1 monthly, 12 annual); `None` when not given.
    pub months: Option<u32>,
    pub mrr: Option<f64>,
    /// The day notice was given.
    pub notice: Option<i32>,
    /// The row of the table (1-based), for messages.
    pub row: usize,
}

impl Period {
    /// Whether a fixed-term contract (billed per more than one month).
    pub fn fixed_term(&self) -> bool {
        self.months.is_some_and(|m| m > 1)
    }

    /// The end as known at day `t`: one that passed before `t`, or, once notice was given
    /// before `t`, the end it set (the export's end; else the next term boundary). An end in
    /// the export without a notice is not known before it passes: a contract may renew, a
    /// running subscription may be stopped early.
    pub fn end_known_at(&self, t: i32) -> Option<i32> {
        match (self.end, self.notice) {
            (Some(e), _) if e < t => Some(e),
            (e, Some(n)) if n < t => e.or_else(|| self.next_boundary(t)),
            _ => None,
        }
    }

    /// Ended before day `t` (so known not to be live at `t`).
    pub fn ended_before(&self, t: i32) -> bool {
        self.end.is_some_and(|e| e < t)
    }

    /// The first billing boundary after day `t`: `start` plus a whole number of billing
    /// periods (a month when not given). For a fixed term, its renewal.
    fn next_boundary(&self, t: i32) -> Option<i32> {
        use chrono::Datelike;
        let (d0, dt) = (crate::schema::date_of_day(self.start)?, crate::schema::date_of_day(t)?);
        let m = self.months.unwrap_or(1) as i32;
        let months = (dt.year() - d0.year()) * 12 + dt.month() as i32 - d0.month() as i32;
        let guess = (months / m).max(1) as u32;
        (guess..).take(3).map(|k| add_months(self.start, k * m as u32)).find(|&d| d > t)
    }

    /// Live on day `t` (started, not yet ended).
    pub fn live_at(&self, t: i32) -> bool {
        self.start <= t && self.end.is_none_or(|e| t < e)
    }
}

/// The day `months` calendar months after `day` (clamped to the month's last day).
pub fn add_months(day: i32, months: u32) -> i32 {
    let Some(d) = crate::schema::date_of_day(day) else { return day };
    d.checked_add_months(chrono::Months::new(months)).map_or(day, epoch_day)
}

/// `monthly` (1), `quarterly` (3), `semiannual` (6), `annual` / `yearly` (12), or a number
/// of months.
pub fn parse_billing_period(s: &str) -> Option<u32> {
    match s.trim().to_ascii_lowercase().as_str() {
        "monthly" | "month" | "m" => Some(1),
        "quarterly" | "quarter" | "q" => Some(3),
        "semiannual" | "semi-annual" | "half-yearly" => Some(6),
        "annual" | "annually" | "yearly" | "year" | "y" => Some(12),
        other => other
            .parse::<f64>()
            .ok()
            .filter(|m| *m >= 1.0 && m.fract() == 0.0 && *m <= 120.0)
            .map(|m| m as u32),
    }
}

/// The validated subscription table.
#[derive(Debug, Clone, Default)]
pub struct Subscriptions {
    pub path: PathBuf,
    /// Each customer's periods, by start.
    pub by_customer: HashMap<String, Vec<Period>>,
    pub rows: usize,
    /// Which optional columns the table has (contract names).
    pub columns: Vec<String>,
}

/// A customer's subscription as known at a day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct State {
    /// A period is live at the day.
    pub live: bool,
    /// Notice was given before the day on a live period: the customer is leaving.
    pub noticed: bool,
    /// MRR of the live periods.
    pub mrr: f64,
    pub tenure_days: i32,
    /// Days to the nearest billing boundary of a live period (a fixed term's renewal, a
    /// monthly subscription's next billing day), or to its end once notice was given.
    pub days_to_renewal: Option<i32>,
    /// Months per billing period of the live period (the longest, when several).
    pub months: Option<u32>,
    /// Renewals so far: fixed terms that ended before the day and were followed on.
    pub renewals: u32,
}

impl Subscriptions {
    /// What is known of `customer`'s subscription at day `t` (only what started before `t`);
    /// `None` when no period has started.
    pub fn state_at(&self, customer: &str, t: i32) -> Option<State> {
        let periods: Vec<&Period> = self.by_customer.get(customer)?.iter().filter(|p| p.start < t).collect();
        let first = periods.first()?;
        let live: Vec<&&Period> = periods.iter().filter(|p| !p.ended_before(t)).collect();
        let days_to_renewal =
            live.iter().filter_map(|p| p.end_known_at(t).or_else(|| p.next_boundary(t)).map(|e| e - t)).min();
        let renewals = periods
            .iter()
            .filter(|p| {
                p.fixed_term() && p.end.is_some_and(|e| e < t && periods.iter().any(|q| q.start == e))
            })
            .count() as u32;
        Some(State {
            live: !live.is_empty(),
            noticed: !live.is_empty() && live.iter().all(|p| p.notice.is_some_and(|n| n < t)),
            mrr: live.iter().filter_map(|p| p.mrr).sum(),
            tenure_days: t - first.start,
            days_to_renewal,
            months: live.iter().filter_map(|p| p.months).max(),
            renewals,
        })
    }

    /// Whether `customer`, subscribed at day `from`, leaves in `[from, to)`: its chain of
    /// periods live at `from` ends before `to` (a gap counts: a return is a new
    /// subscription), or by `to` it has given notice on every period then live. Uses rows
    /// up to `to`: for labels only.
    pub fn cancels_between(&self, customer: &str, from: i32, to: i32) -> bool {
        let Some(periods) = self.by_customer.get(customer) else { return true };
        if chain_end(periods, from).is_some_and(|end| end < to) {
            return true;
        }
        self.state_at(customer, to).is_none_or(|s| !s.live || s.noticed)
    }

    /// The day `customer` stops having a live period (the end of its first chain of periods;
    /// `None`: still subscribed at the end of the data). Uses every row: for labels only.
    pub fn churn_day(&self, customer: &str) -> Option<i32> {
        let periods = self.by_customer.get(customer)?;
        chain_end(periods, periods.first()?.start)
    }
}

/// The end of the chain of `periods` (by start) live at day `from`: walking periods that
/// start by the current end, the first day none is live (a gap ends the chain: a return is a
/// new subscription); `None` when the chain runs on.
fn chain_end(periods: &[Period], from: i32) -> Option<i32> {
    let mut end = from;
    for p in periods {
        if p.start > end {
            break;
        }
        end = end.max(p.end?);
    }
    Some(end)
}

/// The revenue movements of the customers subscribed at `from`, to `to` (MRR as the table
/// says, looking back: every row is used).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Movement {
    /// MRR at `from` of the customers subscribed then.
    pub start_mrr: f64,
    /// MRR added by customers that were not subscribed at `from`.
    pub new: f64,
    pub expansion: f64,
    pub contraction: f64,
    /// MRR at `from` of the customers not subscribed at `to`.
    pub churned: f64,
    /// Net revenue retention: the `from` customers' MRR at `to` over their MRR at `from`.
    pub nrr: Option<f64>,
    /// Gross revenue retention: as NRR, without expansion.
    pub grr: Option<f64>,
}

/// MRR and its movements at a day: over the month before and the twelve months before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RevenueKpis {
    pub mrr: f64,
    pub customers: usize,
    pub month: Movement,
    pub trailing_12_months: Movement,
}

/// Money in millionths, as an integer: sums of it are exact, so parts summed in any order
/// (customers in any order, Spark's partitions merged in any tree) give the same figures.
fn micros(v: f64) -> i64 {
    (v * 1e6).round() as i64
}

fn money(v: i64) -> f64 {
    v as f64 / 1e6
}

/// The sums a [`Movement`] is made of, over some customers (see [`RevenueParts`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementParts {
    start: i64,
    kept: i64,
    kept_gross: i64,
    new: i64,
    expansion: i64,
    contraction: i64,
    churned: i64,
}

impl MovementParts {
    /// One customer with MRR `a` at the start and `b` at the end.
    fn add(&mut self, a: f64, b: f64) {
        let (a, b) = (micros(a), micros(b));
        if a > 0 {
            self.start += a;
            self.kept += b;
            self.kept_gross += a.min(b);
            if b == 0 {
                self.churned += a;
            } else if b > a {
                self.expansion += b - a;
            } else {
                self.contraction += a - b;
            }
        } else {
            self.new += b;
        }
    }

    fn merge(&mut self, o: &MovementParts) {
        self.start += o.start;
        self.kept += o.kept;
        self.kept_gross += o.kept_gross;
        self.new += o.new;
        self.expansion += o.expansion;
        self.contraction += o.contraction;
        self.churned += o.churned;
    }

    fn finish(&self) -> Movement {
        let ratio = |v: i64| (self.start > 0).then(|| v as f64 / self.start as f64);
        Movement {
            start_mrr: money(self.start),
            new: money(self.new),
            expansion: money(self.expansion),
            contraction: money(self.contraction),
            churned: money(self.churned),
            nrr: ratio(self.kept),
            grr: ratio(self.kept_gross),
        }
    }
}

/// [`RevenueKpis`] of some customers at a day, as exact sums: the parts of disjoint sets of
/// customers merge into those of their union (the Spark job counts a partition of customers
/// each and merges them), and [`RevenueParts::finish`] gives the figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenueParts {
    mrr: i64,
    customers: u64,
    month: MovementParts,
    year: MovementParts,
}

impl RevenueParts {
    pub fn merge(&mut self, o: &RevenueParts) {
        self.mrr += o.mrr;
        self.customers += o.customers;
        self.month.merge(&o.month);
        self.year.merge(&o.year);
    }

    pub fn finish(&self) -> RevenueKpis {
        RevenueKpis {
            mrr: money(self.mrr),
            customers: self.customers as usize,
            month: self.month.finish(),
            trailing_12_months: self.year.finish(),
        }
    }
}

/// The day `k` calendar months before day `t`.
fn months_before(t: i32, k: u32) -> i32 {
    crate::schema::date_of_day(t)
        .and_then(|d| d.checked_sub_months(chrono::Months::new(k)))
        .map_or(t - 30 * k as i32, epoch_day)
}

impl Subscriptions {
    /// `customer`'s MRR on day `t`: the sum over its periods live then.
    pub fn mrr_at(&self, customer: &str, t: i32) -> f64 {
        self.by_customer
            .get(customer)
            .map_or(0.0, |ps| ps.iter().filter(|p| p.live_at(t)).filter_map(|p| p.mrr).sum())
    }

    /// The movements from day `from` to day `to`.
    pub fn movement(&self, from: i32, to: i32) -> Movement {
        let mut m = MovementParts::default();
        for c in self.by_customer.keys() {
            m.add(self.mrr_at(c, from), self.mrr_at(c, to));
        }
        m.finish()
    }

    /// The parts of [`Self::revenue_at`] over every customer of the table.
    pub fn revenue_parts(&self, t: i32) -> RevenueParts {
        let (month, year) = (months_before(t, 1), months_before(t, 12));
        let mut p = RevenueParts::default();
        for c in self.by_customer.keys() {
            let now = self.mrr_at(c, t);
            if now > 0.0 {
                p.mrr += micros(now);
                p.customers += 1;
            }
            p.month.add(self.mrr_at(c, month), now);
            p.year.add(self.mrr_at(c, year), now);
        }
        p
    }

    /// MRR, subscribed customers and the movements over the month and the twelve months
    /// before day `t`.
    pub fn revenue_at(&self, t: i32) -> RevenueKpis {
        self.revenue_parts(t).finish()
    }
}

/// Read and validate the subscription table of `[input.subscriptions]`.
pub fn load_subscriptions(input: &SubscriptionsInput, batch_rows: usize) -> Result<Subscriptions> {
    let raw = read_source(input, batch_rows, "input.subscriptions")?;
    subscriptions_from_frame(raw, input, &input.source_name())
}

/// Validate a subscription table already in memory (`input`'s column mapping applies;
/// `source` names it in messages).
pub fn subscriptions_from_frame(
    raw: DataFrame,
    input: &SubscriptionsInput,
    source: &str,
) -> Result<Subscriptions> {
    let path = PathBuf::from(source);
    let section = "input.subscriptions";
    require(
        &path,
        &raw,
        section,
        &[("customer_id", input.customer_id.as_str()), ("start", input.start.as_str())],
    )?;
    let t = Table { raw: &raw, path: &path };
    let ids = t.text(&input.customer_id)?.unwrap_or_default();
    let start = t.date(&input.start)?.unwrap_or_default();
    let end = t.date(&input.end)?;
    let mrr = t.number(&input.mrr)?;
    let notice = t.date(&input.cancelled_at)?;
    let period = t.text(&input.billing_period)?;
    let mut by_customer: HashMap<String, Vec<Period>> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let id = id
            .clone()
            .ok_or_else(|| cell_error(&path, &input.customer_id, i, "missing customer id".into()))?;
        let s = start[i].ok_or_else(|| cell_error(&path, &input.start, i, "missing start date".into()))?;
        let e = end.as_ref().and_then(|v| v[i]);
        if let Some(e) = e.filter(|&e| e <= s) {
            return Err(cell_error(&path, &input.end, i, format!("{e} is not after the start {s}")));
        }
        let m = mrr.as_ref().and_then(|v| v[i]);
        if let Some(m) = m.filter(|&m| m < 0.0) {
            return Err(cell_error(
                &path,
                &input.mrr,
                i,
                format!("{m} is negative (a credit is not a subscription)"),
            ));
        }
        let n = notice.as_ref().and_then(|v| v[i]);
        if let Some(n) = n {
            if n < s {
                return Err(cell_error(
                    &path,
                    &input.cancelled_at,
                    i,
                    format!("{n} is before the start {s}"),
                ));
            }
            if e.is_some_and(|e| n > e) {
                return Err(cell_error(
                    &path,
                    &input.cancelled_at,
                    i,
                    format!("{n} is after the end {}", e.map_or(String::new(), |e| e.to_string())),
                ));
            }
        }
        let months = match period.as_ref().and_then(|v| v[i].as_deref()) {
            None => None,
            Some(p) => Some(parse_billing_period(p).ok_or_else(|| {
                cell_error(
                    &path,
                    &input.billing_period,
                    i,
                    format!("{p:?}: expected monthly, quarterly, semiannual, annual or a number of months"),
                )
            })?),
        };
        by_customer.entry(id).or_default().push(Period {
            start: epoch_day(s),
            end: e.map(epoch_day),
            months,
            mrr: m,
            notice: n.map(epoch_day),
            row: i + 1,
        });
    }
    for periods in by_customer.values_mut() {
        periods.sort_by_key(|p| (p.start, p.row));
    }
    let columns = [
        ("end", &input.end),
        ("billing_period", &input.billing_period),
        ("mrr", &input.mrr),
        ("cancelled_at", &input.cancelled_at),
    ]
    .iter()
    .filter(|(_, c)| t.present(c))
    .map(|(k, _)| k.to_string())
    .collect();
    if ids.is_empty() {
        return Err(Error::InputFile { path, message: "the subscription table has no rows".into() });
    }
    Ok(Subscriptions { path, by_customer, rows: ids.len(), columns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn table(rows: &[(&str, &str, &str, &str, &str, &str)]) -> Result<Subscriptions> {
        let col = |k: usize| -> Vec<Option<String>> {
            rows.iter()
                .map(|r| {
                    let v = [r.0, r.1, r.2, r.3, r.4, r.5][k];
                    (!v.is_empty()).then(|| v.to_string())
                })
                .collect()
        };
        let raw = df!(
            "customer_id" => col(0), "start" => col(1), "end" => col(2),
            "billing_period" => col(3), "mrr" => col(4), "cancelled_at" => col(5),
        )
        .unwrap();
        subscriptions_from_frame(raw, &SubscriptionsInput::default(), "subs.csv")
    }

    fn d(s: &str) -> i32 {
        epoch_day(NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap())
    }

    #[test]
    fn what_is_known_at_a_date_uses_notices_from_their_day_and_terms_from_their_start() {
        let s = table(&[
            // An annual contract renewed once, then notice in March for the June end.
            ("A", "2022-06-01", "2023-06-01", "annual", "100", ""),
            ("A", "2023-06-01", "2024-06-01", "annual", "150", "2024-03-10"),
            // A monthly subscription that cancelled: its end is unknown until the notice.
            ("M", "2023-01-15", "2024-02-15", "monthly", "40", "2024-01-20"),
        ])
        .unwrap();
        let a = s.state_at("A", d("2024-03-01")).unwrap();
        assert!(a.live && !a.noticed);
        assert_eq!((a.mrr, a.days_to_renewal, a.months, a.renewals), (150.0, Some(92), Some(12), 1));
        let a = s.state_at("A", d("2024-03-11")).unwrap();
        assert!(a.live && a.noticed, "the notice is known from the day after it was given");
        assert!(!s.state_at("A", d("2024-06-02")).unwrap().live);
        let m = s.state_at("M", d("2024-01-10")).unwrap();
        assert!(m.live && !m.noticed && m.days_to_renewal == Some(5), "{m:?}");
        // Before the notice, the end in the export is not used: still live on 2024-02-20 as far
        // as 2024-01-10 knows; after the notice the end is known.
        assert_eq!(s.by_customer["M"][0].end_known_at(d("2024-01-10")), None);
        assert_eq!(s.by_customer["M"][0].end_known_at(d("2024-01-21")), Some(d("2024-02-15")));
        assert_eq!(s.churn_day("A"), Some(d("2024-06-01")));
        assert_eq!(s.churn_day("M"), Some(d("2024-02-15")));
        assert!(s.state_at("A", d("2022-06-01")).is_none(), "nothing started before the first day");
    }

    #[test]
    fn a_bad_cell_names_its_column_and_row() {
        let err = |rows: &[(&str, &str, &str, &str, &str, &str)]| table(rows).unwrap_err().to_string();
        let ok = ("A", "2024-01-01", "", "monthly", "10", "");
        assert!(err(&[ok, ("", "2024-01-01", "", "", "", "")])
            .contains("subs.csv: column `customer_id`, row 2: missing customer id"));
        assert!(err(&[ok, ("B", "01/02/2024", "", "", "", "")])
            .contains("column `start`, row 2: \"01/02/2024\" is not a date"));
        assert!(err(&[ok, ("B", "2024-02-01", "2024-01-01", "", "", "")])
            .contains("column `end`, row 2: 2024-01-01 is not after"));
        assert!(err(&[ok, ("B", "2024-02-01", "", "weekly", "", "")])
            .contains("column `billing_period`, row 2: \"weekly\""));
        assert!(
            err(&[ok, ("B", "2024-02-01", "", "", "-5", "")]).contains("column `mrr`, row 2: -5 is negative")
        );
        assert!(err(&[ok, ("B", "2024-02-01", "2024-03-01", "", "", "2024-04-01")])
            .contains("column `cancelled_at`, row 2"));
        assert_eq!(parse_billing_period("Annual"), Some(12));
        assert_eq!(parse_billing_period("3"), Some(3));
    }

    #[test]
    fn mrr_movements_add_up_to_nrr_and_grr() {
        let s = table(&[
            // Kept flat, expanded, contracted, churned, new.
            ("F", "2023-01-01", "", "monthly", "100", ""),
            ("E", "2023-01-01", "2024-03-01", "monthly", "100", ""),
            ("E", "2024-03-01", "", "monthly", "150", ""),
            ("C", "2023-01-01", "2024-03-01", "annual", "200", ""),
            ("C", "2024-03-01", "", "annual", "120", ""),
            ("X", "2023-01-01", "2024-03-10", "monthly", "50", "2024-02-20"),
            ("N", "2024-03-05", "", "monthly", "70", ""),
        ])
        .unwrap();
        let m = s.movement(d("2024-02-15"), d("2024-03-15"));
        assert_eq!(
            (m.start_mrr, m.new, m.expansion, m.contraction, m.churned),
            (450.0, 70.0, 50.0, 80.0, 50.0)
        );
        // NRR = (450 + 50 - 80 - 50) / 450, GRR = (450 - 80 - 50) / 450.
        assert!((m.nrr.unwrap() - 370.0 / 450.0).abs() < 1e-12);
        assert!((m.grr.unwrap() - 320.0 / 450.0).abs() < 1e-12);
        let k = s.revenue_at(d("2024-03-15"));
        assert_eq!((k.mrr, k.customers), (440.0, 4));
        assert_eq!(k.month, m);
        assert_eq!(k.trailing_12_months.start_mrr, 450.0, "the same four customers a year before");
        // Parts of disjoint customer sets merge into the whole, in any order.
        let t = d("2024-03-15");
        let half = |keep: &[&str]| {
            let mut part = s.clone();
            part.by_customer.retain(|c, _| keep.contains(&c.as_str()));
            part.revenue_parts(t)
        };
        let (mut a, b) = (half(&["F", "E", "N"]), half(&["C", "X"]));
        let mut ba = b;
        ba.merge(&a);
        a.merge(&b);
        assert_eq!(a, ba);
        assert_eq!(a.finish(), s.revenue_at(t));
    }
}
