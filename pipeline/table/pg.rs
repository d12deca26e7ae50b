//! An input read by a query on a PostgreSQL server (`[input.*] sql` + `query`) into the same
//! raw frame a file gives, for the same mapping and validation.
//!
//! The query runs in a read-only transaction; its rows come in batches of
//! `[input] sql_batch_rows` from a server-side portal (the driver holds one batch of rows at a
//! time) and go straight into column builders, so the memory is the table's columns plus one
//! batch, as for a Parquet file. Column types map onto what a file would have: text types to
//! text, integers to Int64, `real`/`double precision`/`numeric` to Float64 (`numeric` decoded
//! from its decimal digits, so `12.34` is the f64 nearest 12.34 as a file's text would be),
//! `boolean`, `date`, `timestamp` (and `timestamptz`, as its UTC time) to Datetime(us). Any
//! other type is an error naming the column and how to cast it.

use std::error::Error as StdError;
use std::path::Path;

use polars::prelude::*;
use postgres::types::{FromSql, Type};
use postgres::NoTls;

use crate::config::targets::PgUrl;
use crate::error::{pg_message, Error, PolarsContext, Result};

/// A `numeric` value as the f64 nearest its decimal digits (NaN and infinities as such).
struct Numeric(f64);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, Box<dyn StdError + Sync + Send>> {
        let word = |i: usize| -> std::result::Result<u16, Box<dyn StdError + Sync + Send>> {
            raw.get(2 * i..2 * i + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "truncated numeric value".into())
        };
        let (ndigits, weight, sign) = (word(0)? as usize, word(1)? as i16, word(2)?);
        match sign {
            0xC000 => return Ok(Numeric(f64::NAN)),
            0xD000 => return Ok(Numeric(f64::INFINITY)),
            0xF000 => return Ok(Numeric(f64::NEG_INFINITY)),
            _ => {}
        }
        if ndigits == 0 {
            return Ok(Numeric(0.0));
        }
        // Base-10000 digits d_0..d_{n-1}, d_0 worth 10000^weight: the decimal mantissa is their
        // 4-digit groups, the exponent 4 (weight - n + 1).
        let mut text = String::with_capacity(4 * ndigits + 8);
        if sign == 0x4000 {
            text.push('-');
        }
        for i in 0..ndigits {
            text.push_str(&format!("{:04}", word(4 + i)?));
        }
        text.push_str(&format!("e{}", 4 * (i32::from(weight) - ndigits as i32 + 1)));
        Ok(Numeric(text.parse::<f64>()?))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// One result column being filled.
enum Builder {
    Text(StringChunkedBuilder),
    Int(PrimitiveChunkedBuilder<Int64Type>),
    Float(PrimitiveChunkedBuilder<Float64Type>),
    Bool(BooleanChunkedBuilder),
    Date(PrimitiveChunkedBuilder<Int32Type>),
    Timestamp(PrimitiveChunkedBuilder<Int64Type>),
}

fn builder(name: &str, ty: &Type) -> std::result::Result<Builder, String> {
    let n = PlSmallStr::from(name);
    let b = if <String as FromSql>::accepts(ty) {
        Builder::Text(StringChunkedBuilder::new(n, 0))
    } else if [Type::INT2, Type::INT4, Type::INT8].contains(ty) {
        Builder::Int(PrimitiveChunkedBuilder::new(n, 0))
    } else if [Type::FLOAT4, Type::FLOAT8, Type::NUMERIC].contains(ty) {
        Builder::Float(PrimitiveChunkedBuilder::new(n, 0))
    } else if *ty == Type::BOOL {
        Builder::Bool(BooleanChunkedBuilder::new(n, 0))
    } else if *ty == Type::DATE {
        Builder::Date(PrimitiveChunkedBuilder::new(n, 0))
    } else if [Type::TIMESTAMP, Type::TIMESTAMPTZ].contains(ty) {
        Builder::Timestamp(PrimitiveChunkedBuilder::new(n, 0))
    } else {
        return Err(format!(
            "column `{name}` has type {ty}, which fidelis does not read: cast it in the query \
             (e.g. `{name}::text`, `{name}::double precision` or `{name}::timestamp`)"
        ));
    };
    Ok(b)
}

type Decoded<T> = std::result::Result<T, postgres::Error>;

impl Builder {
    fn push(&mut self, row: &postgres::Row, i: usize, ty: &Type) -> Decoded<()> {
        match self {
            Builder::Text(b) => b.append_option(row.try_get::<_, Option<&str>>(i)?),
            Builder::Int(b) => {
                let v = match *ty {
                    Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(i64::from),
                    Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(i64::from),
                    _ => row.try_get::<_, Option<i64>>(i)?,
                };
                b.append_option(v);
            }
            Builder::Float(b) => {
                let v = match *ty {
                    Type::FLOAT4 => row.try_get::<_, Option<f32>>(i)?.map(f64::from),
                    Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?,
                    _ => row.try_get::<_, Option<Numeric>>(i)?.map(|n| n.0),
                };
                b.append_option(v);
            }
            Builder::Bool(b) => b.append_option(row.try_get::<_, Option<bool>>(i)?),
            Builder::Date(b) => {
                let v = row.try_get::<_, Option<chrono::NaiveDate>>(i)?;
                b.append_option(v.map(crate::schema::epoch_day));
            }
            Builder::Timestamp(b) => {
                let v = if *ty == Type::TIMESTAMPTZ {
                    row.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i)?.map(|t| t.timestamp_micros())
                } else {
                    row.try_get::<_, Option<chrono::NaiveDateTime>>(i)?
                        .map(|t| t.and_utc().timestamp_micros())
                };
                b.append_option(v);
            }
        }
        Ok(())
    }

    fn finish(self) -> Column {
        match self {
            Builder::Text(b) => b.finish().into_column(),
            Builder::Int(b) => b.finish().into_column(),
            Builder::Float(b) => b.finish().into_column(),
            Builder::Bool(b) => b.finish().into_column(),
            Builder::Date(b) => b.finish().into_series().into_date().into_column(),
            Builder::Timestamp(b) => {
                b.finish().into_series().into_datetime(TimeUnit::Microseconds, None).into_column()
            }
        }
    }
}

/// Run `query` on the server at `url` and return its rows as a frame; `name` names the
/// source in errors (the URL without its password and the query). Every failure (connecting,
/// the query, a column type, the connection lost half-way) is an [`Error::InputFile`]
/// (exit 2): nothing is returned, so nothing downstream is written.
pub(crate) fn read_query(url: &PgUrl, query: &str, batch_rows: usize, name: &Path) -> Result<DataFrame> {
    let err = |message: String| Error::InputFile { path: name.to_path_buf(), message };
    let mut client = url
        .client_config()
        .connect(NoTls)
        .map_err(|e| err(format!("cannot connect to the server: {}", pg_message(&e))))?;
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .map_err(|e| err(format!("cannot start a read-only transaction: {}", pg_message(&e))))?;
    let statement = tx.prepare(query).map_err(|e| err(format!("the query failed: {}", pg_message(&e))))?;
    let columns = statement.columns();
    let mut builders = Vec::with_capacity(columns.len());
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].iter().any(|o| o.name() == c.name()) {
            return Err(err(format!(
                "the query returns two columns named `{}`: give one another name (AS ...)",
                c.name()
            )));
        }
        builders.push(builder(c.name(), c.type_()).map_err(err)?);
    }
    let types: Vec<Type> = columns.iter().map(|c| c.type_().clone()).collect();
    let portal =
        tx.bind(&statement, &[]).map_err(|e| err(format!("the query failed: {}", pg_message(&e))))?;
    let batch = i32::try_from(batch_rows).unwrap_or(i32::MAX);
    let mut rows_read = 0usize;
    loop {
        let rows = tx.query_portal(&portal, batch).map_err(|e| {
            let what = if e.is_closed() || e.as_db_error().is_none() {
                "the connection to the server was lost"
            } else {
                "the query failed"
            };
            err(format!("{what} after {rows_read} rows: {}; nothing was used", pg_message(&e)))
        })?;
        for row in &rows {
            rows_read += 1;
            for (i, (b, ty)) in builders.iter_mut().zip(&types).enumerate() {
                b.push(row, i, ty).map_err(|e| {
                    err(format!("row {rows_read}, column `{}` ({ty}): {}", columns[i].name(), pg_message(&e)))
                })?;
            }
        }
        if rows.len() < batch as usize {
            break;
        }
    }
    tx.commit().map_err(|e| err(format!("the read-only transaction failed: {}", pg_message(&e))))?;
    let cols: Vec<Column> = builders.into_iter().map(Builder::finish).collect();
    let df = DataFrame::new_infer_height(cols).polars("building a frame from the query's rows")?;
    if df.height() == 0 {
        return Err(err("the query returned no rows".into()));
    }
    Ok(df)
}
