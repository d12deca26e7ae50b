//! Parquet: single files written to a temporary file in the same directory and renamed into
//! place (a crash never leaves a half-written file), and scoring runs as Hive-style
//! partitions readable by polars, DuckDB and Spark:
//! `<output_dir>/scores/as_of=YYYY-MM-DD/{scores,top_risk}.parquet`.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;

use super::PreviousRun;
use crate::error::{Error, PolarsContext, Result};
use crate::schema::CUSTOMER;

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
    ParquetWriter::new(&mut buf).finish(&mut df).polars("encoding parquet")?;
    Ok(buf)
}

pub fn read_parquet(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetReader::new(file).finish().polars(&format!("reading {}", path.display()))
}

/// The Parquet partitions of scoring runs under `<output_dir>/scores`. Work in progress is
/// kept in `<output_dir>/.staging/`, outside the dataset's tree (so no reader's glob of
/// `scores/` ever matches a half-written or set-aside partition) but on the same filesystem
/// (so a partition moves into place by a rename).
#[derive(Debug, Clone)]
pub struct ScoreParquet {
    pub root: PathBuf,
    pub staging: PathBuf,
}

/// Where runs stage their partitions: `<output_dir>/.staging`.
pub const STAGING_DIR: &str = ".staging";

pub const SCORES_FILE: &str = "scores.parquet";
pub const TOP_RISK_FILE: &str = "top_risk.parquet";

fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::output(path, e))?;
    ParquetWriter::new(file).finish(df).map(|_| ()).map_err(|e| Error::output(path, e))
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
        ScoreParquet { root: output_dir.join("scores"), staging: output_dir.join(STAGING_DIR) }
    }

    pub fn partition(&self, as_of: NaiveDate) -> PathBuf {
        self.root.join(format!("as_of={as_of}"))
    }

    /// Write one run. Both files go to a directory under `.staging/` first (synced), which then
    /// replaces the partition in one atomic swap (`renameat2(RENAME_EXCHANGE)`; where the file
    /// system lacks it, two renames that [`ScoreParquet::recover`] completes after a kill). A
    /// process killed at any point leaves the previous partition or the new one readable, and
    /// nothing else under `scores/`.
    pub fn write_run(
        &self,
        as_of: NaiveDate,
        scores: &mut DataFrame,
        top: &mut DataFrame,
    ) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::output(&self.root, e))?;
        std::fs::create_dir_all(&self.staging).map_err(|e| Error::output(&self.staging, e))?;
        self.recover()?;
        let pid = std::process::id();
        let tmp = self.staging.join(format!(".as_of={as_of}.tmp-{pid}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::output(&tmp, e))?;
        }
        std::fs::create_dir(&tmp).map_err(|e| Error::output(&tmp, e))?;
        let written = (|| {
            write_parquet(scores, &tmp.join(SCORES_FILE))?;
            super::fault_point("parquet-write");
            write_parquet(top, &tmp.join(TOP_RISK_FILE))?;
            sync_file(&tmp.join(SCORES_FILE))?;
            sync_file(&tmp.join(TOP_RISK_FILE))
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let dir = self.partition(as_of);
        if !dir.exists() {
            std::fs::rename(&tmp, &dir).map_err(|e| Error::output(&dir, e))?;
        } else if exchange(&tmp, &dir).is_ok() {
            // One atomic swap: readers see the old partition or the new one, never neither.
            // The old one is now at the temporary name.
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::output(&tmp, e))?;
        } else {
            // A file system without RENAME_EXCHANGE: old partition aside, new one in; a kill
            // in between is undone by `recover` at the next start.
            let old = self.staging.join(format!(".as_of={as_of}.old-{pid}"));
            std::fs::rename(&dir, &old).map_err(|e| Error::output(&dir, e))?;
            std::fs::rename(&tmp, &dir).map_err(|e| Error::output(&dir, e))?;
            std::fs::remove_dir_all(&old).map_err(|e| Error::output(&old, e))?;
        }
        sync_dir(&self.root);
        sync_dir(&self.staging);
        Ok(dir)
    }

    /// Undo what an interrupted [`ScoreParquet::write_run`] left: restore a partition that was
    /// set aside but not replaced, and remove temporary directories (in `.staging/`, and in
    /// `scores/` where earlier versions staged them). Runs hold the output lock, so no other
    /// run is writing here.
    pub fn recover(&self) -> Result<()> {
        for dir in [&self.staging, &self.root] {
            self.recover_in(dir)?;
        }
        Ok(())
    }

    fn recover_in(&self, dir: &Path) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(".as_of=") else { continue };
            let path = entry.path();
            if let Some((date, _)) = rest.split_once(".old-") {
                let dir = self.root.join(format!("as_of={date}"));
                if !dir.exists() {
                    log::warn!("restoring {} left by an interrupted run", dir.display());
                    std::fs::rename(&path, &dir).map_err(|e| Error::output(&dir, e))?;
                    continue;
                }
            }
            std::fs::remove_dir_all(&path).map_err(|e| Error::output(&path, e))?;
        }
        Ok(())
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
            if let Some(d) =
                name.strip_prefix("as_of=").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            {
                if entry.path().join(SCORES_FILE).is_file() {
                    dates.push(d);
                }
            }
        }
        dates.sort_unstable();
        Ok(dates)
    }

    /// The scores of one run.
    pub fn read_scores(&self, as_of: NaiveDate) -> Result<DataFrame> {
        read_parquet(&self.partition(as_of).join(SCORES_FILE))
    }

    /// Health scores of the two latest runs before `as_of` that have them, per customer,
    /// oldest first (customers in both runs only).
    pub fn health_history(&self, as_of: NaiveDate) -> Result<HashMap<String, [f64; 2]>> {
        let mut runs = Vec::new();
        for d in self.run_dates()?.into_iter().rev().filter(|&d| d < as_of) {
            let path = self.partition(d).join(SCORES_FILE);
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
        let path = self.partition(d).join(SCORES_FILE);
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
