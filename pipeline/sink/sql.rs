//! SQL sinks: SQLite (embedded, the default) and PostgreSQL.
//!
//! Tables (names configurable in `[output.tables]`, validated as plain identifiers and always
//! quoted):
//!
//! - `churn_scores`, `churn_top_risk`: the columns of the scoring frame, primary key
//!   `(as_of, customer_id)`. Created when missing; columns a newer fidelis adds are added with
//!   `ALTER TABLE ... ADD COLUMN`.
//! - `scoring_runs`: one row per `as_of` (`model_id`, `scored`, `top_size`, `contacted`,
//!   `started`, `finished`, `status`, `message`).
//!
//! A run is one transaction: delete the rows of its `as_of`, bulk-load the new ones (prepared
//! inserts in SQLite, `COPY ... FROM STDIN` in PostgreSQL), upsert its `scoring_runs` row,
//! commit. A failure rolls everything back, so the previous run's rows stay as they were; a
//! rerun replaces its date, never duplicates it. When a run fails and its date has no earlier
//! successful run, a `failed` row with the error is recorded in `scoring_runs` (best effort).
//!
//! Types: dates are `DATE` in PostgreSQL and ISO-8601 text in SQLite, booleans `BOOLEAN` /
//! 0-1 integers, timestamps `TIMESTAMPTZ` / RFC 3339 text (UTC).
//!
//! PostgreSQL connections use no TLS (a server on loopback or a private network); put a TLS
//! proxy or an SSH tunnel in front of a remote server.

use std::collections::HashMap;
use std::io::Write;

use chrono::NaiveDate;
use polars::prelude::*;

use super::{PreviousRun, RunRecord};
use crate::config::targets::valid_identifier;
use crate::config::targets::{PgUrl, SqlTarget, Tables};
use crate::error::{Error, PolarsContext, Result};
use crate::schema::CUSTOMER;

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What a run writes to SQL.
pub struct SqlRun<'a> {
    pub scores: &'a DataFrame,
    pub top_risk: &'a DataFrame,
    pub record: &'a RunRecord,
}

fn sink_error(target: &SqlTarget, message: impl std::fmt::Display) -> Error {
    Error::Sink { sink: target.display(), message: message.to_string() }
}

/// Write a run to `target` in one transaction (see the module docs).
pub fn write_run(target: &SqlTarget, tables: &Tables, run: &SqlRun) -> Result<()> {
    for name in [&tables.scores, &tables.top_risk, &tables.runs, &tables.schema] {
        if !valid_identifier(name) {
            return Err(sink_error(target, format!("{name:?} is not a valid table or schema name")));
        }
    }
    let result = match target {
        SqlTarget::Sqlite(path) => sqlite::write_run(path, tables, run),
        SqlTarget::Postgres(url) => postgres_sink::write_run(url, tables, run),
    };
    result.map_err(|message| {
        let failed = RunRecord { status: "failed".into(), ..run.record.clone() };
        let recorded = match target {
            SqlTarget::Sqlite(path) => sqlite::record_failure(path, tables, &failed, &message),
            SqlTarget::Postgres(url) => postgres_sink::record_failure(url, tables, &failed, &message),
        };
        if let Err(e) = recorded {
            log::warn!("could not record the failed run in {}: {e}", target.display());
        }
        sink_error(target, format!("{message}; the transaction was rolled back, earlier runs are intact"))
    })
}

/// The rows of one date for one table: its name, the rows, its primary key.
pub type DatedRows<'a> = (&'a str, &'a DataFrame, &'a [&'a str]);

/// Replace the rows of `as_of` in each table of `parts` by its frame, all in one transaction
/// (each table is created, or extended with new columns, to fit its frame). Used for the
/// monitoring history with the campaign effect, and for the delivery log.
pub fn replace_as_of(
    target: &SqlTarget,
    tables: &Tables,
    parts: &[DatedRows],
    as_of: NaiveDate,
) -> Result<()> {
    for name in parts.iter().map(|p| p.0).chain([tables.schema.as_str()]) {
        if !valid_identifier(name) {
            return Err(sink_error(target, format!("{name:?} is not a valid table or schema name")));
        }
    }
    let result = match target {
        SqlTarget::Sqlite(path) => sqlite::replace_as_of(path, parts, as_of),
        SqlTarget::Postgres(url) => postgres_sink::replace_as_of(url, tables, parts, as_of),
    };
    result.map_err(|m| sink_error(target, format!("{m}; the transaction was rolled back")))
}

/// Publish a run a partitioned engine bulk-loaded into table `stage` of `tables.schema`
/// (PostgreSQL only): one transaction replaces the rows of `as_of` in the scores and top-risk
/// tables from it (created for `template`'s columns, with the CLI's types, when missing),
/// records the run in `scoring_runs` and drops the stage. On failure nothing changes but a
/// `failed` run record (when `as_of` had no successful run), and the stage is dropped.
pub fn publish_staged(
    target: &SqlTarget,
    tables: &Tables,
    stage: &str,
    template: &DataFrame,
    as_of: NaiveDate,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<RunRecord> {
    for name in [&tables.scores, &tables.top_risk, &tables.runs, &tables.schema, &stage.to_string()] {
        if !valid_identifier(name) {
            return Err(sink_error(target, format!("{name:?} is not a valid table or schema name")));
        }
    }
    let SqlTarget::Postgres(url) = target else {
        return Err(sink_error(target, "a staged run is published to PostgreSQL only"));
    };
    postgres_sink::publish_staged(url, tables, stage, template, as_of, started).map_err(|message| {
        let failed = RunRecord {
            as_of,
            model_id: String::new(),
            scored: 0,
            top_size: 0,
            contacted: 0,
            started,
            finished: chrono::Utc::now(),
            status: "failed".into(),
        };
        if let Err(e) = postgres_sink::record_failure(url, tables, &failed, &message) {
            log::warn!("could not record the failed run in {}: {e}", target.display());
        }
        if let Err(e) = postgres_sink::drop_stage(url, tables, stage) {
            log::warn!("could not drop the stage table {stage}: {e}");
        }
        sink_error(target, format!("{message}; the transaction was rolled back, earlier runs are intact"))
    })
}

/// Create the empty stage table `stage` (in `tables.schema`, with `template`'s columns and the
/// CLI's types) that a partitioned engine bulk-loads before [`publish_staged`].
pub fn create_stage(target: &SqlTarget, tables: &Tables, stage: &str, template: &DataFrame) -> Result<()> {
    if !valid_identifier(stage) || !valid_identifier(&tables.schema) {
        return Err(sink_error(target, format!("{stage:?} is not a valid table name")));
    }
    let SqlTarget::Postgres(url) = target else {
        return Err(sink_error(target, "a staged run is published to PostgreSQL only"));
    };
    postgres_sink::create_stage(url, tables, stage, template).map_err(|m| sink_error(target, m))
}

/// Drop a stage table of [`publish_staged`] if it exists (after its load failed).
pub fn drop_stage(target: &SqlTarget, tables: &Tables, stage: &str) -> Result<()> {
    if !valid_identifier(stage) || !valid_identifier(&tables.schema) {
        return Err(sink_error(target, format!("{stage:?} is not a valid table name")));
    }
    match target {
        SqlTarget::Postgres(url) => {
            postgres_sink::drop_stage(url, tables, stage).map_err(|m| sink_error(target, m))
        }
        SqlTarget::Sqlite(_) => Ok(()),
    }
}

/// The risk scores of the latest successful run strictly before `as_of`, if any.
pub fn previous_run(target: &SqlTarget, tables: &Tables, as_of: NaiveDate) -> Result<Option<PreviousRun>> {
    let r = match target {
        SqlTarget::Sqlite(path) => sqlite::previous_run(path, tables, as_of),
        SqlTarget::Postgres(url) => postgres_sink::previous_run(url, tables, as_of),
    };
    r.map_err(|m| sink_error(target, format!("reading the previous run: {m}")))
}

// ---------------------------------------------------------------------------------------
// Frame columns as SQL values, streamed row by row without copying the frame.

#[derive(Debug, Clone, Copy, PartialEq)]
enum SqlType {
    Int,
    BigInt,
    Float,
    Text,
    Bool,
    Date,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    Text(&'a str),
    Bool(bool),
    /// Days since 1970-01-01.
    Date(i32),
}

fn date_string(days: i32) -> String {
    crate::schema::date_of_day(days).map_or_else(|| days.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

struct SqlColumn<'a> {
    name: String,
    ty: SqlType,
    values: Box<dyn Iterator<Item = Value<'a>> + 'a>,
}

fn sql_columns(df: &DataFrame) -> Result<Vec<SqlColumn<'_>>> {
    df.columns()
        .iter()
        .map(|c| {
            let s = c.as_materialized_series();
            let name = s.name().to_string();
            let ctx = format!("column `{name}` for SQL");
            let (ty, values): (SqlType, Box<dyn Iterator<Item = Value>>) = match s.dtype() {
                DataType::Int32 => (
                    SqlType::Int,
                    Box::new(
                        s.i32().polars(&ctx)?.iter().map(|v| v.map_or(Value::Null, |x| Value::Int(x.into()))),
                    ),
                ),
                DataType::UInt32 => (
                    SqlType::BigInt,
                    Box::new(
                        s.u32().polars(&ctx)?.iter().map(|v| v.map_or(Value::Null, |x| Value::Int(x.into()))),
                    ),
                ),
                DataType::Int64 => (
                    SqlType::BigInt,
                    Box::new(s.i64().polars(&ctx)?.iter().map(|v| v.map_or(Value::Null, Value::Int))),
                ),
                DataType::Float64 => (
                    SqlType::Float,
                    Box::new(s.f64().polars(&ctx)?.iter().map(|v| v.map_or(Value::Null, Value::Float))),
                ),
                DataType::String => (
                    SqlType::Text,
                    Box::new(s.str().polars(&ctx)?.iter().map(|v| v.map_or(Value::Null, Value::Text))),
                ),
                DataType::Boolean => (
                    SqlType::Bool,
                    Box::new(s.bool().polars(&ctx)?.iter().map(|v| v.map_or(Value::Null, Value::Bool))),
                ),
                DataType::Date => (
                    SqlType::Date,
                    Box::new(
                        s.date().polars(&ctx)?.physical().iter().map(|v| v.map_or(Value::Null, Value::Date)),
                    ),
                ),
                other => {
                    return Err(Error::Data(format!(
                        "column `{name}` has type {other}, which the SQL sinks do not map"
                    )))
                }
            };
            Ok(SqlColumn { name, ty, values })
        })
        .collect()
}

/// The primary key of the score tables.
/// Primary key of the score tables.
pub const SCORE_KEY: &[&str] = &["as_of", CUSTOMER];
/// Primary key of the monitoring history.
pub const MONITORING_KEY: &[&str] = &["as_of", "kind", "item", "metric"];

fn create_table_sql(
    table: &str,
    cols: &[SqlColumn],
    key: &[&str],
    type_name: fn(SqlType) -> &'static str,
) -> String {
    let defs: Vec<String> = cols
        .iter()
        .map(|c| {
            let not_null = if key.contains(&c.name.as_str()) { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", quote(&c.name), type_name(c.ty))
        })
        .collect();
    if key.is_empty() {
        return format!("CREATE TABLE IF NOT EXISTS {table} ({})", defs.join(", "));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {table} ({}, PRIMARY KEY ({}))",
        defs.join(", "),
        key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
    )
}

fn runs_columns(timestamp: &str, date: &str) -> String {
    format!(
        "\"as_of\" {date} PRIMARY KEY, \"model_id\" TEXT NOT NULL, \"scored\" BIGINT NOT NULL, \
         \"top_size\" BIGINT NOT NULL, \"contacted\" BIGINT NOT NULL, \"started\" {timestamp} NOT NULL, \
         \"finished\" {timestamp} NOT NULL, \"status\" TEXT NOT NULL, \"message\" TEXT"
    )
}

const RUNS_INSERT_COLUMNS: &str =
    "\"as_of\", \"model_id\", \"scored\", \"top_size\", \"contacted\", \"started\", \"finished\", \"status\", \"message\"";

const RUNS_UPSERT: &str = "ON CONFLICT (\"as_of\") DO UPDATE SET \"model_id\" = excluded.\"model_id\", \
     \"scored\" = excluded.\"scored\", \"top_size\" = excluded.\"top_size\", \
     \"contacted\" = excluded.\"contacted\", \"started\" = excluded.\"started\", \
     \"finished\" = excluded.\"finished\", \"status\" = excluded.\"status\", \"message\" = excluded.\"message\"";

/// A table fidelis is about to write must be new or fidelis's own: every key column present,
/// and most of its columns ones fidelis writes. Anything else is somebody else's table, which
/// is neither altered nor has rows deleted.
fn check_owned(
    table: &str,
    existing: &[String],
    ours: &[&str],
    key: &[&str],
) -> std::result::Result<(), String> {
    if existing.is_empty() {
        return Ok(());
    }
    let foreign: Vec<&str> = existing.iter().map(String::as_str).filter(|c| !ours.contains(c)).collect();
    let no_key: Vec<&&str> = key.iter().filter(|k| !existing.iter().any(|e| e == *k)).collect();
    if !no_key.is_empty() || foreign.len() * 2 > existing.len() {
        return Err(format!(
            "table {table} exists and is not a fidelis table (its columns: {}); fidelis will not alter \
             it or delete its rows: name another table under [output.tables]",
            existing.join(", ")
        ));
    }
    Ok(())
}

fn names_of<'c>(cols: &'c [SqlColumn]) -> Vec<&'c str> {
    cols.iter().map(|c| c.name.as_str()).collect()
}

/// The columns of the runs table.
const RUNS_COLUMNS: [&str; 9] =
    ["as_of", "model_id", "scored", "top_size", "contacted", "started", "finished", "status", "message"];

/// Columns of `cols` missing from a table that has `existing`.
fn missing<'c, 'a>(cols: &'c [SqlColumn<'a>], existing: &[String]) -> Vec<&'c SqlColumn<'a>> {
    cols.iter().filter(|c| !existing.contains(&c.name)).collect()
}

mod sqlite {
    use std::path::Path;

    use rusqlite::types::{ToSqlOutput, ValueRef};
    use rusqlite::{params, Connection, OptionalExtension, ToSql};

    use super::*;

    impl ToSql for Value<'_> {
        fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
            Ok(match *self {
                Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
                Value::Int(i) => ToSqlOutput::from(i),
                Value::Float(f) => ToSqlOutput::from(f),
                Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
                Value::Bool(b) => ToSqlOutput::from(i64::from(b)),
                Value::Date(d) => ToSqlOutput::from(date_string(d)),
            })
        }
    }

    fn type_name(t: SqlType) -> &'static str {
        match t {
            SqlType::Int | SqlType::BigInt | SqlType::Bool => "INTEGER",
            SqlType::Float => "REAL",
            // ISO dates as text: they sort and compare correctly as strings.
            SqlType::Text | SqlType::Date => "TEXT",
        }
    }

    fn open(path: &Path) -> rusqlite::Result<Connection> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // A missing directory shows up as SQLite's own "unable to open" error below.
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path)?;
        // A new database gets 16 KiB pages (fewer B-tree pages per bulk load of scores); an
        // existing one keeps its own.
        conn.pragma_update(None, "page_size", 16384)?;
        // WAL: readers (dashboards) are not blocked while a run writes.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        Ok(conn)
    }

    fn existing_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(&format!("PRAGMA table_info({})", quote(table)))?;
        let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
        names.collect()
    }

    /// Create or extend `table`, replace the rows of `as_of`. `fault` marks the load where
    /// the `sql-write` fault point fires.
    fn load_table(
        conn: &Connection,
        table: &str,
        df: &DataFrame,
        key: &[&str],
        as_of: &str,
        fault: bool,
    ) -> std::result::Result<(), String> {
        let e = |err: rusqlite::Error| format!("table {table}: {err}");
        let mut cols = sql_columns(df).map_err(|err| err.to_string())?;
        let q = quote(table);
        let existing = existing_columns(conn, table).map_err(e)?;
        check_owned(table, &existing, &names_of(&cols), key)?;
        conn.execute(&create_table_sql(&q, &cols, key, type_name), []).map_err(e)?;
        // A table just created has every column; an existing one gets those it lacks.
        for c in missing(&cols, &existing).into_iter().filter(|_| !existing.is_empty()) {
            conn.execute(&format!("ALTER TABLE {q} ADD COLUMN {} {}", quote(&c.name), type_name(c.ty)), [])
                .map_err(e)?;
        }
        conn.execute(&format!("DELETE FROM {q} WHERE \"as_of\" = ?1"), [as_of]).map_err(e)?;
        let names: Vec<String> = cols.iter().map(|c| quote(&c.name)).collect();
        let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
        let mut stmt = conn
            .prepare(&format!("INSERT INTO {q} ({}) VALUES ({})", names.join(", "), marks.join(", ")))
            .map_err(e)?;
        // Each value bound in place; a date column's text made once per distinct date (a
        // run's `as_of` is one date).
        let mut dates: Vec<Option<(i32, String)>> = vec![None; cols.len()];
        let half = df.height() / 2;
        for i in 0..df.height() {
            if fault && i == half {
                crate::sink::fault_point("sql-write");
            }
            for (k, (c, date)) in cols.iter_mut().zip(dates.iter_mut()).enumerate() {
                match c.values.next().unwrap_or(Value::Null) {
                    Value::Date(d) => {
                        if date.as_ref().is_none_or(|(cached, _)| *cached != d) {
                            *date = Some((d, date_string(d)));
                        }
                        let text = date.as_ref().map_or("", |(_, t)| t.as_str());
                        stmt.raw_bind_parameter(k + 1, text).map_err(e)?;
                    }
                    v => stmt.raw_bind_parameter(k + 1, v).map_err(e)?,
                }
            }
            stmt.raw_execute().map_err(e)?;
        }
        Ok(())
    }

    pub(super) fn write_run(path: &Path, tables: &Tables, run: &SqlRun) -> std::result::Result<(), String> {
        let mut conn = open(path).map_err(|e| e.to_string())?;
        // IMMEDIATE: take the write lock now, so a concurrent writer waits instead of failing
        // half-way through.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        let as_of = run.record.as_of.to_string();
        let clock = std::time::Instant::now();
        let lap = |what: &str| log::debug!("sqlite: {what} at {:.2}s", clock.elapsed().as_secs_f64());
        load_table(&tx, &tables.scores, run.scores, SCORE_KEY, &as_of, true)?;
        lap("scores loaded");
        load_table(&tx, &tables.top_risk, run.top_risk, SCORE_KEY, &as_of, false)?;
        lap("top-risk segment loaded");
        upsert_run(&tx, tables, run.record, None, true)?;
        tx.commit().map_err(|e| e.to_string())?;
        lap("committed");
        drop(conn);
        lap("closed");
        Ok(())
    }

    pub(super) fn replace_as_of(
        path: &Path,
        parts: &[DatedRows],
        as_of: NaiveDate,
    ) -> std::result::Result<(), String> {
        let mut conn = open(path).map_err(|e| e.to_string())?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        for (table, df, key) in parts {
            load_table(&tx, table, df, key, &as_of.to_string(), false)?;
        }
        tx.commit().map_err(|e| e.to_string())
    }

    fn upsert_run(
        conn: &Connection,
        tables: &Tables,
        r: &RunRecord,
        message: Option<&str>,
        replace: bool,
    ) -> std::result::Result<(), String> {
        let q = quote(&tables.runs);
        let e = |err: rusqlite::Error| format!("table {}: {err}", tables.runs);
        let existing = existing_columns(conn, &tables.runs).map_err(e)?;
        check_owned(&tables.runs, &existing, &RUNS_COLUMNS, &["as_of"])?;
        conn.execute(&format!("CREATE TABLE IF NOT EXISTS {q} ({})", runs_columns("TEXT", "TEXT")), [])
            .map_err(e)?;
        let conflict = if replace { RUNS_UPSERT } else { "ON CONFLICT (\"as_of\") DO NOTHING" };
        conn.execute(
            &format!(
                "INSERT INTO {q} ({RUNS_INSERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) {conflict}"
            ),
            params![
                r.as_of.to_string(),
                r.model_id,
                r.scored,
                r.top_size,
                r.contacted,
                r.started.to_rfc3339(),
                r.finished.to_rfc3339(),
                r.status,
                message
            ],
        )
        .map_err(e)?;
        Ok(())
    }

    pub(super) fn record_failure(
        path: &Path,
        tables: &Tables,
        r: &RunRecord,
        message: &str,
    ) -> std::result::Result<(), String> {
        let conn = open(path).map_err(|e| e.to_string())?;
        upsert_run(&conn, tables, r, Some(message), false)
    }

    pub(super) fn previous_run(
        path: &Path,
        tables: &Tables,
        as_of: NaiveDate,
    ) -> std::result::Result<Option<PreviousRun>, String> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = open(path).map_err(|e| e.to_string())?;
        let e = |err: rusqlite::Error| err.to_string();
        if existing_columns(&conn, &tables.runs).map_err(e)?.is_empty() {
            return Ok(None);
        }
        let date: Option<String> = conn
            .query_row(
                &format!(
                    "SELECT max(\"as_of\") FROM {} WHERE \"status\" = 'ok' AND \"as_of\" < ?1",
                    quote(&tables.runs)
                ),
                [as_of.to_string()],
                |r| r.get(0),
            )
            .optional()
            .map_err(e)?
            .flatten();
        let Some(date) = date else { return Ok(None) };
        let prev =
            NaiveDate::parse_from_str(&date, "%Y-%m-%d").map_err(|err| format!("as_of {date:?}: {err}"))?;
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {}, \"risk_score\" FROM {} WHERE \"as_of\" = ?1",
                quote(CUSTOMER),
                quote(&tables.scores)
            ))
            .map_err(e)?;
        let rows =
            stmt.query_map([&date], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i32>(1)?))).map_err(e)?;
        let risk_scores = rows.collect::<rusqlite::Result<HashMap<_, _>>>().map_err(e)?;
        Ok(Some(PreviousRun { as_of: prev, risk_scores }))
    }
}

mod postgres_sink {
    use postgres::{Client, NoTls, Transaction};

    use super::*;

    fn msg(e: &postgres::Error) -> String {
        crate::error::pg_message(e)
    }

    fn type_name(t: SqlType) -> &'static str {
        match t {
            SqlType::Int => "INTEGER",
            SqlType::BigInt => "BIGINT",
            SqlType::Float => "DOUBLE PRECISION",
            SqlType::Text => "TEXT",
            SqlType::Bool => "BOOLEAN",
            SqlType::Date => "DATE",
        }
    }

    fn connect(url: &PgUrl) -> std::result::Result<Client, String> {
        url.client_config().connect(NoTls).map_err(|e| format!("cannot connect: {}", msg(&e)))
    }

    fn table(tables: &Tables, name: &str) -> String {
        format!("{}.{}", quote(&tables.schema), quote(name))
    }

    /// One value in COPY's text format.
    pub(super) fn copy_text(out: &mut Vec<u8>, v: Value) {
        match v {
            Value::Null => out.extend_from_slice(b"\\N"),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) if f.is_nan() => out.extend_from_slice(b"NaN"),
            Value::Float(f) if f.is_infinite() => {
                out.extend_from_slice(if f > 0.0 { b"Infinity" } else { b"-Infinity" })
            }
            Value::Float(f) => {
                let _ = write!(out, "{f:?}");
            }
            Value::Text(s) => {
                for &b in s.as_bytes() {
                    match b {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        _ => out.push(b),
                    }
                }
            }
            Value::Bool(b) => out.push(if b { b't' } else { b'f' }),
            Value::Date(d) => out.extend_from_slice(date_string(d).as_bytes()),
        }
    }

    fn existing_columns(
        tx: &mut Transaction,
        tables: &Tables,
        name: &str,
    ) -> std::result::Result<Vec<String>, String> {
        let rows = tx
            .query(
                "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                &[&tables.schema, &name],
            )
            .map_err(|e| msg(&e))?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    }

    /// Create table `name` for `cols` (keyed by `key`) when missing, or add the columns it
    /// lacks; its quoted, schema-qualified name.
    fn ensure_table(
        tx: &mut Transaction,
        tables: &Tables,
        name: &str,
        cols: &[SqlColumn],
        key: &[&str],
    ) -> std::result::Result<String, String> {
        let e = |err: postgres::Error| format!("table {name}: {}", msg(&err));
        let t = table(tables, name);
        let existing = existing_columns(tx, tables, name)?;
        check_owned(name, &existing, &names_of(cols), key)?;
        tx.batch_execute(&create_table_sql(&t, cols, key, type_name)).map_err(e)?;
        // A table just created has every column; an existing one gets those it lacks.
        for c in missing(cols, &existing).into_iter().filter(|_| !existing.is_empty()) {
            tx.batch_execute(&format!("ALTER TABLE {t} ADD COLUMN {} {}", quote(&c.name), type_name(c.ty)))
                .map_err(e)?;
        }
        Ok(t)
    }

    /// Publish a run whose scores were bulk-loaded into table `stage` (same schema) by a
    /// partitioned engine: in one transaction, under the runs' lock, check the stage holds
    /// only `as_of`, create or extend the scores and top-risk tables for the columns of
    /// `template` (the CLI's types), replace the rows of `as_of` from the stage (top risk: its
    /// `in_top_decile` rows), upsert the `scoring_runs` row, drop the stage, commit.
    pub(super) fn publish_staged(
        url: &PgUrl,
        tables: &Tables,
        stage: &str,
        template: &DataFrame,
        as_of: NaiveDate,
        started: chrono::DateTime<chrono::Utc>,
    ) -> std::result::Result<RunRecord, String> {
        let mut client = connect(url)?;
        let mut tx = client.transaction().map_err(|e| msg(&e))?;
        lock(&mut tx, tables)?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(&tables.schema)))
            .map_err(|e| format!("schema {}: {}", tables.schema, msg(&e)))?;
        let st = table(tables, stage);
        let e = |err: postgres::Error| format!("stage {stage}: {}", msg(&err));
        let row = tx
            .query_one(
                &format!(
                    "SELECT count(*), count(*) FILTER (WHERE \"in_top_decile\"), count(*) FILTER (WHERE \"contact\"), \
                     min(\"model_id\"), count(*) FILTER (WHERE \"as_of\" IS DISTINCT FROM $1) FROM {st}"
                ),
                &[&as_of],
            )
            .map_err(e)?;
        let (scored, top_size, contacted): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        let model_id: Option<String> = row.get(3);
        let other: i64 = row.get(4);
        if other > 0 {
            return Err(format!("stage {stage}: {other} rows are not of as_of {as_of}"));
        }
        let cols = sql_columns(template).map_err(|err| err.to_string())?;
        let names: Vec<String> = names_of(&cols).iter().map(|c| quote(c)).collect();
        let names = names.join(", ");
        for (name, filter) in [(&tables.scores, ""), (&tables.top_risk, " WHERE \"in_top_decile\"")] {
            let t = ensure_table(&mut tx, tables, name, &cols, SCORE_KEY)?;
            let e = |err: postgres::Error| format!("table {name}: {}", msg(&err));
            tx.execute(&format!("DELETE FROM {t} WHERE \"as_of\" = $1"), &[&as_of]).map_err(e)?;
            tx.batch_execute(&format!("INSERT INTO {t} ({names}) SELECT {names} FROM {st}{filter}"))
                .map_err(e)?;
        }
        let record = RunRecord {
            as_of,
            model_id: model_id.unwrap_or_default(),
            scored,
            top_size,
            contacted,
            started,
            finished: chrono::Utc::now(),
            status: "ok".into(),
        };
        upsert_run(&mut tx, tables, &record, None, true)?;
        tx.batch_execute(&format!("DROP TABLE {st}")).map_err(e)?;
        tx.commit().map_err(|e| format!("commit: {}", msg(&e)))?;
        Ok(record)
    }

    /// Create the schema and an empty stage table with `template`'s columns (the CLI's types,
    /// no key), replacing one left by an earlier attempt.
    pub(super) fn create_stage(
        url: &PgUrl,
        tables: &Tables,
        stage: &str,
        template: &DataFrame,
    ) -> std::result::Result<(), String> {
        let mut client = connect(url)?;
        let mut tx = client.transaction().map_err(|e| msg(&e))?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(&tables.schema)))
            .map_err(|e| format!("schema {}: {}", tables.schema, msg(&e)))?;
        let cols = sql_columns(template).map_err(|err| err.to_string())?;
        let st = table(tables, stage);
        tx.batch_execute(&format!(
            "DROP TABLE IF EXISTS {st}; {}",
            create_table_sql(&st, &cols, &[], type_name)
        ))
        .map_err(|e| format!("stage {stage}: {}", msg(&e)))?;
        tx.commit().map_err(|e| format!("commit: {}", msg(&e)))
    }

    /// Drop a stage table if it is there (after a failed load).
    pub(super) fn drop_stage(url: &PgUrl, tables: &Tables, stage: &str) -> std::result::Result<(), String> {
        let mut client = connect(url)?;
        client.batch_execute(&format!("DROP TABLE IF EXISTS {}", table(tables, stage))).map_err(|e| msg(&e))
    }

    fn load_table(
        tx: &mut Transaction,
        tables: &Tables,
        name: &str,
        df: &DataFrame,
        key: &[&str],
        as_of: NaiveDate,
        fault: bool,
    ) -> std::result::Result<(), String> {
        let e = |err: postgres::Error| format!("table {name}: {}", msg(&err));
        let mut cols = sql_columns(df).map_err(|err| err.to_string())?;
        let t = ensure_table(tx, tables, name, &cols, key)?;
        tx.execute(&format!("DELETE FROM {t} WHERE \"as_of\" = $1"), &[&as_of]).map_err(e)?;
        let names: Vec<String> = cols.iter().map(|c| quote(&c.name)).collect();
        let mut writer = tx.copy_in(&format!("COPY {t} ({}) FROM STDIN", names.join(", "))).map_err(e)?;
        let mut buf: Vec<u8> = Vec::with_capacity(1 << 17);
        let half = df.height() / 2;
        for i in 0..df.height() {
            if fault && i == half {
                writer.write_all(&buf).map_err(|err| format!("table {name}: COPY: {err}"))?;
                writer.flush().map_err(|err| format!("table {name}: COPY: {err}"))?;
                buf.clear();
                crate::sink::fault_point("sql-write");
            }
            for (j, c) in cols.iter_mut().enumerate() {
                if j > 0 {
                    buf.push(b'\t');
                }
                copy_text(&mut buf, c.values.next().unwrap_or(Value::Null));
            }
            buf.push(b'\n');
            if buf.len() >= 1 << 16 {
                writer.write_all(&buf).map_err(|err| format!("table {name}: COPY: {err}"))?;
                buf.clear();
            }
        }
        writer.write_all(&buf).map_err(|err| format!("table {name}: COPY: {err}"))?;
        writer.finish().map_err(e)?;
        Ok(())
    }

    fn ensure_runs_table(tx: &mut Transaction, tables: &Tables) -> std::result::Result<String, String> {
        let t = table(tables, &tables.runs);
        let existing = existing_columns(tx, tables, &tables.runs)?;
        check_owned(&tables.runs, &existing, &RUNS_COLUMNS, &["as_of"])?;
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {t} ({})",
            runs_columns("TIMESTAMPTZ", "DATE")
        ))
        .map_err(|e| format!("table {}: {}", tables.runs, msg(&e)))?;
        Ok(t)
    }

    fn upsert_run(
        tx: &mut Transaction,
        tables: &Tables,
        r: &RunRecord,
        message: Option<&str>,
        replace: bool,
    ) -> std::result::Result<(), String> {
        let t = ensure_runs_table(tx, tables)?;
        let conflict = if replace { RUNS_UPSERT } else { "ON CONFLICT (\"as_of\") DO NOTHING" };
        tx.execute(
            &format!("INSERT INTO {t} ({RUNS_INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) {conflict}"),
            &[&r.as_of, &r.model_id, &r.scored, &r.top_size, &r.contacted, &r.started, &r.finished, &r.status, &message],
        )
        .map_err(|e| format!("table {}: {}", tables.runs, msg(&e)))?;
        Ok(())
    }

    /// Serialize runs writing the same tables (two schedulers, or a manual run during the
    /// weekly one): a transaction-scoped advisory lock keyed on the schema and table names.
    fn lock(tx: &mut Transaction, tables: &Tables) -> std::result::Result<(), String> {
        let key = format!("fidelis:{}.{}", tables.schema, tables.scores);
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
            .map_err(|e| format!("advisory lock: {}", msg(&e)))?;
        Ok(())
    }

    pub(super) fn write_run(url: &PgUrl, tables: &Tables, run: &SqlRun) -> std::result::Result<(), String> {
        let mut client = connect(url)?;
        let mut tx = client.transaction().map_err(|e| msg(&e))?;
        lock(&mut tx, tables)?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(&tables.schema)))
            .map_err(|e| format!("schema {}: {}", tables.schema, msg(&e)))?;
        load_table(&mut tx, tables, &tables.scores, run.scores, SCORE_KEY, run.record.as_of, true)?;
        load_table(&mut tx, tables, &tables.top_risk, run.top_risk, SCORE_KEY, run.record.as_of, false)?;
        upsert_run(&mut tx, tables, run.record, None, true)?;
        tx.commit().map_err(|e| format!("commit: {}", msg(&e)))
    }

    pub(super) fn replace_as_of(
        url: &PgUrl,
        tables: &Tables,
        parts: &[DatedRows],
        as_of: NaiveDate,
    ) -> std::result::Result<(), String> {
        let mut client = connect(url)?;
        let mut tx = client.transaction().map_err(|e| msg(&e))?;
        lock(&mut tx, tables)?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(&tables.schema)))
            .map_err(|e| format!("schema {}: {}", tables.schema, msg(&e)))?;
        for (table, df, key) in parts {
            load_table(&mut tx, tables, table, df, key, as_of, false)?;
        }
        tx.commit().map_err(|e| format!("commit: {}", msg(&e)))
    }

    pub(super) fn record_failure(
        url: &PgUrl,
        tables: &Tables,
        r: &RunRecord,
        message: &str,
    ) -> std::result::Result<(), String> {
        let mut client = connect(url)?;
        let mut tx = client.transaction().map_err(|e| msg(&e))?;
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote(&tables.schema)))
            .map_err(|e| msg(&e))?;
        upsert_run(&mut tx, tables, r, Some(message), false)?;
        tx.commit().map_err(|e| msg(&e))
    }

    pub(super) fn previous_run(
        url: &PgUrl,
        tables: &Tables,
        as_of: NaiveDate,
    ) -> std::result::Result<Option<PreviousRun>, String> {
        let mut client = connect(url)?;
        let exists: bool = client
            .query_one(
                "SELECT count(*) > 0 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
                &[&tables.schema, &tables.runs],
            )
            .map_err(|e| msg(&e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let row = client
            .query_one(
                &format!(
                    "SELECT max(\"as_of\") FROM {} WHERE \"status\" = 'ok' AND \"as_of\" < $1",
                    table(tables, &tables.runs)
                ),
                &[&as_of],
            )
            .map_err(|e| msg(&e))?;
        let Some(prev) = row.get::<_, Option<NaiveDate>>(0) else { return Ok(None) };
        let rows = client
            .query(
                &format!(
                    "SELECT {}, \"risk_score\" FROM {} WHERE \"as_of\" = $1",
                    quote(CUSTOMER),
                    table(tables, &tables.scores)
                ),
                &[&prev],
            )
            .map_err(|e| msg(&e))?;
        let risk_scores = rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1))).collect();
        Ok(Some(PreviousRun { as_of: prev, risk_scores }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes() {
        let mut out = Vec::new();
        for v in [
            Value::Text("a\tb\\c\nd"),
            Value::Null,
            Value::Float(0.1),
            Value::Float(f64::NAN),
            Value::Bool(true),
            Value::Date(0),
        ] {
            postgres_sink::copy_text(&mut out, v);
            out.push(b'|');
        }
        assert_eq!(String::from_utf8(out).unwrap(), "a\\tb\\\\c\\nd|\\N|0.1|NaN|t|1970-01-01|");
    }
}
