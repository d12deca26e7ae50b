//! Train: fit the churn classifier and the CLV regressor, and everything the choice of the
//! shipped models rests on. Pure: values in, values out (no files, no progress output); the
//! train job (`jobs::train`) runs these steps in order and writes the artifact.
//!
//! - [`Dataset`]: the feature rows of every snapshot with both labels, split by role (fit,
//!   validation, holdout; see `split`), each role a [`RoleSet`].
//! - [`gbdt`] (forust-ml behind the [`gbdt::Gbdt`] trait, flat prediction in [`forest`]),
//!   [`poisson`] (own Poisson-loss GBDT), [`linear`] (own logistic regression): the models.
//! - [`oot`]: out-of-time predictions of purged models (or cross-fitting), what candidates and
//!   the calibrator are chosen on; [`choose`]: the logistic penalty, the shipped candidates,
//!   the calibrator; [`candidates`]: the mixes and how they combine.
//! - [`baselines`]: the comparison models (linfa, smartcore, BG/NBD, last period's revenue).

pub mod baselines;
pub mod candidates;
pub mod choose;
pub mod forest;
pub mod gbdt;
pub mod hist;
pub mod linear;
pub mod oot;
pub mod poisson;
pub mod refit;
pub mod shap;
pub mod survival;
pub mod uplift;

use polars::prelude::*;

use crate::error::{Error, PolarsContext, Result};
use crate::features::FeatureMatrix;
use crate::schema::{self, CHURN, CLV, CUSTOMER, SNAPSHOT};
use crate::split::SnapshotPlan;

/// The engine behind the [`gbdt::Gbdt`] trait in this build.
pub type Engine = gbdt::AnyGbdt;

/// Rows of the dataset per role, in dataset order.
#[derive(Debug, Clone, Default)]
pub struct Split {
    pub fit: Vec<usize>,
    pub validation: Vec<usize>,
    pub holdout: Vec<usize>,
}

/// Feature rows of one role with both labels.
pub struct RoleSet {
    pub x: FeatureMatrix,
    pub churn: Vec<f64>,
    pub clv: Vec<f64>,
}

/// The training rows: features and labels of every eligible customer at every snapshot, in
/// (snapshot, customer) order, and which rows play which role.
pub struct Dataset {
    /// The feature frame (customer id, snapshot, features, labels).
    pub frame: DataFrame,
    pub x: FeatureMatrix,
    pub churn: Vec<f64>,
    pub clv: Vec<f64>,
    /// Snapshot of each row, as days since 1970-01-01.
    pub days: Vec<i32>,
    pub rows: Split,
}

impl Dataset {
    /// The dataset of `frame` with the feature columns `names`, split by `plan`. Every role
    /// must have rows.
    pub fn new(frame: DataFrame, names: &[String], plan: &SnapshotPlan) -> Result<Dataset> {
        let x = FeatureMatrix::from_frame(&frame, names)?;
        let churn = crate::features::column_f64(&frame, CHURN)?;
        let clv = crate::features::column_f64(&frame, CLV)?;
        let days = snapshot_days(&frame)?;
        let rows = split_rows(&days, plan);
        for (what, idx) in [("fit", &rows.fit), ("validation", &rows.validation), ("holdout", &rows.holdout)]
        {
            if idx.is_empty() {
                return Err(Error::Data(format!("no eligible customers at the {what} snapshot(s)")));
            }
        }
        let first = churn[rows.fit[0]];
        if rows.fit.iter().all(|&i| churn[i] == first) {
            return Err(Error::Data(format!(
                "every training label is {first} (all {} fit rows {}): there is nothing to learn; the \
                 log needs customers who stay and customers who leave within the horizon",
                rows.fit.len(),
                if first > 0.5 { "churned" } else { "stayed" },
            )));
        }
        Ok(Dataset { frame, x, churn, clv, days, rows })
    }

    /// The rows `idx` as a role set.
    pub fn role(&self, idx: &[usize]) -> RoleSet {
        RoleSet { x: self.x.select_rows(idx), churn: pick(&self.churn, idx), clv: pick(&self.clv, idx) }
    }

    /// A stable hash of each row's customer id (folds by customer).
    pub fn customer_hashes(&self) -> Result<Vec<u64>> {
        let ids = self.frame.column(CUSTOMER).polars("customer column")?.str().polars("customer ids")?;
        Ok(ids.iter().map(|v| xxhash_rust::xxh3::xxh3_64(v.unwrap_or("").as_bytes())).collect())
    }

    /// Each row's role, for `--export-features`.
    pub fn roles(&self) -> Vec<&'static str> {
        let mut role = vec!["fit"; self.frame.height()];
        for &i in &self.rows.validation {
            role[i] = "validation";
        }
        for &i in &self.rows.holdout {
            role[i] = "holdout";
        }
        role
    }
}

fn snapshot_days(df: &DataFrame) -> Result<Vec<i32>> {
    let c =
        df.column(SNAPSHOT).polars("snapshot column")?.cast(&DataType::Int32).polars("snapshot as days")?;
    Ok(c.i32().polars("snapshot days")?.into_no_null_iter().collect())
}

fn split_rows(days: &[i32], plan: &SnapshotPlan) -> Split {
    let v = schema::epoch_day(plan.validation);
    let h = schema::epoch_day(plan.holdout);
    let mut s = Split::default();
    for (i, &d) in days.iter().enumerate() {
        if d == v {
            s.validation.push(i);
        } else if d == h {
            s.holdout.push(i);
        } else {
            s.fit.push(i);
        }
    }
    s
}

/// The values of `v` at `idx`.
pub fn pick(v: &[f64], idx: &[usize]) -> Vec<f64> {
    idx.iter().map(|&i| v[i]).collect()
}

/// Mean absolute value of each of the first `cols` columns of a row-major matrix with
/// `cols + 1` columns (contributions plus bias).
pub fn mean_abs_columns(m: &[f64], cols: usize) -> Vec<f64> {
    let rows = m.len() / (cols + 1);
    let mut sum = vec![0.0; cols];
    for row in m.chunks_exact(cols + 1) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v.abs();
        }
    }
    sum.into_iter().map(|s| if rows > 0 { s / rows as f64 } else { 0.0 }).collect()
}
