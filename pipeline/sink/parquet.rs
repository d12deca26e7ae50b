//! Parquet: single files written to a temporary file in the same directory and renamed into
//! place (a crash never leaves a half-written file), and scoring runs as two Hive-style
//! datasets, the scores and the top-risk segment, that every reader opens with its default
//! call (pandas, pyarrow, polars, DuckDB, Spark):
//!
//! ```text
//! <output_dir>/scores/run=YYYY-MM-DD/part-0.parquet
//! <output_dir>/top_risk/run=YYYY-MM-DD/part-0.parquet
//! ```
//!
//! Each file holds its `as_of` column (a date); the directory key is `run`, not `as_of`, so
//! that no reader meets the same column twice: pyarrow (and pandas through it) refuses a
//! partition key that is also a column of the files, and with `as_of` only in the path pandas
//! and pyarrow would read it as text. With `run=` every reader gets `as_of` as a date from the
//! file, and the engines that parse Hive paths also get `run` (the same date) to prune on.
//! Files carry plain Parquet types (no Arrow view types in their metadata: strings read as
//! `string` everywhere). Output written by earlier versions (`scores/as_of=DATE/{scores,
//! top_risk}.parquet`) is moved to this layout by the first command that opens the output.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;

use super::PreviousRun;
use crate::error::{Error, PolarsContext, Result};
use crate::schema::{self, CUSTOMER};

/// Write a frame to Parquet atomically: a temporary file in the same directory, synced, then
/// renamed into place and the directory synced (a crash leaves the old file or the new one,
/// never an empty or half-written one).
pub fn write_parquet_atomic(df: &mut DataFrame, path: &Path) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    if let Err(e) = write_parquet(df, &tmp).and_then(|()| sync_file(&tmp)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::output(path, e)
    })?;
    sync_dir(dir);
    Ok(())
}

/// A frame as Parquet bytes (for small files written together, e.g. model artifacts).
pub fn parquet_bytes(mut df: DataFrame) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    plain_writer(&mut buf, &df).finish(&mut df).polars("encoding parquet")?;
    Ok(buf)
}

pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetReader::new(file).finish().polars(&format!("reading {}", path.display()))
}

/// The Parquet partitions of scoring runs under `<output_dir>/scores` and
/// `<output_dir>/top_risk`. Work in progress is kept in `<output_dir>/.staging/`, outside the
/// datasets' trees (so no reader's glob ever matches a half-written or set-aside partition)
/// but on the same filesystem (so a partition moves into place by a rename).
#[derive(Debug, Clone)]
pub struct ScoreParquet {
    /// `<output_dir>/scores`.
    pub root: PathBuf,
    /// `<output_dir>/top_risk`.
    pub top_root: PathBuf,
    pub staging: PathBuf,
}

/// The directory key of a run's partition (`run=YYYY-MM-DD`).
pub const PARTITION_KEY: &str = "run";
/// The one file of a partition.
pub const PART_FILE: &str = "part-0.parquet";

/// Where runs stage their partitions: `<output_dir>/.staging`.
pub const STAGING_DIR: &str = ".staging";

/// The files of a partition in the layout before two datasets (`scores/as_of=DATE/`).
const OLD_SCORES_FILE: &str = "scores.parquet";
const OLD_TOP_RISK_FILE: &str = "top_risk.parquet";

/// The Arrow schema a file announces (its `ARROW:schema` key, which Arrow readers take the
/// column types from): plain types, where polars would announce its view types
/// (`string_view`, `binary_view`) that much of the Arrow ecosystem cannot sort or merge.
/// Strings and binaries with 32-bit offsets, dictionaries as their values; the Parquet data is
/// the same either way.
fn plain_arrow_schema(df: &DataFrame) -> ArrowSchema {
    use polars_arrow::datatypes::ArrowDataType as A;
    fn plain(t: A) -> A {
        match t {
            A::Utf8View | A::LargeUtf8 => A::Utf8,
            A::BinaryView | A::LargeBinary => A::Binary,
            A::Dictionary(_, values, _) => plain(*values),
            other => other,
        }
    }
    df.schema()
        .to_arrow(CompatLevel::oldest())
        .iter_values()
        .map(|f| {
            let mut f = f.clone();
            f.dtype = plain(f.dtype);
            (f.name.clone(), f)
        })
        .collect()
}

/// A Parquet writer that announces plain Arrow types ([`plain_arrow_schema`]).
fn plain_writer<W: std::io::Write>(w: W, df: &DataFrame) -> ParquetWriter<W> {
    let key = polars_parquet::arrow::write::schema_to_metadata_key(&plain_arrow_schema(df));
    ParquetWriter::new(w).with_key_value_metadata(Some(KeyValueMetadata::Static(vec![key])))
}

fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::output(path, e))?;
    plain_writer(file, df).finish(df).map(|_| ()).map_err(|e| Error::output(path, e))
}

/// Swap two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths; the call reads them and nothing else.
    let rc = unsafe {
        libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Make a directory's entries (renames into it) durable; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::output(path, e))
}

impl ScoreParquet {
    pub fn new(output_dir: &Path) -> Self {
        ScoreParquet {
            root: output_dir.join("scores"),
            top_root: output_dir.join("top_risk"),
            staging: output_dir.join(STAGING_DIR),
        }
    }

    /// `scores/run=DATE`.
    pub fn partition(&self, as_of: NaiveDate) -> PathBuf {
        self.root.join(format!("{PARTITION_KEY}={as_of}"))
    }

    /// `top_risk/run=DATE`.
    pub fn top_partition(&self, as_of: NaiveDate) -> PathBuf {
        self.top_root.join(format!("{PARTITION_KEY}={as_of}"))
    }

    /// The scores file of a run.
    pub fn scores_file(&self, as_of: NaiveDate) -> PathBuf {
        self.partition(as_of).join(PART_FILE)
    }

    /// The top-risk file of a run.
    pub fn top_risk_file(&self, as_of: NaiveDate) -> PathBuf {
        self.top_partition(as_of).join(PART_FILE)
    }

    /// Write one run. Each file goes to a directory under `.staging/` first (synced), which
    /// then replaces its partition in one atomic swap (`renameat2(RENAME_EXCHANGE)`; where the
    /// file system lacks it, two renames that [`ScoreParquet::recover`] completes after a
    /// kill): the top-risk segment first, then the scores, whose partition is what makes a run
    /// present. A process killed at any point leaves each dataset's previous partition or its
    /// new one readable, and nothing else in the datasets' trees. Returns the scores partition.
    pub fn write_run(
        &self,
        as_of: NaiveDate,
        scores: &mut DataFrame,
        top: &mut DataFrame,
    ) -> Result<PathBuf> {
        for dir in [&self.root, &self.top_root, &self.staging] {
            std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
        }
        self.recover()?;
        let pid = std::process::id();
        let staged = |kind: &str| self.staging.join(format!(".{kind}-{PARTITION_KEY}={as_of}.tmp-{pid}"));
        let (tmp_top, tmp_scores) = (staged("top_risk"), staged("scores"));
        let written = (|| {
            for tmp in [&tmp_top, &tmp_scores] {
                if tmp.exists() {
                    std::fs::remove_dir_all(tmp).map_err(|e| Error::output(tmp, e))?;
                }
                std::fs::create_dir(tmp).map_err(|e| Error::output(tmp, e))?;
            }
            write_parquet(scores, &tmp_scores.join(PART_FILE))?;
            super::fault_point("parquet-write");
            write_parquet(top, &tmp_top.join(PART_FILE))?;
            sync_file(&tmp_scores.join(PART_FILE))?;
            sync_file(&tmp_top.join(PART_FILE))?;
            sync_dir(&tmp_scores);
            sync_dir(&tmp_top);
            Ok(())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp_top);
            let _ = std::fs::remove_dir_all(&tmp_scores);
            return Err(e);
        }
        self.publish(&tmp_top, &self.top_partition(as_of), "top_risk", as_of)?;
        let dir = self.partition(as_of);
        self.publish(&tmp_scores, &dir, "scores", as_of)?;
        Ok(dir)
    }

    /// Move a staged partition `tmp` to `dir`, replacing what is there atomically.
    fn publish(&self, tmp: &Path, dir: &Path, kind: &str, as_of: NaiveDate) -> Result<()> {
        if !dir.exists() {
            std::fs::rename(tmp, dir).map_err(|e| Error::output(dir, e))?;
        } else if exchange(tmp, dir).is_ok() {
            // One atomic swap: readers see the old partition or the new one, never neither.
            // The old one is now at the temporary name.
            std::fs::remove_dir_all(tmp).map_err(|e| Error::output(tmp, e))?;
        } else {
            // A file system without RENAME_EXCHANGE: old partition aside, new one in; a kill
            // in between is undone by `recover` at the next start.
            let old =
                self.staging.join(format!(".{kind}-{PARTITION_KEY}={as_of}.old-{}", std::process::id()));
            std::fs::rename(dir, &old).map_err(|e| Error::output(dir, e))?;
            std::fs::rename(tmp, dir).map_err(|e| Error::output(dir, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| Error::output(&old, e))?;
        }
        if let Some(parent) = dir.parent() {
            sync_dir(parent);
        }
        sync_dir(&self.staging);
        Ok(())
    }

    /// Undo what an interrupted [`ScoreParquet::write_run`] left: restore a partition that was
    /// set aside but not replaced, and remove staged directories (in `.staging/`, and in
    /// `scores/` where earlier versions staged them); then move partitions of the earlier
    /// layout to this one ([`ScoreParquet::migrate`]). Runs hold the output lock, so no other
    /// run is writing here.
    pub fn recover(&self) -> Result<()> {
        for dir in [&self.staging, &self.root] {
            self.recover_in(dir)?;
        }
        self.migrate().map(|_| ())
    }

    fn recover_in(&self, dir: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            // `.scores-run=D.old-PID`, `.top_risk-run=D.old-PID`, and the earlier layout's
            // `.as_of=D.old-PID`: a partition set aside whose replacement never arrived.
            let target = if let Some(rest) = name.strip_prefix(".scores-") {
                rest.split_once(".old-").map(|(p, _)| self.root.join(p))
            } else if let Some(rest) = name.strip_prefix(".top_risk-") {
                rest.split_once(".old-").map(|(p, _)| self.top_root.join(p))
            } else if let Some(rest) = name.strip_prefix(".as_of=") {
                rest.split_once(".old-").map(|(d, _)| self.root.join(format!("as_of={d}")))
            } else {
                continue;
            };
            if let Some(target) = target.filter(|t| !t.exists()) {
                log::warn!("restoring {} left by an interrupted run", target.display());
                std::fs::rename(&path, &target).map_err(|e| Error::output(&target, e))?;
                continue;
            }
            std::fs::remove_dir_all(&path).map_err(|e| Error::output(&path, e))?;
        }
        Ok(())
    }

    /// Move the partitions of the earlier layout (`scores/as_of=DATE/{scores,top_risk}.parquet`)
    /// to `scores/run=DATE/part-0.parquet` and `top_risk/run=DATE/part-0.parquet`: once, by the
    /// first command that opens the output (a rename per file; a kill in between is finished by
    /// the next command). A partition already in the new layout wins over an old one.
    pub fn migrate(&self) -> Result<usize> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(&self.root, e)),
        };
        let mut moved = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(d) =
                name.strip_prefix("as_of=").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            else {
                continue;
            };
            let old = entry.path();
            for (file, dir) in
                [(OLD_TOP_RISK_FILE, self.top_partition(d)), (OLD_SCORES_FILE, self.partition(d))]
            {
                let from = old.join(file);
                if !from.is_file() {
                    continue;
                }
                if dir.join(PART_FILE).is_file() {
                    std::fs::remove_file(&from).map_err(|e| Error::output(&from, e))?;
                    continue;
                }
                std::fs::create_dir_all(&self.staging).map_err(|e| Error::output(&self.staging, e))?;
                let kind = if file == OLD_SCORES_FILE { "scores" } else { "top_risk" };
                let tmp =
                    self.staging.join(format!(".{kind}-{PARTITION_KEY}={d}.tmp-{}", std::process::id()));
                if tmp.exists() {
                    std::fs::remove_dir_all(&tmp).map_err(|e| Error::output(&tmp, e))?;
                }
                std::fs::create_dir(&tmp).map_err(|e| Error::output(&tmp, e))?;
                std::fs::rename(&from, tmp.join(PART_FILE)).map_err(|e| Error::output(&from, e))?;
                if let Some(parent) = dir.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::output(parent, e))?;
                }
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).map_err(|e| Error::output(&dir, e))?;
                }
                std::fs::rename(&tmp, &dir).map_err(|e| Error::output(&dir, e))?;
            }
            std::fs::remove_dir_all(&old).map_err(|e| Error::output(&old, e))?;
            log::warn!(
                "moved {} to the current layout ({}, {})",
                old.display(),
                self.partition(d).display(),
                self.top_partition(d).display()
            );
            moved += 1;
        }
        if moved > 0 {
            sync_dir(&self.root);
            sync_dir(&self.top_root);
        }
        Ok(moved)
    }

    /// Dates of the runs present, oldest first.
    pub fn run_dates(&self) -> Result<Vec<NaiveDate>> {
        let mut dates = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dates),
            Err(e) => return Err(Error::io(&self.root, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let prefix = format!("{PARTITION_KEY}=");
            if let Some(d) =
                name.strip_prefix(&prefix).and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            {
                if entry.path().join(PART_FILE).is_file() {
                    dates.push(d);
                }
            }
        }
        dates.sort_unstable();
        Ok(dates)
    }

    /// The scores of one run.
    pub fn read_scores(&self, as_of: NaiveDate) -> Result<DataFrame> {
        read_parquet(&self.scores_file(as_of))
    }

    /// The customers with an experiment group (`experiment_group` not null) in the run at
    /// `as_of` (none when its scores have no such column).
    pub fn experiment_members(&self, as_of: NaiveDate) -> Result<Vec<String>> {
        let Some(df) = self.experiment_columns(as_of, &[])? else { return Ok(Vec::new()) };
        let ctx = format!("reading the run at {as_of}");
        let ids = df.column(CUSTOMER).polars(&ctx)?.str().polars(&ctx)?;
        let groups =
            df.column(schema::EXPERIMENT_GROUP).polars(&ctx)?.cast(&DataType::String).polars(&ctx)?;
        let groups = groups.str().polars(&ctx)?;
        Ok(ids.iter().zip(groups.iter()).filter_map(|(id, g)| g.and(id).map(str::to_string)).collect())
    }

    /// The customer id, `experiment_group` and the `extra` columns of the run at `as_of`, read
    /// alone (None when its scores have no experiment group).
    pub fn experiment_columns(&self, as_of: NaiveDate, extra: &[&str]) -> Result<Option<DataFrame>> {
        let path = self.scores_file(as_of);
        let ctx = format!("reading {}", path.display());
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut reader = ParquetReader::new(file);
        if !reader.schema().polars(&ctx)?.contains(schema::EXPERIMENT_GROUP) {
            return Ok(None);
        }
        let columns = [CUSTOMER, schema::EXPERIMENT_GROUP].iter().chain(extra).map(|c| (*c).into()).collect();
        Ok(Some(reader.with_columns(Some(columns)).finish().polars(&ctx)?))
    }

    /// Health scores of the two latest runs before `as_of` that have them, per customer,
    /// oldest first (customers in both runs only).
    pub fn health_history(&self, as_of: NaiveDate) -> Result<HashMap<String, [f64; 2]>> {
        let mut runs = Vec::new();
        for d in self.run_dates()?.into_iter().rev().filter(|&d| d < as_of) {
            let path = self.scores_file(d);
            let ctx = format!("reading {}", path.display());
            let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let df = ParquetReader::new(file).finish().polars(&ctx)?;
            if df.column("health_score").is_err() {
                break;
            }
            let ids = df.column(CUSTOMER).polars(&ctx)?.str().polars(&ctx)?.clone();
            let h = df.column("health_score").polars(&ctx)?.cast(&DataType::Float64).polars(&ctx)?;
            let h = h.f64().polars(&ctx)?.clone();
            let m: HashMap<String, f64> =
                ids.iter().zip(h.iter()).filter_map(|(i, v)| Some((i?.to_string(), v?))).collect();
            runs.push(m);
            if runs.len() == 2 {
                break;
            }
        }
        let mut out = HashMap::new();
        if let [newer, older] = &runs[..] {
            for (id, &b) in newer {
                if let Some(&a) = older.get(id) {
                    out.insert(id.clone(), [a, b]);
                }
            }
        }
        Ok(out)
    }

    /// The risk scores of the latest run strictly before `as_of`, if any.
    pub fn previous_run(&self, as_of: NaiveDate) -> Result<Option<PreviousRun>> {
        let Some(d) = self.run_dates()?.into_iter().rfind(|&d| d < as_of) else {
            return Ok(None);
        };
        let path = self.scores_file(d);
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let ctx = format!("reading {}", path.display());
        let df = ParquetReader::new(file)
            .with_columns(Some(vec![CUSTOMER.into(), "risk_score".into()]))
            .finish()
            .polars(&ctx)?;
        let ids = df.column(CUSTOMER).polars(&ctx)?.str().polars(&ctx)?;
        let scores = df.column("risk_score").polars(&ctx)?.cast(&DataType::Int32).polars(&ctx)?;
        let scores = scores.i32().polars(&ctx)?;
        let risk_scores =
            ids.iter().zip(scores.iter()).filter_map(|(id, s)| Some((id?.to_string(), s?))).collect();
        Ok(Some(PreviousRun { as_of: d, risk_scores }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> DataFrame {
        df!("customer_id" => (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>(), "risk_score" => vec![1i32; n])
            .unwrap()
    }

    #[test]
    fn a_run_is_two_datasets_and_the_earlier_layout_is_moved_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = ScoreParquet::new(dir.path());
        let d = NaiveDate::from_ymd_opt(2024, 12, 31).unwrap();
        p.write_run(d, &mut frame(3), &mut frame(1)).unwrap();
        assert_eq!(read_parquet(&p.scores_file(d)).unwrap().height(), 3);
        assert_eq!(read_parquet(&p.top_risk_file(d)).unwrap().height(), 1);
        assert!(p.scores_file(d).ends_with("scores/run=2024-12-31/part-0.parquet"));
        assert!(p.top_risk_file(d).ends_with("top_risk/run=2024-12-31/part-0.parquet"));
        // An output of the earlier layout: scores/as_of=DATE/{scores,top_risk}.parquet.
        let old_day = NaiveDate::from_ymd_opt(2024, 12, 24).unwrap();
        let old = dir.path().join("scores/as_of=2024-12-24");
        std::fs::create_dir_all(&old).unwrap();
        write_parquet(&mut frame(5), &old.join(OLD_SCORES_FILE)).unwrap();
        write_parquet(&mut frame(2), &old.join(OLD_TOP_RISK_FILE)).unwrap();
        let bytes = std::fs::read(old.join(OLD_SCORES_FILE)).unwrap();
        // Half moved (a kill after the top-risk file): the next open finishes it.
        std::fs::create_dir_all(p.top_partition(old_day)).unwrap();
        std::fs::rename(old.join(OLD_TOP_RISK_FILE), p.top_risk_file(old_day)).unwrap();
        p.recover().unwrap();
        assert!(!old.exists(), "the old partition is gone");
        assert_eq!(std::fs::read(p.scores_file(old_day)).unwrap(), bytes, "moved, not rewritten");
        assert_eq!(read_parquet(&p.top_risk_file(old_day)).unwrap().height(), 2);
        assert_eq!(p.run_dates().unwrap(), vec![old_day, d]);
        assert_eq!(p.migrate().unwrap(), 0, "once");
        // Nothing but the two datasets' partitions in their trees.
        for root in [&p.root, &p.top_root] {
            let names: Vec<String> = std::fs::read_dir(root)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into())
                .collect();
            assert!(names.iter().all(|n| n.starts_with("run=")), "{names:?}");
        }
    }

    #[test]
    fn files_carry_plain_types_without_arrow_view_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        write_parquet(&mut frame(2), &path).unwrap();
        // The announced schema is the plain one (polars' own would say Utf8View).
        let meta = polars_parquet::read::read_metadata(&mut File::open(&path).unwrap()).unwrap();
        let kv = meta.key_value_metadata().clone().unwrap();
        let arrow = kv.iter().find(|k| k.key == "ARROW:schema").and_then(|k| k.value.clone()).unwrap();
        let plain = polars_parquet::arrow::write::schema_to_metadata_key(&plain_arrow_schema(&frame(2)));
        assert_eq!(Some(arrow), plain.value);
        let back = read_parquet(&path).unwrap();
        assert_eq!(back.column("customer_id").unwrap().dtype(), &DataType::String);
    }
}
