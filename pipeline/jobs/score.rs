//! The score job (`fidelis score`) and the weekly job (`fidelis weekly`: score, monitor, the
//! weekly report, under one lock and one read of the data).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Utc};
use polars::prelude::DataFrame;

use super::notify::RunFindings;
use super::{BatchOptions, Session};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::features::{self, Daily};
use crate::model::LoadedModel;
use crate::monitor::MonitorReport;
use crate::notify::DeliveryOutcome;
use crate::predict::{self, Predictions};
use crate::progress::Progress;
use crate::report::weekly::WeeklyReport;
use crate::score::{self, ScoreRun, ScoreSummary};
use crate::signals::SignalData;
use crate::sink::sql::{self, SqlRun};
use crate::sink::{History, PreviousRun, RunRecord, ScoreParquet, Sinks};

/// What a scoring run wrote.
pub struct BatchOutcome {
    pub summary: ScoreSummary,
    pub scores: DataFrame,
    /// The features and predictions behind the scores (monitoring reuses them).
    pub predictions: Predictions,
    /// The sinks written, in order (Parquet partition directory, redacted SQL URLs).
    pub written: Vec<String>,
    /// Alerts and the CRM push (when `[notify]` or `[crm]` asks for them).
    pub delivery: Option<DeliveryOutcome>,
}

/// `fidelis score`: score every customer eligible at `as_of` and write every configured
/// sink, under the output lock.
pub fn run(cfg: &Config, opts: &BatchOptions, progress: &Progress) -> Result<BatchOutcome> {
    let sinks = Sinks::resolve(&cfg.output)?;
    sinks.require_one()?;
    if !opts.dry_run {
        crate::notify::check_secrets(cfg)?;
    }
    let mut s = Session::open(cfg, sinks, opts.model.as_deref(), progress)?;
    let as_of = opts.as_of(s.data_end)?;
    let mut batch = score_to_parquet(cfg, &s.sinks, &s.model, &s.daily, &s.signals, as_of, progress)?
        .finish(&s.sinks, progress)?;
    s.release_output();
    let run = RunFindings { as_of, scores: &batch.scores, monitor: None, report: None };
    batch.delivery = progress.step("notify", "delivering alerts", || {
        Ok::<_, Error>(super::notify::deliver(cfg, &s.sinks, &s.model, &s.signals, &run, opts.dry_run))
    })?;
    Ok(batch)
}

/// What `fidelis weekly` did: the batch, monitoring, and the weekly report.
pub struct WeeklyOutcome {
    pub batch: BatchOutcome,
    pub monitor: MonitorReport,
    /// `<reports_dir>/weekly/<as_of>.html` (`.md`, `.json` beside it).
    pub report: PathBuf,
}

/// `fidelis weekly`: under one lock and one read of the data, the batch of `score`, then
/// monitoring at the same `as_of`, then the weekly report.
pub fn weekly(cfg: &Config, opts: &BatchOptions, progress: &Progress) -> Result<WeeklyOutcome> {
    let sinks = Sinks::resolve(&cfg.output)?;
    sinks.require_one()?;
    if !opts.dry_run {
        crate::notify::check_secrets(cfg)?;
    }
    let mut s = Session::open(cfg, sinks, opts.model.as_deref(), progress)?;
    let as_of = opts.as_of(s.data_end)?;
    // Everything monitoring reads is checked before anything is written.
    s.model.reference()?;
    s.model.metrics()?;
    History::new(Path::new(&cfg.output.dir)).read()?;
    let scored = score_to_parquet(cfg, &s.sinks, &s.model, &s.daily, &s.signals, as_of, progress)?;
    // The SQL load of the scores and the monitoring and report that read them run side by
    // side; what the latter write is written only once the scores are in every sink.
    let (sql, findings) = rayon::join(
        || scored.write_sql(&s.sinks, progress),
        || -> Result<(MonitorReport, WeeklyReport)> {
            let monitor = super::monitor::observe(
                cfg,
                &s,
                as_of,
                Some(&scored.preds),
                Some(&scored.run.scores),
                progress,
            )?;
            let report = progress.step("report_build", "building the weekly report", || {
                crate::report::weekly::build_for_run(
                    cfg,
                    &s.model,
                    &s.daily,
                    &scored.run.scores,
                    &monitor,
                    scored.run.summary.health.clone(),
                )
            })?;
            Ok((monitor, report))
        },
    );
    let mut batch = scored.outcome(sql?);
    let after = |(monitor, report): (MonitorReport, WeeklyReport)| -> Result<(MonitorReport, PathBuf)> {
        super::monitor::record(cfg, &s.sinks, &monitor, progress)?;
        let path = progress.step("report", "writing the weekly report", || {
            crate::report::weekly::write_weekly(&report, &cfg.reports_dir())
        })?;
        Ok((monitor, path))
    };
    match findings.and_then(after) {
        Ok((monitor, report)) => {
            s.release_output();
            let run =
                RunFindings { as_of, scores: &batch.scores, monitor: Some(&monitor), report: Some(&report) };
            let delivery = progress.step("notify", "delivering alerts", || {
                Ok::<_, Error>(super::notify::deliver(
                    cfg,
                    &s.sinks,
                    &s.model,
                    &s.signals,
                    &run,
                    opts.dry_run,
                ))
            })?;
            batch.delivery = delivery;
            Ok(WeeklyOutcome { batch, monitor, report })
        }
        Err(e) => Err(Error::AfterScores { done: batch.to_string(), source: Box::new(e) }),
    }
}

/// Features and predictions at `as_of`, with the churn reasons (timed in the log as laps of
/// the scoring step).
fn predictions(
    cfg: &Config,
    model: &LoadedModel,
    daily: &Daily,
    signals: &SignalData,
    as_of: NaiveDate,
) -> Result<Predictions> {
    let clock = std::time::Instant::now();
    let lap = |what: &str| log::info!("score: {what} done at {:.2}s", clock.elapsed().as_secs_f64());
    let (customers, x) = predict::features_at(model, daily, signals, as_of)?;
    lap("features");
    let p = predict::apply(model, as_of, customers, x, cfg.output.reasons);
    lap("predictions and contributions");
    Ok(p)
}

/// Score every customer of `tx` (the ingest contract frame) eligible at `as_of`: the scores
/// table without writing it anywhere. `previous` is the previous run (for `score_change`),
/// `health_history` the health scores of the last two runs (for the review flags).
pub fn score_frame(
    cfg: &Config,
    model: &LoadedModel,
    tx: &DataFrame,
    signals: &SignalData,
    as_of: NaiveDate,
    previous: Option<&PreviousRun>,
    health_history: &HashMap<String, [f64; 2]>,
) -> Result<ScoreRun> {
    let preds = predictions(cfg, model, &features::daily_activity(tx)?, signals, as_of)?;
    score::score(cfg, model, &preds, signals, previous, health_history)
}

/// A run scored and written to Parquet (when that sink is on), its SQL sinks not yet.
pub struct Scored {
    run: ScoreRun,
    preds: Predictions,
    started: chrono::DateTime<Utc>,
    /// The Parquet partition directory written.
    parquet: Option<String>,
}

/// Score at `as_of` and write the Parquet partition (the first sink; the caller holds the
/// lock). [`Scored::write_sql`] writes the rest.
#[allow(clippy::too_many_arguments)]
pub fn score_to_parquet(
    cfg: &Config,
    sinks: &Sinks,
    model: &LoadedModel,
    daily: &Daily,
    signals: &SignalData,
    as_of: NaiveDate,
    progress: &Progress,
) -> Result<Scored> {
    let started = Utc::now();
    let out_dir = Path::new(&cfg.output.dir);
    let parquet = ScoreParquet::new(out_dir);
    let previous = match sinks.sql.first() {
        _ if sinks.parquet => parquet.previous_run(as_of)?,
        Some(t) => sql::previous_run(t, &sinks.tables, as_of)?,
        None => None,
    };
    let health_history = if sinks.parquet && signals.events.is_some() {
        parquet.health_history(as_of)?
    } else {
        HashMap::new()
    };
    let (preds, mut run) =
        progress.step("score", &format!("scoring customers eligible at {as_of}"), || {
            let mut preds = predictions(cfg, model, daily, signals, as_of)?;
            let run = score::score(cfg, model, &preds, signals, previous.as_ref(), &health_history)?;
            // The reasons are in the scores now; monitoring needs only features and scores.
            preds.contributions = None;
            Ok::<_, crate::error::Error>((preds, run))
        })?;
    let mut written = None;
    if sinks.parquet {
        let dir = progress.step("parquet", "writing parquet", || {
            parquet.write_run(as_of, &mut run.scores, &mut run.top_risk)
        })?;
        written = Some(dir.display().to_string());
    }
    Ok(Scored { run, preds, started, parquet: written })
}

impl Scored {
    /// Write the scores to every SQL sink, one transaction each; the sinks written (redacted
    /// URLs).
    pub fn write_sql(&self, sinks: &Sinks, progress: &Progress) -> Result<Vec<String>> {
        let s = &self.run.summary;
        let record = RunRecord {
            as_of: self.preds.as_of,
            model_id: s.model_id.clone(),
            scored: s.scored as i64,
            top_size: s.top_size as i64,
            contacted: s.contacted as i64,
            started: self.started,
            finished: Utc::now(),
            status: "ok".into(),
        };
        let mut written = Vec::new();
        for target in &sinks.sql {
            let shown = target.display();
            progress.step("sql", &format!("writing {shown}"), || {
                sql::write_run(
                    target,
                    &sinks.tables,
                    &SqlRun { scores: &self.run.scores, top_risk: &self.run.top_risk, record: &record },
                )
            })?;
            written.push(shown);
        }
        Ok(written)
    }

    /// Write every SQL sink ([`Scored::write_sql`]): the batch's outcome.
    pub fn finish(self, sinks: &Sinks, progress: &Progress) -> Result<BatchOutcome> {
        let sql = self.write_sql(sinks, progress)?;
        Ok(self.outcome(sql))
    }

    /// The batch's outcome once `sql` (what [`Scored::write_sql`] wrote) is written too.
    pub fn outcome(self, sql: Vec<String>) -> BatchOutcome {
        let written = self.parquet.into_iter().chain(sql).collect();
        BatchOutcome {
            summary: self.run.summary,
            scores: self.run.scores,
            predictions: self.preds,
            written,
            delivery: None,
        }
    }
}

impl std::fmt::Display for BatchOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.summary)?;
        for w in &self.written {
            write!(f, "\nwritten to {w}")?;
        }
        if let Some(d) = &self.delivery {
            write!(f, "\n{d}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for WeeklyOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.batch)?;
        writeln!(f, "{}", self.monitor)?;
        write!(f, "weekly report: {}", self.report.display())
    }
}
