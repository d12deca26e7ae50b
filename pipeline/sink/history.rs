//! The monitoring history: `<output.dir>/monitoring/metrics_history.parquet`, one row per
//! as_of x metric x item (the rows `MonitorReport::history_frame` makes); a
//! monitoring pass replaces the rows of its date.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;

use crate::error::{PolarsContext, Result};
use crate::schema;

/// The monitoring history: `<output.dir>/monitoring/metrics_history.parquet`.
pub struct History {
    pub path: PathBuf,
}

pub const HISTORY_FILE: &str = "metrics_history.parquet";

impl History {
    pub fn new(output_dir: &Path) -> History {
        History { path: output_dir.join("monitoring").join(HISTORY_FILE) }
    }

    /// The whole history (empty frame when there is none yet).
    pub fn read(&self) -> Result<Option<DataFrame>> {
        if !self.path.is_file() {
            return Ok(None);
        }
        super::read_parquet(&self.path).map(Some)
    }

    /// Replace the rows of `as_of` with `rows` (written to a temp file and renamed).
    pub fn replace(&self, as_of: NaiveDate, rows: &DataFrame) -> Result<()> {
        let ctx = format!("updating {}", self.path.display());
        let mut all = match self.read()? {
            Some(old) => {
                let day = schema::epoch_day(as_of);
                let kept = old
                    .lazy()
                    .filter(col("as_of").cast(DataType::Int32).neq(lit(day)))
                    .collect()
                    .polars(&ctx)?;
                concat([kept.lazy(), rows.clone().lazy()], UnionArgs::default())
                    .polars(&ctx)?
                    .sort(["as_of"], SortMultipleOptions::default().with_maintain_order(true))
                    .collect()
                    .polars(&ctx)?
            }
            None => rows.clone(),
        };
        super::write_parquet_atomic(&mut all, &self.path)
    }

    /// Realized ROC AUC per run recorded at a monitor date other than `as_of`.
    pub fn realized_auc(&self, except: NaiveDate) -> Result<BTreeMap<NaiveDate, f64>> {
        let mut out = BTreeMap::new();
        let Some(df) = self.read()? else { return Ok(out) };
        let ctx = format!("reading {}", self.path.display());
        let df = df
            .lazy()
            .filter(
                col("kind")
                    .eq(lit("realized"))
                    .and(col("metric").eq(lit("roc_auc")))
                    .and(col("as_of").cast(DataType::Int32).neq(lit(schema::epoch_day(except)))),
            )
            .collect()
            .polars(&ctx)?;
        let items = df.column("item").polars(&ctx)?.str().polars(&ctx)?;
        let values = df.column("value").polars(&ctx)?.f64().polars(&ctx)?;
        for (i, v) in items.iter().zip(values.iter()) {
            if let (Some(d), Some(v)) = (i.and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()), v) {
                out.insert(d, v);
            }
        }
        Ok(out)
    }
}
