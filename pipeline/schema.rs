//! The names every stage agrees on: the columns of the data contract and of the scores
//! table, and the one day numbering (days since 1970-01-01, the physical value of a polars
//! `Date`). See ARCHITECTURE.md, "Data contract".

use chrono::{Datelike as _, NaiveDate};

/// Customer id column (transactions, events, customer table, features, scores).
/// The scores' experiment group column (`experiment`): `treatment`, `control`, `exempt`, null.
pub const EXPERIMENT_GROUP: &str = "experiment_group";
pub const CUSTOMER: &str = "customer_id";
/// Snapshot date column of a feature frame.
pub const SNAPSHOT: &str = "snapshot";
/// Churn label: 1 when the customer has no transaction in `[t, t + horizon)`.
pub const CHURN: &str = "churn";
/// CLV label: revenue in `[t, t + horizon)`.
pub const CLV: &str = "clv";
/// Calibrated churn probability (scores table, drift item).
pub const CHURN_SCORE: &str = "churn_probability";
/// Predicted CLV over the horizon (scores table, drift item).
pub const CLV_SCORE: &str = "predicted_clv";

/// `NaiveDate::num_days_from_ce` of 1970-01-01.
const EPOCH_FROM_CE: i32 = 719_163;

/// Days since 1970-01-01.
pub fn epoch_day(d: NaiveDate) -> i32 {
    d.num_days_from_ce() - EPOCH_FROM_CE
}

/// The date of a day number ([`epoch_day`]'s inverse); `None` outside chrono's range.
pub fn date_of_day(day: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(day.checked_add(EPOCH_FROM_CE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_round_trip() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        assert_eq!(epoch_day(epoch), 0);
        let d = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
        assert_eq!(epoch_day(d), (d - epoch).num_days() as i32);
        assert_eq!(date_of_day(epoch_day(d)), Some(d));
        assert_eq!(date_of_day(-1), NaiveDate::from_ymd_opt(1969, 12, 31));
        assert_eq!(date_of_day(i32::MAX), None);
    }
}
