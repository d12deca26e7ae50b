//! Features and labels: hand-computed values on a tiny log, and point-in-time correctness
//! as a property (nothing at or after the snapshot can change a feature; labels look only
//! at [t, t + horizon)).

use chrono::{Duration, NaiveDate};
use fidelis::config::Config;
use fidelis::features::{self, FeatureSpec};
use polars::prelude::*;
use proptest::prelude::*;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// A transaction frame in the ingest contract from (customer, date, hour, amount).
fn log(rows: &[(&str, NaiveDate, u32, f64)]) -> DataFrame {
    let ids: Vec<String> = rows.iter().map(|r| r.0.to_string()).collect();
    let ts: Vec<i64> =
        rows.iter().map(|r| r.1.and_hms_opt(r.2, 0, 0).unwrap().and_utc().timestamp_millis()).collect();
    let amount: Vec<f64> = rows.iter().map(|r| r.3).collect();
    let ts =
        Int64Chunked::from_vec("ts".into(), ts).into_datetime(TimeUnit::Milliseconds, None).into_column();
    DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), ids),
        ts,
        Column::new("amount".into(), amount),
    ])
    .unwrap()
}

fn spec() -> FeatureSpec {
    FeatureSpec::from_config(&Config::default())
}

fn value(df: &DataFrame, customer: &str, column: &str) -> f64 {
    let ids = df.column("customer_id").unwrap().str().unwrap().clone();
    let row = ids.iter().position(|v| v == Some(customer)).unwrap_or_else(|| panic!("{customer} not found"));
    df.column(column).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().get(row).unwrap()
}

#[test]
fn tiny_log_matches_hand_computed_features_and_labels() {
    let tx = log(&[
        ("A", d("2024-01-01"), 10, 10.0),
        ("A", d("2024-01-01"), 15, 5.0),
        ("A", d("2024-02-15"), 9, 20.0),
        ("A", d("2024-03-20"), 9, -5.0),
        ("A", d("2024-03-25"), 23, 30.0),
        ("A", d("2024-04-10"), 0, 100.0),
        ("B", d("2023-06-01"), 12, 50.0),
        ("C", d("2024-03-31"), 23, 8.0),
        ("C", d("2024-06-30"), 0, 99.0), // first day after the label window
    ]);
    let t = d("2024-04-01");
    let daily = features::daily_activity(&tx).unwrap();
    let df = features::dataset_at(&daily, &spec(), &[t], None).unwrap();

    // B has nothing in [t-90, t): not eligible.
    assert_eq!(df.height(), 2);
    let expect = |c: &str, col: &str, want: f64| {
        let got = value(&df, c, col);
        assert!((got - want).abs() < 1e-9, "{c}.{col}: got {got}, want {want}");
    };
    // t-30 = 2024-03-02, t-45 = 2024-02-16, t-90 = 2024-01-02 (2024 is a leap year):
    // the two 2024-01-01 purchases are outside the 90-day window.
    expect("A", "count_30d", 2.0);
    expect("A", "amount_30d", 25.0);
    expect("A", "mean_amount_30d", 12.5);
    expect("A", "active_days_30d", 2.0);
    expect("A", "count_90d", 3.0);
    expect("A", "amount_90d", 45.0);
    expect("A", "mean_amount_90d", 15.0);
    expect("A", "count_365d", 5.0);
    expect("A", "amount_365d", 60.0);
    expect("A", "active_days_365d", 4.0);
    expect("A", "recency_days", 7.0);
    expect("A", "tenure_days", 91.0);
    expect("A", "count_life", 5.0);
    expect("A", "amount_life", 60.0);
    expect("A", "mean_amount_life", 12.0);
    expect("A", "active_days_life", 4.0);
    // [t-45, t): Mar 20, Mar 25; [t-90, t-45): Feb 15.
    expect("A", "trend_ratio", 2.0 / 2.0);
    // Gaps between distinct active days: 45, 34, 5 -> mean 28, population std sqrt(854/3).
    expect("A", "gap_mean_days", 28.0);
    expect("A", "gap_std_days", (854.0f64 / 3.0).sqrt());
    expect("A", "recency_over_gap", 7.0 / 28.0);
    expect("A", "spend_ratio", 25.0 / (45.0 / 3.0));
    expect("A", "refunds_90d", 1.0);
    expect("A", "churn", 0.0);
    expect("A", "clv", 100.0);

    expect("C", "recency_days", 1.0);
    expect("C", "tenure_days", 1.0);
    expect("C", "gap_mean_days", -1.0);
    expect("C", "gap_std_days", -1.0);
    expect("C", "recency_over_gap", -1.0);
    expect("C", "spend_ratio", 8.0 / (8.0 / 3.0));
    expect("C", "trend_ratio", 1.0);
    // 2024-06-30 = t + 90 days: outside [t, t+90).
    expect("C", "churn", 1.0);
    expect("C", "clv", 0.0);
}

#[test]
fn features_at_several_snapshots_equal_one_at_a_time() {
    let tx = log(&[
        ("A", d("2024-01-05"), 10, 10.0),
        ("A", d("2024-02-20"), 10, 12.0),
        ("B", d("2024-02-01"), 10, 7.0),
        ("B", d("2024-03-15"), 10, 9.0),
    ]);
    let daily = features::daily_activity(&tx).unwrap();
    let snaps = [d("2024-02-10"), d("2024-03-10"), d("2024-04-10")];
    let all = features::features_at(&daily, &spec(), &snaps, None).unwrap();
    let mut parts = Vec::new();
    for t in snaps {
        parts.push(features::features_at(&daily, &spec(), &[t], None).unwrap());
    }
    let mut stacked = parts[0].clone();
    for p in &parts[1..] {
        stacked.vstack_mut(p).unwrap();
    }
    assert!(all.equals(&stacked));
}

/// Frames equal in shape, keys and labels, numbers equal up to 1e-9 relative: polars' sum
/// kernels may round differently in the last bit when the rest of the table changes, which
/// is not leakage.
fn frames_close(a: &DataFrame, b: &DataFrame) -> Result<(), String> {
    if a.shape() != b.shape() || a.get_column_names() != b.get_column_names() {
        return Err(format!("shape or columns differ:\n{a}\n{b}"));
    }
    for (ca, cb) in a.columns().iter().zip(b.columns()) {
        if ca.dtype().is_float() {
            let (x, y) = (ca.f64().unwrap(), cb.f64().unwrap());
            for (i, (u, v)) in x.iter().zip(y.iter()).enumerate() {
                let (u, v) = (u.unwrap(), v.unwrap());
                if (u - v).abs() > 1e-9 * u.abs().max(v.abs()).max(1.0) {
                    return Err(format!("{} row {i}: {u} vs {v}\n{a}\n{b}", ca.name()));
                }
            }
        } else if !ca.as_materialized_series().equals_missing(cb.as_materialized_series()) {
            return Err(format!("{} differs:\n{a}\n{b}", ca.name()));
        }
    }
    Ok(())
}

/// Random logs: customers c0..c5, days 0..400 after 2023-01-01, amounts in [-50, 200).
fn arb_log() -> impl Strategy<Value = Vec<(u8, i64, u32, f64)>> {
    prop::collection::vec((0u8..6, 0i64..400, 0u32..24, -50.0f64..200.0), 1..60)
}

fn to_frame(rows: &[(u8, i64, u32, f64)]) -> DataFrame {
    let base = d("2023-01-01");
    let named: Vec<(String, NaiveDate, u32, f64)> =
        rows.iter().map(|r| (format!("c{}", r.0), base + Duration::days(r.1), r.2, r.3)).collect();
    let refs: Vec<(&str, NaiveDate, u32, f64)> =
        named.iter().map(|r| (r.0.as_str(), r.1, r.2, r.3)).collect();
    log(&refs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Changing, deleting or adding transactions at or after t never changes a feature at t.
    #[test]
    fn features_ignore_everything_from_t_on(
        rows in arb_log(),
        t_pick in (any::<bool>(), any::<prop::sample::Index>(), 1i64..400),
        edits in prop::collection::vec((0u8..3, -100.0f64..300.0, 0i64..200), 0..10),
    ) {
        // Half the time t is the day of an existing transaction (the boundary case).
        let t_day = if t_pick.0 { rows[t_pick.1.index(rows.len())].1.max(1) } else { t_pick.2 };
        let t = d("2023-01-01") + Duration::days(t_day);
        let before = features::features_at(&features::daily_activity(&to_frame(&rows)).unwrap(), &spec(), &[t], None).unwrap();

        let mut changed: Vec<(u8, i64, u32, f64)> = Vec::new();
        let mut future = rows.iter().filter(|r| r.1 >= t_day).cloned().collect::<Vec<_>>();
        changed.extend(rows.iter().filter(|r| r.1 < t_day).cloned());
        for (i, (kind, amount, offset)) in edits.iter().enumerate() {
            match kind {
                0 => { let n = future.len().max(1); if let Some(r) = future.get_mut(i % n) { r.3 = *amount } }
                1 => if !future.is_empty() { let k = i % future.len(); future.remove(k); },
                // Every other addition lands on day t itself (any hour).
                _ => future.push(((i % 6) as u8, t_day + if i % 2 == 0 { 0 } else { *offset }, (i % 24) as u32, *amount)),
            }
        }
        changed.extend(future);
        let after = features::features_at(&features::daily_activity(&to_frame(&changed)).unwrap(), &spec(), &[t], None);
        match after {
            Ok(after) => prop_assert!(frames_close(&before, &after).is_ok(), "features changed: {:?}", frames_close(&before, &after)),
            Err(e) => prop_assert!(false, "{e}"),
        }
    }

    /// Labels depend only on [t, t + horizon): editing amounts before t and anything from
    /// t + horizon on leaves churn and clv unchanged for every eligible customer.
    #[test]
    fn labels_look_only_at_the_horizon(
        rows in arb_log(),
        t_pick in (any::<bool>(), any::<prop::sample::Index>(), 1i64..300),
        new_amounts in prop::collection::vec(-100.0f64..300.0, 60),
        late in prop::collection::vec((0u8..6, 0i64..100, -50.0f64..200.0), 0..10),
    ) {
        let t_day = if t_pick.0 { rows[t_pick.1.index(rows.len())].1.max(1) } else { t_pick.2 };
        let t = d("2023-01-01") + Duration::days(t_day);
        let h = 90;
        let labels = |rows: &[(u8, i64, u32, f64)]| {
            let df = features::dataset_at(&features::daily_activity(&to_frame(rows)).unwrap(), &spec(), &[t], None).unwrap();
            df.select(["customer_id", "churn", "clv"]).unwrap()
        };
        let before = labels(&rows);
        let mut changed: Vec<(u8, i64, u32, f64)> = rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.1 < t_day + h)
            .map(|(i, r)| if r.1 < t_day { (r.0, r.1, r.2, new_amounts[i % 60]) } else { *r })
            .collect();
        // Half of the late additions land exactly on day t + horizon (first day outside).
        changed.extend(late.iter().enumerate().map(|(i, (c, off, a))| (*c, t_day + h + if i % 2 == 0 { 0 } else { *off }, 0, *a)));
        let after = labels(&changed);
        prop_assert!(frames_close(&before, &after).is_ok(), "labels changed: {:?}", frames_close(&before, &after));
    }
}

// Churn as a cancellation (`[snapshots] churn = "cancellation"`): who is eligible and the
// subscription features use only what was known at t; the labels only what happened by
// t + horizon.

/// One subscription period: (customer 0..6, start day, end day, annual, mrr, notice day),
/// days after 2023-01-01.
type Sub = (u8, i64, Option<i64>, bool, f64, Option<i64>);

fn day_text(day: i64) -> String {
    (d("2023-01-01") + Duration::days(day)).to_string()
}

fn subscriptions(rows: &[Sub]) -> fidelis::activity::Subscriptions {
    let text = |f: &dyn Fn(&Sub) -> Option<String>| rows.iter().map(f).collect::<Vec<Option<String>>>();
    let raw = df!(
        "customer_id" => text(&|r| Some(format!("c{}", r.0))),
        "start" => text(&|r| Some(day_text(r.1))),
        "end" => text(&|r| r.2.map(day_text)),
        "billing_period" => text(&|r| Some(if r.3 { "annual" } else { "monthly" }.to_string())),
        "mrr" => rows.iter().map(|r| r.4).collect::<Vec<f64>>(),
        "cancelled_at" => text(&|r| r.5.map(day_text)),
    )
    .unwrap();
    fidelis::activity::subscriptions::subscriptions_from_frame(raw, &Default::default(), "subs")
        .expect("a valid generated table")
}

fn cancellation_spec() -> FeatureSpec {
    FeatureSpec { churn: fidelis::config::ChurnRule::Cancellation, ..spec() }
}

/// Features at t (the subscription features appended) or features and labels.
fn cancellation_frame(tx: &[(u8, i64, u32, f64)], subs: &[Sub], t: NaiveDate, labels: bool) -> DataFrame {
    let daily = features::daily_activity(&to_frame(tx)).unwrap();
    let s = subscriptions(subs);
    let mut df = if labels {
        features::dataset_at(&daily, &cancellation_spec(), &[t], Some(&s)).unwrap()
    } else {
        features::features_at(&daily, &cancellation_spec(), &[t], Some(&s)).unwrap()
    };
    let data = fidelis::signals::SignalData { subscriptions: Some(s), ..Default::default() };
    let spec = fidelis::signals::SignalSpec { subscriptions: true, ..Default::default() };
    fidelis::signals::append(&mut df, &spec, &data).unwrap();
    df
}

/// Random subscription periods, valid (end after start, notice between them).
fn arb_subs() -> impl Strategy<Value = Vec<Sub>> {
    prop::collection::vec(
        (
            0u8..6,
            0i64..380,
            prop::option::of(1i64..400),
            any::<bool>(),
            10.0f64..500.0,
            prop::option::of(0i64..400),
        ),
        1..14,
    )
    .prop_map(|rows| rows.into_iter().map(valid).collect())
}

/// `end` after `start`; a notice between them.
fn valid(r: Sub) -> Sub {
    let (c, start, end, annual, mrr, notice) = r;
    let end = end.map(|e| start + e);
    let notice = notice.map(|n| (start + n % 400).min(end.unwrap_or(i64::MAX)));
    (c, start, end, annual, mrr, notice)
}

/// The periods as a later export may show them, for what is not known at `t_day`: periods
/// starting at or after t replaced by `later`, and the end and notice of each period not yet
/// ended and not yet noticed replaced (by `redraw`) with values at or after t.
fn rewrite_from(subs: &[Sub], t_day: i64, redraw: &[(Option<i64>, Option<i64>)], later: &[Sub]) -> Vec<Sub> {
    let mut out: Vec<Sub> = Vec::new();
    for (i, r) in subs.iter().filter(|r| r.1 < t_day).enumerate() {
        let mut r = *r;
        let ended = r.2.is_some_and(|e| e < t_day);
        let noticed = r.5.is_some_and(|n| n < t_day);
        if !ended && !noticed {
            let (end, notice) = redraw[i % redraw.len()];
            r.2 = end.map(|e| t_day + e);
            r.5 = notice.map(|n| (t_day + n).min(r.2.unwrap_or(i64::MAX)));
        }
        out.push(r);
    }
    out.extend(later.iter().map(|r| valid((r.0, t_day + r.1 % 200, r.2, r.3, r.4, r.5))));
    out
}

/// The rows whose labels are defined: the periods as a later export shows them, where only
/// what happens from `to_day` on changed.
fn rewrite_after(
    subs: &[Sub],
    to_day: i64,
    redraw: &[(Option<i64>, Option<i64>)],
    later: &[Sub],
) -> Vec<Sub> {
    let mut out: Vec<Sub> = Vec::new();
    for (i, r) in subs.iter().filter(|r| r.1 < to_day).enumerate() {
        let mut r = *r;
        let (end, notice) = redraw[i % redraw.len()];
        if r.2.is_none_or(|e| e >= to_day) {
            r.2 = end.map(|e| to_day + e);
        }
        if r.5.is_none_or(|n| n >= to_day) {
            r.5 = notice.map(|n| to_day + n);
        }
        r.5 = r.5.map(|n| n.min(r.2.unwrap_or(i64::MAX)));
        out.push(r);
    }
    out.extend(later.iter().map(|r| valid((r.0, to_day + r.1 % 200, r.2, r.3, r.4, r.5))));
    out
}

#[test]
fn a_notice_before_the_snapshot_is_used_and_one_after_it_is_not() {
    let tx: Vec<(u8, i64, u32, f64)> = (0..4u8).map(|c| (c, 10, 9, 600.0)).collect();
    let t_day = 200;
    let t = d("2023-01-01") + Duration::days(t_day);
    let subs: Vec<Sub> = vec![
        // c0: annual, notice the day before t: leaving, not scored.
        (0, 10, Some(375), true, 50.0, Some(t_day - 1)),
        // c1: annual, notice on day t: scored, and churns in the horizon.
        (1, 10, Some(375), true, 50.0, Some(t_day)),
        // c2: the same contract without a notice: scored, stays.
        (2, 10, Some(375), true, 50.0, None),
        // c3: monthly, ended (without notice) before t: gone, not scored.
        (3, 10, Some(t_day - 5), false, 50.0, None),
    ];
    let df = cancellation_frame(&tx, &subs, t, true);
    let ids: Vec<&str> =
        df.column("customer_id").unwrap().str().unwrap().iter().map(|v| v.unwrap()).collect();
    assert_eq!(ids, ["c1", "c2"], "a cancelled or ended subscriber is never scored as active");
    assert_eq!(value(&df, "c1", "churn"), 1.0);
    assert_eq!(value(&df, "c2", "churn"), 0.0);
    // Eleven months without a payment are not churn: the contract runs until day 375.
    assert_eq!(value(&df, "c2", "count_90d"), 0.0);
    // The notice on day t is not known at t: c1's features are c2's.
    let row = |id: &str| {
        let ids = df.column("customer_id").unwrap().str().unwrap().clone();
        let i = ids.iter().position(|v| v == Some(id)).unwrap();
        let x = df.drop_many(["customer_id", "churn", "clv", "cancel_period"]);
        x.get_row(i).unwrap().0.iter().map(|v| v.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(row("c1"), row("c2"));
    assert_eq!(value(&df, "c2", "sub_days_to_renewal"), 10.0 + 365.0 - 200.0);
    assert_eq!(value(&df, "c2", "sub_noticed"), 0.0);
    // Time to churn: c1 cancels in the first month; c2's contract ends unrenewed on day 375,
    // 175 days on: in the month ending on day 180.
    assert_eq!(value(&df, "c1", "cancel_period"), 0.0);
    assert_eq!(value(&df, "c2", "cancel_period"), 5.0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Under churn = cancellation, nothing from t on (a notice given, an end reached or
    /// changed, a new period) changes who is eligible at t or any feature there.
    #[test]
    fn cancellation_features_ignore_everything_from_t_on(
        tx in arb_log(),
        subs in arb_subs(),
        t_day in 20i64..380,
        redraw in prop::collection::vec((prop::option::of(0i64..300), prop::option::of(0i64..300)), 1..8),
        later in arb_subs(),
    ) {
        let t = d("2023-01-01") + Duration::days(t_day);
        let before = cancellation_frame(&tx, &subs, t, false);
        let after = cancellation_frame(&tx, &rewrite_from(&subs, t_day, &redraw, &later), t, false);
        prop_assert!(frames_close(&before, &after).is_ok(), "features changed: {:?}", frames_close(&before, &after));
    }

    /// Under churn = cancellation the labels look only up to t + horizon: a later export that
    /// differs only from t + horizon on leaves churn unchanged.
    #[test]
    fn cancellation_labels_look_only_up_to_the_horizon(
        tx in arb_log(),
        subs in arb_subs(),
        t_day in 20i64..300,
        redraw in prop::collection::vec((prop::option::of(0i64..300), prop::option::of(0i64..300)), 1..8),
        later in arb_subs(),
    ) {
        let t = d("2023-01-01") + Duration::days(t_day);
        let labels = |s: &[Sub]| cancellation_frame(&tx, s, t, true).select(["customer_id", "churn"]).unwrap();
        let before = labels(&subs);
        let after = labels(&rewrite_after(&subs, t_day + 90, &redraw, &later));
        prop_assert!(before.equals(&after), "labels changed:\n{before}\n{after}");
    }
}
