//! Jobs: the top layer. Each command of the CLI (and of the Python package) is one job here,
//! which runs the stages below it in order, holds the output lock while it writes, reports
//! progress, and returns an outcome whose `Display` is what the CLI prints. Nothing below
//! this layer takes the lock or shows progress (see ARCHITECTURE.md).

pub mod backtest;
pub mod evaluate;
pub mod generate;
pub mod monitor;
pub mod notify;
pub mod remote;
pub mod report;
pub mod score;
pub mod train;
pub mod uplift;
pub mod validate;

use std::path::Path;

use chrono::NaiveDate;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::features::{self, Daily};
use crate::files;
use crate::ingest::{self, ValidationSummary};
use crate::lock::RunLock;
use crate::model::{self, LoadedModel};
use crate::progress::Progress;
use crate::signals::SignalData;
use crate::sink::{ScoreParquet, Sinks};

/// What a batch command (`score`, `weekly`, `monitor`) is asked for.
#[derive(Debug, Clone, Default)]
pub struct BatchOptions {
    /// Default: the day after the last transaction.
    pub as_of: Option<NaiveDate>,
    /// Model id; default: the one `models/latest` names.
    pub model: Option<String>,
    /// Print the alerts and CRM batches that would be delivered instead of sending them.
    pub dry_run: bool,
}

impl BatchOptions {
    /// The date to run at: `as_of`, or the day after the last transaction. Either must be a
    /// plausible calendar date (1900-01-01 to 9999-12-31), so that partitions and SQL dates
    /// stay readable by every tool.
    pub fn as_of(&self, data_end: NaiveDate) -> Result<NaiveDate> {
        let d = self.as_of.unwrap_or(data_end);
        let (lo, hi) = (
            NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN),
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap_or(NaiveDate::MAX),
        );
        if d < lo || d > hi {
            return Err(Error::Data(format!("as_of {d} is outside 1900-01-01 .. 9999-12-31")));
        }
        Ok(d)
    }
}

/// What a batch command works on: the model and the validated inputs, the transactions
/// reduced to one row per customer and active day (all that features, outcome windows and
/// KPIs read; the raw rows are let go, which is most of the memory).
pub struct Loaded {
    pub model: LoadedModel,
    pub daily: Daily,
    /// What ingest read, kept and dropped.
    pub validation: ValidationSummary,
    /// Events and the customer table, when configured.
    pub signals: SignalData,
    /// The day after the last transaction (the default `as_of`).
    pub data_end: NaiveDate,
}

impl Loaded {
    /// Read and validate the inputs of `cfg` for `model`.
    pub fn read(cfg: &Config, model: LoadedModel, progress: &Progress) -> Result<Loaded> {
        let tx = progress.step("ingest", "reading and validating transactions", || {
            ingest::load_transactions(&cfg.input.transactions, cfg.input.sql_batch_rows)
        })?;
        let data_end = tx.data_end()?;
        let daily = progress.step("daily", "aggregating transactions per customer and day", || {
            features::daily_activity(&tx.frame)
        })?;
        let signals = progress.step("signals", "reading events and customers", || SignalData::load(cfg))?;
        Ok(Loaded { model, daily, validation: tx.summary, signals, data_end })
    }

    /// The subscription table when the model's churn is a cancellation (outcomes follow it).
    pub fn churn_subscriptions(&self) -> Option<&crate::activity::Subscriptions> {
        self.signals.churn_subscriptions(&self.model.info.feature_spec)
    }
}

/// What a scheduled command holds while it runs: the output lock, the output sinks
/// (resolved once per run), the model, the inputs.
pub struct Session {
    /// Held until [`Session::release_output`] (or the end of the run).
    lock: Option<RunLock>,
    pub sinks: Sinks,
    loaded: Loaded,
}

impl Session {
    /// Take the output lock, load the model (`latest` unless `model`) and read and validate
    /// the inputs; `sinks` are the run's outputs ([`Sinks::resolve`], before anything is read).
    pub fn open(cfg: &Config, sinks: Sinks, model: Option<&str>, progress: &Progress) -> Result<Session> {
        let lock = open_output(cfg)?;
        let model = model::load(&cfg.models_dir(), model)?;
        Ok(Session { lock: Some(lock), sinks, loaded: Loaded::read(cfg, model, progress)? })
    }

    /// Release the output lock once everything the run writes to the output is written:
    /// delivery, which may wait on slow receivers, runs under the delivery lock only.
    pub fn release_output(&mut self) {
        self.lock = None;
    }
}

impl std::ops::Deref for Session {
    type Target = Loaded;

    fn deref(&self) -> &Loaded {
        &self.loaded
    }
}

/// Take the output lock, then put right what an interrupted run left: a score partition set
/// aside but not replaced is restored, temporary files of dead runs are removed (in the
/// output and reports directories).
pub fn open_output(cfg: &Config) -> Result<RunLock> {
    let out = Path::new(&cfg.output.dir);
    let lock = RunLock::acquire(out)?;
    ScoreParquet::new(out).recover()?;
    files::remove_stale_temps(out)?;
    files::remove_stale_temps(&cfg.reports_dir())?;
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_must_be_a_plausible_calendar_date() {
        let end = NaiveDate::from_ymd_opt(2024, 12, 31).unwrap();
        let opts = |d: Option<NaiveDate>| BatchOptions { as_of: d, model: None, dry_run: false };
        assert_eq!(opts(None).as_of(end).unwrap(), end);
        let far = NaiveDate::from_ymd_opt(10_000, 1, 1).unwrap();
        let err = opts(Some(far)).as_of(end).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("outside 1900-01-01 .. 9999-12-31"), "{err}");
        assert!(opts(None).as_of(far).is_err(), "a data end beyond 9999 is refused too");
        assert!(opts(Some(NaiveDate::from_ymd_opt(1899, 12, 31).unwrap())).as_of(end).is_err());
    }
}
