//! Retention KPIs of a transaction log at a date, with the formulas the weekly report
//! prints beside them. "Active at t" means at least one transaction in the `active_days`
//! (the model's eligibility window, 90 by default) before t, the same rule that decides who
//! is scored.

use std::collections::HashMap;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;

use crate::features::Daily;
use crate::schema::epoch_day;

/// Days after the first purchase at which cohort retention is read.
pub const COHORT_OFFSETS: [i32; 5] = [30, 60, 90, 180, 365];

/// One first-purchase month: its size and the share active at each offset (`None` until
/// every member has reached it).
#[derive(Debug, Clone, Serialize)]
pub struct Cohort {
    pub month: String,
    pub customers: usize,
    pub retained: Vec<Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Kpis {
    pub as_of: NaiveDate,
    pub active_days: i32,
    pub active_at_start: usize,
    pub active_at_end: usize,
    pub new_customers: usize,
    /// (active at end - new) / active at start, over the last 90 days.
    pub retention_rate_90d: f64,
    pub active_30_days_ago: usize,
    pub lapsed_in_30_days: usize,
    /// Lapsed in the last 30 days / active 30 days ago.
    pub churn_rate_monthly: f64,
    /// 1 - (1 - monthly)^12.
    pub churn_rate_annualized: f64,
    /// Over the last 365 days: customers with 2+ purchase days / customers with 1+.
    pub repeat_purchase_rate: f64,
    /// Transactions per purchasing customer over the last 365 days.
    pub purchase_frequency: f64,
    /// Revenue per transaction over the last 365 days.
    pub average_order_value: f64,
    /// Revenue of the last 90 days / 3 / customers active at the end.
    pub arpu_monthly: f64,
    pub gross_margin: f64,
    /// ARPU x gross margin / monthly churn.
    pub simple_ltv: f64,
    pub cohorts: Vec<Cohort>,
    /// Net and gross revenue retention need recurring revenue (MRR) per customer, which a
    /// transaction log does not have.
    pub nrr: Option<f64>,
    pub grr: Option<f64>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// KPIs at `as_of` (transactions strictly before it), and each customer's revenue over the
/// last 365 days (for the RFM segment table).
pub fn compute(
    daily: &Daily,
    as_of: NaiveDate,
    active_days: i32,
    gross_margin: f64,
) -> (Kpis, HashMap<&str, f64>) {
    let t = epoch_day(as_of);
    let active_at = |days: &[i32], at: i32| days.iter().any(|&d| d < at && d >= at - active_days);
    let (mut start, mut end, mut new, mut ago30, mut lapsed) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut buyers, mut repeaters, mut tx_365, mut revenue_365, mut revenue_90) =
        (0usize, 0usize, 0.0, 0.0, 0.0);
    let mut per_customer = HashMap::with_capacity(daily.customers.len());
    // Cohorts: first-purchase month -> (size, retained counts per offset)
    let mut cohorts: std::collections::BTreeMap<(i32, u32), (usize, [usize; 5], i32)> = Default::default();
    for c in 0..daily.customers.len() {
        let range = daily.start[c]..daily.start[c + 1];
        let all = &daily.day[range.clone()];
        let before = all.partition_point(|&d| d < t);
        if before == 0 {
            continue;
        }
        let days = &all[..before];
        let first = days[0];
        let (a_start, a_end, a_30) = (active_at(days, t - 90), active_at(days, t), active_at(days, t - 30));
        start += usize::from(a_start);
        end += usize::from(a_end);
        new += usize::from(first >= t - 90);
        ago30 += usize::from(a_30);
        lapsed += usize::from(a_30 && !a_end);
        let (mut n_days, mut rev) = (0usize, 0.0);
        for i in range.start..range.start + before {
            let d = daily.day[i];
            if d >= t - 365 {
                n_days += 1;
                tx_365 += f64::from(daily.n_tx[i]);
                rev += daily.amount[i];
            }
            if d >= t - 90 {
                revenue_90 += daily.amount[i];
            }
        }
        if n_days > 0 {
            buyers += 1;
            repeaters += usize::from(n_days >= 2);
            revenue_365 += rev;
            per_customer.insert(daily.customers[c].as_str(), rev);
        }
        if let Some(date) = crate::schema::date_of_day(first) {
            let e = cohorts.entry((date.year(), date.month())).or_insert((0, [0; 5], first));
            e.0 += 1;
            e.2 = e.2.max(first);
            for (k, &off) in COHORT_OFFSETS.iter().enumerate() {
                // Active in the 30 days ending at +off (the first purchase day excluded).
                let (lo, hi) = (first + off - 30, first + off);
                if days.iter().any(|&d| d > lo.max(first) && d <= hi) {
                    e.1[k] += 1;
                }
            }
        }
    }
    let monthly = ratio(lapsed as f64, ago30 as f64);
    let arpu = ratio(revenue_90 / 3.0, end as f64);
    // The twelve calendar months up to the last day before `as_of`, every one listed (a
    // month nobody first bought in is a cohort of 0, not a gap).
    let last = as_of.pred_opt().unwrap_or(as_of);
    let months: Vec<(i32, u32)> = (0..12)
        .rev()
        .map(|back| {
            let m = i64::from(last.year()) * 12 + i64::from(last.month0()) - back;
            ((m.div_euclid(12)) as i32, (m.rem_euclid(12) + 1) as u32)
        })
        .collect();
    let cohorts: Vec<Cohort> = months
        .into_iter()
        .map(|(y, m)| {
            let (n, kept, last_first) = cohorts.get(&(y, m)).copied().unwrap_or((0, [0; 5], t));
            Cohort {
                month: format!("{y}-{m:02}"),
                customers: n,
                retained: COHORT_OFFSETS
                    .iter()
                    .zip(kept)
                    .map(|(&off, k)| (n > 0 && last_first + off < t).then(|| k as f64 / n as f64))
                    .collect(),
            }
        })
        .collect();
    let kpis = Kpis {
        as_of,
        active_days,
        active_at_start: start,
        active_at_end: end,
        new_customers: new,
        retention_rate_90d: ratio(end as f64 - new as f64, start as f64),
        active_30_days_ago: ago30,
        lapsed_in_30_days: lapsed,
        churn_rate_monthly: monthly,
        churn_rate_annualized: 1.0 - (1.0 - monthly).powi(12),
        repeat_purchase_rate: ratio(repeaters as f64, buyers as f64),
        purchase_frequency: ratio(tx_365, buyers as f64),
        average_order_value: ratio(revenue_365, tx_365),
        arpu_monthly: arpu,
        gross_margin,
        simple_ltv: ratio(arpu * gross_margin, monthly),
        cohorts,
        nrr: None,
        grr: None,
    };
    (kpis, per_customer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::daily_activity;
    use polars::prelude::*;

    fn log(rows: &[(&str, &str, f64)]) -> DataFrame {
        let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let ts: Vec<i64> = rows
            .iter()
            .map(|r| {
                NaiveDate::parse_from_str(r.1, "%Y-%m-%d")
                    .unwrap()
                    .and_hms_opt(12, 0, 0)
                    .unwrap()
                    .and_utc()
                    .timestamp_millis()
            })
            .collect();
        let amount: Vec<f64> = rows.iter().map(|r| r.2).collect();
        DataFrame::new_infer_height(vec![
            Column::new("customer_id".into(), ids),
            Int64Chunked::from_vec("ts".into(), ts).into_datetime(TimeUnit::Milliseconds, None).into_column(),
            Column::new("amount".into(), amount),
        ])
        .unwrap()
    }

    #[test]
    fn kpis_by_hand() {
        // as_of 2024-07-01 (day t); t-90 = 2024-04-02, t-30 = 2024-06-01.
        let tx = log(&[
            ("a", "2024-01-10", 10.0), // active at t-90 (window 01-03..04-01)? yes
            ("a", "2024-06-15", 20.0), // active at end
            ("b", "2024-03-01", 30.0), // active at t-90, lapsed before t-30? active at t-30 (03-03..05-31)? no
            ("c", "2024-05-20", 40.0), // new, active at t-30 and end
            ("c", "2024-05-21", 5.0),
            ("d", "2024-04-15", 50.0), // new; active at t-30 (window 03-03..05-31) yes, at end (04-02..06-30) yes
        ]);
        let daily = daily_activity(&tx).unwrap();
        let (k, rev) = compute(&daily, NaiveDate::from_ymd_opt(2024, 7, 1).unwrap(), 90, 0.5);
        assert_eq!((k.active_at_start, k.active_at_end, k.new_customers), (2, 3, 2));
        assert!((k.retention_rate_90d - 0.5).abs() < 1e-12, "(3 - 2) / 2");
        // Active 30 days ago: b? last 03-01 < 03-03: no. a: 01-10 no. c: yes. d: yes -> 2; lapsed 0.
        assert_eq!((k.active_30_days_ago, k.lapsed_in_30_days), (2, 0));
        assert_eq!(k.churn_rate_monthly, 0.0);
        // 365 days: 4 buyers; a and c have 2 purchase days.
        assert!((k.repeat_purchase_rate - 0.5).abs() < 1e-12);
        assert!((k.purchase_frequency - 6.0 / 4.0).abs() < 1e-12);
        assert!((k.average_order_value - 155.0 / 6.0).abs() < 1e-12);
        // Last 90 days revenue: a 20 + c 45 + d 50 = 115; / 3 / 3 active.
        assert!((k.arpu_monthly - 115.0 / 9.0).abs() < 1e-12);
        assert_eq!(rev["c"], 45.0);
        // Cohort 2024-05 (c): +30 window (05-20, 06-19]: 05-21 -> retained.
        let may = k.cohorts.iter().find(|c| c.month == "2024-05").unwrap();
        assert_eq!(may.customers, 1);
        assert_eq!(may.retained[0], Some(1.0));
        assert_eq!(may.retained[2], None, "+90 not reached yet");
        // Every one of the twelve months before as_of is listed, empty ones too.
        let months: Vec<&str> = k.cohorts.iter().map(|c| c.month.as_str()).collect();
        assert_eq!(months.len(), 12);
        assert_eq!((months[0], months[11]), ("2023-07", "2024-06"));
        let june = k.cohorts.iter().find(|c| c.month == "2024-06").unwrap();
        assert!(june.customers == 0 && june.retained.iter().all(Option::is_none));
        let jan = k.cohorts.iter().find(|c| c.month == "2024-01").unwrap();
        assert_eq!(jan.retained[..3], [Some(0.0), Some(0.0), Some(0.0)]);
        // a bought again at +157 days, but +180 is after as_of: unknown yet.
        assert_eq!(jan.retained[3], None);
    }
}
