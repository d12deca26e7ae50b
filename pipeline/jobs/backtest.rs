//! The backtest job (`fidelis backtest`): one model trained on the data before `from`, then
//! the weekly job replayed over history, as if it had run then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate};

use super::Loaded;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lock::RunLock;
use crate::model;
use crate::monitor::{MonitorReport, Status};
use crate::progress::Progress;
use crate::sink::history::HISTORY_FILE;

#[derive(Debug, Clone)]
pub struct BacktestOptions {
    pub from: NaiveDate,
    /// Last run date; default: the last date whose outcome window the data covers.
    pub to: Option<NaiveDate>,
    pub every_days: i64,
    /// Output directory; default `<output.dir>/backtest`.
    pub out: Option<PathBuf>,
}

pub struct BacktestOutcome {
    pub model_id: String,
    pub out_dir: PathBuf,
    /// One report per run date, then the closing pass at the end of the data.
    pub reports: Vec<MonitorReport>,
    pub scored: Vec<(NaiveDate, usize)>,
    /// Which model was replayed (refit on every label matured before `from`, or not).
    pub deployed: model::Deployment,
}

/// The backtest's own configuration: everything under `out` (Parquet partitions, the
/// monitoring history, the model under `out/models`); SQL sinks are not written.
fn backtest_config(cfg: &Config, out: &Path) -> Config {
    let mut bcfg = cfg.clone();
    bcfg.output.dir = out.display().to_string();
    bcfg.output.parquet = true;
    bcfg.output.sql = Vec::new();
    bcfg.output.no_env_sinks = true;
    bcfg.paths.models_dir = out.join("models").display().to_string();
    bcfg
}

/// `fidelis backtest`: train one model on the transactions before `from`, then replay the
/// weekly job (score + monitor) every `every_days` from `from` to `to`, and close with a
/// monitoring pass at the end of the data, which computes the realized metrics of every run
/// whose outcome window the data covers. A rerun replaces the previous backtest in `out`.
pub fn run(cfg: &Config, opts: &BacktestOptions, progress: &Progress) -> Result<BacktestOutcome> {
    if opts.every_days < 1 {
        return Err(Error::Data(format!("--every must be at least 1 day, got {}", opts.every_days)));
    }
    let out = opts.out.clone().unwrap_or_else(|| Path::new(&cfg.output.dir).join("backtest"));
    if out == Path::new(&cfg.output.dir) {
        return Err(Error::Data(format!(
            "the backtest output {} is the live output directory; choose another --out",
            out.display()
        )));
    }
    let bcfg = backtest_config(cfg, &out);
    std::fs::create_dir_all(&out).map_err(|e| Error::output(&out, e))?;
    let _lock = RunLock::acquire(&out)?;
    crate::files::remove_stale_temps(&out)?;
    for sub in ["scores", "monitoring", "models"] {
        let p = out.join(sub);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::output(&p, e))?;
        }
    }
    let trained = super::train::until(&bcfg, Some(opts.from), progress)?;
    let model = model::load(&bcfg.models_dir(), Some(&trained.model_id))?;
    let loaded = Loaded::read(cfg, model, progress)?;
    let horizon = Duration::days(i64::from(loaded.model.info.feature_spec.horizon_days));
    let to = opts.to.unwrap_or(loaded.data_end - horizon);
    if to < opts.from {
        return Err(Error::Data(format!(
            "nothing to replay: --to {to} is before --from {} (by default --to is the last date \
             whose {}-day outcome window the data covers)",
            opts.from,
            horizon.num_days()
        )));
    }
    let quiet = Progress::hidden();
    let sinks = crate::sink::Sinks::resolve(&bcfg.output)?;
    let (mut reports, mut scored) = (Vec::new(), Vec::new());
    let mut d = opts.from;
    while d <= to {
        let batch = progress.step("replay", &format!("replaying the weekly job at {d}"), || {
            super::score::score_to_parquet(
                &bcfg,
                &sinks,
                &loaded.model,
                &loaded.daily,
                &loaded.signals,
                d,
                &quiet,
            )
            .and_then(|s| s.finish(&sinks, &quiet))
        })?;
        scored.push((d, batch.summary.scored));
        reports.push(super::monitor::monitor_at(
            &bcfg,
            &sinks,
            &loaded,
            d,
            Some(&batch.predictions),
            Some(&batch.scores),
            &quiet,
        )?);
        d += Duration::days(opts.every_days);
    }
    if loaded.data_end > to {
        reports.push(progress.step("close", "closing pass at the end of the data", || {
            super::monitor::monitor_at(&bcfg, &sinks, &loaded, loaded.data_end, None, None, &quiet)
        })?);
    }
    let deployed = trained.metrics.deployed.clone();
    Ok(BacktestOutcome { model_id: trained.model_id, out_dir: out, reports, scored, deployed })
}

impl std::fmt::Display for BacktestOutcome {
    /// Per replayed date: customers scored, drift, alerts, and the run's realized AUC (known
    /// at the end).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let last = self.reports.last();
        let auc: BTreeMap<NaiveDate, f64> =
            last.map(|r| r.auc_history.iter().copied().collect()).unwrap_or_default();
        let holdout = last.map_or(f64::NAN, |r| r.holdout_auc);
        let deployed = match (self.deployed.refit, self.deployed.labels_until) {
            (true, Some(u)) => format!("; deployed refit on every label matured by then, up to {u}"),
            (false, Some(u)) => format!("; deployed as evaluated, labels up to {u} (model.refit = false)"),
            _ => String::new(),
        };
        writeln!(
            f,
            "backtest with model {} (trained on data before the first date; holdout AUC {holdout:.4}{deployed})",
            self.model_id
        )?;
        writeln!(
            f,
            "{:<12} {:>9} {:>9} {:>6} {:>6}  {:<24} {:>26} {:>12}",
            "as_of",
            "scored",
            "max PSI",
            "warn",
            "alert",
            "most drifted",
            "estimated AUC [95%]",
            "realized AUC"
        )?;
        let mut inside = (0usize, 0usize);
        for (r, (d, n)) in self.reports.iter().zip(&self.scored) {
            let worst = r.drift.iter().max_by(|a, c| a.psi.total_cmp(&c.psi));
            let count = |s: Status| r.drift.iter().filter(|x| x.status == s).count();
            let realized = auc.get(d).map_or("-".to_string(), |a| format!("{a:.4}"));
            let estimated = r.estimated.as_ref().map_or("-".to_string(), |e| {
                let i = e.roc_auc;
                if let Some(a) = auc.get(d) {
                    inside = (inside.0 + usize::from(i.contains(*a)), inside.1 + 1);
                }
                format!("{:.4} [{:.4}, {:.4}]", i.value, i.low, i.high)
            });
            writeln!(
                f,
                "{:<12} {:>9} {:>9.4} {:>6} {:>6}  {:<24} {:>26} {:>12}",
                d.to_string(),
                n,
                worst.map_or(f64::NAN, |w| w.psi),
                count(Status::Warn),
                count(Status::Alert),
                worst.map_or("-", |w| w.item.as_str()),
                estimated,
                realized
            )?;
        }
        if inside.1 > 0 {
            writeln!(
                f,
                "realized AUC inside the interval estimated when the run was scored: {} of {} matured runs",
                inside.0, inside.1
            )?;
        }
        // Every alert line, under the pass that raised it: the table counts drift alerts
        // only, and a closing pass (realized AUC once the last window matures) has no row.
        let alerts: usize = self.reports.iter().map(|r| r.alerts.len()).sum();
        for r in self.reports.iter().filter(|r| !r.alerts.is_empty()) {
            for a in &r.alerts {
                writeln!(f, "{}: {a}", r.as_of)?;
            }
        }
        write!(
            f,
            "{alerts} alert line(s) over {} monitoring passes; history in {}",
            self.reports.len(),
            self.out_dir.join("monitoring").join(HISTORY_FILE).display()
        )
    }
}
