//! The rolling-origin evaluation (`fidelis evaluate`): the whole training run (candidates,
//! choice, calibration) repeated at the last few snapshots whose labels are complete, each
//! with only what was known then, and the shipped models' holdout metrics at each origin
//! with their mean and spread. One holdout's AUC moves by about +/-0.01 from one snapshot to
//! the next on a few thousand customers: a rule judged on one holdout is judged on noise.
//!
//! Origin 0 is the protocol's holdout (the data as it is). Origin `k` is the snapshot
//! `k x step_days` before it: the transactions are cut at `origin + horizon + step`, so the
//! protocol, unchanged, puts its holdout there and fits and chooses on what came before. The
//! models go to a scratch directory that is removed afterwards (the models directory and
//! `latest` are never touched); the summary is written to `<reports_dir>/rolling_origins.{json,md}`
//! (`rolling_origins_until_<date>` for a shortened history).

use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate};
use serde::{Deserialize, Serialize};

use super::train;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::files;
use crate::format::f4;
use crate::progress::Progress;
use crate::train::baselines::BGNBD_BASELINE;
use crate::train::candidates::ChurnMix;

/// One origin's holdout metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginResult {
    pub origin: NaiveDate,
    pub n_holdout: usize,
    pub churn_rate: f64,
    /// The shipped (calibrated) churn model and the shipped CLV model.
    pub churn_roc_auc: f64,
    pub clv_normalized_gini: f64,
    pub churn_model: String,
    pub clv_model: String,
    /// fidelis's own references on the same rows: BG/NBD + Gamma-Gamma, and the logistic
    /// regression candidate.
    pub bgnbd_roc_auc: Option<f64>,
    pub bgnbd_normalized_gini: Option<f64>,
    pub logistic_roc_auc: Option<f64>,
    /// Every churn and CLV candidate at this origin, in the train report's order.
    #[serde(default)]
    pub candidates: Vec<CandidateAtOrigin>,
    /// The calibrator chosen at this origin and the holdout's expected calibration error
    /// without and with it (calibration must never hurt: after <= before + 0.005).
    #[serde(default)]
    pub calibration: String,
    #[serde(default)]
    pub holdout_ece_before: f64,
    #[serde(default)]
    pub holdout_ece_after: f64,
}

/// One candidate at one origin: its choice metric (out-of-time or cross-fitted; absent when
/// chosen on validation), validation and holdout metric (churn ROC AUC, CLV normalized Gini,
/// before calibration) and whether it shipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateAtOrigin {
    pub task: String,
    pub name: String,
    pub choice: Option<f64>,
    pub validation: f64,
    pub holdout: f64,
    pub chosen: bool,
}

/// One candidate over the origins: its holdout metric's spread and how often it shipped. The
/// rule's cost is the shipped mean against the best of these means (a candidate fixed in
/// hindsight).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateOverOrigins {
    pub task: String,
    pub name: String,
    pub holdout: Spread,
    pub shipped: usize,
}

/// Mean and sample standard deviation of a metric over the origins.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(v: &[f64]) -> Option<Spread> {
        if v.is_empty() {
            return None;
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let sd = if v.len() > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Spread { mean, sd, min, max })
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.4} +/- {:.4} ({:.4}-{:.4})", self.mean, self.sd, self.min, self.max)
    }
}

/// `rolling_origins.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollingOrigins {
    pub config: String,
    /// The data was cut before this date first.
    pub until: Option<NaiveDate>,
    pub origins: Vec<OriginResult>,
    /// Origins asked for but without enough history for the protocol, and why.
    pub skipped: Vec<(NaiveDate, String)>,
    pub churn_roc_auc: Option<Spread>,
    pub clv_normalized_gini: Option<Spread>,
    pub bgnbd_roc_auc: Option<Spread>,
    pub bgnbd_normalized_gini: Option<Spread>,
    pub logistic_roc_auc: Option<Spread>,
    /// Every candidate over the origins where it was one, in the train report's order.
    #[serde(default)]
    pub candidates: Vec<CandidateOverOrigins>,
    /// Where the summary was written.
    #[serde(skip)]
    pub written: Vec<PathBuf>,
}

/// A scratch directory removed when dropped (also when a training fails).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn result_of(origin: NaiveDate, m: &crate::model::TrainMetrics) -> OriginResult {
    let bg = m.baselines.get(BGNBD_BASELINE);
    let churn_rate =
        m.snapshots.iter().find(|s| s.snapshot == m.holdout_snapshot).map_or(f64::NAN, |s| s.churn_rate);
    OriginResult {
        origin,
        n_holdout: m.n_holdout,
        churn_rate,
        churn_roc_auc: m.churn.holdout.roc_auc,
        clv_normalized_gini: m.clv.holdout.normalized_gini,
        churn_model: m
            .candidates
            .churn
            .iter()
            .find(|c| c.chosen)
            .map_or_else(String::new, |c| c.name.clone()),
        clv_model: m.candidates.clv.iter().find(|c| c.chosen).map_or_else(String::new, |c| c.name.clone()),
        bgnbd_roc_auc: bg.and_then(|b| b.churn.as_ref()).map(|e| e.holdout.roc_auc),
        bgnbd_normalized_gini: bg.and_then(|b| b.clv.as_ref()).map(|e| e.holdout.normalized_gini),
        logistic_roc_auc: m
            .candidates
            .churn
            .iter()
            .find(|c| c.mix == ChurnMix::Logistic)
            .map(|c| c.holdout.roc_auc),
        candidates: candidates_of(&m.candidates),
        calibration: m.calibration.method.clone(),
        holdout_ece_before: m.calibration.holdout_ece_before,
        holdout_ece_after: m.calibration.holdout_ece_after,
    }
}

fn candidates_of(c: &crate::train::candidates::CandidateReport) -> Vec<CandidateAtOrigin> {
    let churn = c.churn.iter().map(|k| CandidateAtOrigin {
        task: "churn".into(),
        name: k.name.clone(),
        choice: k.out_of_time_roc_auc,
        validation: k.validation.roc_auc,
        holdout: k.holdout.roc_auc,
        chosen: k.chosen,
    });
    let clv = c.clv.iter().map(|k| CandidateAtOrigin {
        task: "clv".into(),
        name: k.name.clone(),
        choice: k.out_of_time_normalized_gini,
        validation: k.validation.normalized_gini,
        holdout: k.holdout.normalized_gini,
        chosen: k.chosen,
    });
    churn.chain(clv).collect()
}

/// Each candidate's holdout spread over the origins, in first-seen order.
fn over_origins(results: &[OriginResult]) -> Vec<CandidateOverOrigins> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for c in results.iter().flat_map(|r| &r.candidates) {
        if !keys.contains(&(c.task.as_str(), c.name.as_str())) {
            keys.push((c.task.as_str(), c.name.as_str()));
        }
    }
    keys.into_iter()
        .filter_map(|(task, name)| {
            let at: Vec<&CandidateAtOrigin> = results
                .iter()
                .flat_map(|r| r.candidates.iter().find(|c| c.task == task && c.name == name))
                .collect();
            let holdout = Spread::of(&at.iter().map(|c| c.holdout).collect::<Vec<_>>())?;
            let shipped = at.iter().filter(|c| c.chosen).count();
            Some(CandidateOverOrigins { task: task.into(), name: name.into(), holdout, shipped })
        })
        .collect()
}

/// Train at `origins` rolling origins (see the module) and summarize; `config` names the
/// configuration in the summary; `until` cuts the data first (a shortened history).
pub fn run(
    cfg: &Config,
    config: &str,
    origins: usize,
    until: Option<NaiveDate>,
    progress: &Progress,
) -> Result<RollingOrigins> {
    if origins == 0 {
        return Err(Error::Data("--origins must be at least 1".into()));
    }
    let reports = cfg.reports_dir();
    std::fs::create_dir_all(&reports).map_err(|e| Error::output(&reports, e))?;
    let scratch = Scratch(reports.join(format!(".rolling-origins-{}", std::process::id())));
    let mut scfg = cfg.clone();
    scfg.paths.models_dir = scratch.0.join("models").display().to_string();
    scfg.paths.reports_dir = scratch.0.join("reports").display().to_string();
    let quiet = Progress::hidden();
    let step = Duration::days(i64::from(cfg.snapshots.step_days));
    let horizon = Duration::days(i64::from(cfg.snapshots.horizon_days));
    let (mut results, mut skipped) = (Vec::new(), Vec::new());
    let mut holdout: Option<NaiveDate> = None;
    for k in 0..origins {
        let cutoff = holdout.map(|h| h - step * k as i32 + horizon + step).or(until);
        let what = match cutoff {
            None => "origin 0: the protocol's holdout".to_string(),
            Some(c) => format!("origin {k}: the transactions before {c}"),
        };
        let trained =
            progress.step("origin", &format!("training at {what}"), || train::until(&scfg, cutoff, &quiet));
        let out = match trained {
            Ok(out) => out,
            // Too little history left for the protocol at this origin: said, not fatal.
            Err(Error::Data(m)) if k > 0 => {
                skipped.push((holdout.map_or(NaiveDate::MIN, |h| h - step * k as i32), m));
                break;
            }
            Err(e) => return Err(e),
        };
        let h = out.metrics.holdout_snapshot;
        holdout.get_or_insert(h);
        results.push(result_of(h, &out.metrics));
        let _ = std::fs::remove_dir_all(out.dir);
    }
    drop(scratch);
    let pick = |f: fn(&OriginResult) -> Option<f64>| -> Option<Spread> {
        let v: Option<Vec<f64>> = results.iter().map(f).collect();
        v.and_then(|v| Spread::of(&v))
    };
    let mut summary = RollingOrigins {
        config: config.to_string(),
        until,
        churn_roc_auc: pick(|r| Some(r.churn_roc_auc)),
        clv_normalized_gini: pick(|r| Some(r.clv_normalized_gini)),
        bgnbd_roc_auc: pick(|r| r.bgnbd_roc_auc),
        bgnbd_normalized_gini: pick(|r| r.bgnbd_normalized_gini),
        logistic_roc_auc: pick(|r| r.logistic_roc_auc),
        candidates: over_origins(&results),
        origins: results,
        skipped,
        written: Vec::new(),
    };
    summary.written = write(&summary, &reports)?;
    Ok(summary)
}

fn write(s: &RollingOrigins, dir: &Path) -> Result<Vec<PathBuf>> {
    let stem = s.until.map_or("rolling_origins".to_string(), |u| format!("rolling_origins_until_{u}"));
    let json = dir.join(format!("{stem}.json"));
    files::write_atomic(&json, &files::to_json_bytes(s, "rolling_origins.json")?)?;
    let md = dir.join(format!("{stem}.md"));
    let cut = s.until.map_or(String::new(), |u| format!(", transactions before {u}"));
    files::write_atomic(&md, format!("# Rolling-origin evaluation ({}{cut})\n\n{s}", s.config).as_bytes())?;
    Ok(vec![json, md])
}

impl RollingOrigins {
    /// Every candidate's holdout metric at each origin (`*` = shipped there), its mean and
    /// how often it shipped; then the shipped mean against the best candidate's.
    fn fmt_candidates(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.candidates.is_empty() {
            return Ok(());
        }
        writeln!(f)?;
        writeln!(
            f,
            "Every candidate's holdout metric (ROC AUC / normalized Gini before calibration; * shipped):"
        )?;
        writeln!(f)?;
        let head: Vec<String> = self.origins.iter().map(|r| r.origin.to_string()).collect();
        writeln!(f, "| task | candidate | {} | mean +/- sd | shipped |", head.join(" | "))?;
        writeln!(f, "|---|---|{}---|---|", "---|".repeat(head.len()))?;
        for c in &self.candidates {
            let cells: Vec<String> = self
                .origins
                .iter()
                .map(|r| {
                    r.candidates
                        .iter()
                        .find(|k| k.task == c.task && k.name == c.name)
                        .map_or("-".to_string(), |k| {
                            format!("{}{}", f4(k.holdout), if k.chosen { "*" } else { "" })
                        })
                })
                .collect();
            writeln!(
                f,
                "| {} | {} | {} | {:.4} +/- {:.4} | {} of {} |",
                c.task,
                c.name,
                cells.join(" | "),
                c.holdout.mean,
                c.holdout.sd,
                c.shipped,
                self.origins.len()
            )?;
        }
        writeln!(f)?;
        for (task, shipped) in [("churn", &self.churn_roc_auc), ("clv", &self.clv_normalized_gini)] {
            let best = self
                .candidates
                .iter()
                .filter(|c| c.task == task)
                .max_by(|a, b| a.holdout.mean.total_cmp(&b.holdout.mean));
            if let (Some(best), Some(shipped)) = (best, shipped) {
                writeln!(
                    f,
                    "- {task}: shipped mean {:.4} against {:.4} for the best candidate in hindsight ({})",
                    shipped.mean, best.holdout.mean, best.name
                )?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for RollingOrigins {
    /// A Markdown table: one row per origin, then the mean +/- sd (min-max) of each column.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = |v: Option<f64>| v.map_or("-".to_string(), f4);
        writeln!(
            f,
            "| origin | holdout customers | churn rate | churn ROC AUC (shipped) | CLV Gini (shipped) | shipped | BG/NBD AUC | BG/NBD Gini | logistic AUC | calibration: holdout ECE before -> after |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|---|")?;
        for r in &self.origins {
            writeln!(
                f,
                "| {} | {} | {:.1}% | {} | {} | {} / {} | {} | {} | {} | {}: {} -> {} |",
                r.origin,
                r.n_holdout,
                100.0 * r.churn_rate,
                f4(r.churn_roc_auc),
                f4(r.clv_normalized_gini),
                r.churn_model,
                r.clv_model,
                o(r.bgnbd_roc_auc),
                o(r.bgnbd_normalized_gini),
                o(r.logistic_roc_auc),
                r.calibration,
                f4(r.holdout_ece_before),
                f4(r.holdout_ece_after),
            )?;
        }
        let sp = |s: &Option<Spread>| s.map_or("-".to_string(), |s| s.to_string());
        writeln!(f)?;
        writeln!(f, "over {} origins (mean +/- sd (min-max)):", self.origins.len())?;
        writeln!(f, "- shipped churn ROC AUC {}", sp(&self.churn_roc_auc))?;
        writeln!(f, "- shipped CLV normalized Gini {}", sp(&self.clv_normalized_gini))?;
        writeln!(
            f,
            "- BG/NBD + Gamma-Gamma ROC AUC {}, Gini {}",
            sp(&self.bgnbd_roc_auc),
            sp(&self.bgnbd_normalized_gini)
        )?;
        writeln!(f, "- logistic regression candidate ROC AUC {}", sp(&self.logistic_roc_auc))?;
        for (d, why) in &self.skipped {
            writeln!(f, "- skipped the origin at {d}: {why}")?;
        }
        self.fmt_candidates(f)?;
        for p in &self.written {
            writeln!(f, "written: {}", p.display())?;
        }
        Ok(())
    }
}
