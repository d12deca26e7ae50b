//! Delivery at the end of `score` and `weekly`: account events against the previous run,
//! monitoring events, the rules' messages, the CRM push (see [`crate::notify`]).

use std::path::Path;

use chrono::NaiveDate;
use polars::prelude::DataFrame;

use crate::config::Config;
use crate::error::Result;
use crate::lock::RunLock;
use crate::model::LoadedModel;
use crate::monitor::MonitorReport;
use crate::notify::{self, crm, DeliveryOutcome, RunEvents};
use crate::signals::SignalData;
use crate::sink::{ScoreParquet, Sinks};

/// Whether the config asks for any delivery.
pub fn wanted(cfg: &Config) -> bool {
    !cfg.notify.rules.is_empty() || cfg.crm.enabled()
}

/// The scores of the latest run before `as_of` (Parquet output), if any.
fn previous_scores(cfg: &Config, as_of: NaiveDate) -> Result<Option<DataFrame>> {
    if !cfg.output.parquet {
        return Ok(None);
    }
    let parquet = ScoreParquet::new(Path::new(&cfg.output.dir));
    match parquet.run_dates()?.into_iter().rfind(|&d| d < as_of) {
        Some(d) => parquet.read_scores(d).map(Some),
        None => Ok(None),
    }
}

/// What a run tells its rules and the CRM.
pub struct RunFindings<'a> {
    pub as_of: NaiveDate,
    pub scores: &'a DataFrame,
    pub monitor: Option<&'a MonitorReport>,
    /// The weekly report, when the run wrote one.
    pub report: Option<&'a Path>,
}

/// Find the events of a run and deliver them (nothing when the config asks for none). A
/// failure here never touches what the run wrote: it is reported in the outcome (exit 7).
pub fn deliver(
    cfg: &Config,
    sinks: &Sinks,
    model: &LoadedModel,
    signals: &SignalData,
    run: &RunFindings,
    dry_run: bool,
) -> Option<DeliveryOutcome> {
    if !wanted(cfg) {
        return None;
    }
    Some(try_deliver(cfg, sinks, model, signals, run, dry_run).unwrap_or_else(|e| DeliveryOutcome {
        failed: vec![format!("delivery stopped: {e}")],
        ..DeliveryOutcome::default()
    }))
}

/// The delivery lock of the output directory (waits at most the delivery deadline for another
/// delivery; a dry run, which reads the log but writes nothing, takes none).
fn delivery_lock(cfg: &Config, dry_run: bool) -> Result<Option<RunLock>> {
    if dry_run {
        return Ok(None);
    }
    let wait = std::time::Duration::from_secs_f64(cfg.notify.deadline_s);
    RunLock::acquire_delivery(Path::new(&cfg.output.dir), wait).map(Some)
}

fn try_deliver(
    cfg: &Config,
    sinks: &Sinks,
    model: &LoadedModel,
    signals: &SignalData,
    run: &RunFindings,
    dry_run: bool,
) -> Result<DeliveryOutcome> {
    let _lock = delivery_lock(cfg, dry_run)?;
    let previous = previous_scores(cfg, run.as_of)?;
    let levels: Vec<String> = model.decision.bands.bands.iter().map(|b| b.name.clone()).collect();
    let accounts = notify::account_events(
        run.scores,
        previous.as_ref(),
        signals.customers.as_ref(),
        &levels,
        &cfg.escalation,
    )?;
    let events = run
        .monitor
        .map(|m| notify::monitoring_events(&m.alerts, m.retrain.then_some(m.advice.as_str())))
        .unwrap_or_default();
    let link = if cfg.notify.report_url.is_empty() {
        run.report.map(|p| p.display().to_string()).unwrap_or_default()
    } else {
        cfg.notify.report_url.clone()
    };
    let n_accounts = accounts.len();
    let mut kinds = std::collections::BTreeMap::new();
    for (k, _) in accounts.iter().flat_map(|a| a.events.iter()).chain(events.iter()) {
        *kinds.entry(k.as_str()).or_insert(0) += 1;
    }
    let ev =
        RunEvents { as_of: run.as_of, model_id: model.info.model_id.clone(), accounts, run: events, link };
    let notices = notify::plan(&cfg.notify, &ev);
    let records = if cfg.crm.enabled() {
        Some(crm::records(run.scores, cfg.crm.include, &cfg.crm.segment, run.as_of)?)
    } else {
        None
    };
    let mut out = notify::deliver(cfg, run.as_of, &notices, records.as_deref(), dry_run)?;
    copy_deliveries(cfg, sinks, &mut out, run.as_of);
    out.accounts = n_accounts;
    out.events = kinds;
    Ok(out)
}

/// Copy the delivery log to the sinks when this delivery journaled anything (what could not
/// be copied goes to `out.log_errors`).
pub fn copy_deliveries(cfg: &Config, sinks: &Sinks, out: &mut DeliveryOutcome, as_of: NaiveDate) {
    if out.journaled > 0 {
        let log = crate::sink::DeliveryLog::new(Path::new(&cfg.output.dir));
        out.log_errors = sinks.copy_deliveries(&log, as_of);
    }
}

/// Tell the rules listening to `run_failed` that a run failed with `message` (an error's
/// text: already free of secrets). Under the output lock; when another run holds it (that
/// run is alive, nothing failed for good) or nothing listens, nothing is sent.
pub fn run_failed(
    cfg: &Config,
    as_of: NaiveDate,
    command: &str,
    message: &str,
    dry_run: bool,
) -> Option<DeliveryOutcome> {
    if !cfg.notify.rules.iter().any(|r| r.events.contains(&crate::config::EventKind::RunFailed)) {
        return None;
    }
    let _lock = match super::open_output(cfg) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("no run_failed alert: {e}");
            return None;
        }
    };
    let ev = RunEvents {
        as_of,
        model_id: String::new(),
        accounts: Vec::new(),
        run: vec![(crate::config::EventKind::RunFailed, format!("fidelis {command}: {message}"))],
        link: cfg.notify.report_url.clone(),
    };
    let notices = notify::plan(&cfg.notify, &ev);
    let sent = delivery_lock(cfg, dry_run).and_then(|_lock| {
        let mut out = notify::deliver(cfg, as_of, &notices, None, dry_run)?;
        // A failed run has no session: its sinks are resolved here.
        copy_deliveries(cfg, &Sinks::resolve(&cfg.output)?, &mut out, as_of);
        Ok(out)
    });
    Some(sent.unwrap_or_else(|e| DeliveryOutcome {
        failed: vec![format!("delivery stopped: {e}")],
        ..DeliveryOutcome::default()
    }))
}
