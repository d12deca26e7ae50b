//! The report job (`fidelis report`): regenerate the evaluation report of a model and, with
//! `--weekly`, the weekly report of a scoring run, from what is stored (the model directory,
//! the run's Parquet partition and its rows in the monitoring history). It monitors nothing
//! and writes nothing but report files.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model;
use crate::monitor::MonitorReport;
use crate::progress::Progress;
use crate::sink::{History, ScoreParquet};

/// The reports written.
pub struct ReportOutcome {
    pub evaluation: PathBuf,
    pub weekly: Option<PathBuf>,
}

/// Regenerate the evaluation report of `model_id` (default: `latest`), and the weekly report
/// of the run at `weekly` (`Some(None)`: the latest run).
pub fn run(
    cfg: &Config,
    model_id: Option<&str>,
    weekly: Option<Option<NaiveDate>>,
    progress: &Progress,
) -> Result<ReportOutcome> {
    let dir = model::store::resolve(&cfg.models_dir(), model_id)?;
    let evaluation = progress.step("report", "writing the evaluation report", || {
        crate::report::evaluation::write_evaluation(&dir, &cfg.models_dir(), &cfg.reports_dir())
    })?;
    let weekly = match weekly {
        Some(as_of) => Some(weekly_report(cfg, as_of, progress)?),
        None => None,
    };
    Ok(ReportOutcome { evaluation, weekly })
}

/// The weekly report of the run at `as_of` (default: the latest Parquet partition), from its
/// scores, its monitoring history rows and the transaction log (for the KPIs).
pub fn weekly_report(cfg: &Config, as_of: Option<NaiveDate>, progress: &Progress) -> Result<PathBuf> {
    // The run's outputs are read under the output lock (a weekly run may be replacing them).
    let _lock = super::open_output(cfg)?;
    let out_dir = Path::new(&cfg.output.dir);
    let parquet = ScoreParquet::new(out_dir);
    let dates = parquet.run_dates()?;
    let as_of = match as_of.or_else(|| dates.last().copied()) {
        Some(d) if dates.contains(&d) => d,
        Some(d) => {
            return Err(Error::Data(format!(
                "no scoring run at {d} under {}/scores (runs: {})",
                cfg.output.dir,
                dates.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            )))
        }
        None => {
            return Err(Error::Data(format!(
                "no scoring run under {}/scores to report on: run `fidelis weekly` first",
                cfg.output.dir
            )))
        }
    };
    let scores = parquet.read_scores(as_of)?;
    let history = History::new(out_dir);
    let Some(rows) = history.read()? else {
        return Err(Error::Data(format!(
            "no monitoring history in {}: run `fidelis weekly` (or `fidelis monitor --as-of {as_of}`) first",
            history.path.display()
        )));
    };
    let monitor = MonitorReport::from_history(&rows, as_of)?;
    // The model that scored the run (its risk bands label the levels).
    let model_id = scores.column("model_id").ok().and_then(|c| c.str().ok()?.get(0).map(str::to_string));
    let model = model::load(&cfg.models_dir(), model_id.as_deref())?;
    let loaded = super::Loaded::read(cfg, model, progress)?;
    let note = loaded.signals.events.as_ref().map(|e| crate::score::health_note(&cfg.health, e, as_of));
    progress.step("report", "writing the weekly report", || {
        let report =
            crate::report::weekly::build_for_run(cfg, &loaded.model, &loaded.daily, &scores, &monitor, note)?;
        crate::report::weekly::write_weekly(&report, &cfg.reports_dir())
    })
}

impl std::fmt::Display for ReportOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "evaluation report: {}", self.evaluation.display())?;
        if let Some(w) = &self.weekly {
            write!(f, "\nweekly report: {}", w.display())?;
        }
        Ok(())
    }
}
