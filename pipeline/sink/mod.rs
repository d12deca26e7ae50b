//! Sinks: where a scoring run is written. Every sink is all-or-nothing per run and
//! idempotent per `as_of`: a rerun for the same date replaces that date's rows, and a run that
//! fails (or a process that is killed) leaves the previous run's data intact.
//!
//! - [`parquet`]: two Hive-style datasets, `<dir>/scores/run=YYYY-MM-DD/part-0.parquet` and
//!   `<dir>/top_risk/run=YYYY-MM-DD/part-0.parquet`, each written under `<dir>/.staging/` and
//!   swapped into place.
//! - [`sql`]: SQLite (embedded, `sqlite://path`) and PostgreSQL (`postgres://...`): tables
//!   `churn_scores`, `churn_top_risk`, `scoring_runs`, one transaction per run, bulk-loaded
//!   (prepared inserts in SQLite, `COPY` in PostgreSQL).
//!
//! Sinks are written in order (Parquet, then each SQL URL); the first failure stops the run
//! with exit code 5 and the sinks already written keep this run, the others the previous one.
//! Rerunning the same `as_of` brings them all level.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

pub mod history;
pub mod mlflow;
pub mod notifications;
pub mod parquet;
pub mod sql;

pub use history::History;
pub use notifications::{Delivery, DeliveryLog};
pub use parquet::{
    parquet_bytes, read_parquet, write_parquet_atomic, ScoreParquet, PARTITION_KEY, PART_FILE, STAGING_DIR,
};

/// The output sinks of a run, resolved once (`[output]`: the SQL URLs parsed and
/// `FIDELIS_PG_URL` read here, not at every write): whether the Parquet datasets are written,
/// the SQL targets in order, and their table names. Every job that writes outputs goes
/// through one of these.
#[derive(Debug, Clone)]
pub struct Sinks {
    pub parquet: bool,
    pub sql: Vec<crate::config::targets::SqlTarget>,
    pub tables: crate::config::targets::Tables,
}

impl Sinks {
    pub fn resolve(output: &crate::config::OutputConfig) -> crate::error::Result<Sinks> {
        Ok(Sinks { parquet: output.parquet, sql: output.sql_targets()?, tables: output.sql_tables() })
    }

    /// Refuse an output without any sink (what `score` and `weekly` write to).
    pub fn require_one(&self) -> crate::error::Result<()> {
        if !self.parquet && self.sql.is_empty() {
            return Err(crate::error::Error::config(
                "(config)",
                "output",
                "no sink: set parquet = true or list a SQL URL in sql",
            ));
        }
        Ok(())
    }

    /// Replace the rows of `as_of` in `parts` (table, rows, key) in every SQL sink, one
    /// transaction each, in order; the first failure stops (the sinks written keep the new
    /// rows, the others the old). Returns the sinks written (redacted URLs).
    pub fn replace_as_of(
        &self,
        parts: &[sql::DatedRows],
        as_of: NaiveDate,
        progress: &crate::progress::Progress,
    ) -> crate::error::Result<Vec<String>> {
        let mut written = Vec::new();
        for target in &self.sql {
            let shown = target.display();
            progress.step("sql", &format!("writing {shown}"), || {
                sql::replace_as_of(target, &self.tables, parts, as_of)
            })?;
            written.push(shown);
        }
        Ok(written)
    }

    /// Copy the delivery log to `notifications.parquet` and the day's rows to every SQL
    /// sink; what could not be copied, in words (the journal keeps it; the next delivery
    /// copies it again).
    pub fn copy_deliveries(&self, log: &DeliveryLog, as_of: NaiveDate) -> Vec<String> {
        let day = match log.copy(as_of) {
            Ok(day) => day,
            Err(e) => return vec![format!("the delivery log was not copied to {}: {e}", log.path.display())],
        };
        let mut errors = Vec::new();
        for target in &self.sql {
            let rows = [(self.tables.notifications.as_str(), &day, notifications::NOTIFICATIONS_KEY)];
            if let Err(e) = sql::replace_as_of(target, &self.tables, &rows, as_of) {
                errors.push(format!(
                    "the delivery log was not copied to {} ({e}); {} keeps it and the next delivery copies it",
                    target.display(),
                    log.journal.display()
                ));
            }
        }
        errors
    }
}

/// One scoring run, as recorded in `scoring_runs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRecord {
    pub as_of: NaiveDate,
    pub model_id: String,
    pub scored: i64,
    pub top_size: i64,
    pub contacted: i64,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub status: String,
}

/// The risk scores of the latest earlier run, for `score_change`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreviousRun {
    pub as_of: NaiveDate,
    pub risk_scores: HashMap<String, i32>,
}

/// Test hook: abort the process (as a kill would) at a named point when the environment
/// variable `FIDELIS_FAULT` names it. The fault tests use it to show that an interrupted
/// write leaves the previous run intact. Points: `parquet-write` (one file of a run written),
/// `sql-write` (half of the rows sent inside the open transaction).
pub fn fault_point(name: &str) {
    if std::env::var("FIDELIS_FAULT").is_ok_and(|v| v == name) {
        eprintln!("FIDELIS_FAULT={name}: aborting the process here");
        std::process::abort();
    }
}
