//! The delivery log: `<output.dir>/notifications.parquet` (and the SQL table `notifications`),
//! one row per delivery attempt of a message: as_of, rule, channel, target, status, attempts,
//! error. A message whose (as_of, rule, channel, target) has a `sent` row is never sent again,
//! so a rerun of the same `as_of` delivers only what is still missing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use polars::prelude::*;

use crate::error::{PolarsContext, Result};
use crate::schema;

pub const NOTIFICATIONS_FILE: &str = "notifications.parquet";
/// The key of a message: a `sent` row with it means "delivered".
pub const NOTIFICATIONS_KEY: &[&str] = &["as_of", "rule", "channel", "target", "logged_at"];

/// One delivery of one message (after its retries).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub as_of: NaiveDate,
    pub rule: String,
    pub channel: String,
    /// Channel name (Slack, webhook), an email address, or a CRM batch (`batch 2/7`).
    pub target: String,
    /// Accounts (or CRM records) in the message.
    pub items: i64,
    /// `sent` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub error: Option<String>,
    pub logged_at: DateTime<Utc>,
}

impl Delivery {
    pub fn key(&self) -> (String, String, String) {
        (self.rule.clone(), self.channel.clone(), self.target.clone())
    }

    pub fn sent(&self) -> bool {
        self.status == "sent"
    }
}

/// `<output.dir>/notifications.parquet`.
pub struct DeliveryLog {
    pub path: PathBuf,
}

impl DeliveryLog {
    pub fn new(output_dir: &Path) -> DeliveryLog {
        DeliveryLog { path: output_dir.join(NOTIFICATIONS_FILE) }
    }

    /// Every row so far (none when there is no log yet).
    pub fn read(&self) -> Result<Vec<Delivery>> {
        if !self.path.is_file() {
            return Ok(Vec::new());
        }
        let df = super::read_parquet(&self.path)?;
        from_frame(&df, &format!("reading {}", self.path.display()))
    }

    /// The (rule, channel, target) already delivered for `as_of`.
    pub fn delivered(&self, as_of: NaiveDate) -> Result<HashSet<(String, String, String)>> {
        Ok(self.read()?.into_iter().filter(|d| d.as_of == as_of && d.sent()).map(|d| d.key()).collect())
    }

    /// Append `rows` (the whole file is rewritten to a temp file and renamed). Returns the
    /// rows of `as_of` after the append, for the SQL mirror.
    pub fn append(&self, as_of: NaiveDate, rows: &[Delivery]) -> Result<DataFrame> {
        let mut all = self.read()?;
        all.extend(rows.iter().cloned());
        let mut df = to_frame(&all)?;
        super::write_parquet_atomic(&mut df, &self.path)?;
        let of_day: Vec<Delivery> = all.into_iter().filter(|d| d.as_of == as_of).collect();
        to_frame(&of_day)
    }
}

/// The log rows as a frame (the layout of the file and the SQL table).
pub fn to_frame(rows: &[Delivery]) -> Result<DataFrame> {
    let s = |f: fn(&Delivery) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let as_of =
        Column::new("as_of".into(), rows.iter().map(|d| schema::epoch_day(d.as_of)).collect::<Vec<_>>())
            .cast(&DataType::Date)
            .polars("log dates")?;
    let logged: Vec<String> =
        rows.iter().map(|d| d.logged_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)).collect();
    DataFrame::new(
        rows.len(),
        vec![
            as_of,
            Column::new("rule".into(), s(|d| &d.rule)),
            Column::new("channel".into(), s(|d| &d.channel)),
            Column::new("target".into(), s(|d| &d.target)),
            Column::new("items".into(), rows.iter().map(|d| d.items).collect::<Vec<_>>()),
            Column::new("status".into(), s(|d| &d.status)),
            Column::new("attempts".into(), rows.iter().map(|d| d.attempts).collect::<Vec<_>>()),
            Column::new("error".into(), rows.iter().map(|d| d.error.as_deref()).collect::<Vec<_>>()),
            Column::new("logged_at".into(), logged),
        ],
    )
    .polars("the delivery log")
}

fn from_frame(df: &DataFrame, ctx: &str) -> Result<Vec<Delivery>> {
    let text = |name: &str| -> Result<Vec<Option<String>>> {
        let c = df.column(name).polars(ctx)?.cast(&DataType::String).polars(ctx)?;
        Ok(c.str().polars(ctx)?.iter().map(|v| v.map(str::to_string)).collect())
    };
    let int = |name: &str| -> Result<Vec<Option<i64>>> {
        let c = df.column(name).polars(ctx)?.cast(&DataType::Int64).polars(ctx)?;
        Ok(c.i64().polars(ctx)?.iter().collect())
    };
    let (rule, channel, target, status, error) =
        (text("rule")?, text("channel")?, text("target")?, text("status")?, text("error")?);
    let (items, attempts) = (int("items")?, int("attempts")?);
    let days = df.column("as_of").polars(ctx)?.cast(&DataType::Int32).polars(ctx)?;
    let days: Vec<Option<i32>> = days.i32().polars(ctx)?.iter().collect();
    let at = text("logged_at")?;
    let mut out = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        out.push(Delivery {
            as_of: schema::date_of_day(days[i].unwrap_or_default()).unwrap_or_default(),
            rule: rule[i].clone().unwrap_or_default(),
            channel: channel[i].clone().unwrap_or_default(),
            target: target[i].clone().unwrap_or_default(),
            items: items[i].unwrap_or_default(),
            status: status[i].clone().unwrap_or_default(),
            attempts: attempts[i].unwrap_or_default() as i32,
            error: error[i].clone(),
            logged_at: at[i]
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, status: &str, day: u32) -> Delivery {
        Delivery {
            as_of: NaiveDate::from_ymd_opt(2024, 12, day).unwrap(),
            rule: "r".into(),
            channel: "c".into(),
            target: target.into(),
            items: 3,
            status: status.into(),
            attempts: 2,
            error: (status == "failed").then(|| "HTTP 500".to_string()),
            logged_at: DateTime::from_timestamp(1_735_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn the_log_round_trips_and_only_sent_rows_count_as_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let log = DeliveryLog::new(dir.path());
        assert!(log.read().unwrap().is_empty());
        let rows = [row("a", "sent", 17), row("b", "failed", 17), row("a", "sent", 24)];
        let day = log.append(rows[0].as_of, &rows).unwrap();
        assert_eq!(day.height(), 2);
        assert_eq!(log.read().unwrap(), rows.to_vec());
        let delivered = log.delivered(rows[0].as_of).unwrap();
        assert_eq!(delivered.len(), 1);
        assert!(delivered.contains(&("r".into(), "c".into(), "a".into())));
    }
}
