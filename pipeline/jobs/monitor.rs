//! The monitor job (`fidelis monitor`, and the monitoring half of `weekly`): drift of the
//! features and scores at `as_of` against the model's reference, realized performance of the
//! runs whose outcome window has closed, retrain advice; written to the monitoring history
//! (Parquet and every SQL sink; the measured effect of contacting also to the SQL table
//! `campaign_effect`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono::{Duration, NaiveDate};
use polars::prelude::DataFrame;

use super::{BatchOptions, Loaded, Session};
use crate::config::{Config, DecisionConfig};
use crate::error::Result;
use crate::experiment::FirstEffects;
use crate::model::{self, LoadedModel};
use crate::monitor::{self, Drift, EstimateCounts, Estimated, MonitorReport, Observed, Realized, Status};
use crate::predict::{self, Predictions};
use crate::progress::Progress;
use crate::schema::{CHURN_SCORE, CLV_SCORE};
use crate::sink::sql;
use crate::sink::{History, ScoreParquet, Sinks};

/// `fidelis monitor`: lock, load, monitor at `as_of` (default: the day after the last
/// transaction).
pub fn run(cfg: &Config, opts: &BatchOptions, progress: &Progress) -> Result<MonitorReport> {
    let s = Session::open(cfg, Sinks::resolve(&cfg.output)?, opts.model.as_deref(), progress)?;
    let as_of = opts.as_of(s.data_end)?;
    // The run scored at this as_of, if any: its performance is estimated from its scores.
    let parquet = ScoreParquet::new(Path::new(&cfg.output.dir));
    let scores = match parquet.run_dates()?.contains(&as_of) {
        true => Some(parquet.read_scores(as_of)?),
        false => None,
    };
    monitor_at(cfg, &s.sinks, &s, as_of, None, scores.as_ref(), progress)
}

/// Monitor at `as_of` and write the history (Parquet + every SQL sink). `predictions` are
/// reused when they are of `as_of` (the weekly batch's); `scores`, the run scored at `as_of`,
/// give its estimated performance.
pub fn monitor_at(
    cfg: &Config,
    sinks: &Sinks,
    s: &Loaded,
    as_of: NaiveDate,
    predictions: Option<&Predictions>,
    scores: Option<&DataFrame>,
    progress: &Progress,
) -> Result<MonitorReport> {
    let report = observe(cfg, s, as_of, predictions, scores, progress)?;
    record(cfg, sinks, &report, progress)?;
    Ok(report)
}

/// Drift, the estimated performance of the run at `as_of` (its `scores`, when one was scored),
/// realized performance and advice at `as_of`, without writing anything (the weekly job
/// computes this beside the SQL load of the scores and records it after).
pub fn observe(
    cfg: &Config,
    s: &Loaded,
    as_of: NaiveDate,
    predictions: Option<&Predictions>,
    scores: Option<&DataFrame>,
    progress: &Progress,
) -> Result<MonitorReport> {
    let model = &s.model;
    let reference = model.reference()?;
    let drift = progress.step("drift", &format!("drift at {as_of}"), || -> Result<Vec<Drift>> {
        let computed;
        let p = match predictions.filter(|p| p.as_of == as_of) {
            Some(p) => p,
            None => {
                computed =
                    predict::predict_at(model, &s.daily, &s.signals, as_of, crate::config::Reasons::None)?;
                &computed
            }
        };
        let x = &p.x;
        let mut current: BTreeMap<&str, &[f64]> =
            x.names.iter().enumerate().map(|(c, n)| (n.as_str(), x.column(c))).collect();
        current.insert(CHURN_SCORE, &p.churn_probability);
        current.insert(CLV_SCORE, &p.predicted_clv);
        Ok(monitor::drift(&reference, &current, &cfg.monitor))
    })?;
    let counts = match scores {
        Some(scores) => {
            Some(progress.step("estimate", "performance estimated from the probabilities", || {
                EstimateCounts::of_scores(scores, &run_decision(&cfg.models_dir(), scores, model)?)
            })?)
        }
        None => None,
    };
    let history = History::new(Path::new(&cfg.output.dir));
    let auc_history = history.realized_auc(as_of)?;
    let first_effects = history.first_effects(as_of)?;
    let realized = progress.step("realized", "realized performance of matured runs", || {
        realized_runs(cfg, s, as_of, &auc_history)
    })?;
    let revenue = s.signals.subscriptions.as_ref().map(|x| x.revenue_at(crate::schema::epoch_day(as_of)));
    let observed = Observations { drift, counts, realized, auc_history, first_effects, revenue };
    assess(cfg, model, as_of, observed, estimates(&history, as_of)?)
}

/// The estimates the history recorded for runs, at monitor dates other than `as_of`.
pub fn estimates(history: &History, as_of: NaiveDate) -> Result<BTreeMap<NaiveDate, Estimated>> {
    let rows = history.rows_of_kind("estimated", as_of)?;
    Ok(monitor::estimate::by_run(rows.iter().map(|(i, m, v)| (i.as_str(), m.as_str(), *v))))
}

/// What monitoring found at one date, before the alerts and advice.
pub struct Observations {
    pub drift: Vec<Drift>,
    /// The estimate counts of the run scored at the date (None when none was).
    pub counts: Option<EstimateCounts>,
    pub realized: Vec<Realized>,
    /// Realized AUCs already in the history.
    pub auc_history: BTreeMap<NaiveDate, f64>,
    pub first_effects: FirstEffects,
    /// MRR and its movements at the date (with a subscription table).
    pub revenue: Option<crate::activity::subscriptions::RevenueKpis>,
}

/// Write `report` to the monitoring history (Parquet, then every SQL sink).
pub fn record(cfg: &Config, sinks: &Sinks, report: &MonitorReport, progress: &Progress) -> Result<()> {
    let as_of = report.as_of;
    let rows = report.history_frame()?;
    let effect = report.effect_frame()?;
    let history = History::new(Path::new(&cfg.output.dir));
    progress.step("history", "writing the monitoring history", || history.replace(as_of, &rows))?;
    let tables = &sinks.tables;
    let parts = [
        (tables.monitoring.as_str(), &rows, sql::MONITORING_KEY),
        (tables.campaign_effect.as_str(), &effect, monitor::CAMPAIGN_EFFECT_KEY),
    ];
    sinks.replace_as_of(&parts, as_of, progress)?;
    Ok(())
}

/// Alerts and advice of `model` at `as_of` from what was observed and the estimates the
/// history holds for earlier runs (the CLI and the Spark job share it). The run's estimate
/// allows for the estimator's error on the model's holdout.
pub fn assess(
    cfg: &Config,
    model: &LoadedModel,
    as_of: NaiveDate,
    o: Observations,
    estimates: BTreeMap<NaiveDate, Estimated>,
) -> Result<MonitorReport> {
    let metrics = model.metrics()?;
    let check = metrics.decision.holdout_estimate;
    let allowance = check.map(|c| c.allowance()).unwrap_or_default();
    Ok(monitor::assess(
        Observed {
            as_of,
            model_id: &model.info.model_id,
            holdout_auc: metrics.churn.holdout.roc_auc,
            model_end: model.info.snapshots.last_ts.date(),
            drift: o.drift,
            estimated: o.counts.map(|c| c.estimate(as_of, &allowance)),
            realized: o.realized,
            estimates,
            holdout_estimated_auc: check.map_or(f64::NAN, |h| h.estimated[0]),
            auc_history: o.auc_history,
            first_effects: o.first_effects,
            revenue: o.revenue,
        },
        &cfg.monitor,
    ))
}

/// The runs of the Parquet partitions whose outcome window closed by `as_of` (and within the
/// data) and that the history does not hold yet.
fn realized_runs(
    cfg: &Config,
    s: &Loaded,
    as_of: NaiveDate,
    known: &BTreeMap<NaiveDate, f64>,
) -> Result<Vec<Realized>> {
    let horizon = Duration::days(i64::from(s.model.info.feature_spec.horizon_days));
    let parquet = ScoreParquet::new(Path::new(&cfg.output.dir));
    let runs = parquet.run_dates()?;
    let matured =
        |run: &NaiveDate| !known.contains_key(run) && *run + horizon <= as_of && *run + horizon <= s.data_end;
    let Some(last) = runs.iter().rfind(|r| matured(r)).copied() else {
        return Ok(Vec::new());
    };
    let contacts = match cfg.input.contacts.path.as_str() {
        "" => None,
        _ => Some(crate::activity::load_contacts(&cfg.input.contacts)?),
    };
    let mut out = Vec::new();
    // Who had a group in a run before the one at hand (runs in date order).
    let mut earlier: HashSet<String> = HashSet::new();
    for (i, &run) in runs.iter().enumerate().take_while(|(_, &r)| r <= last) {
        if i > 0 {
            earlier.extend(parquet.experiment_members(runs[i - 1])?);
        }
        if !matured(&run) {
            continue;
        }
        let mut scores = monitor::with_first_in_experiment(&parquet.read_scores(run)?, &earlier)?;
        if let Some(c) = &contacts {
            scores = monitor::with_reached(&scores, c, run, cfg.input.contacts.window_days)?;
        }
        let outcomes = monitor::outcomes_between(&s.daily, s.churn_subscriptions(), run, run + horizon);
        let decision = run_decision(&cfg.models_dir(), &scores, &s.model)?;
        out.push(monitor::realized(run, &scores, &outcomes, &decision)?);
    }
    Ok(out)
}

/// The decision settings of the model that scored a run (`models_dir`'s model of the run's
/// `model_id`; the current model's when that model is no longer there).
pub fn run_decision(models_dir: &Path, scores: &DataFrame, current: &LoadedModel) -> Result<DecisionConfig> {
    let id =
        scores.column("model_id").ok().and_then(|c| c.str().ok().and_then(|s| s.get(0).map(str::to_string)));
    if let Some(id) = id.filter(|id| *id != current.info.model_id) {
        let dir = models_dir.join(&id);
        if dir.join(model::file::DECISION).is_file() {
            return Ok(model::load::read_decision(&dir)?.config);
        }
    }
    Ok(current.decision.config.clone())
}

impl std::fmt::Display for MonitorReport {
    /// One line per alert, the drift table, realized AUC, advice.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self;
        writeln!(f, "monitoring at {} with model {}", r.as_of, r.model_id)?;
        let count = |s: Status| r.drift.iter().filter(|d| d.status == s).count();
        writeln!(
            f,
            "drift: {} items, {} ok, {} warn, {} alert",
            r.drift.len(),
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Alert)
        )?;
        let mut worst: Vec<&Drift> = r.drift.iter().collect();
        worst.sort_by(|a, b| b.psi.total_cmp(&a.psi));
        writeln!(f, "  {:<24} {:>8} {:>8}  status", "item (highest PSI first)", "PSI", "KS")?;
        for d in worst.iter().take(5) {
            writeln!(f, "  {:<24} {:>8.4} {:>8.4}  {}", d.item, d.psi, d.ks, d.status.as_str())?;
        }
        if let Some(e) = &r.estimated {
            writeln!(
                f,
                "estimated performance of the run at {} (from its calibrated probabilities; holdout AUC {:.4} estimated the same way): {}",
                e.run,
                r.estimate_reference(),
                monitor::estimate::words(e)
            )?;
        }
        for (e, run) in
            r.matured_estimates.iter().filter_map(|e| Some((e, r.realized.iter().find(|x| x.run == e.run)?)))
        {
            writeln!(
                f,
                "run at {}, estimated when scored vs realized: {}",
                e.run,
                monitor::estimate::versus(e, &run.figures())
            )?;
        }
        if r.auc_history.is_empty() {
            writeln!(f, "realized AUC: no run has a closed outcome window yet")?;
        } else {
            let shown: Vec<String> =
                r.auc_history.iter().rev().take(6).rev().map(|(d, a)| format!("{d} {a:.4}")).collect();
            writeln!(
                f,
                "realized AUC by run (holdout {:.4}): {}{}",
                r.holdout_auc,
                if r.auc_history.len() > 6 { "... " } else { "" },
                shown.join(", ")
            )?;
        }
        for run in &r.realized {
            if let Some(e) = run.effect.as_ref().and_then(crate::experiment::RunEffect::headline) {
                writeln!(
                    f,
                    "effect of contacting, run at {} (customers new to the experiment): {}",
                    run.run,
                    monitor::effect_words(e)
                )?;
            }
            let channels = run.effect.as_ref().map(|e| e.by_channel.as_slice()).unwrap_or_default();
            if !channels.is_empty() {
                let words: Vec<String> = channels
                    .iter()
                    .map(|(c, e)| {
                        format!(
                            "{c} reached {} (churn {:.1}%, {:+.1} points [95% {:+.1}, {:+.1}])",
                            e.treatment,
                            100.0 * e.churn_treatment,
                            100.0 * e.reduction,
                            100.0 * e.reduction_low,
                            100.0 * e.reduction_high
                        )
                    })
                    .collect();
                let control = channels[0].1.churn_control;
                writeln!(
                    f,
                    "  by channel, against the control group's churn {:.1}% (channels are not randomized: a comparison, not an effect): {}",
                    100.0 * control,
                    words.join("; ")
                )?;
            }
        }
        if let Some(p) = &r.pooled {
            writeln!(
                f,
                "effect of contacting, pooled over {} run{} (each customer at its first selection): {}",
                p.runs,
                if p.runs == 1 { "" } else { "s" },
                monitor::effect_words(&p.effect)
            )?;
        }
        if let Some(k) = &r.revenue {
            writeln!(f, "{}", revenue_words(k))?;
        }
        for a in &r.alerts {
            writeln!(f, "{a}")?;
        }
        write!(f, "{}", r.advice)
    }
}

/// "recurring revenue: MRR 123,456 (1,234 subscribers); last month NRR 99.1%, ...".
pub fn revenue_words(k: &crate::activity::subscriptions::RevenueKpis) -> String {
    use crate::format::{int, money};
    let ratio = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
    let movement = |m: &crate::activity::subscriptions::Movement| {
        format!(
            "NRR {}, GRR {} (MRR {} at the start: new +{}, expansion +{}, contraction -{}, churned -{})",
            ratio(m.nrr),
            ratio(m.grr),
            money(m.start_mrr),
            money(m.new),
            money(m.expansion),
            money(m.contraction),
            money(m.churned)
        )
    };
    format!(
        "recurring revenue: MRR {} ({} subscribers); last month {}; trailing 12 months {}",
        money(k.mrr),
        int(k.customers as i64),
        movement(&k.month),
        movement(&k.trailing_12_months)
    )
}
