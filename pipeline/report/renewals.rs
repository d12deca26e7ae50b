//! The weekly report's subscription sections (with `[input.subscriptions]`): the renewals of
//! the next 90 days by ARR at risk, and the recurring revenue (MRR, NRR, GRR and the MRR
//! movements of the last month and the last twelve).

use polars::prelude::*;
use serde::Serialize;

use super::Doc;
use crate::activity::subscriptions::{Movement, RevenueKpis};
use crate::error::{PolarsContext, Result};
use crate::format::{int, money, pct};

/// Days ahead the renewal list looks.
pub const RENEWAL_WINDOW_DAYS: i32 = 90;
/// Renewals listed (the totals count them all).
pub const RENEWALS_SHOWN: usize = 50;

/// One contract renewing within [`RENEWAL_WINDOW_DAYS`].
#[derive(Debug, Clone, Serialize)]
pub struct RenewalRow {
    pub customer_id: String,
    pub days_to_renewal: i32,
    pub arr: f64,
    /// The probability of still being subscribed at the renewal (the survival model's
    /// `renewal_probability`; without one, 1 - the churn probability).
    pub renewal_probability: f64,
    pub arr_at_risk: f64,
    pub risk_level: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RenewalsView {
    /// Whether `renewal_probability` comes from the survival model (else 1 - churn).
    pub from_survival: bool,
    pub contracts: usize,
    pub arr: f64,
    pub arr_at_risk: f64,
    /// Per 30-day window (0-30, 31-60, 61-90): contracts, ARR, ARR at risk.
    pub by_month: Vec<(String, usize, f64, f64)>,
    /// Highest ARR at risk first.
    pub rows: Vec<RenewalRow>,
}

fn column<T>(
    df: &DataFrame,
    name: &str,
    f: impl Fn(&Column) -> PolarsResult<Vec<Option<T>>>,
) -> Result<Option<Vec<Option<T>>>> {
    match df.column(name) {
        Ok(c) => Ok(Some(f(c).polars(name)?)),
        Err(_) => Ok(None),
    }
}

fn floats(c: &Column) -> PolarsResult<Vec<Option<f64>>> {
    Ok(c.cast(&DataType::Float64)?.f64()?.iter().collect())
}

fn texts(c: &Column) -> PolarsResult<Vec<Option<String>>> {
    Ok(c.cast(&DataType::String)?.str()?.iter().map(|v| v.map(str::to_string)).collect())
}

/// The renewals of a scores table (None when it has no `days_to_renewal`: no subscriptions):
/// term contracts only (billed for more than a month; a monthly subscription renews every
/// month, and the churn list covers it).
pub fn renewals(scores: &DataFrame) -> Result<Option<RenewalsView>> {
    let Some(days) = column(scores, "days_to_renewal", floats)? else { return Ok(None) };
    let n = scores.height();
    let months = column(scores, "billing_months", floats)?.unwrap_or_else(|| vec![None; n]);
    let mrr = column(scores, "mrr", floats)?.unwrap_or_else(|| vec![None; n]);
    let survival = column(scores, "renewal_probability", floats)?;
    let churn = column(scores, "churn_probability", floats)?.unwrap_or_else(|| vec![None; n]);
    let ids = column(scores, crate::schema::CUSTOMER, texts)?.unwrap_or_else(|| vec![None; n]);
    let level = column(scores, "risk_level", texts)?.unwrap_or_else(|| vec![None; n]);
    let mut rows = Vec::new();
    for i in 0..n {
        let Some(d) = days[i].filter(|&d| (0.0..=f64::from(RENEWAL_WINDOW_DAYS)).contains(&d)) else {
            continue;
        };
        if months[i].is_none_or(|m| m <= 1.0) {
            continue;
        }
        let arr = 12.0 * mrr[i].unwrap_or(0.0);
        let p = match &survival {
            Some(s) => s[i],
            None => churn[i].map(|c| 1.0 - c),
        }
        .unwrap_or(f64::NAN);
        rows.push(RenewalRow {
            customer_id: ids[i].clone().unwrap_or_default(),
            days_to_renewal: d as i32,
            arr,
            renewal_probability: p,
            arr_at_risk: if p.is_finite() { arr * (1.0 - p) } else { 0.0 },
            risk_level: level[i].clone().unwrap_or_default(),
        });
    }
    rows.sort_by(|a, b| {
        b.arr_at_risk
            .total_cmp(&a.arr_at_risk)
            .then(a.days_to_renewal.cmp(&b.days_to_renewal))
            .then(a.customer_id.cmp(&b.customer_id))
    });
    let by_month = [(0, 30), (31, 60), (61, 90)]
        .iter()
        .map(|&(lo, hi)| {
            let part: Vec<&RenewalRow> =
                rows.iter().filter(|r| (lo..=hi).contains(&r.days_to_renewal)).collect();
            (
                format!("{lo}-{hi} days"),
                part.len(),
                part.iter().map(|r| r.arr).sum(),
                part.iter().map(|r| r.arr_at_risk).sum(),
            )
        })
        .collect();
    Ok(Some(RenewalsView {
        from_survival: survival.is_some(),
        contracts: rows.len(),
        arr: rows.iter().map(|r| r.arr).sum(),
        arr_at_risk: rows.iter().map(|r| r.arr_at_risk).sum(),
        by_month,
        rows: rows.into_iter().take(RENEWALS_SHOWN).collect(),
    }))
}

/// "Renewals in the next 90 days".
pub fn section_renewals(d: &mut Doc, v: &RenewalsView) {
    d.section("renewals", &format!("Renewals in the next {RENEWAL_WINDOW_DAYS} days"));
    d.para(&format!(
        "{} term contracts (billed for more than a month) renew in the next {RENEWAL_WINDOW_DAYS} days: ARR {} \
         up for renewal, {} of it at risk \
         (ARR x the probability of not renewing{}).",
        int(v.contracts as i64),
        money(v.arr),
        money(v.arr_at_risk),
        if v.from_survival {
            ": the survival model's probability of still being subscribed at the renewal"
        } else {
            "; no survival model: 1 - the churn probability"
        }
    ));
    let rows: Vec<Vec<String>> = v
        .by_month
        .iter()
        .map(|(w, c, arr, risk)| vec![w.clone(), int(*c as i64), money(*arr), money(*risk)])
        .collect();
    d.table(&["renewal in", "contracts", "ARR", "ARR at risk"], &rows, None);
    let rows: Vec<Vec<String>> = v
        .rows
        .iter()
        .map(|r| {
            vec![
                r.customer_id.clone(),
                r.days_to_renewal.to_string(),
                money(r.arr),
                pct(r.renewal_probability),
                money(r.arr_at_risk),
                r.risk_level.clone(),
            ]
        })
        .collect();
    d.table(
        &["customer", "days to renewal", "ARR", "renewal probability", "ARR at risk", "risk level"],
        &rows,
        None,
    );
    d.reading(&format!(
        "Highest ARR at risk first (at most {RENEWALS_SHOWN}; the scores table has every contract's \
         `days_to_renewal`). Notify and escalation rules can act on the same window: `max_days_to_renewal`."
    ));
}

fn ratio(v: Option<f64>) -> String {
    v.map_or("-".into(), pct)
}

/// "Recurring revenue": MRR and its movements.
pub fn section_revenue(d: &mut Doc, k: &RevenueKpis) {
    d.section("revenue", "Recurring revenue");
    d.para(&format!("MRR {} from {} subscribers.", money(k.mrr), int(k.customers as i64)));
    let row = |name: &str, m: &Movement| {
        vec![
            name.to_string(),
            money(m.start_mrr),
            format!("+{}", money(m.new)),
            format!("+{}", money(m.expansion)),
            format!("-{}", money(m.contraction)),
            format!("-{}", money(m.churned)),
            ratio(m.nrr),
            ratio(m.grr),
        ]
    };
    d.table(
        &["over", "MRR at the start", "new", "expansion", "contraction", "churned", "NRR", "GRR"],
        &[row("last month", &k.month), row("last 12 months", &k.trailing_12_months)],
        None,
    );
    d.reading(
        "NRR = (MRR at the start + expansion - contraction - churned) / MRR at the start, among the customers \
         subscribed at the start; GRR the same without expansion. New customers' MRR counts in neither.",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_list_term_contracts_in_the_window_by_arr_at_risk() {
        let scores = df!(
            "customer_id" => ["A", "B", "C", "D", "E", "F"],
            "risk_level" => ["low", "high", "critical", "low", "high", "moderate"],
            "churn_probability" => [0.1, 0.5, 0.8, 0.1, 0.5, 0.3],
            // A monthly, B and C annual in the window, D annual beyond it, E quarterly, F no renewal known.
            "mrr" => [Some(100.0), Some(1000.0), Some(200.0), Some(5000.0), Some(300.0), Some(50.0)],
            "billing_months" => [Some(1), Some(12), Some(12), Some(12), Some(3), None],
            "days_to_renewal" => [Some(10), Some(80), Some(5), Some(120), Some(40), None],
            "renewal_probability" => [Some(0.99), Some(0.9), Some(0.5), Some(0.7), Some(0.8), None],
        )
        .expect("a frame");
        let v = renewals(&scores).expect("read").expect("subscriptions");
        assert!(v.from_survival);
        let ids: Vec<&str> = v.rows.iter().map(|r| r.customer_id.as_str()).collect();
        // B: 12,000 x 0.1 = 1,200; C: 2,400 x 0.5 = 1,200 (sooner first); E: 3,600 x 0.2 = 720.
        assert_eq!(ids, ["C", "B", "E"]);
        assert_eq!(v.contracts, 3);
        assert!((v.arr - (12_000.0 + 2_400.0 + 3_600.0)).abs() < 1e-9);
        assert!((v.arr_at_risk - 3_120.0).abs() < 1e-9);
        assert_eq!(v.by_month.iter().map(|m| m.1).collect::<Vec<_>>(), [1, 1, 1]);
        // Without a survival model: 1 - the churn probability.
        let mut no_survival = scores.clone();
        let _ = no_survival.drop_in_place("renewal_probability").expect("the column");
        let v = renewals(&no_survival).expect("read").expect("subscriptions");
        assert!(!v.from_survival);
        let c = v.rows.iter().find(|r| r.customer_id == "C").expect("C");
        assert!((c.renewal_probability - 0.2).abs() < 1e-12);
        // No subscription columns: no section.
        assert!(renewals(&scores.select(["customer_id", "risk_level"]).expect("a frame"))
            .expect("read")
            .is_none());
    }
}
