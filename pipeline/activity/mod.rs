//! The optional inputs beside the transaction log: activity events and the customer table
//! (data contract in ARCHITECTURE.md), read and validated like transactions.
//!
//! Events: `customer_id`, `ts`, `event`, `value` (f64, null when absent). Rows without a
//! customer id, a parsable timestamp or an event name, or with a value that is not a number,
//! are counted by reason with example row numbers; more than `max_invalid_share` of them is
//! an error naming the file and column. Sorted by customer and time.
//!
//! Customers: one row per customer; a duplicate or missing id, an unparsable date or number,
//! or a sentiment other than green / yellow / red is an error naming the file, column and
//! row (a customer table is reference data: it is fixed, not partially dropped).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;
use serde::Serialize;

use crate::config::{ContactsInput, CustomersInput, EventsInput, InputSource, TransactionsInput};
use crate::error::{Error, PolarsContext, Result};
use crate::table::{self, Mapping};

pub mod subscriptions;
pub use subscriptions::{load_subscriptions, Subscriptions};

/// Rows of one invalid kind.
#[derive(Debug, Clone, Serialize)]
pub struct Invalid {
    pub reason: String,
    pub column: String,
    pub count: usize,
    /// (row number in the file, raw value)
    pub examples: Vec<(u64, String)>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct EventsSummary {
    pub path: PathBuf,
    pub rows_read: usize,
    pub rows_valid: usize,
    pub invalid: Vec<Invalid>,
    /// Rows per event name.
    pub events: BTreeMap<String, usize>,
}

/// The validated event log, sorted by customer and time, with per-customer ranges.
#[derive(Debug, Clone, Default)]
pub struct Events {
    pub summary: EventsSummary,
    /// Customer id -> range of rows.
    pub by_customer: HashMap<String, std::ops::Range<usize>>,
    /// Epoch day of each event.
    pub day: Vec<i32>,
    /// Event name index into `names`.
    pub name: Vec<u16>,
    pub value: Vec<f64>,
    pub names: Vec<String>,
    /// First day each name occurs in the log (by `names` index).
    pub first_day: Vec<i32>,
    /// The whole log's facts, when these rows are one part of it (a bucket of customers).
    pub global: Option<EventFacts>,
}

impl Events {
    /// Whether an event of this name occurs anywhere in the log before day `td` (the whole
    /// log's, when this is one part of it with [`Events::global`] set).
    pub fn seen_before(&self, name: &str, td: i32) -> bool {
        match &self.global {
            Some(g) => g.first_day.get(name).is_some_and(|&d| d < td),
            None => self.names.iter().position(|n| n == name).is_some_and(|k| self.first_day[k] < td),
        }
    }

    /// Whether any event occurs in the log before day `td`.
    pub fn any_before(&self, td: i32) -> bool {
        match &self.global {
            Some(g) => g.first_day.values().any(|&d| d < td),
            None => self.first_day.iter().any(|&d| d < td),
        }
    }

    /// The distinct values of events named `name` (finite, as integers), sorted.
    pub fn distinct_values(&self, name: &str) -> Vec<i64> {
        if let Some(g) = &self.global {
            return g.values.get(name).cloned().unwrap_or_default();
        }
        let Some(k) = self.names.iter().position(|n| n == name) else { return Vec::new() };
        let mut v: Vec<i64> = self
            .name
            .iter()
            .zip(&self.value)
            .filter(|(&n, v)| n as usize == k && v.is_finite())
            .map(|(_, &v)| v as i64)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// What this log says beyond any one customer's rows, for the names in `valued` with
    /// their distinct values: mergeable over parts of a log split by customer.
    pub fn facts(&self, valued: &[&str]) -> EventFacts {
        EventFacts {
            first_day: self.names.iter().cloned().zip(self.first_day.iter().copied()).collect(),
            values: valued.iter().map(|n| (n.to_string(), self.distinct_values(n))).collect(),
        }
    }
}

/// The whole event log's facts that a customer's health depends on beyond its own rows: the
/// first day of each event name (which health components exist yet) and the distinct values
/// of some names (the product's feature count). A partitioned engine computes them per part
/// ([`Events::facts`]), merges them, and sets them on each part ([`Events::global`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct EventFacts {
    pub first_day: BTreeMap<String, i32>,
    pub values: BTreeMap<String, Vec<i64>>,
}

impl EventFacts {
    /// The facts of two disjoint parts of a log together.
    pub fn merge(&mut self, other: &EventFacts) {
        for (name, &d) in &other.first_day {
            let e = self.first_day.entry(name.clone()).or_insert(d);
            *e = (*e).min(d);
        }
        for (name, v) in &other.values {
            let e = self.values.entry(name.clone()).or_default();
            e.extend_from_slice(v);
            e.sort_unstable();
            e.dedup();
        }
    }
}

/// An optional input's rows as they are: the file, or the query (`section`'s format and
/// source keys).
fn read_source(source: &impl InputSource, batch_rows: usize, section: &str) -> Result<DataFrame> {
    let (format, has_header, delimiter) = source.file_options();
    let input = TransactionsInput {
        path: source.path().into(),
        sql: source.sql().into(),
        query: source.query().into(),
        format,
        has_header,
        delimiter: delimiter.into(),
        ..TransactionsInput::default()
    };
    Ok(table::read_input(&input, batch_rows, section)?.frame)
}

fn require(path: &Path, df: &DataFrame, section: &str, keys: &[(&str, &str)]) -> Result<()> {
    let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
    for (key, column) in keys {
        if !names.iter().any(|n| n == column) {
            return Err(Error::MissingColumn {
                path: path.to_path_buf(),
                section: section.into(),
                key: (*key).into(),
                column: (*column).into(),
                found: names.join(", "),
            });
        }
    }
    Ok(())
}

fn text_expr(name: &str) -> Expr {
    let t = col(name).cast(DataType::String).str().strip_chars(lit(NULL));
    when(t.clone().eq(lit(""))).then(lit(NULL).cast(DataType::String)).otherwise(t)
}

/// Read and validate the event log of `[input.events]`.
pub fn load_events(input: &EventsInput, batch_rows: usize) -> Result<Events> {
    let raw = read_source(input, batch_rows, "input.events")?;
    events_from_frame(raw, input, &input.source_name())
}

/// Read and validate an event log already in memory (`input`'s column mapping applies;
/// `source` names it in messages).
pub fn events_from_frame(raw: DataFrame, input: &EventsInput, source: &str) -> Result<Events> {
    let path = PathBuf::from(source);
    let rows_read = raw.height();
    let parsed = parse_events(input, &path, raw)?;
    let invalid = invalid_events(input, &path, &parsed, rows_read)?;
    let valid = parsed
        .lazy()
        .filter(col("__reason").eq(lit(0)))
        .select([col("__cid"), col("__ts"), col("__event"), col("__value")])
        // A total order (ties on time broken by name and value): the same events in any file
        // order give the same per-customer sequence.
        .sort(
            ["__cid", "__ts", "__event", "__value"],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .collect()
        .polars("sorting events")?;
    let mut events = index_events(&valid, source)?;
    events.summary =
        EventsSummary { path, rows_read, rows_valid: valid.height(), invalid, events: counts_of(&events) };
    Ok(events)
}

/// The raw events with parsed columns (`__cid`, `__ts`, `__event`, `__value`) and a reason
/// code per row (`__reason`, 0 = valid; the codes of [`invalid_events`]).
fn parse_events(input: &EventsInput, path: &Path, raw: DataFrame) -> Result<DataFrame> {
    let mut keys = vec![
        ("customer_id", input.customer_id.as_str()),
        ("timestamp", input.timestamp.as_str()),
        ("event", input.event.as_str()),
    ];
    let has_value =
        !input.value.is_empty() && raw.get_column_names().iter().any(|c| c.as_str() == input.value);
    if has_value {
        keys.push(("value", input.value.as_str()));
    }
    require(path, &raw, "input.events", &keys)?;
    for c in [&input.customer_id, &input.event] {
        if let Ok(v) = raw.column(c).polars(c)?.str() {
            table::check_no_nul(path, c, v)?;
        }
    }
    let m = Mapping {
        section: "input.events",
        customer_id: input.customer_id.clone(),
        timestamp: input.timestamp.clone(),
        timestamp_format: input.timestamp_format.clone(),
        amount: None,
        quantity_price: None,
        order_id: None,
        latest_ms: i64::MAX,
        drop_duplicates: false,
    };
    let ts = table::ts_expr(path, &raw, &m)?;
    let value =
        if has_value { table::numeric_expr(&raw, &input.value)? } else { lit(NULL).cast(DataType::Float64) };
    let value_bad =
        if has_value { col(&input.value).is_not_null().and(col("__value").is_null()) } else { lit(false) };
    raw.lazy()
        .with_columns([
            text_expr(&input.customer_id).alias("__cid"),
            ts.alias("__ts"),
            text_expr(&input.event).alias("__event"),
            value.alias("__value"),
        ])
        .with_column(
            when(col("__cid").is_null())
                .then(lit(1))
                .when(col(&input.timestamp).is_null())
                .then(lit(2))
                .when(col("__ts").is_null())
                .then(lit(3))
                .when(col("__event").is_null())
                .then(lit(4))
                .when(value_bad)
                .then(lit(5))
                .otherwise(lit(0))
                .cast(DataType::Int32)
                .alias("__reason"),
        )
        .collect()
        .polars("validating events")
}

/// The invalid rows by reason; an error when more than `max_invalid_share` of them are.
fn invalid_events(
    input: &EventsInput,
    path: &Path,
    parsed: &DataFrame,
    rows_read: usize,
) -> Result<Vec<Invalid>> {
    let reasons = [
        (1, "missing customer id", input.customer_id.as_str()),
        (2, "missing timestamp", input.timestamp.as_str()),
        (3, "unparsable timestamp", input.timestamp.as_str()),
        (4, "missing event name", input.event.as_str()),
        (5, "value is not a number", input.value.as_str()),
    ];
    invalid_rows(parsed, rows_read, &reasons, input.max_invalid_share, ("input.events", "event"), path)
}

/// The rows of `parsed` whose `__reason` is one of `reasons` (code, reason, column), counted
/// with examples; an error naming each when more than `max_share` of the rows read are
/// invalid (`what` = the config section and what a row is).
fn invalid_rows(
    parsed: &DataFrame,
    rows_read: usize,
    reasons: &[(i32, &str, &str)],
    max_share: f64,
    what: (&str, &str),
    path: &Path,
) -> Result<Vec<Invalid>> {
    let codes = parsed.column("__reason").polars("reasons")?.i32().polars("reasons")?.clone();
    let mut invalid = Vec::new();
    let mut n_bad = 0;
    for &(code, reason, column) in reasons {
        let mask = codes.equal(code);
        let count = mask.sum().unwrap_or(0) as usize;
        if count > 0 {
            n_bad += count;
            invalid.push(Invalid {
                reason: reason.into(),
                column: column.to_string(),
                count,
                examples: table::examples(parsed, &mask, column)?,
            });
        }
    }
    if rows_read > 0 && n_bad as f64 / rows_read as f64 > max_share {
        let detail: Vec<String> = invalid
            .iter()
            .map(|i| {
                let ex: Vec<String> = i.examples.iter().map(|(r, v)| format!("row {r}: {v}")).collect();
                format!("{} in column `{}`: {} rows ({})", i.reason, i.column, i.count, ex.join(", "))
            })
            .collect();
        return Err(Error::InvalidRows {
            path: path.to_path_buf(),
            message: format!(
                "{n_bad} of {rows_read} {} rows are invalid, more than [{}].max_invalid_share = {max_share}: {}",
                what.1,
                what.0,
                detail.join("; ")
            ),
        });
    }
    Ok(invalid)
}

/// The contact log (`[input.contacts]`): who was contacted when, and whether the contact
/// reached them. What a control group cannot say alone: how many of the treated were
/// actually reached, so the effect among those reached can be told from the effect of
/// putting a customer on the list.
#[derive(Debug, Clone, Default)]
pub struct Contacts {
    /// Per customer, its reached contacts: the day (since 1970-01-01) and the channel (an
    /// index into `channels`; None without a channel column or value), sorted.
    pub reached: ReachedContacts,
    pub summary: ContactsSummary,
}

/// Per customer, its reached contacts: day (since 1970-01-01) and channel index, sorted.
pub type ReachedContacts = HashMap<String, Vec<(i32, Option<u32>)>>;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ContactsSummary {
    pub path: PathBuf,
    pub rows_read: usize,
    pub rows_valid: usize,
    /// Valid rows that reached the customer.
    pub rows_reached: usize,
    /// The channels of the log (`[input.contacts] channel`), sorted; empty without one.
    pub channels: Vec<String>,
    pub invalid: Vec<Invalid>,
}

impl Contacts {
    /// Whether the customer had a reached contact on a day in `[from, to)`.
    pub fn reached_between(&self, customer: &str, from: NaiveDate, to: NaiveDate) -> bool {
        self.first_reached(customer, from, to).is_some()
    }

    /// The customer's first reached contact on a day in `[from, to)`, if any: `Some(channel)`
    /// (`Some(None)` when the log has no channel for it).
    pub fn first_reached(&self, customer: &str, from: NaiveDate, to: NaiveDate) -> Option<Option<&str>> {
        let (from, to) = (crate::schema::epoch_day(from), crate::schema::epoch_day(to));
        let contacts = self.reached.get(customer)?;
        let i = contacts.partition_point(|&(d, _)| d < from);
        let &(day, channel) = contacts.get(i)?;
        (day < to).then(|| channel.map(|c| self.summary.channels[c as usize].as_str()))
    }
}

/// Read and validate the contact log of `[input.contacts]`.
pub fn load_contacts(input: &ContactsInput) -> Result<Contacts> {
    let file = TransactionsInput {
        path: input.path.clone(),
        format: input.format,
        has_header: input.has_header,
        delimiter: input.delimiter.clone(),
        ..TransactionsInput::default()
    };
    let raw = table::read_input(&file, 1, "input.contacts")?.frame;
    contacts_from_frame(raw, input, &input.path)
}

/// Read and validate a contact log already in memory. `reached` is yes/no, true/false or 1/0
/// (any case); anything else is an invalid row, as are rows without a customer or a time.
pub fn contacts_from_frame(raw: DataFrame, input: &ContactsInput, source: &str) -> Result<Contacts> {
    let path = PathBuf::from(source);
    let rows_read = raw.height();
    require(
        &path,
        &raw,
        "input.contacts",
        &[("customer_id", &input.customer_id), ("timestamp", &input.timestamp), ("reached", &input.reached)],
    )?;
    if !input.channel.is_empty() {
        require(&path, &raw, "input.contacts", &[("channel", &input.channel)])?;
    }
    if let Ok(v) = raw.column(&input.customer_id).polars(&input.customer_id)?.str() {
        table::check_no_nul(&path, &input.customer_id, v)?;
    }
    let m = Mapping {
        section: "input.contacts",
        customer_id: input.customer_id.clone(),
        timestamp: input.timestamp.clone(),
        timestamp_format: input.timestamp_format.clone(),
        amount: None,
        quantity_price: None,
        order_id: None,
        latest_ms: i64::MAX,
        drop_duplicates: false,
    };
    let ts = table::ts_expr(&path, &raw, &m)?;
    let word = col(&input.reached).cast(DataType::String).str().strip_chars(lit(NULL)).str().to_lowercase();
    let yes = ["yes", "y", "true", "1", "1.0"];
    let no = ["no", "n", "false", "0", "0.0"];
    let is_in = |words: &[&str]| words.iter().fold(lit(false), |acc, w| acc.or(word.clone().eq(lit(*w))));
    let parsed = raw
        .lazy()
        .with_columns([
            text_expr(&input.customer_id).alias("__cid"),
            ts.alias("__ts"),
            when(is_in(&yes))
                .then(lit(1))
                .when(is_in(&no))
                .then(lit(0))
                .otherwise(lit(NULL))
                .cast(DataType::Int32)
                .alias("__reached"),
        ])
        .with_column(
            when(col("__cid").is_null())
                .then(lit(1))
                .when(col(&input.timestamp).is_null())
                .then(lit(2))
                .when(col("__ts").is_null())
                .then(lit(3))
                .when(col("__reached").is_null())
                .then(lit(4))
                .otherwise(lit(0))
                .cast(DataType::Int32)
                .alias("__reason"),
        )
        .collect()
        .polars("validating contacts")?;
    let reasons = [
        (1, "missing customer id", input.customer_id.as_str()),
        (2, "missing timestamp", input.timestamp.as_str()),
        (3, "unparsable timestamp", input.timestamp.as_str()),
        (4, "reached is not yes/no, true/false or 1/0", input.reached.as_str()),
    ];
    let invalid = invalid_rows(
        &parsed,
        rows_read,
        &reasons,
        input.max_invalid_share,
        ("input.contacts", "contact"),
        &path,
    )?;
    let valid = parsed.lazy().filter(col("__reason").eq(lit(0))).collect().polars("valid contacts")?;
    let (reached, channels) = reached_contacts(&valid, &input.channel)?;
    let rows_reached = reached.values().map(Vec::len).sum();
    Ok(Contacts {
        reached,
        summary: ContactsSummary {
            path,
            rows_read,
            rows_valid: valid.height(),
            rows_reached,
            channels,
            invalid,
        },
    })
}

/// The reached contacts of a validated log (columns `__cid`, `__ts`, `__reached`) per
/// customer, sorted, with the channel of each (`channel`: the column naming it, empty = none)
/// as an index into the returned sorted channel names.
fn reached_contacts(valid: &DataFrame, channel: &str) -> Result<(ReachedContacts, Vec<String>)> {
    let ids = valid.column("__cid").polars("ids")?.str().polars("ids")?.clone();
    let ts = valid.column("__ts").polars("ts")?.datetime().polars("ts")?.physical().clone();
    let hit = valid.column("__reached").polars("reached")?.i32().polars("reached")?.clone();
    // The channel of each row (trimmed; blank = none), as an index into the sorted names.
    let channel_of: Vec<Option<String>> = if channel.is_empty() {
        vec![None; valid.height()]
    } else {
        let c = valid.column(channel).polars(channel)?.cast(&DataType::String).polars(channel)?;
        let c = c.str().polars(channel)?;
        c.iter().map(|v| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)).collect()
    };
    let mut channels: Vec<String> = channel_of.iter().flatten().cloned().collect();
    channels.sort_unstable();
    channels.dedup();
    let index =
        |c: &Option<String>| c.as_ref().and_then(|c| channels.binary_search(c).ok()).map(|i| i as u32);
    let mut reached = ReachedContacts::new();
    for (((id, t), h), c) in ids.iter().zip(ts.iter()).zip(hit.iter()).zip(&channel_of) {
        if let (Some(id), Some(t), Some(1)) = (id, t, h) {
            reached.entry(id.to_string()).or_default().push((t.div_euclid(86_400_000) as i32, index(c)));
        }
    }
    for days in reached.values_mut() {
        days.sort_unstable();
    }
    Ok((reached, channels))
}

/// Events per name.
fn counts_of(events: &Events) -> BTreeMap<String, usize> {
    let mut counts = vec![0usize; events.names.len()];
    for &k in &events.name {
        counts[k as usize] += 1;
    }
    events.names.iter().cloned().zip(counts).collect()
}

/// The valid events (sorted by customer and time) as columns with per-customer ranges; the
/// summary is left empty.
fn index_events(valid: &DataFrame, path: &str) -> Result<Events> {
    let ids = valid.column("__cid").polars("ids")?.str().polars("ids")?.clone();
    let ts = valid.column("__ts").polars("ts")?.datetime().polars("ts")?.physical().clone();
    let ev = valid.column("__event").polars("events")?.str().polars("events")?.clone();
    let val = valid.column("__value").polars("values")?.f64().polars("values")?.clone();
    let mut e = Events::default();
    let mut index: HashMap<String, u16> = HashMap::new();
    let mut current: Option<&str> = None;
    let mut start = 0;
    for i in 0..valid.height() {
        let id = ids.get(i).unwrap_or_default();
        if current != Some(id) {
            if let Some(c) = current {
                e.by_customer.insert(c.to_string(), start..i);
            }
            current = Some(id);
            start = i;
        }
        let name = ev.get(i).unwrap_or_default();
        let k = match index.get(name) {
            Some(&k) => k,
            None => {
                if e.names.len() >= u16::MAX as usize {
                    return Err(Error::Data(format!("{path}: more than 65,535 distinct event names")));
                }
                e.names.push(name.to_string());
                index.insert(name.to_string(), (e.names.len() - 1) as u16);
                (e.names.len() - 1) as u16
            }
        };
        let d = ts.get(i).unwrap_or(0).div_euclid(86_400_000) as i32;
        if e.first_day.len() <= k as usize {
            e.first_day.resize(k as usize + 1, i32::MAX);
        }
        e.first_day[k as usize] = e.first_day[k as usize].min(d);
        e.day.push(d);
        e.name.push(k);
        e.value.push(val.get(i).unwrap_or(f64::NAN));
    }
    if let Some(c) = current {
        e.by_customer.insert(c.to_string(), start..valid.height());
    }
    Ok(e)
}

/// CSM sentiment, from the customer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sentiment {
    Green,
    Yellow,
    Red,
}

impl Sentiment {
    /// `green`, `yellow` (or `amber`), `red`, in any case.
    pub fn parse(s: &str) -> Option<Sentiment> {
        match s.to_ascii_lowercase().as_str() {
            "green" => Some(Sentiment::Green),
            "yellow" | "amber" => Some(Sentiment::Yellow),
            "red" => Some(Sentiment::Red),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sentiment::Green => "green",
            Sentiment::Yellow => "yellow",
            Sentiment::Red => "red",
        }
    }
}

/// One customer's row of the customer table.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Customer {
    pub signup: Option<NaiveDate>,
    pub plan: Option<String>,
    pub segment: Option<String>,
    pub mrr: Option<f64>,
    pub arr: Option<f64>,
    pub csm: Option<String>,
    pub sentiment: Option<(Sentiment, Option<NaiveDate>)>,
    /// The values of `[input.customers].attributes`, in that order.
    pub attributes: Vec<Attribute>,
}

/// One cell of an attribute column.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub enum Attribute {
    #[default]
    Missing,
    Number(f64),
    Text(String),
}

impl Attribute {
    /// The value as text (numbers in Rust's shortest round-trip form); `None` when missing.
    pub fn text(&self) -> Option<String> {
        match self {
            Attribute::Missing => None,
            Attribute::Number(v) => Some(v.to_string()),
            Attribute::Text(v) => Some(v.clone()),
        }
    }
}

impl Customer {
    /// ARR: the column, else 12 x MRR.
    pub fn arr(&self) -> Option<f64> {
        self.arr.or(self.mrr.map(|m| 12.0 * m))
    }

    /// The CSM's sentiment as known at `t` (set before `t`, or undated).
    pub fn sentiment_at(&self, t: NaiveDate) -> Option<Sentiment> {
        match self.sentiment {
            Some((s, Some(d))) if d < t => Some(s),
            Some((s, None)) => Some(s),
            _ => None,
        }
    }
}

/// The validated customer table.
#[derive(Debug, Clone, Default)]
pub struct Customers {
    pub path: PathBuf,
    pub rows: HashMap<String, Customer>,
    /// Which optional columns the file has (contract names).
    pub columns: Vec<String>,
    /// The attribute columns, in configuration order.
    pub attributes: Vec<AttributeColumn>,
}

/// An attribute column of the customer table.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeColumn {
    pub name: String,
    /// Numeric in the file, or every cell reads as a number.
    pub numeric: bool,
    /// The first cell that is not a number (row number from 1, value).
    pub first_text: Option<(usize, String)>,
}

fn cell_error(path: &Path, column: &str, row: usize, message: String) -> Error {
    Error::InvalidRows {
        path: path.to_path_buf(),
        message: format!("column `{column}`, row {}: {message}", row + 1),
    }
}

/// Read and validate the customer table of `[input.customers]`.
pub fn load_customers(input: &CustomersInput, batch_rows: usize) -> Result<Customers> {
    let raw = read_source(input, batch_rows, "input.customers")?;
    customers_from_frame(raw, input, &input.source_name())
}

/// Read and validate a customer table already in memory (`input`'s column mapping applies;
/// `source` names it in messages).
pub fn customers_from_frame(raw: DataFrame, input: &CustomersInput, source: &str) -> Result<Customers> {
    let path = PathBuf::from(source);
    require(&path, &raw, "input.customers", &[("customer_id", input.customer_id.as_str())])?;
    let t = Table { raw: &raw, path: &path };
    let ids = t.text(&input.customer_id)?.unwrap_or_default();
    let signup = t.date(&input.signup_date)?;
    let plan = t.text(&input.plan)?;
    let segment = t.text(&input.segment)?;
    let mrr = t.number(&input.mrr)?;
    let arr = t.number(&input.arr)?;
    let csm = t.text(&input.csm)?;
    let sentiment = t.text(&input.csm_sentiment)?;
    let sentiment_date = t.date(&input.csm_sentiment_date)?;
    let attributes = input
        .attributes
        .iter()
        .map(|c| t.attribute(c))
        .collect::<Result<Vec<(AttributeColumn, Vec<Attribute>)>>>()?;
    let mut rows = HashMap::with_capacity(ids.len());
    let mut first_row: HashMap<String, usize> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let id = id
            .clone()
            .ok_or_else(|| cell_error(&path, &input.customer_id, i, "missing customer id".into()))?;
        if let Some(prev) = first_row.insert(id.clone(), i) {
            return Err(cell_error(
                &path,
                &input.customer_id,
                i,
                format!("customer {id:?} already on row {}", prev + 1),
            ));
        }
        let s = match sentiment.as_ref().and_then(|v| v[i].as_deref()) {
            None => None,
            Some(s) => Some(Sentiment::parse(s).ok_or_else(|| {
                cell_error(&path, &input.csm_sentiment, i, format!("{s:?}: expected green, yellow or red"))
            })?),
        };
        // A CSM is a name or an address that messages are sent to: a line break in it would
        // forge mail headers and lines, and fail every delivery.
        if let Some(c) = csm.as_ref().and_then(|v| v[i].as_deref()) {
            if crate::config::notify::has_control(c) {
                return Err(cell_error(
                    &path,
                    &input.csm,
                    i,
                    format!("{c:?}: a CSM name or address cannot hold control characters (line breaks)"),
                ));
            }
            if c.contains('@') && !crate::config::notify::is_address(c) {
                return Err(cell_error(&path, &input.csm, i, format!("{c:?} is not an email address")));
            }
        }
        let pick = |v: &Option<Vec<Option<String>>>| v.as_ref().and_then(|v| v[i].clone());
        rows.insert(
            id,
            Customer {
                signup: signup.as_ref().and_then(|v| v[i]),
                plan: pick(&plan),
                segment: pick(&segment),
                mrr: mrr.as_ref().and_then(|v| v[i]),
                arr: arr.as_ref().and_then(|v| v[i]),
                csm: pick(&csm),
                sentiment: s.map(|s| (s, sentiment_date.as_ref().and_then(|v| v[i]))),
                attributes: attributes.iter().map(|(_, v)| v[i].clone()).collect(),
            },
        );
    }
    let columns = [
        ("signup_date", &input.signup_date),
        ("plan", &input.plan),
        ("segment", &input.segment),
        ("mrr", &input.mrr),
        ("arr", &input.arr),
        ("csm", &input.csm),
        ("csm_sentiment", &input.csm_sentiment),
    ]
    .iter()
    .filter(|(_, c)| t.present(c))
    .map(|(k, _)| k.to_string())
    .collect();
    let attributes = attributes.into_iter().map(|(c, _)| c).collect();
    Ok(Customers { path, rows, columns, attributes })
}

/// The customer table's columns, read as text, numbers or dates (`None` when the column is
/// not mapped or not in the file); a bad cell is an error naming its column and row.
struct Table<'a> {
    raw: &'a DataFrame,
    path: &'a Path,
}

impl Table<'_> {
    fn present(&self, c: &str) -> bool {
        !c.is_empty() && self.raw.get_column_names().iter().any(|n| n.as_str() == c)
    }

    fn text(&self, c: &str) -> Result<Option<Vec<Option<String>>>> {
        if !self.present(c) {
            return Ok(None);
        }
        let s = self.raw.column(c).polars(c)?.cast(&DataType::String).polars(c)?;
        table::check_no_nul(self.path, c, s.str().polars(c)?)?;
        Ok(Some(
            s.str()
                .polars(c)?
                .iter()
                .map(|v| v.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string))
                .collect(),
        ))
    }

    /// An attribute column (it must be in the file): numbers when the file's column is
    /// numeric or every cell of it reads as a number, else text.
    fn attribute(&self, c: &str) -> Result<(AttributeColumn, Vec<Attribute>)> {
        if !self.present(c) {
            return Err(Error::InvalidRows {
                path: self.path.to_path_buf(),
                message: format!(
                    "no column `{c}` (named in input.customers.attributes); the file has: {}",
                    self.raw.get_column_names().iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let number =
            |x: Option<f64>| x.filter(|x| x.is_finite()).map_or(Attribute::Missing, Attribute::Number);
        let col = self.raw.column(c).polars(c)?;
        let mut column = AttributeColumn { name: c.to_string(), numeric: true, first_text: None };
        if col.dtype().is_primitive_numeric() {
            let v = col.cast(&DataType::Float64).polars(c)?;
            return Ok((column, v.f64().polars(c)?.iter().map(number).collect()));
        }
        let text = self.text(c)?.unwrap_or_default();
        column.first_text = text.iter().enumerate().find_map(|(i, v)| {
            v.as_ref()
                .filter(|v| v.parse::<f64>().map_or(true, |x| !x.is_finite()))
                .map(|v| (i + 1, v.clone()))
        });
        column.numeric = column.first_text.is_none();
        let cells = text
            .into_iter()
            .map(|v| match v {
                None => Attribute::Missing,
                Some(v) if column.numeric => number(v.parse().ok()),
                Some(v) => Attribute::Text(v),
            })
            .collect();
        Ok((column, cells))
    }

    fn parsed<T>(
        &self,
        c: &str,
        parse: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<Option<Vec<Option<T>>>> {
        let Some(t) = self.text(c)? else { return Ok(None) };
        t.iter()
            .enumerate()
            .map(|(i, v)| match v {
                None => Ok(None),
                Some(s) => parse(s).map(Some).map_err(|m| cell_error(self.path, c, i, m)),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn number(&self, c: &str) -> Result<Option<Vec<Option<f64>>>> {
        self.parsed(c, |s| {
            s.parse::<f64>().ok().filter(|x| x.is_finite()).ok_or(format!("{s:?} is not a number"))
        })
    }

    fn date(&self, c: &str) -> Result<Option<Vec<Option<NaiveDate>>>> {
        self.parsed(c, |s| {
            NaiveDate::parse_from_str(&s[..s.len().min(10)], "%Y-%m-%d")
                .map_err(|_| format!("{s:?} is not a date (YYYY-MM-DD)"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contacts(reached: &[&str]) -> Result<Contacts> {
        let n = reached.len();
        let raw = df!(
            "customer_id" => (0..n).map(|i| format!("C{}", i % 3)).collect::<Vec<_>>(),
            "ts" => (0..n).map(|i| format!("2024-08-{:02}", 6 + i)).collect::<Vec<_>>(),
            "reached" => reached.to_vec(),
        )
        .unwrap();
        contacts_from_frame(raw, &ContactsInput::default(), "contacts.csv")
    }

    #[test]
    fn a_contact_log_reads_yes_no_in_any_spelling_and_names_what_it_refuses() {
        let c = contacts(&["yes", "No", "TRUE", "0", "1", "y"]).unwrap();
        assert_eq!((c.summary.rows_valid, c.summary.rows_reached), (6, 4));
        let day = |d: u32| NaiveDate::from_ymd_opt(2024, 8, d).unwrap();
        // C0: reached 08-06 and 08-09; C1: no (08-07), 1 (08-10); C2: TRUE (08-08), y (08-11).
        assert!(c.reached_between("C0", day(6), day(7)));
        assert!(!c.reached_between("C1", day(7), day(8)), "a 'No' is not reached");
        assert!(c.reached_between("C1", day(8), day(11)));
        assert!(!c.reached_between("C9", day(1), day(31)));
        let err = contacts(&["yes", "maybe", "no"]).unwrap_err().to_string();
        assert!(
            err.contains("contacts.csv")
                && err.contains("`reached`")
                && err.contains("row")
                && err.contains("maybe"),
            "{err}"
        );
    }

    /// With `channel` set, each reached contact keeps its channel; a customer's first reached
    /// contact in a window gives its channel; a blank channel is none; a log without the
    /// configured column is refused, naming it.
    #[test]
    fn a_contact_log_with_channels_says_which_channel_reached_each_customer() {
        let raw = df!(
            "customer_id" => ["C0", "C0", "C1", "C2", "C2"],
            "ts" => ["2024-08-07", "2024-08-06", "2024-08-06", "2024-08-06", "2024-08-08"],
            "reached" => ["yes", "yes", "no", "yes", "yes"],
            "via" => ["email", " phone ", "phone", "", "sms"],
        )
        .unwrap();
        let input = ContactsInput { channel: "via".into(), ..ContactsInput::default() };
        let c = contacts_from_frame(raw.clone(), &input, "contacts.csv").unwrap();
        assert_eq!(c.summary.channels, ["email", "phone", "sms"]);
        let day = |d: u32| NaiveDate::from_ymd_opt(2024, 8, d).unwrap();
        assert_eq!(c.first_reached("C0", day(6), day(20)), Some(Some("phone")));
        assert_eq!(c.first_reached("C0", day(7), day(20)), Some(Some("email")));
        assert_eq!(c.first_reached("C1", day(6), day(20)), None, "not reached");
        assert_eq!(c.first_reached("C2", day(6), day(7)), Some(None), "reached, no channel");
        assert_eq!(c.first_reached("C2", day(7), day(20)), Some(Some("sms")));
        let input = ContactsInput { channel: "playbook".into(), ..ContactsInput::default() };
        let err = contacts_from_frame(raw, &input, "contacts.csv").unwrap_err().to_string();
        assert!(err.contains("contacts.csv") && err.contains("playbook"), "{err}");
    }
}
