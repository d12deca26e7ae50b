//! Reading a table file and parsing its columns, shared by the transaction log (`ingest`) and
//! the event log, customer table and contact log (`activity`): the format from the
//! extension, CSV / Parquet / whitespace-separated text read with every structural problem
//! named (file, line), timestamps parsed (ISO 8601 with or without a UTC offset, or a
//! configured format), numbers, NUL bytes refused, example rows for the validation summary.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};
use polars::prelude::*;
use rayon::prelude::*;

use crate::config::{FileFormat, InputSource, TransactionsInput};
use crate::error::{Error, PolarsContext, Result};

mod pg;

/// Timestamp formats tried, in order, when `timestamp_format` is empty and the column is text.
const ISO_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
];

/// A datetime literal (milliseconds since the epoch), compared with `__ts` as it is.
pub(crate) fn ms_literal(ms: i64) -> Expr {
    lit(ms).cast(DataType::Datetime(TimeUnit::Milliseconds, None))
}

/// The latest plausible time of a row of `path`: its modification time plus `slack_days`
/// (no limit when the time cannot be read).
pub(crate) fn latest_ms(path: &Path, slack_days: i64) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(i64::MAX, |d| (d.as_millis() as i64).saturating_add(slack_days.saturating_mul(86_400_000)))
}

/// Which file columns play which contract role.
pub(crate) struct Mapping {
    /// The config section that maps these columns (for messages).
    pub(crate) section: &'static str,
    pub(crate) customer_id: String,
    pub(crate) timestamp: String,
    pub(crate) timestamp_format: String,
    pub(crate) amount: Option<String>,
    pub(crate) quantity_price: Option<(String, String)>,
    pub(crate) order_id: Option<String>,
    /// Rows after this instant (ms since the epoch) are in the future.
    pub(crate) latest_ms: i64,
    pub(crate) drop_duplicates: bool,
}

impl Mapping {
    pub(crate) fn new(input: &TransactionsInput, latest_ms: i64) -> Self {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Mapping {
            section: "input.transactions",
            customer_id: input.customer_id.clone(),
            timestamp: input.timestamp.clone(),
            timestamp_format: input.timestamp_format.clone(),
            amount: nonempty(&input.amount),
            quantity_price: match (nonempty(&input.quantity), nonempty(&input.unit_price)) {
                (Some(q), Some(p)) => Some((q, p)),
                _ => None,
            },
            order_id: nonempty(&input.order_id),
            latest_ms,
            drop_duplicates: input.drop_duplicates.unwrap_or(input.order_id.is_empty()),
        }
    }

    pub(crate) fn keys(&self) -> Vec<(&'static str, &str)> {
        let mut keys =
            vec![("customer_id", self.customer_id.as_str()), ("timestamp", self.timestamp.as_str())];
        if let Some(a) = &self.amount {
            keys.push(("amount", a));
        }
        if let Some((q, p)) = &self.quantity_price {
            keys.push(("quantity", q));
            keys.push(("unit_price", p));
        }
        if let Some(o) = &self.order_id {
            keys.push(("order_id", o));
        }
        keys
    }

    pub(crate) fn check_present(&self, path: &Path, df: &DataFrame) -> Result<()> {
        let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        for (key, column) in self.keys() {
            if !names.iter().any(|n| n == column) {
                return Err(Error::MissingColumn {
                    path: path.to_path_buf(),
                    section: "input.transactions".into(),
                    key: key.into(),
                    column: column.into(),
                    found: names.join(", "),
                });
            }
        }
        Ok(())
    }
}

pub(crate) fn resolve_format(path: &Path, format: FileFormat, section: &str) -> Result<FileFormat> {
    if format != FileFormat::Auto {
        return Ok(format);
    }
    let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "csv" | "tsv" => Ok(FileFormat::Csv),
        "parquet" | "pq" => Ok(FileFormat::Parquet),
        _ => Err(Error::InputFile {
            path: path.to_path_buf(),
            message: format!(
                "cannot tell the format from the extension {ext:?}: expected .csv, .tsv, \
                 .parquet or .pq, or set [{section}].format to \"csv\", \"parquet\" \
                 or \"whitespace\""
            ),
        }),
    }
}

/// An input as read, before mapping: its rows, the format they were read as, and the name
/// messages and the validation summary give the source (the path, or the query and server).
pub(crate) struct RawInput {
    pub(crate) frame: DataFrame,
    pub(crate) format: String,
    pub(crate) name: std::path::PathBuf,
    /// The latest plausible time of a row (ms since the epoch): a file's modification time,
    /// a query's now, plus `max_future_days`.
    pub(crate) latest_ms: i64,
}

/// Read the input `input` describes: the query on its PostgreSQL server when `sql` is set
/// (`batch_rows` rows per round trip), else the file at `path`.
pub(crate) fn read_input(input: &TransactionsInput, batch_rows: usize, section: &str) -> Result<RawInput> {
    let name = std::path::PathBuf::from(input.source_name());
    if input.sql.is_empty() {
        if let Some(url) = crate::s3::S3Url::parse(&input.path) {
            return read_s3(url, input, section, name);
        }
        let (frame, format) = read_raw(&name, input, section)?;
        let latest_ms = latest_ms(&name, input.max_future_days);
        return Ok(RawInput { frame, format: format!("{format:?}").to_lowercase(), name, latest_ms });
    }
    let url = match crate::config::targets::SqlTarget::parse(&input.sql) {
        Ok(crate::config::targets::SqlTarget::Postgres(url)) => url,
        _ => return Err(Error::config("(config)", format!("{section}.sql"), "expected a postgres:// URL")),
    };
    let frame = pg::read_query(&url, &input.query, batch_rows, &name)?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let latest_ms = now_ms.saturating_add(input.max_future_days.saturating_mul(86_400_000));
    Ok(RawInput { frame, format: "postgresql".into(), name, latest_ms })
}

/// An input file on S3 (`s3://bucket/key`): downloaded into a temporary directory (removed
/// after), read as the file it is; messages name the URL; its rows may be timed up to the
/// object's last modification + `max_future_days`.
fn read_s3(
    url: std::result::Result<crate::s3::S3Url, String>,
    input: &TransactionsInput,
    section: &str,
    name: std::path::PathBuf,
) -> Result<RawInput> {
    let input_err = |message: String| Error::InputFile { path: name.clone(), message };
    let url = url.map_err(input_err)?;
    let client = crate::s3::Client::from_env().map_err(|e| input_err(e.message))?;
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("fidelis-s3-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| input_err(format!("cannot create {}: {e}", dir.display())))?;
    let base = url.key.rsplit('/').next().filter(|b| !b.is_empty()).unwrap_or("object");
    let local = dir.join(base);
    let read = client
        .get_to_file(&url, &local)
        .map_err(|e| input_err(format!("cannot read the object ({}); check [{section}].path", e.message)))
        .and_then(|(_, modified)| {
            let (frame, format) = read_raw(&local, input, section).map_err(|e| e.renamed(&local, &name))?;
            let slack = input.max_future_days.saturating_mul(86_400_000);
            let latest_ms = modified.map_or(i64::MAX, |m| m.saturating_add(slack));
            Ok(RawInput {
                frame,
                format: format!("{format:?}").to_lowercase(),
                name: name.clone(),
                latest_ms,
            })
        });
    let _ = std::fs::remove_dir_all(&dir);
    read
}

/// Read `path` as `input` says (`section` names the config section in messages).
pub(crate) fn read_raw(
    path: &Path,
    input: &TransactionsInput,
    section: &str,
) -> Result<(DataFrame, FileFormat)> {
    let input_err = |message: String| Error::InputFile { path: path.to_path_buf(), message };
    let meta = std::fs::metadata(path)
        .map_err(|e| input_err(format!("cannot open the file ({e}); check [{section}].path")))?;
    if meta.is_dir() {
        return Err(input_err("is a directory, expected a CSV or Parquet file".into()));
    }
    if meta.len() == 0 {
        return Err(input_err("the file is empty (0 bytes), expected a CSV or Parquet file".into()));
    }
    let format = resolve_format(path, input.format, section)?;
    let mut head = [0u8; 4096];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|e| input_err(format!("cannot read the file ({e})")))?;
    let head = &head[..n];
    let df = match format {
        FileFormat::Parquet => {
            if !head.starts_with(b"PAR1") {
                return Err(input_err(
                    "is not a Parquet file (it does not start with the PAR1 magic bytes)".into(),
                ));
            }
            let file = File::open(path).map_err(|e| input_err(format!("cannot read the file ({e})")))?;
            let mut reader = ParquetReader::new(file);
            let expected =
                reader.num_rows().map_err(|e| input_err(format!("cannot be read as Parquet: {e}")))?;
            let df = reader
                .finish()
                .map_err(|e| input_err(format!("cannot be read as Parquet (damaged?): {e}")))?;
            if df.height() != expected {
                return Err(input_err(format!(
                    "is damaged: its footer promises {expected} rows but {} could be read",
                    df.height()
                )));
            }
            df
        }
        FileFormat::Csv | FileFormat::Whitespace => {
            if head.contains(&0) {
                return Err(input_err(
                    "looks like a binary file (it contains NUL bytes), expected CSV text".into(),
                ));
            }
            if format == FileFormat::Csv {
                read_csv(path, input).map_err(|e| {
                    let why = csv_problem(path, input.delimiter.as_bytes()[0], input.has_header)
                        // Polars' own advice names polars options, not fidelis keys.
                        .unwrap_or_else(|| {
                            e.to_string().split("\n\n").next().unwrap_or_default().to_string()
                        });
                    input_err(format!("cannot be read as CSV: {why}"))
                })?
            } else {
                read_whitespace(path, input)?
            }
        }
        FileFormat::Auto => unreachable!("resolved above"),
    };
    let mut df = df;
    if !input.column_names.is_empty() {
        if input.column_names.len() != df.width() {
            return Err(input_err(format!(
                "[{section}].column_names lists {} names but the file has {} columns",
                input.column_names.len(),
                df.width()
            )));
        }
        df.set_column_names(&input.column_names).polars("renaming columns")?;
    }
    if df.height() == 0 {
        return Err(input_err("the file has no data rows".into()));
    }
    Ok((df, format))
}

/// What makes a CSV file unreadable, with its line number: text that is not UTF-8, or a line
/// with another number of fields than the first (quoted fields may hold the separator and
/// line breaks). `None` when neither is found.
pub(crate) fn csv_problem(path: &Path, sep: u8, has_header: bool) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let (mut line, mut fields, mut expected, mut in_quotes) = (1usize, 1usize, None, false);
    let mut line_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'"' => in_quotes = !in_quotes,
            b if b == sep && !in_quotes => fields += 1,
            b'\n' if !in_quotes => {
                if let Err(e) = std::str::from_utf8(&bytes[line_start..i]) {
                    return Some(format!(
                        "line {line} is not UTF-8 text (byte 0x{:02x} at position {}); save the file as UTF-8",
                        bytes[line_start + e.valid_up_to()],
                        e.valid_up_to() + 1
                    ));
                }
                let blank = bytes[line_start..i].iter().all(|c| c.is_ascii_whitespace());
                if !blank {
                    match expected {
                        None => expected = Some(fields),
                        Some(n) if n != fields => {
                            let first = if has_header { "the header" } else { "line 1" };
                            return Some(format!(
                                "line {line} has {fields} fields, {first} has {n} (an unquoted separator in a value, \
                                 or a missing one?)"
                            ));
                        }
                        _ => {}
                    }
                }
                line += 1;
                fields = 1;
                line_start = i + 1;
            }
            _ => {}
        }
    }
    std::str::from_utf8(&bytes[line_start..])
        .err()
        .map(|_| format!("line {line} is not UTF-8 text; save the file as UTF-8"))
}

pub(crate) fn read_csv(path: &Path, input: &TransactionsInput) -> PolarsResult<DataFrame> {
    let sep = input.delimiter.as_bytes()[0];
    CsvReadOptions::default()
        .with_has_header(input.has_header)
        // Every column as text: parsing (and counting what fails to parse) is ours.
        .with_infer_schema_length(Some(0))
        .map_parse_options(|o| o.with_separator(sep))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))?
        .finish()
}

/// Columns separated by runs of blanks; `\r\n` line ends and blank lines are tolerated.
pub(crate) fn read_whitespace(path: &Path, input: &TransactionsInput) -> Result<DataFrame> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::InputFile {
        path: path.to_path_buf(),
        message: format!("cannot be read as text: {e}"),
    })?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let mut names: Vec<String> = Vec::new();
    if input.has_header {
        if let Some((_, header)) = lines.next() {
            names = header.split_whitespace().map(str::to_string).collect();
        }
    }
    let mut columns: Vec<Vec<String>> = Vec::new();
    for (line_no, line) in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if columns.is_empty() {
            if names.is_empty() {
                names = (1..=fields.len()).map(|i| format!("column_{i}")).collect();
            }
            columns = vec![Vec::new(); names.len()];
        }
        if fields.len() != names.len() {
            return Err(Error::InputFile {
                path: path.to_path_buf(),
                message: format!(
                    "line {}: {} fields, expected {} ({})",
                    line_no + 1,
                    fields.len(),
                    names.len(),
                    names.join(", ")
                ),
            });
        }
        for (col, field) in columns.iter_mut().zip(fields) {
            col.push(field.to_string());
        }
    }
    if columns.is_empty() {
        columns = vec![Vec::new(); names.len()];
    }
    let cols: Vec<Column> =
        names.iter().zip(columns).map(|(n, v)| Column::new(n.as_str().into(), v)).collect();
    DataFrame::new_infer_height(cols).polars("building a frame from the whitespace file")
}

/// An expression that parses a text column to Datetime(ms) with the given formats (nulls
/// where nothing matches).
pub(crate) fn parse_text_ts(c: Expr, formats: &[&str]) -> Expr {
    let attempts: Vec<Expr> = formats
        .iter()
        .map(|f| {
            c.clone().str().to_datetime(
                Some(TimeUnit::Milliseconds),
                None,
                StrptimeOptions { format: Some((*f).into()), strict: false, exact: true, cache: true },
                lit("raise"),
            )
        })
        .collect();
    if attempts.len() == 1 {
        attempts.into_iter().next().expect("one attempt")
    } else {
        coalesce(&attempts)
    }
}

/// Whether ISO 8601 text timestamps carry a UTC offset (`Z`, `+02:00`, `-0500`).
pub(crate) fn has_utc_offsets(df: &DataFrame, name: &str) -> Result<bool> {
    let c = df.column(name).polars("reading the timestamp column")?.str().polars("timestamps")?;
    Ok(c.iter().flatten().take(1000).any(|v| utc_offset(v.trim()).is_some()))
}

/// The offset suffix of an ISO 8601 timestamp, if it has one.
pub(crate) fn utc_offset(v: &str) -> Option<&str> {
    if v.len() < 11 {
        return None; // a date alone: `-05` would be its day
    }
    if v.ends_with('Z') || v.ends_with('z') {
        return Some(&v[v.len() - 1..]);
    }
    let tail = &v[v.len().saturating_sub(6)..];
    let sign = tail.rfind(['+', '-'])?;
    let digits = &tail[sign + 1..];
    (digits.len() >= 4 && digits.chars().filter(|c| *c != ':').all(|c| c.is_ascii_digit()))
        .then(|| &tail[sign..])
}

/// ISO 8601 text timestamps with or without a UTC offset, as UTC milliseconds (naive UTC
/// datetimes): `2024-01-31T12:00:00Z` and `2024-01-31 14:00:00+02:00` are the same instant.
/// Values that do not parse are null (counted as unparsable).
pub(crate) fn offset_timestamps(df: &DataFrame, name: &str) -> Result<Series> {
    let c = df.column(name).polars("reading the timestamp column")?.str().polars("timestamps")?;
    let parse = |v: &str| -> Option<i64> {
        let v = v.trim();
        if let Some(off) = utc_offset(v) {
            let base = v[..v.len() - off.len()].replacen(' ', "T", 1);
            // RFC 3339 needs seconds.
            let base = if base.len() == 16 { format!("{base}:00") } else { base };
            let off = if off.eq_ignore_ascii_case("z") { "+00:00".to_string() } else { off.replace(':', "") };
            let off = if off.len() == 5 { format!("{}:{}", &off[..3], &off[3..]) } else { off };
            return chrono::DateTime::parse_from_rfc3339(&format!("{base}{off}"))
                .ok()
                .map(|d| d.timestamp_millis());
        }
        ISO_FORMATS.iter().find_map(|f| {
            NaiveDateTime::parse_from_str(v, f)
                .ok()
                .or_else(|| NaiveDate::parse_from_str(v, f).ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
                .map(|d| d.and_utc().timestamp_millis())
        })
    };
    let ms: Vec<Option<i64>> = c.iter().map(|v| v.and_then(parse)).collect();
    Series::new(name.into(), ms)
        .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
        .polars("parsing timestamps with UTC offsets")
}

pub(crate) fn ts_expr(path: &Path, df: &DataFrame, m: &Mapping) -> Result<Expr> {
    let name = m.timestamp.as_str();
    let dtype = df.column(name).polars("reading the timestamp column")?.dtype().clone();
    let c = col(name);
    let datetime_ms = DataType::Datetime(TimeUnit::Milliseconds, None);
    let formats: Vec<&str> =
        if m.timestamp_format.is_empty() { ISO_FORMATS.to_vec() } else { vec![m.timestamp_format.as_str()] };
    Ok(match dtype {
        // Polars stores datetimes as UTC instants: dropping the zone keeps the UTC time.
        DataType::Datetime(_, _) | DataType::Date => c.cast(datetime_ms),
        DataType::String if m.timestamp_format.is_empty() && has_utc_offsets(df, name)? => {
            lit(offset_timestamps(df, name)?)
        }
        DataType::String => parse_text_ts(c.str().strip_chars(lit(NULL)), &formats),
        dt if dt.is_integer() && !m.timestamp_format.is_empty() => {
            parse_text_ts(c.cast(DataType::String), &formats)
        }
        other => {
            return Err(Error::InputFile {
                path: path.to_path_buf(),
                message: format!(
                    "column `{name}` (config key [{}].timestamp) has type \
                     {other}; expected a date, a datetime, or text with timestamp_format",
                    m.section
                ),
            })
        }
    })
}

/// A numeric view of a column: numbers cast to f64, text trimmed and parsed (null when not
/// a number). Non-finite values become null too.
pub(crate) fn numeric_expr(df: &DataFrame, name: &str) -> Result<Expr> {
    let dtype = df.column(name).polars("reading a numeric column")?.dtype().clone();
    let c = col(name);
    let v = if dtype == DataType::String {
        c.str().strip_chars(lit(NULL)).cast(DataType::Float64)
    } else {
        c.cast(DataType::Float64)
    };
    Ok(when(v.clone().is_finite()).then(v).otherwise(lit(NULL).cast(DataType::Float64)))
}

/// Refuse a text column holding a NUL byte anywhere (every value is checked, in parallel
/// blocks): no SQL sink stores one (PostgreSQL refuses the whole run), and it is never part of
/// a real id. The error names the file, column, row (1-based, of the rows read) and value.
pub fn check_no_nul(path: &Path, column: &str, values: &StringChunked) -> Result<()> {
    let first = row_blocks(values.len())
        .filter_map(|(lo, hi)| {
            values
                .slice(lo as i64, hi - lo)
                .iter()
                .position(|v| v.is_some_and(|v| v.contains('\0')))
                .map(|i| lo + i)
        })
        .min();
    match first {
        None => Ok(()),
        Some(row) => Err(Error::InvalidRows {
            path: path.to_path_buf(),
            message: format!(
                "column `{column}`, row {}: {:?} holds a NUL byte (expected text without control bytes)",
                row + 1,
                values.get(row).unwrap_or_default()
            ),
        }),
    }
}

pub(crate) fn examples(raw: &DataFrame, mask: &BooleanChunked, column: &str) -> Result<Vec<(u64, String)>> {
    // The frame is in file order: a row's number is its position + 1.
    let positions: Vec<IdxSize> = mask
        .iter()
        .enumerate()
        .filter(|(_, m)| *m == Some(true))
        .map(|(i, _)| i as IdxSize)
        .take(3)
        .collect();
    let rows: Vec<Option<u64>> = positions.iter().map(|&p| Some(u64::from(p) + 1)).collect();
    let picked = raw.take(&IdxCa::from_vec("rows".into(), positions)).polars("selecting invalid rows")?;
    let first_col = column.split(" x ").next().unwrap_or(column);
    let col = picked.column(first_col).polars("raw values")?;
    let values: Vec<Option<String>> = match col.dtype() {
        // Datetimes are shown from their integer value: a damaged one may be beyond what a
        // calendar (and polars' own conversion) can show.
        DataType::Datetime(unit, _) => {
            let per_ms = match unit {
                TimeUnit::Nanoseconds => 1_000_000,
                TimeUnit::Microseconds => 1_000,
                TimeUnit::Milliseconds => 1,
            };
            let phys = col.datetime().polars("raw values")?.physical().clone();
            phys.iter()
                .map(|v| {
                    v.map(|v| match chrono::DateTime::from_timestamp_millis(v / per_ms) {
                        Some(d) => d.naive_utc().to_string(),
                        None => format!("{v} (not a date)"),
                    })
                })
                .collect()
        }
        _ => {
            let text = col.cast(&DataType::String).polars("raw values")?;
            text.str().polars("raw values")?.iter().map(|v| v.map(str::to_string)).collect()
        }
    };
    Ok(rows
        .iter()
        .zip(values)
        .map(|(r, v)| (r.unwrap_or(0), v.map_or_else(|| "(empty)".to_string(), |s| format!("{s:?}"))))
        .collect())
}

/// `0..n` as `lo..hi` blocks of [`ROW_BLOCK`] rows, in parallel.
/// Rows per block of the passes over every row that run in parallel.
const ROW_BLOCK: usize = 1 << 20;

pub(crate) fn row_blocks(n: usize) -> impl ParallelIterator<Item = (usize, usize)> {
    (0..n.div_ceil(ROW_BLOCK)).into_par_iter().map(move |b| (b * ROW_BLOCK, ((b + 1) * ROW_BLOCK).min(n)))
}
