//! The monitoring history: `<output.dir>/monitoring/metrics_history.parquet`, one row per
//! as_of x metric x item (the rows `MonitorReport::history_frame` makes); a
//! monitoring pass replaces the rows of its date.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;

use crate::error::{Error, PolarsContext, Result};
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

    /// The whole history (`None` when there is none yet). An empty file (a write interrupted
    /// on a filesystem that lost its data) holds no history: it is read as none, with a
    /// warning, and the next monitoring pass replaces it. A file that is not Parquet is an
    /// error (exit 2) saying how to recover.
    pub fn read(&self) -> Result<Option<DataFrame>> {
        match std::fs::metadata(&self.path) {
            Err(_) => return Ok(None),
            Ok(m) if !m.is_file() => return Ok(None),
            Ok(m) if m.len() == 0 => {
                log::warn!("{} is empty: starting the monitoring history anew", self.path.display());
                return Ok(None);
            }
            Ok(_) => {}
        }
        super::read_parquet(&self.path).map(Some).map_err(|e| Error::Artifact {
            path: self.path.clone(),
            message: format!(
                "the monitoring history cannot be read ({e}); move it aside to start a new one (the SQL \
                 table model_monitoring keeps a copy of its rows)"
            ),
        })
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
        let kept = col("kind")
            .eq(lit("realized"))
            .and(col("metric").eq(lit("roc_auc")))
            .and(col("as_of").cast(DataType::Int32).neq(lit(schema::epoch_day(except))));
        Ok(self
            .rows(kept)?
            .into_iter()
            .filter_map(|(run, _, v)| Some((NaiveDate::parse_from_str(&run, "%Y-%m-%d").ok()?, v)))
            .collect())
    }

    /// Each run's effect among the customers new to the experiment (items `<run> first` and
    /// `<run> first band=...`) recorded at a monitor date other than `except`: what the pooled
    /// effect adds up.
    pub fn first_effects(&self, except: NaiveDate) -> Result<crate::experiment::FirstEffects> {
        self.first_effects_where(col("as_of").cast(DataType::Int32).neq(lit(schema::epoch_day(except))))
    }

    /// [`Self::first_effects`] recorded up to `as_of` (what a report of that date shows).
    pub fn first_effects_until(&self, as_of: NaiveDate) -> Result<crate::experiment::FirstEffects> {
        self.first_effects_where(col("as_of").cast(DataType::Int32).lt_eq(lit(schema::epoch_day(as_of))))
    }

    fn first_effects_where(&self, dates: Expr) -> Result<crate::experiment::FirstEffects> {
        let rows = self.rows(col("kind").eq(lit("effect")).and(dates))?;
        Ok(crate::experiment::first_effects(rows.iter().map(|(i, m, v)| (i.as_str(), m.as_str(), *v))))
    }

    /// The measured effect of contacting of every run recorded up to `as_of` (kind `effect`,
    /// the overall rows: item = the run).
    pub fn effects(&self, as_of: NaiveDate) -> Result<BTreeMap<NaiveDate, crate::experiment::Effect>> {
        let kept = col("kind")
            .eq(lit("effect"))
            .and(col("as_of").cast(DataType::Int32).lt_eq(lit(schema::epoch_day(as_of))));
        self.effects_where(kept, "")
    }

    /// The effects of the `effect` rows `kept` whose item is a run date followed by `suffix`.
    fn effects_where(
        &self,
        kept: Expr,
        suffix: &str,
    ) -> Result<BTreeMap<NaiveDate, crate::experiment::Effect>> {
        let rows = self.rows(kept)?;
        Ok(crate::experiment::effects_by_run(
            rows.iter().map(|(i, m, v)| (i.as_str(), m.as_str(), *v)),
            suffix,
        ))
    }

    /// The rows of kind `kind` recorded at a monitor date other than `except`: (item, metric,
    /// value) (the performance each run estimated the day it was scored: `estimated`).
    pub fn rows_of_kind(&self, kind: &str, except: NaiveDate) -> Result<Vec<(String, String, f64)>> {
        self.rows(
            col("kind")
                .eq(lit(kind))
                .and(col("as_of").cast(DataType::Int32).neq(lit(schema::epoch_day(except)))),
        )
    }

    /// The rows of kind `kind` recorded up to `as_of` (what a report of that date shows).
    pub fn rows_of_kind_until(&self, kind: &str, as_of: NaiveDate) -> Result<Vec<(String, String, f64)>> {
        self.rows(
            col("kind")
                .eq(lit(kind))
                .and(col("as_of").cast(DataType::Int32).lt_eq(lit(schema::epoch_day(as_of)))),
        )
    }

    /// The rows `kept`: (item, metric, value).
    fn rows(&self, kept: Expr) -> Result<Vec<(String, String, f64)>> {
        let Some(df) = self.read()? else { return Ok(Vec::new()) };
        let ctx = format!("reading {}", self.path.display());
        let df = df.lazy().filter(kept).collect().polars(&ctx)?;
        let items = df.column("item").polars(&ctx)?.str().polars(&ctx)?;
        let metrics = df.column("metric").polars(&ctx)?.str().polars(&ctx)?;
        let values = df.column("value").polars(&ctx)?.f64().polars(&ctx)?;
        Ok(items
            .iter()
            .zip(metrics.iter())
            .zip(values.iter())
            .filter_map(|((i, m), v)| Some((i?.to_string(), m?.to_string(), v?)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_history_is_no_history_and_a_damaged_one_says_how_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::new(dir.path());
        std::fs::create_dir_all(h.path.parent().unwrap()).unwrap();
        std::fs::write(&h.path, b"").unwrap();
        assert!(h.read().unwrap().is_none());
        let day = NaiveDate::from_ymd_opt(2024, 12, 3).unwrap();
        let rows = df!("as_of" => [schema::epoch_day(day)], "kind" => ["drift"], "metric" => ["psi"],
            "item" => ["x"], "value" => [0.1])
        .unwrap();
        let rows = rows.lazy().with_column(col("as_of").cast(DataType::Date)).collect().unwrap();
        h.replace(day, &rows).unwrap();
        assert_eq!(h.read().unwrap().unwrap().height(), 1, "replaced by the next pass");
        std::fs::write(&h.path, b"not parquet at all").unwrap();
        let err = h.read().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("move it aside"), "{err}");
    }
}
