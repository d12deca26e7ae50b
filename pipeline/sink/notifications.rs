//! The delivery log, one row per delivery attempt of a message: as_of, rule, channel, target,
//! what the message carried (`content`, a hash), status, attempts, error.
//!
//! - `<output.dir>/notifications.journal` is written **as each delivery happens**: one JSON
//!   line per message, appended and synced before the next message goes out, so a run killed
//!   during delivery (or one whose later steps fail) leaves every confirmed delivery on disk
//!   and a rerun sends only what was not confirmed.
//! - `<output.dir>/notifications.parquet` (and the SQL table `notifications`) are copies made
//!   from it at the end of delivery, for reading.
//!
//! Both files are read, and a row in either counts: deleting the Parquet copy (or the journal)
//! resends nothing. A message is "delivered" when a `sent` row has its (as_of, rule, channel,
//! target) **and its content hash**: a rerun whose message says the same thing sends nothing,
//! one whose content changed (more alerts, a changed segment) sends the new message. Rows
//! written before content hashes (empty `content`) match any content.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, PolarsContext, Result};
use crate::schema;

pub const NOTIFICATIONS_FILE: &str = "notifications.parquet";
pub const JOURNAL_FILE: &str = "notifications.journal";
/// The key of a log row in the SQL copy.
pub const NOTIFICATIONS_KEY: &[&str] = &["as_of", "rule", "channel", "target", "logged_at"];

/// One delivery of one message (after its retries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub as_of: NaiveDate,
    pub rule: String,
    pub channel: String,
    /// Channel name (Slack, webhook), an email address, or a CRM batch (`batch 2/7`).
    pub target: String,
    /// A hash of what the message carried (empty in rows written before it was recorded).
    #[serde(default)]
    pub content: String,
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

    /// What tells one row from another in both files (the Parquet copy keeps microseconds).
    fn identity(&self) -> (NaiveDate, &str, &str, &str, &str, i64) {
        (self.as_of, &self.rule, &self.channel, &self.target, &self.status, self.logged_at.timestamp_micros())
    }
}

/// What the log says was delivered for one as_of.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    sent: HashSet<(String, String, String, String)>,
    /// Rows without a content hash (older logs): delivered whatever the content.
    legacy: HashSet<(String, String, String)>,
}

impl Delivered {
    /// Whether a message to (rule, channel, target) with this content was delivered.
    pub fn contains(&self, rule: &str, channel: &str, target: &str, content: &str) -> bool {
        let key = (rule.to_string(), channel.to_string(), target.to_string());
        self.legacy.contains(&key) || self.sent.contains(&(key.0, key.1, key.2, content.to_string()))
    }

    pub fn len(&self) -> usize {
        self.sent.len() + self.legacy.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `<output.dir>/notifications.journal` and its Parquet copy.
pub struct DeliveryLog {
    /// The Parquet copy.
    pub path: PathBuf,
    pub journal: PathBuf,
}

impl DeliveryLog {
    pub fn new(output_dir: &Path) -> DeliveryLog {
        DeliveryLog { path: output_dir.join(NOTIFICATIONS_FILE), journal: output_dir.join(JOURNAL_FILE) }
    }

    fn read_journal(&self) -> Result<Vec<Delivery>> {
        let text = match std::fs::read_to_string(&self.journal) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.journal, e)),
        };
        let lines: Vec<&str> = text.split('\n').collect();
        let mut out = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Delivery>(line) {
                Ok(d) => out.push(d),
                // The last line of a journal whose writer was killed mid-append: that
                // delivery was never confirmed.
                Err(_) if i + 1 == lines.len() => {
                    log::warn!("{}: ignoring an incomplete last line", self.journal.display())
                }
                Err(e) => {
                    return Err(Error::Artifact {
                        path: self.journal.clone(),
                        message: format!("line {}: not a delivery record ({e})", i + 1),
                    })
                }
            }
        }
        Ok(out)
    }

    fn read_copy(&self) -> Result<Vec<Delivery>> {
        match std::fs::metadata(&self.path) {
            Err(_) => return Ok(Vec::new()),
            Ok(m) if m.len() == 0 => {
                log::warn!("{} is empty; the journal is read instead", self.path.display());
                return Ok(Vec::new());
            }
            Ok(_) => {}
        }
        let df = super::read_parquet(&self.path)?;
        from_frame(&df, &format!("reading {}", self.path.display()))
    }

    /// Every row so far, journal first, then rows only the Parquet copy has (none when there is
    /// no log yet).
    pub fn read(&self) -> Result<Vec<Delivery>> {
        let mut all = self.read_journal()?;
        let seen: HashSet<_> = all
            .iter()
            .map(|d| {
                let (a, r, c, t, s, l) = d.identity();
                (a, r.to_string(), c.to_string(), t.to_string(), s.to_string(), l)
            })
            .collect();
        for d in self.read_copy()? {
            let (a, r, c, t, s, l) = d.identity();
            if !seen.contains(&(a, r.to_string(), c.to_string(), t.to_string(), s.to_string(), l)) {
                all.push(d);
            }
        }
        all.sort_by_key(|d| d.logged_at);
        Ok(all)
    }

    /// What was delivered for `as_of`.
    pub fn delivered(&self, as_of: NaiveDate) -> Result<Delivered> {
        let mut out = Delivered::default();
        for d in self.read()?.into_iter().filter(|d| d.as_of == as_of && d.sent()) {
            if d.content.is_empty() {
                out.legacy.insert(d.key());
            } else {
                out.sent.insert((d.rule, d.channel, d.target, d.content));
            }
        }
        Ok(out)
    }

    /// Append one row to the journal and sync it, before anything else is sent.
    pub fn journal(&self, row: &Delivery) -> Result<()> {
        let mut line = serde_json::to_vec(row)
            .map_err(|e| Error::Json { context: "a delivery record".into(), source: e })?;
        line.push(b'\n');
        let new = !self.journal.exists();
        let written =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.journal).and_then(|mut f| {
                f.write_all(&line)?;
                f.sync_data()
            });
        written.map_err(|e| Error::output(&self.journal, e))?;
        if new {
            crate::files::sync_parent(&self.journal);
        }
        Ok(())
    }

    /// Rewrite the Parquet copy from every row (journal and old copy). Returns the rows of
    /// `as_of`, for the SQL copy.
    pub fn copy(&self, as_of: NaiveDate) -> Result<DataFrame> {
        let all = self.read()?;
        let mut df = to_frame(&all)?;
        super::write_parquet_atomic(&mut df, &self.path)?;
        let of_day: Vec<Delivery> = all.into_iter().filter(|d| d.as_of == as_of).collect();
        to_frame(&of_day)
    }

    /// Journal `rows` and rewrite the copy (tests and tools; delivery journals row by row).
    pub fn append(&self, as_of: NaiveDate, rows: &[Delivery]) -> Result<DataFrame> {
        for r in rows {
            self.journal(r)?;
        }
        self.copy(as_of)
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
            Column::new("content".into(), s(|d| &d.content)),
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
    // Logs written before content hashes have no `content` column.
    let content = if df.column("content").is_ok() { text("content")? } else { vec![None; df.height()] };
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
            content: content[i].clone().unwrap_or_default(),
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
            content: format!("h-{target}"),
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
        assert!(delivered.contains("r", "c", "a", "h-a"));
        assert!(!delivered.contains("r", "c", "a", "other content"), "changed content is not delivered");
    }

    #[test]
    fn the_journal_alone_or_the_copy_alone_still_knows_what_was_sent() {
        let dir = tempfile::tempdir().unwrap();
        let log = DeliveryLog::new(dir.path());
        let rows = [row("a", "sent", 17), row("b", "sent", 17)];
        log.append(rows[0].as_of, &rows).unwrap();
        // The Parquet copy deleted: the journal knows.
        std::fs::remove_file(&log.path).unwrap();
        assert_eq!(log.delivered(rows[0].as_of).unwrap().len(), 2);
        // An incomplete last line (a writer killed mid-append) is ignored.
        let mut f = std::fs::OpenOptions::new().append(true).open(&log.journal).unwrap();
        f.write_all(b"{\"as_of\":\"2024-12-17\",\"ru").unwrap();
        assert_eq!(log.read().unwrap(), rows.to_vec());
        // The journal deleted, the copy kept: the copy knows.
        log.copy(rows[0].as_of).unwrap();
        std::fs::remove_file(&log.journal).unwrap();
        assert_eq!(log.delivered(rows[0].as_of).unwrap().len(), 2);
        // Both present after a rewrite: no row twice.
        log.journal(&row("c", "sent", 17)).unwrap();
        assert_eq!(log.read().unwrap().len(), 3);
        // A damaged line in the middle is an error naming the line.
        std::fs::write(&log.journal, "garbage\n{}\n").unwrap();
        let err = log.read().unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn rows_without_a_content_hash_match_any_content() {
        let dir = tempfile::tempdir().unwrap();
        let log = DeliveryLog::new(dir.path());
        let mut old = row("a", "sent", 17);
        old.content.clear();
        log.append(old.as_of, &[old.clone()]).unwrap();
        assert!(log.delivered(old.as_of).unwrap().contains("r", "c", "a", "anything"));
    }
}
