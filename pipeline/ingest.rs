//! Ingest: read the transaction log (CSV, Parquet, or whitespace-separated text), map the
//! user's columns onto the data contract, and validate every row.
//!
//! Output frame (the contract every later stage sees), in a total order: customer, time, amount
//! (so the same rows in any file order give the same frame, and the same sums to the bit):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `customer_id` | String | trimmed, never empty |
//! | `ts` | Datetime(ms), naive UTC | time of the transaction (of the first line of an order) |
//! | `amount` | Float64 | finite; negative = refund or cancellation (kept) |
//!
//! Rows that cannot be used (no customer id, missing or unparsable timestamp, missing or
//! non-numeric amount) are dropped, and counted by reason with example row numbers in the
//! [`ValidationSummary`]; when more than `max_invalid_share` of rows fail, ingest fails.
//! Structural problems (missing file or column, empty file, unknown format) are errors.

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use polars::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::TransactionsInput;
use crate::error::{Error, PolarsContext, Result};
use crate::format::int;
use crate::table::{
    check_no_nul, examples, ms_literal, numeric_expr, read_input, row_blocks, ts_expr, Mapping,
};

/// 1900-01-01T00:00:00Z: earlier timestamps are taken for damaged data, not history.
const EARLIEST_MS: i64 = -2_208_988_800_000;
const REASON: &str = "__reason";

/// Why a row was dropped. The order is the order of the checks: a row is counted under the
/// first check it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    MissingCustomerId,
    MissingTimestamp,
    UnparsableTimestamp,
    OutOfRangeTimestamp,
    MissingAmount,
    NonNumericAmount,
}

impl DropReason {
    const ALL: [DropReason; 6] = [
        DropReason::MissingCustomerId,
        DropReason::MissingTimestamp,
        DropReason::UnparsableTimestamp,
        DropReason::OutOfRangeTimestamp,
        DropReason::MissingAmount,
        DropReason::NonNumericAmount,
    ];

    fn code(self) -> i32 {
        self as i32 + 1
    }

    pub fn describe(self) -> &'static str {
        match self {
            DropReason::MissingCustomerId => "missing customer id",
            DropReason::MissingTimestamp => "missing timestamp",
            DropReason::UnparsableTimestamp => "unparsable timestamp",
            DropReason::OutOfRangeTimestamp => {
                "timestamp out of range (before 1900, or after the file was written)"
            }
            DropReason::MissingAmount => "missing amount",
            DropReason::NonNumericAmount => "non-numeric or non-finite amount",
        }
    }
}

/// Dropped rows of one reason: how many, and the first few as (row number, raw value).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DroppedRows {
    pub reason: DropReason,
    /// The mapped column the check looked at.
    pub column: String,
    pub count: usize,
    /// 1-based data row numbers (the header is not counted) and the raw value found.
    pub examples: Vec<(u64, String)>,
}

/// What ingest read, kept and dropped. Printed by `fidelis validate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationSummary {
    pub path: PathBuf,
    pub format: String,
    pub rows_read: usize,
    pub rows_valid: usize,
    pub dropped: Vec<DroppedRows>,
    /// Kept rows with a negative amount (refunds, cancellations).
    pub negative_amounts: usize,
    pub zero_amounts: usize,
    /// Set when an order id is mapped: line items were summed into this many orders.
    pub orders: Option<usize>,
    /// Exact duplicate rows (every mapped column equal to another row's).
    #[serde(default)]
    pub duplicates: usize,
    /// Whether they were dropped (`[input.transactions].drop_duplicates`).
    #[serde(default)]
    pub duplicates_dropped: bool,
    /// Transactions after order aggregation.
    pub transactions: usize,
    pub customers: usize,
    pub first_ts: Option<NaiveDateTime>,
    pub last_ts: Option<NaiveDateTime>,
    pub total_amount: f64,
}

impl ValidationSummary {
    pub fn rows_dropped(&self) -> usize {
        self.dropped.iter().map(|d| d.count).sum()
    }
}

/// The validated transaction log and the summary of how it was read.
#[derive(Debug, Clone)]
pub struct Transactions {
    pub frame: DataFrame,
    pub summary: ValidationSummary,
}

impl Transactions {
    /// The day after the last transaction: the default `as_of` of a scoring run, and the end
    /// of the data for outcome windows.
    pub fn data_end(&self) -> Result<NaiveDate> {
        self.summary
            .last_ts
            .map(|t| t.date() + chrono::Duration::days(1))
            .ok_or_else(|| Error::Data("no transactions to score".into()))
    }

    /// Row count and hash of the validated rows ([`Fingerprint`]).
    pub fn fingerprint(&self) -> Result<Fingerprint> {
        Fingerprint::of(&self.frame)
    }
}

/// The validated rows a model saw: their count and the wrapping sum of each row's xxh3-64
/// (of customer id, timestamp and amount). A sum, so the same rows give the same fingerprint
/// whatever the file's order, format, line-item layout or partitioning: the fingerprints of
/// disjoint parts [`merge`](Fingerprint::merge) into the whole's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    pub rows: usize,
    pub sum: u64,
}

impl Fingerprint {
    /// The fingerprint of a contract frame (`customer_id`, `ts`, `amount`).
    pub fn of(f: &DataFrame) -> Result<Fingerprint> {
        let ctx = "fingerprinting the transactions";
        let ids = f.column("customer_id").polars(ctx)?.str().polars(ctx)?;
        let ts = f.column("ts").polars(ctx)?.datetime().polars(ctx)?.physical();
        let amount = f.column("amount").polars(ctx)?.f64().polars(ctx)?;
        let mut sum = 0u64;
        let mut buf = Vec::new();
        for ((id, t), a) in ids.iter().zip(ts.iter()).zip(amount.iter()) {
            buf.clear();
            buf.extend_from_slice(id.unwrap_or_default().as_bytes());
            buf.push(0);
            buf.extend_from_slice(&t.unwrap_or(i64::MIN).to_le_bytes());
            buf.extend_from_slice(&a.unwrap_or(f64::NAN).to_bits().to_le_bytes());
            sum = sum.wrapping_add(xxhash_rust::xxh3::xxh3_64(&buf));
        }
        Ok(Fingerprint { rows: f.height(), sum })
    }

    /// The fingerprint of two disjoint sets of rows together.
    pub fn merge(self, other: Fingerprint) -> Fingerprint {
        Fingerprint { rows: self.rows + other.rows, sum: self.sum.wrapping_add(other.sum) }
    }

    /// The hash as 16 hex digits (what `model.json` records).
    pub fn hex(&self) -> String {
        format!("{:016x}", self.sum)
    }
}

/// The summary of disjoint parts of one input read separately (partitions of a distributed
/// engine) as one: counts add up, the time range spans them all; the examples of dropped rows
/// are left out (their row numbers are within a part, not the input).
pub fn merge_summaries(parts: &[ValidationSummary]) -> Option<ValidationSummary> {
    let mut parts = parts.iter();
    let mut all = parts.next()?.clone();
    all.dropped.iter_mut().for_each(|d| d.examples.clear());
    for p in parts {
        all.rows_read += p.rows_read;
        all.rows_valid += p.rows_valid;
        for d in &p.dropped {
            match all.dropped.iter_mut().find(|a| a.reason == d.reason && a.column == d.column) {
                Some(a) => a.count += d.count,
                None => all.dropped.push(DroppedRows { examples: Vec::new(), ..d.clone() }),
            }
        }
        all.negative_amounts += p.negative_amounts;
        all.zero_amounts += p.zero_amounts;
        all.orders = match (all.orders, p.orders) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        all.duplicates += p.duplicates;
        all.transactions += p.transactions;
        all.customers += p.customers;
        all.first_ts = all.first_ts.into_iter().chain(p.first_ts).min();
        all.last_ts = all.last_ts.into_iter().chain(p.last_ts).max();
        all.total_amount += p.total_amount;
    }
    all.dropped.sort_by_key(|d| d.reason as i32);
    Some(all)
}

/// Keep the transactions before `cutoff` (midnight) only, as if the log had been read then
/// (a backtest's training data). The summary's first and last timestamps follow.
pub fn truncate(tx: Transactions, cutoff: chrono::NaiveDate) -> Result<Transactions> {
    let ms = cutoff.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis();
    let frame = tx
        .frame
        .lazy()
        .filter(col("ts").cast(DataType::Int64).lt(lit(ms)))
        .collect()
        .polars("truncating the transactions")?;
    if frame.height() == 0 {
        return Err(Error::Data(format!(
            "no transaction before {cutoff}: the data starts {}; choose a later date",
            tx.summary.first_ts.map_or("-".to_string(), |t| t.date().to_string())
        )));
    }
    let ts = frame.column("ts").polars("ts")?.datetime().polars("ts")?.physical().clone();
    let to_dt = |v: Option<i64>| v.and_then(chrono::DateTime::from_timestamp_millis).map(|d| d.naive_utc());
    let summary = ValidationSummary { first_ts: to_dt(ts.min()), last_ts: to_dt(ts.max()), ..tx.summary };
    Ok(Transactions { frame, summary })
}

/// Read, map and validate the transaction log described by `input` (a file, or a query on
/// PostgreSQL read `batch_rows` rows per round trip).
pub fn load_transactions(input: &TransactionsInput, batch_rows: usize) -> Result<Transactions> {
    let clock = std::time::Instant::now();
    let raw = read_input(input, batch_rows, "input.transactions")?;
    log::debug!("ingest: {} read at {:.2}s", raw.format, clock.elapsed().as_secs_f64());
    let columns = Mapping::new(input, raw.latest_ms);
    columns.check_present(&raw.name, &raw.frame)?;
    validate_frame(&raw.name, &raw.format, raw.frame, &columns, input.max_invalid_share)
}

/// Map and validate a transaction frame already in memory (e.g. Arrow from Python or Spark)
/// exactly as a file would be: `input`'s column mapping and limits apply (its path does not);
/// `source` names the frame in messages. Rows later than now + `max_future_days` are out of
/// range.
pub fn transactions_from_frame(
    raw: DataFrame,
    input: &TransactionsInput,
    source: &str,
) -> Result<Transactions> {
    let path = PathBuf::from(source);
    if raw.height() == 0 {
        return Err(Error::InputFile { path, message: "the frame has no rows".into() });
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let latest = now_ms.saturating_add(input.max_future_days.saturating_mul(86_400_000));
    let columns = Mapping::new(input, latest);
    columns.check_present(&path, &raw)?;
    validate_frame(&path, "arrow", raw, &columns, input.max_invalid_share)
}

/// The raw rows with parsed columns (`__cid`, `__ts`, `__amount`, `__order`) and each
/// row's drop reason (`__reason`, 0 = valid).
fn parse_rows(path: &Path, raw: DataFrame, m: &Mapping) -> Result<DataFrame> {
    if let Ok(ids) = raw.column(&m.customer_id).polars("customer ids")?.str() {
        check_no_nul(path, &m.customer_id, ids)?;
    }
    // Ids are trimmed and empty ones are missing; a text column that needs neither (the usual
    // case) is used as it is rather than copied.
    let clean_text = match raw.column(&m.customer_id).polars("customer ids")?.str() {
        Ok(ids) => row_blocks(ids.len()).all(|(lo, hi)| {
            ids.slice(lo as i64, hi - lo).iter().flatten().all(|v| !v.is_empty() && v.trim() == v)
        }),
        Err(_) => false,
    };
    let cid = if clean_text {
        col(&m.customer_id)
    } else {
        let cid_text = col(&m.customer_id).cast(DataType::String).str().strip_chars(lit(NULL));
        when(cid_text.clone().eq(lit(""))).then(lit(NULL).cast(DataType::String)).otherwise(cid_text)
    };
    let ts = ts_expr(path, &raw, m)?;
    let (amount, amount_raw_null) = match (&m.amount, &m.quantity_price) {
        (Some(a), _) => (numeric_expr(&raw, a)?, col(a).is_null()),
        (None, Some((q, p))) => {
            (numeric_expr(&raw, q)? * numeric_expr(&raw, p)?, col(q).is_null().or(col(p).is_null()))
        }
        (None, None) => unreachable!("config validation requires an amount mapping"),
    };
    let ts_raw_null = col(&m.timestamp).is_null();
    let reason = when(col("__cid").is_null())
        .then(lit(DropReason::MissingCustomerId.code()))
        .when(ts_raw_null)
        .then(lit(DropReason::MissingTimestamp.code()))
        .when(col("__ts").is_null())
        .then(lit(DropReason::UnparsableTimestamp.code()))
        .when(col("__ts").gt(ms_literal(m.latest_ms)).or(col("__ts").lt(ms_literal(EARLIEST_MS))))
        .then(lit(DropReason::OutOfRangeTimestamp.code()))
        .when(amount_raw_null)
        .then(lit(DropReason::MissingAmount.code()))
        .when(col("__amount").is_null())
        .then(lit(DropReason::NonNumericAmount.code()))
        .otherwise(lit(0i32))
        .cast(DataType::Int32)
        .alias(REASON);

    // Parsed values get internal names: the raw columns stay for the null checks above.
    let mut parsed_cols = vec![cid.alias("__cid"), ts.alias("__ts"), amount.alias("__amount")];
    if let Some(o) = &m.order_id {
        parsed_cols.push(col(o).cast(DataType::String).alias("__order"));
    }
    // An exact duplicate is equal in every column of the row, also the columns not mapped (an
    // invoice line's product): when the file has such columns, the whole row is kept as text
    // (`__line`) for the duplicate check.
    let mut mapped: Vec<&str> = vec![&m.customer_id, &m.timestamp];
    mapped.extend(m.amount.as_deref());
    if let Some((q, p)) = &m.quantity_price {
        mapped.extend([q.as_str(), p.as_str()]);
    }
    mapped.extend(m.order_id.as_deref());
    let names: Vec<String> = raw.get_column_names().iter().map(|c| c.to_string()).collect();
    if names.iter().any(|c| !mapped.contains(&c.as_str())) {
        let cells: Vec<Expr> =
            names.iter().map(|c| col(c.as_str()).cast(DataType::String).fill_null(lit("\u{1}"))).collect();
        parsed_cols.push(concat_str(cells, "\u{1f}", false).alias(LINE));
    }
    raw.lazy().with_columns(parsed_cols).with_column(reason).collect().polars("validating transactions")
}

/// The whole raw row as text, when the file has columns beyond the mapped ones.
const LINE: &str = "__line";

/// The dropped rows by reason, and how many there are.
fn dropped_rows(
    parsed: &DataFrame,
    reasons: &Int32Chunked,
    m: &Mapping,
) -> Result<(Vec<DroppedRows>, usize)> {
    let mut dropped = Vec::new();
    let mut n_dropped = 0usize;
    for r in DropReason::ALL {
        let mask = reasons.equal(r.code());
        let count = mask.sum().unwrap_or(0) as usize;
        if count == 0 {
            continue;
        }
        n_dropped += count;
        let column = match r {
            DropReason::MissingCustomerId => m.customer_id.clone(),
            DropReason::MissingTimestamp
            | DropReason::UnparsableTimestamp
            | DropReason::OutOfRangeTimestamp => m.timestamp.clone(),
            DropReason::MissingAmount | DropReason::NonNumericAmount => {
                match (&m.amount, &m.quantity_price) {
                    (Some(a), _) => a.clone(),
                    (None, Some((q, p))) => format!("{q} x {p}"),
                    _ => String::new(),
                }
            }
        };
        let examples = examples(parsed, &mask, &column)?;
        dropped.push(DroppedRows { reason: r, column, count, examples });
    }

    Ok((dropped, n_dropped))
}

/// The valid rows in the canonical order, how many rows were valid, and (with an order id)
/// The valid rows, in the canonical order.
struct Kept {
    frame: DataFrame,
    /// Valid rows before duplicates were dropped and order lines summed.
    rows_valid: usize,
    /// With an order id: how many orders the lines were summed into.
    orders: Option<usize>,
    /// Exact duplicate rows found (dropped unless `drop_duplicates` is off).
    duplicates: usize,
}

/// The valid rows in the canonical order (customer, time, amount), exact duplicates counted
/// (and dropped when asked), order lines summed when an order id is mapped.
fn valid_rows(parsed: DataFrame, reasons: &Int32Chunked, m: &Mapping, n_dropped: usize) -> Result<Kept> {
    let mut keep: Vec<Expr> =
        vec![col("__cid").alias("customer_id"), col("__ts").alias("ts"), col("__amount").alias("amount")];
    if m.order_id.is_some() {
        keep.push(col("__order").alias("order_id"));
    }
    let whole_rows = parsed.column(LINE).is_ok();
    if whole_rows {
        keep.push(col(LINE));
    }
    // The canonical order every later stage sees: customer, time, amount. Ties are broken by
    // amount so that the same rows in any file order sum to the same bits downstream (and by
    // the whole row, so that exact duplicates are adjacent).
    let sort_lines = |df: DataFrame| -> Result<DataFrame> {
        let mut by = vec!["customer_id", "ts", "amount"];
        if df.column(LINE).is_ok() {
            by.push(LINE);
        }
        df.lazy()
            .sort(by, SortMultipleOptions::default().with_maintain_order(true))
            .collect()
            .polars("sorting transactions")
    };
    if m.order_id.is_some() {
        let valid = parsed
            .lazy()
            .filter(col(REASON).eq(lit(0i32)))
            .select(keep)
            .collect()
            .polars("keeping valid rows")?;
        let rows_valid = valid.height();
        let (df, duplicates) = sum_order_lines(valid, m.drop_duplicates)?;
        let n = df.height();
        return Ok(Kept { frame: sort_lines(df)?, rows_valid, orders: Some(n), duplicates });
    }
    // The valid rows in (customer, ts) order with one gather (no copy at all when the file is
    // already in that order), whether each customer's rows are together in the file or
    // scattered over it (a time-ordered log).
    let clock = std::time::Instant::now();
    let all = parsed.lazy().select(keep).collect().polars("keeping valid rows")?;
    log::debug!("ingest: columns kept at +{:.2}s", clock.elapsed().as_secs_f64());
    // With whole rows to compare, the general sort (which orders by them too).
    let mut frame = if whole_rows {
        sort_lines(all.filter(&reasons.equal(0)).polars("keeping valid rows")?)?
    } else {
        match in_customer_order(&all, reasons, n_dropped, clock)? {
            Some(ordered) => ordered,
            None => all,
        }
    };
    let rows_valid = frame.height();
    log::debug!("ingest: rows in order at +{:.2}s", clock.elapsed().as_secs_f64());
    let repeats = repeated_rows(&frame)?;
    let duplicates = repeats.sum().unwrap_or(0) as usize;
    if duplicates > 0 && m.drop_duplicates {
        frame = frame.filter(&!&repeats).polars("dropping exact duplicates")?;
    }
    if whole_rows {
        frame = frame.drop(LINE).polars("dropping the whole-row text")?;
    }
    Ok(Kept { frame, rows_valid, orders: None, duplicates })
}

/// Rows equal in every column to the row before them (in the canonical order exact
/// duplicates are adjacent): the later copies.
fn repeated_rows(frame: &DataFrame) -> Result<BooleanChunked> {
    let ctx = "finding exact duplicates";
    let ids = frame.column("customer_id").polars(ctx)?.str().polars(ctx)?;
    let ts = frame.column("ts").polars(ctx)?.datetime().polars(ctx)?.physical();
    let amount = frame.column("amount").polars(ctx)?.f64().polars(ctx)?;
    // Time and amount first (plain slices when the columns are one chunk without nulls, the
    // usual case); the ids, a string compare, only where those repeat.
    let line = match frame.column(LINE) {
        Ok(c) => Some(c.str().polars(ctx)?),
        Err(_) => None,
    };
    let same_id = |i: usize| ids.get(i) == ids.get(i - 1) && line.is_none_or(|l| l.get(i) == l.get(i - 1));
    let mask: Vec<bool> = match (ts.cont_slice(), amount.cont_slice()) {
        (Ok(t), Ok(a)) => (0..t.len())
            .map(|i| i > 0 && t[i] == t[i - 1] && a[i].to_bits() == a[i - 1].to_bits() && same_id(i))
            .collect(),
        _ => {
            let mut prev: Option<(Option<i64>, Option<u64>)> = None;
            ts.iter()
                .zip(amount.iter())
                .enumerate()
                .map(|(i, (t, a))| {
                    let row = (t, a.map(f64::to_bits));
                    let repeat = prev == Some(row) && same_id(i);
                    prev = Some(row);
                    repeat
                })
                .collect()
        }
    };
    Ok(BooleanChunked::from_slice("repeat".into(), &mask))
}

fn validate_frame(
    path: &Path,
    format: &str,
    raw: DataFrame,
    m: &Mapping,
    max_invalid_share: f64,
) -> Result<Transactions> {
    let rows_read = raw.height();
    let clock = std::time::Instant::now();
    let lap = |what: &str| log::debug!("ingest: {what} at {:.2}s", clock.elapsed().as_secs_f64());
    let parsed = parse_rows(path, raw, m)?;
    lap("rows parsed");
    let reasons = parsed.column(REASON).polars("reading reasons")?.i32().polars("reason codes")?.clone();
    let (dropped, n_dropped) = dropped_rows(&parsed, &reasons, m)?;
    lap("dropped rows counted");
    let Kept { frame, rows_valid, orders, duplicates } = valid_rows(parsed, &reasons, m, n_dropped)?;
    lap("valid rows ordered");
    let customers = count_customers(&frame)?;
    let amounts = frame.column("amount").polars("amount")?.f64().polars("amount")?.clone();
    // One pass in row order (the canonical order, whatever the frame's chunks): the counts
    // and the total, whose bits then do not depend on how the rows are stored.
    let (mut negative_amounts, mut zero_amounts, mut total_amount) = (0usize, 0usize, 0.0f64);
    let mut tally = |a: f64| {
        negative_amounts += usize::from(a < 0.0);
        zero_amounts += usize::from(a == 0.0);
        total_amount += a;
    };
    if amounts.null_count() == 0 {
        amounts.downcast_iter().for_each(|arr| arr.values().iter().for_each(|&a| tally(a)));
    } else {
        amounts.iter().flatten().for_each(tally);
    }

    let ts_col = frame.column("ts").polars("ts")?.datetime().polars("ts")?.clone();
    let to_dt = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis).map(|d| d.naive_utc());
    let first_ts = to_dt(ts_col.physical().min());
    let last_ts = to_dt(ts_col.physical().max());
    lap("summary");

    let summary = ValidationSummary {
        path: path.to_path_buf(),
        format: format.to_string(),
        rows_read,
        rows_valid,
        dropped,
        negative_amounts,
        zero_amounts,
        orders,
        duplicates,
        duplicates_dropped: duplicates > 0 && m.drop_duplicates,
        transactions: frame.height(),
        customers,
        first_ts,
        last_ts,
        total_amount,
    };
    if rows_read > 0 && (n_dropped as f64 / rows_read as f64) > max_invalid_share {
        return Err(Error::InvalidRows {
            path: path.to_path_buf(),
            message: format!(
                "{n_dropped} of {rows_read} rows ({:.1}%) are invalid, more than \
                 [input.transactions].max_invalid_share = {}; is the column mapping right?\n{summary}",
                100.0 * n_dropped as f64 / rows_read as f64,
                max_invalid_share
            ),
        });
    }
    if frame.height() == 0 {
        return Err(Error::InvalidRows {
            path: path.to_path_buf(),
            message: format!("no valid transactions remain\n{summary}"),
        });
    }
    if summary.first_ts.is_none() || summary.last_ts.is_none() {
        return Err(Error::InputFile {
            path: path.to_path_buf(),
            message: "its timestamps cannot be read as dates: is the file damaged?".into(),
        });
    }
    Ok(Transactions { frame, summary })
}

/// Order lines summed per (customer, order): the earliest line's time, the sum of the
/// amounts. Lines are summed in a canonical order (by amount, then time), so the same lines
/// in any file order give the same sums to the bit.
fn sum_order_lines(valid: DataFrame, drop_duplicates: bool) -> Result<(DataFrame, usize)> {
    let ctx = "summing order lines";
    let whole_rows = valid.column(LINE).is_ok();
    let mut by = vec!["customer_id", "order_id", "amount", "ts"];
    if whole_rows {
        by.push(LINE);
    }
    let sorted = valid.lazy().sort(by, SortMultipleOptions::default()).collect().polars(ctx)?;
    let lines: Option<Vec<Option<&str>>> = match sorted.column(LINE) {
        Ok(c) => Some(c.str().polars(ctx)?.iter().collect()),
        Err(_) => None,
    };
    let ids = sorted.column("customer_id").polars(ctx)?.str().polars(ctx)?;
    let orders = sorted.column("order_id").polars(ctx)?.str().polars(ctx)?;
    let ts_col = sorted.column("ts").polars(ctx)?;
    let ts_type = ts_col.dtype().clone();
    let ts = ts_col.datetime().polars(ctx)?.physical();
    let amount = sorted.column("amount").polars(ctx)?.f64().polars(ctx)?;
    let (mut out_id, mut out_ts, mut out_amount): (Vec<&str>, Vec<i64>, Vec<f64>) = Default::default();
    let mut key: Option<(Option<&str>, Option<&str>)> = None;
    let (mut previous_line, mut duplicates) = (None, 0);
    for (i, (((id, order), t), a)) in
        ids.iter().zip(orders.iter()).zip(ts.iter()).zip(amount.iter()).enumerate()
    {
        let (t, a) = (t.unwrap_or(i64::MAX), a.unwrap_or(0.0));
        // Lines are sorted by (customer, order, amount, time, whole row): exact duplicates
        // are adjacent.
        let whole = lines.as_ref().and_then(|l| l[i]);
        let line = Some((id, order, a.to_bits(), t, whole));
        if line == previous_line {
            duplicates += 1;
            if drop_duplicates {
                continue;
            }
        }
        previous_line = line;
        if key == Some((id, order)) {
            let last = out_ts.len() - 1;
            out_ts[last] = out_ts[last].min(t);
            out_amount[last] += a;
        } else {
            key = Some((id, order));
            out_id.push(id.unwrap_or_default());
            out_ts.push(t);
            out_amount.push(a);
        }
    }
    let ts = Column::new("ts".into(), out_ts).cast(&ts_type).polars(ctx)?;
    let df = DataFrame::new_infer_height(vec![
        Column::new("customer_id".into(), out_id),
        ts,
        Column::new("amount".into(), out_amount),
    ])
    .polars(ctx)?;
    Ok((df, duplicates))
}

/// The rows with reason code 0 in (customer_id, ts, amount) order (stable; the order a sort by
/// those columns keeping the file order of ties gives). Customers' rows are gathered as runs in
/// the file (a log exported per customer, even with unordered times) or, when customers are
/// scattered (more runs than half the rows: a log in time order, a shuffled partition), by
/// customer through a hash table; either way only the distinct ids are sorted as strings
/// (a sort of every row by its id string is most of the cost of a general sort).
/// Returns the row positions and each customer's id and number of rows, in that order.
fn customer_order<'a>(
    frame: &'a DataFrame,
    reasons: &Int32Chunked,
) -> Result<(Vec<IdxSize>, Vec<Count<'a>>)> {
    let ids = frame.column("customer_id").polars("customer_id")?.str().polars("customer_id")?;
    let ts = frame.column("ts").polars("ts")?.datetime().polars("ts")?.physical();
    // Runs of one customer: (id, range of `valid`), in one sequential pass.
    let mut valid: Vec<IdxSize> = Vec::with_capacity(ids.len());
    let mut runs: Vec<Run> = Vec::new();
    for (i, (id, r)) in ids.iter().zip(reasons.iter()).enumerate() {
        if r != Some(0) {
            continue;
        }
        let id = id.unwrap_or_default();
        match runs.last_mut() {
            Some(run) if run.0 == id => run.2 += 1,
            _ => {
                if runs.len() > ids.len() / 2 {
                    (valid, runs) = grouped_by_customer(ids, reasons);
                    break;
                }
                runs.push((id, valid.len(), valid.len() + 1));
            }
        }
        valid.push(i as IdxSize);
    }
    runs.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
    let ts: Vec<i64> = ts.iter().map(|t| t.unwrap_or(i64::MIN)).collect();
    let amount = frame.column("amount").polars("amount")?.f64().polars("amount")?;
    let mut out = Vec::with_capacity(valid.len());
    let mut customers = Vec::new();
    let mut g = 0;
    while g < runs.len() {
        let customer = runs[g].0;
        let start = out.len();
        while g < runs.len() && runs[g].0 == customer {
            out.extend_from_slice(&valid[runs[g].1..runs[g].2]);
            g += 1;
        }
        customers.push((customer, out.len() - start));
        let rows = &mut out[start..];
        rows.sort_by_key(|&i| ts[i as usize]);
        // Rows at the same time: by amount (rare, so amounts are looked up only there).
        let mut i = 0;
        while i < rows.len() {
            let t = ts[rows[i] as usize];
            let j = i + rows[i..].iter().take_while(|&&r| ts[r as usize] == t).count();
            if j - i > 1 {
                let key = |r: IdxSize| amount.get(r as usize).unwrap_or(f64::NAN);
                rows[i..j].sort_by(|&a, &b| key(a).total_cmp(&key(b)));
            }
            i = j;
        }
    }
    Ok((out, customers))
}

/// The valid rows of `all` (customer_id, ts, amount) in (customer, ts, amount) order (see
/// [`customer_order`]); None when they already are (no row dropped, none moved). The ids are
/// written in order from each customer's id (a gather by position of 30 million strings costs
/// more than the ordering), the times and amounts gathered.
fn in_customer_order(
    all: &DataFrame,
    reasons: &Int32Chunked,
    n_dropped: usize,
    clock: std::time::Instant,
) -> Result<Option<DataFrame>> {
    let (idx, customers) = customer_order(all, reasons)?;
    log::debug!("ingest: customer order found at +{:.2}s", clock.elapsed().as_secs_f64());
    if n_dropped == 0 && idx.iter().enumerate().all(|(i, &r)| i as IdxSize == r) {
        return Ok(None);
    }
    let ctx = "ordering transactions";
    let rest =
        all.select(["ts", "amount"]).polars(ctx)?.take(&IdxCa::from_vec("idx".into(), idx)).polars(ctx)?;
    let ids: StringChunked = customers.iter().flat_map(|&(id, n)| std::iter::repeat_n(id, n)).collect();
    let mut columns = vec![ids.with_name("customer_id".into()).into_column()];
    columns.extend(rest.columns().iter().cloned());
    Ok(Some(DataFrame::new_infer_height(columns).polars(ctx)?))
}

/// A customer's rows: its id and a range of positions.
type Run<'a> = (&'a str, usize, usize);

/// A customer's id and its number of rows.
type Count<'a> = (&'a str, usize);

/// The rows with reason code 0 gathered by customer (each customer's rows in file order) and
/// each customer's run in them. The rows are dealt by a hash of their id into shards, in
/// file order; each shard (a few thousand distinct ids: its table stays in cache) numbers its
/// ids and counting-sorts its rows by them, the shards in parallel; their runs are laid end
/// to end. Which customer comes first does not matter: the caller sorts the runs by id.
fn grouped_by_customer<'a>(ids: &'a StringChunked, reasons: &Int32Chunked) -> (Vec<IdxSize>, Vec<Run<'a>>) {
    const SHARD_BITS: u32 = 6;
    let state = foldhash::fast::FixedState::default();
    let mut shards: Vec<Vec<(IdxSize, &'a str)>> = vec![Vec::new(); 1 << SHARD_BITS];
    for (i, (id, r)) in ids.iter().zip(reasons.iter()).enumerate() {
        if r != Some(0) {
            continue;
        }
        let id = id.unwrap_or_default();
        shards[(state.hash_one(id) >> (64 - SHARD_BITS)) as usize].push((i as IdxSize, id));
    }
    let parts: Vec<(Vec<IdxSize>, Vec<Run<'a>>)> = shards
        .into_par_iter()
        .map(|rows| {
            let mut number: HashMap<&str, u32, foldhash::fast::FixedState> = HashMap::default();
            let mut first: Vec<&str> = Vec::new();
            let groups: Vec<u32> = rows
                .iter()
                .map(|&(_, id)| {
                    *number.entry(id).or_insert_with(|| {
                        first.push(id);
                        (first.len() - 1) as u32
                    })
                })
                .collect();
            let mut start = vec![0usize; first.len() + 1];
            for &g in &groups {
                start[g as usize + 1] += 1;
            }
            for g in 0..first.len() {
                start[g + 1] += start[g];
            }
            let runs: Vec<Run> =
                first.iter().enumerate().map(|(g, &id)| (id, start[g], start[g + 1])).collect();
            let mut valid: Vec<IdxSize> = vec![0; rows.len()];
            for (&(i, _), g) in rows.iter().zip(groups) {
                let at = &mut start[g as usize];
                valid[*at] = i;
                *at += 1;
            }
            (valid, runs)
        })
        .collect();
    let mut valid: Vec<IdxSize> = Vec::with_capacity(parts.iter().map(|p| p.0.len()).sum());
    let mut runs: Vec<Run> = Vec::with_capacity(parts.iter().map(|p| p.1.len()).sum());
    for (rows, part_runs) in parts {
        let base = valid.len();
        runs.extend(part_runs.into_iter().map(|(id, lo, hi)| (id, base + lo, base + hi)));
        valid.extend(rows);
    }
    (valid, runs)
}

/// Distinct customers of a frame in customer order.
fn count_customers(frame: &DataFrame) -> Result<usize> {
    let ids = frame.column("customer_id").polars("customer_id")?.str().polars("customer_id")?;
    // Changes of id, counted in parallel blocks (each against the row before it).
    Ok(row_blocks(ids.len())
        .map(|(lo, hi)| {
            let block = ids.slice(lo as i64, hi - lo);
            let mut prev: Option<&str> = if lo == 0 { None } else { ids.get(lo - 1) };
            let mut changes = 0;
            for id in block.iter() {
                if id != prev {
                    changes += 1;
                    prev = id;
                }
            }
            changes
        })
        .sum())
}

impl fmt::Display for ValidationSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "transactions: {} ({})", self.path.display(), self.format)?;
        writeln!(f, "  rows read           {:>12}", int(self.rows_read as i128))?;
        writeln!(f, "  rows valid          {:>12}", int(self.rows_valid as i128))?;
        writeln!(f, "  rows dropped        {:>12}", int(self.rows_dropped() as i128))?;
        for d in &self.dropped {
            let ex: Vec<String> = d.examples.iter().map(|(r, v)| format!("row {r}: {v}")).collect();
            writeln!(
                f,
                "    {:<34} {:>8}  column `{}`, e.g. {}",
                d.reason.describe(),
                int(d.count as i128),
                d.column,
                ex.join("; ")
            )?;
        }
        writeln!(
            f,
            "  negative amounts    {:>12}  (refunds/cancellations, kept)",
            int(self.negative_amounts as i128)
        )?;
        writeln!(f, "  zero amounts        {:>12}  (kept)", int(self.zero_amounts as i128))?;
        writeln!(
            f,
            "  exact duplicates    {:>12}  ({})",
            int(self.duplicates as i128),
            if self.duplicates == 0 {
                "none"
            } else if self.duplicates_dropped {
                "dropped, one of each kept: [input.transactions].drop_duplicates"
            } else {
                "kept: [input.transactions].drop_duplicates is off"
            }
        )?;
        if let Some(o) = self.orders {
            writeln!(
                f,
                "  orders              {:>12}  (line items summed per customer and order id)",
                int(o as i128)
            )?;
        }
        writeln!(f, "  transactions        {:>12}", int(self.transactions as i128))?;
        writeln!(f, "  customers           {:>12}", int(self.customers as i128))?;
        if let (Some(a), Some(b)) = (self.first_ts, self.last_ts) {
            writeln!(f, "  period              {} .. {}", a, b)?;
        }
        write!(f, "  total amount        {:>15.2}", self.total_amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileFormat;
    use std::fs::File;
    use std::io::Write;

    fn input_for(path: &Path) -> TransactionsInput {
        TransactionsInput { path: path.display().to_string(), ..TransactionsInput::default() }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        let mut f = File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        p
    }

    /// The three ways rows get ordered (already in order, grouped per customer, scattered)
    /// give the same frame: (customer, ts) order, stable, invalid rows gone, ids trimmed.
    #[test]
    fn every_row_order_gives_the_customer_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            ("b", "2024-01-03", "1"),
            ("b", "2024-01-01", "2"),
            ("x", "bad", "9"),
            ("b", "2024-01-01", "3"),
            ("a", "2024-01-05", "4"),
            ("a", "2024-01-02", "5"),
            ("c", "2024-01-01", "6"),
        ];
        let want = vec![
            ("a", "2024-01-02", 5.0),
            ("a", "2024-01-05", 4.0),
            ("b", "2024-01-01", 2.0),
            ("b", "2024-01-01", 3.0),
            ("b", "2024-01-03", 1.0),
            ("c", "2024-01-01", 6.0),
        ];
        let load = |name: &str, order: &[usize], pad: bool| {
            let mut text = String::from("customer_id,ts,amount\n");
            for &i in order {
                let (c, t, a) = rows[i];
                let c = if pad { format!(" {c} ") } else { c.to_string() };
                text.push_str(&format!("{c},{t},{a}\n"));
            }
            let mut input = input_for(&write(dir.path(), name, &text));
            input.max_invalid_share = 1.0;
            let t = load_transactions(&input, 1000).unwrap();
            assert_eq!(t.summary.customers, 3, "{name}");
            let f = &t.frame;
            let ids = f.column("customer_id").unwrap().str().unwrap().clone();
            let ts = f.column("ts").unwrap().datetime().unwrap().physical().clone();
            let amount = f.column("amount").unwrap().f64().unwrap().clone();
            (0..f.height())
                .map(|i| {
                    let day = DateTime::from_timestamp_millis(ts.get(i).unwrap()).unwrap().date_naive();
                    (ids.get(i).unwrap().to_string(), day.to_string(), amount.get(i).unwrap())
                })
                .collect::<Vec<_>>()
        };
        let want: Vec<(String, String, f64)> =
            want.into_iter().map(|(c, t, a)| (c.to_string(), t.to_string(), a)).collect();
        // Grouped per customer (b, x, a, c runs), times unordered within each.
        assert_eq!(load("grouped.csv", &[0, 1, 2, 3, 4, 5, 6], false), want);
        // Scattered: customers interleave, so more runs than half the rows.
        assert_eq!(load("scattered.csv", &[1, 5, 3, 6, 0, 4, 2], false), want);
        // Already in order, and ids that need trimming.
        assert_eq!(load("sorted.csv", &[5, 4, 1, 3, 0, 6, 2], true), want);
    }

    /// A log in time order (customers scattered: grouped through the hash table) comes out as
    /// a stable sort of the valid rows by (customer, ts, amount) does it, ties and all.
    #[test]
    fn a_time_ordered_log_comes_out_as_the_sort_by_customer_time_and_amount() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = crate::rng::Rng::new(7);
        let mut rows: Vec<(String, i64, f64)> = (0..4000)
            .map(|_| {
                let c = format!("c{}", rng.below(300));
                // Few days and few amounts: many ties on time and on (time, amount).
                (c, rng.below(20) as i64, (rng.below(6) as f64) * 2.5 - 2.5)
            })
            .collect();
        rows.sort_by_key(|r| r.1);
        let mut text = String::from("customer_id,ts,amount\n");
        for (c, d, a) in &rows {
            text.push_str(&format!("{c},2024-01-{:02},{a}\n", d + 1));
        }
        text.push_str("c1,,3\n");
        let mut input = input_for(&write(dir.path(), "time.csv", &text));
        input.max_invalid_share = 1.0;
        let got = load_transactions(&input, 1000).unwrap().frame;
        let want = got
            .clone()
            .lazy()
            .sort(["customer_id", "ts", "amount"], SortMultipleOptions::default().with_maintain_order(true))
            .collect()
            .unwrap();
        assert!(got.equals(&want));
        let mut expected = rows.clone();
        expected.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2)));
        // Exact duplicates are dropped (`drop_duplicates`, on by default).
        expected.dedup();
        assert_eq!(got.height(), expected.len());
        let amounts: Vec<f64> = got.column("amount").unwrap().f64().unwrap().into_no_null_iter().collect();
        assert_eq!(amounts, expected.iter().map(|r| r.2).collect::<Vec<_>>());
    }

    /// Fault 11: a NUL byte inside an id past the start of a file passed `validate` (only the
    /// head was checked) and PostgreSQL then refused every run. Every value is checked.
    #[test]
    fn a_nul_byte_in_any_id_is_an_error_naming_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from("customer_id,ts,amount\n");
        for i in 0..5000 {
            text.push_str(&format!("c{i},2024-01-01,1\n"));
        }
        text.push_str("bad\0id,2024-01-02,1\n");
        let err = load_transactions(&input_for(&write(dir.path(), "nul.csv", &text)), 1000).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("nul.csv") && msg.contains("`customer_id`") && msg.contains("row 5001"),
            "{msg}"
        );
        assert!(msg.contains("NUL"), "{msg}");
        // The same in a Parquet file.
        let df =
            df!("customer_id" => ["a", "b\0c"], "ts" => ["2024-01-01", "2024-01-02"], "amount" => [1.0, 2.0])
                .unwrap();
        let err = transactions_from_frame(df, &TransactionsInput::default(), "frame").unwrap_err();
        assert!(err.to_string().contains("row 2"), "{err}");
    }

    /// Fault 11: with an order id, "exact duplicates" compared only the mapped columns and
    /// dropped invoice lines of different products. Exact means every column of the row.
    #[test]
    fn exact_duplicates_are_equal_in_every_column() {
        let dir = tempfile::tempdir().unwrap();
        // Invoice 1: two products at the same price (distinct lines) and one line repeated.
        let text = "invoice,product,customer_id,ts,amount\n\
                    1,apple,a,2024-01-01 10:00,2\n\
                    1,pear,a,2024-01-01 10:00,2\n\
                    1,pear,a,2024-01-01 10:00,2\n\
                    2,apple,b,2024-01-02 10:00,5\n";
        let mut input = input_for(&write(dir.path(), "lines.csv", text));
        input.order_id = "invoice".into();
        input.drop_duplicates = Some(true);
        let t = load_transactions(&input, 1000).unwrap();
        assert_eq!(t.summary.duplicates, 1, "only the repeated pear line");
        let amounts = t.frame.column("amount").unwrap().f64().unwrap().clone();
        assert_eq!(amounts.get(0), Some(4.0), "apple + pear, the repeat dropped");
        // Without an order id, the same rule.
        let text =
            "product,customer_id,ts,amount\napple,a,2024-01-01,2\npear,a,2024-01-01,2\npear,a,2024-01-01,2\n";
        let mut input = input_for(&write(dir.path(), "rows.csv", text));
        input.drop_duplicates = Some(true);
        let t = load_transactions(&input, 1000).unwrap();
        assert_eq!((t.summary.duplicates, t.frame.height()), (1, 2));
        assert_eq!(t.frame.get_column_names().len(), 3, "the whole-row text is not kept");
    }

    /// Refunds and zero amounts are counted, and the total is the sum of the kept amounts.
    #[test]
    fn negative_and_zero_amounts_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let text =
            "customer_id,ts,amount\na,2024-01-01,-5\na,2024-01-02,0\nb,2024-01-01,3.5\nb,2024-01-03,-0\n";
        let t = load_transactions(&input_for(&write(dir.path(), "amounts.csv", text)), 1000).unwrap();
        let s = &t.summary;
        assert_eq!((s.negative_amounts, s.zero_amounts, s.customers), (1, 2, 2));
        assert_eq!(s.total_amount, -1.5);
    }

    #[test]
    fn csv_with_bad_rows_counts_each_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "t.csv",
            "customer_id,ts,amount\n\
             a,2024-01-01,10\n\
             ,2024-01-02,5\n\
             b,not a date,3\n\
             c,2024-01-03,abc\n\
             c,2024-01-04 10:30:00,-2.5\n\
             d,,1\n\
             e,2024-01-05,\n",
        );
        let mut input = input_for(&p);
        input.max_invalid_share = 1.0;
        let t = load_transactions(&input, 1000).unwrap();
        let s = &t.summary;
        assert_eq!(s.rows_read, 7);
        assert_eq!(s.rows_valid, 2);
        let count = |r| s.dropped.iter().find(|d| d.reason == r).map_or(0, |d| d.count);
        assert_eq!(count(DropReason::MissingCustomerId), 1);
        assert_eq!(count(DropReason::UnparsableTimestamp), 1);
        assert_eq!(count(DropReason::MissingTimestamp), 1);
        assert_eq!(count(DropReason::NonNumericAmount), 1);
        assert_eq!(count(DropReason::MissingAmount), 1);
        let bad_ts = s.dropped.iter().find(|d| d.reason == DropReason::UnparsableTimestamp).unwrap();
        assert_eq!(bad_ts.examples, vec![(3, "\"not a date\"".to_string())]);
        assert_eq!(s.negative_amounts, 1);
        assert_eq!(t.frame.height(), 2);
    }

    #[test]
    fn too_many_invalid_rows_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "t.csv", "customer_id,ts,amount\na,2024-01-01,x\nb,2024-01-01,1\n");
        let err = load_transactions(&input_for(&p), 1000).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("max_invalid_share"), "{err}");
    }

    #[test]
    fn order_lines_are_summed() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "t.csv",
            "cust,when,qty,price,basket\n\
             a,2024-01-01 10:00:00,2,1.5,b1\n\
             a,2024-01-01 10:00:00,1,4,b1\n\
             a,2024-01-03 09:00:00,1,2,b2\n",
        );
        let input = TransactionsInput {
            customer_id: "cust".into(),
            timestamp: "when".into(),
            amount: String::new(),
            quantity: "qty".into(),
            unit_price: "price".into(),
            order_id: "basket".into(),
            ..input_for(&p)
        };
        let t = load_transactions(&input, 1000).unwrap();
        assert_eq!(t.summary.orders, Some(2));
        let amounts: Vec<f64> =
            t.frame.column("amount").unwrap().f64().unwrap().into_no_null_iter().collect();
        assert_eq!(amounts, vec![7.0, 2.0]);
    }

    #[test]
    fn whitespace_file_with_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "cd.txt",
            " id  date n value\r\n 00001 19970101  1   11.77\r\n 00002 19970112  5   77.00\r\n",
        );
        let input = TransactionsInput {
            format: FileFormat::Whitespace,
            customer_id: "id".into(),
            timestamp: "date".into(),
            timestamp_format: "%Y%m%d".into(),
            amount: "value".into(),
            ..input_for(&p)
        };
        let t = load_transactions(&input, 1000).unwrap();
        assert_eq!(t.summary.rows_valid, 2);
        assert_eq!(t.summary.customers, 2);
        assert_eq!(
            t.summary.first_ts.unwrap(),
            chrono::NaiveDate::from_ymd_opt(1997, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap()
        );
    }

    #[test]
    fn structural_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(dir.path(), "e.csv", "");
        let err = load_transactions(&input_for(&empty), 1000).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        assert_eq!(err.exit_code(), 2);

        let header_only = write(dir.path(), "h.csv", "customer_id,ts,amount\n");
        let err = load_transactions(&input_for(&header_only), 1000).unwrap_err();
        assert!(err.to_string().contains("no data rows"), "{err}");

        let missing = write(dir.path(), "m.csv", "customer_id,date,amount\na,2024-01-01,1\n");
        let err = load_transactions(&input_for(&missing), 1000).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`ts`") && msg.contains("timestamp") && msg.contains("date"), "{msg}");

        let odd = write(dir.path(), "x.json", "{}");
        let err = load_transactions(&input_for(&odd), 1000).unwrap_err();
        assert!(err.to_string().contains("cannot tell the format"), "{err}");

        let fake = write(dir.path(), "f.parquet", "customer_id,ts,amount\n");
        let err = load_transactions(&input_for(&fake), 1000).unwrap_err();
        assert!(err.to_string().contains("not a Parquet file"), "{err}");
    }
}
