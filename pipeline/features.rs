//! Features and labels, point-in-time correct.
//!
//! Transactions are first reduced to one row per customer and active day (`daily`): the
//! number of transactions, their amount, how many were negative, and the gap in days to the
//! customer's previous active day (which depends only on earlier days). For each snapshot `t`
//! the features aggregate the daily rows with `day < t` only; the labels aggregate the rows
//! with `t <= day < t + horizon` only. All snapshots form one polars plan (a union of
//! per-snapshot group-bys that polars runs in parallel), not a loop over customers.
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
//!
//! Eligible at `t`: at least one transaction in `[t - eligibility_days, t)`.
//! Labels: `churn` = 1 when there is no transaction (of any amount) in `[t, t + horizon)`;
//! `clv` = sum of amounts in `[t, t + horizon)` (`clv_90` with the default horizon), 0 if none.

use chrono::NaiveDate;
use polars::prelude::*;

use crate::config::Config;
use crate::error::{Error, PolarsContext, Result};

pub const CUSTOMER: &str = "customer_id";
pub const SNAPSHOT: &str = "snapshot";
pub const CHURN: &str = "churn";
pub const CLV: &str = "clv";

const DAY: &str = "day";
const SNAP_DAY: &str = "__snapshot_day";

/// The feature definitions that vary with configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSpec {
    pub windows: Vec<i32>,
    pub trend_days: i32,
    pub spend_short_days: i32,
    pub spend_long_days: i32,
    pub eligibility_days: i32,
    pub horizon_days: i32,
}

impl FeatureSpec {
    pub fn from_config(cfg: &Config) -> Self {
        FeatureSpec {
            windows: cfg.features.windows.clone(),
            trend_days: cfg.features.trend_days,
            spend_short_days: cfg.features.spend_short_days,
            spend_long_days: cfg.features.spend_long_days,
            eligibility_days: cfg.snapshots.eligibility_days,
            horizon_days: cfg.snapshots.horizon_days,
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
        v
    }
}

/// Days since 1970-01-01 (the physical value of a polars `Date`).
pub fn epoch_day(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date")).num_days() as i32
}

/// One row per (customer, active day): `n_tx`, `amount`, `n_neg`, `gap` (days since the
/// customer's previous active day; null on the first), sorted by customer and day. Input:
/// the ingest contract frame (rows with a null id or timestamp are skipped).
///
/// One linear pass over the rows in (customer, ts) order, which is how `ingest` leaves them
/// (other frames are sorted first): no hashing of 30 million string keys.
pub fn daily_activity(tx: &DataFrame) -> Result<DataFrame> {
    let ctx = "aggregating transactions per customer and day";
    let ms_type = DataType::Datetime(TimeUnit::Milliseconds, None);
    let ts_of = |df: &DataFrame| -> Result<Int64Chunked> {
        let c = df.column("ts").polars(ctx)?.cast(&ms_type).polars(ctx)?;
        Ok(c.datetime().polars(ctx)?.physical().clone())
    };
    let in_order = {
        let ids = tx.column(CUSTOMER).polars(ctx)?.str().polars(ctx)?;
        let ts = ts_of(tx)?;
        let mut prev: Option<(&str, i64)> = None;
        let mut ok = true;
        for (id, t) in ids.iter().zip(ts.iter()) {
            if let (Some(id), Some(t)) = (id, t) {
                if prev.is_some_and(|(pid, pt)| (pid, pt) > (id, t)) {
                    ok = false;
                    break;
                }
                prev = Some((id, t));
            }
        }
        ok
    };
    let sorted;
    let tx = if in_order {
        tx
    } else {
        sorted = tx
            .clone()
            .lazy()
            .sort([CUSTOMER, "ts"], SortMultipleOptions::default().with_maintain_order(true))
            .collect()
            .polars(ctx)?;
        &sorted
    };
    let ids = tx.column(CUSTOMER).polars(ctx)?.str().polars(ctx)?;
    let ts = ts_of(tx)?;
    let amount = tx.column("amount").polars(ctx)?.cast(&DataType::Float64).polars(ctx)?;
    let amount = amount.f64().polars(ctx)?;

    let mut cust: Vec<&str> = Vec::new();
    let (mut days, mut n_tx, mut sum, mut n_neg) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut gap: Vec<Option<f64>> = Vec::new();
    for ((id, t), a) in ids.iter().zip(ts.iter()).zip(amount.iter()) {
        let (Some(id), Some(t)) = (id, t) else { continue };
        let a = a.unwrap_or(0.0);
        let day = t.div_euclid(86_400_000) as i32;
        let last = days.len().wrapping_sub(1);
        if !days.is_empty() && cust[last] == id && days[last] == day {
            n_tx[last] += 1.0;
            sum[last] += a;
            n_neg[last] += f64::from(u8::from(a < 0.0));
            continue;
        }
        let same_customer = !days.is_empty() && cust[last] == id;
        gap.push(same_customer.then(|| f64::from(day - days[last])));
        cust.push(id);
        days.push(day);
        n_tx.push(1.0);
        sum.push(a);
        n_neg.push(f64::from(u8::from(a < 0.0)));
    }
    DataFrame::new_infer_height(vec![
        Column::new(CUSTOMER.into(), cust),
        Column::new(DAY.into(), days),
        Column::new("n_tx".into(), n_tx),
        Column::new("amount".into(), sum),
        Column::new("n_neg".into(), n_neg),
        Column::new("gap".into(), gap),
    ])
    .polars(ctx)
}

fn sum_if(cond: Expr, value: &str) -> Expr {
    when(cond).then(col(value)).otherwise(lit(0.0)).sum()
}

fn safe_div(num: Expr, den: Expr, default: f64) -> Expr {
    when(den.clone().gt(lit(0.0))).then(num / den).otherwise(lit(default))
}

/// The per-snapshot feature plan: aggregates of daily rows strictly before `t`.
fn features_plan(daily: &DataFrame, spec: &FeatureSpec, t: NaiveDate) -> LazyFrame {
    let td = epoch_day(t);
    let day = || col(DAY);
    let since = |w: i32| day().gt_eq(lit(td - w));
    let mut aggs = Vec::new();
    for &w in &spec.windows {
        aggs.push(sum_if(since(w), "n_tx").alias(format!("count_{w}d")));
        aggs.push(sum_if(since(w), "amount").alias(format!("amount_{w}d")));
        aggs.push(since(w).cast(DataType::Float64).sum().alias(format!("active_days_{w}d")));
    }
    let d = spec.trend_days;
    aggs.push(sum_if(since(d), "n_tx").alias("__trend_recent"));
    aggs.push(sum_if(since(2 * d).and(day().lt(lit(td - d))), "n_tx").alias("__trend_prior"));
    aggs.push(sum_if(since(spec.spend_short_days), "amount").alias("__spend_short"));
    aggs.push(sum_if(since(spec.spend_long_days), "amount").alias("__spend_long"));
    aggs.push(sum_if(since(spec.eligibility_days), "n_tx").alias("__eligible"));
    aggs.push(
        sum_if(since(spec.eligibility_days), "n_neg").alias(format!("refunds_{}d", spec.eligibility_days)),
    );
    aggs.extend([
        col("n_tx").sum().alias("count_life"),
        col("amount").sum().alias("amount_life"),
        len().cast(DataType::Float64).alias("active_days_life"),
        day().min().alias("__first_day"),
        day().max().alias("__last_day"),
        col("gap").sum().alias("__gap_sum"),
        (col("gap") * col("gap")).sum().alias("__gap_sq"),
        col("gap").count().cast(DataType::Float64).alias("__n_gaps"),
    ]);

    let mut derived = vec![
        (lit(td) - col("__last_day")).cast(DataType::Float64).alias("recency_days"),
        (lit(td) - col("__first_day")).cast(DataType::Float64).alias("tenure_days"),
        safe_div(col("amount_life"), col("count_life"), 0.0).alias("mean_amount_life"),
        (col("__trend_recent") / (col("__trend_prior") + lit(1.0))).alias("trend_ratio"),
        safe_div(col("__gap_sum"), col("__n_gaps"), -1.0).alias("gap_mean_days"),
        safe_div(
            col("__spend_short"),
            col("__spend_long") * lit(spec.spend_short_days as f64 / spec.spend_long_days as f64),
            0.0,
        )
        .alias("spend_ratio"),
    ];
    for &w in &spec.windows {
        derived.push(
            safe_div(col(format!("amount_{w}d")), col(format!("count_{w}d")), 0.0)
                .alias(format!("mean_amount_{w}d")),
        );
    }
    let has_gaps = || col("__n_gaps").gt(lit(0.0));
    let variance = col("__gap_sq") / col("__n_gaps") - col("gap_mean_days") * col("gap_mean_days");
    let second = vec![
        when(has_gaps())
            .then(when(variance.clone().gt(lit(0.0))).then(variance.sqrt()).otherwise(lit(0.0)))
            .otherwise(lit(-1.0))
            .alias("gap_std_days"),
        when(has_gaps())
            .then(col("recency_days") / col("gap_mean_days"))
            .otherwise(lit(-1.0))
            .alias("recency_over_gap"),
    ];

    let mut out = vec![col(CUSTOMER), lit(td).alias(SNAP_DAY)];
    out.extend(spec.names().into_iter().map(col));
    daily
        .clone()
        .lazy()
        .filter(day().lt(lit(td)))
        .group_by([col(CUSTOMER)])
        .agg(aggs)
        .filter(col("__eligible").gt(lit(0.0)))
        .with_columns(derived)
        .with_columns(second)
        .select(out)
}

/// The label plan: aggregates of daily rows in `[t, t + horizon)`.
fn labels_plan(daily: &DataFrame, horizon_days: i32, t: NaiveDate) -> LazyFrame {
    let td = epoch_day(t);
    daily
        .clone()
        .lazy()
        .filter(col(DAY).gt_eq(lit(td)).and(col(DAY).lt(lit(td + horizon_days))))
        .group_by([col(CUSTOMER)])
        .agg([col("amount").sum().alias(CLV), col("n_tx").sum().alias("__future_tx")])
        .with_column(lit(td).alias(SNAP_DAY))
}

fn union(plans: Vec<LazyFrame>) -> Result<LazyFrame> {
    concat(plans, UnionArgs::default()).polars("combining snapshots")
}

fn finish(lf: LazyFrame) -> Result<DataFrame> {
    lf.sort([SNAP_DAY, CUSTOMER], SortMultipleOptions::default())
        .with_column(col(SNAP_DAY).cast(DataType::Date).alias(SNAPSHOT))
        .drop(by_name([SNAP_DAY], true, false))
        .collect()
        .polars("building features")
}

/// The union of the per-snapshot feature plans (one polars plan for the whole grid).
fn features_union(daily: &DataFrame, spec: &FeatureSpec, snapshots: &[NaiveDate]) -> Result<LazyFrame> {
    if snapshots.is_empty() {
        return Err(Error::Data("no snapshot dates to build features for".into()));
    }
    union(snapshots.iter().map(|&t| features_plan(daily, spec, t)).collect())
}

/// Features of every eligible customer at each snapshot: `customer_id`, `snapshot` (Date),
/// then [`FeatureSpec::names`]. Sorted by snapshot, then customer.
pub fn features_at(daily: &DataFrame, spec: &FeatureSpec, snapshots: &[NaiveDate]) -> Result<DataFrame> {
    finish(features_union(daily, spec, snapshots)?)
}

/// Features and labels (`churn`: 0/1 as Int32, `clv`: f64) of every eligible customer at each
/// snapshot. Every snapshot needs `horizon_days` of observed data after it.
pub fn dataset_at(daily: &DataFrame, spec: &FeatureSpec, snapshots: &[NaiveDate]) -> Result<DataFrame> {
    let features = features_union(daily, spec, snapshots)?;
    let labels = union(snapshots.iter().map(|&t| labels_plan(daily, spec.horizon_days, t)).collect())?;
    let joined = features
        .join(
            labels,
            [col(CUSTOMER), col(SNAP_DAY)],
            [col(CUSTOMER), col(SNAP_DAY)],
            JoinArgs::new(JoinType::Left),
        )
        .with_columns([
            col("__future_tx").is_null().cast(DataType::Int32).alias(CHURN),
            col(CLV).fill_null(lit(0.0)),
        ])
        .drop(by_name(["__future_tx"], true, false));
    finish(joined)
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
