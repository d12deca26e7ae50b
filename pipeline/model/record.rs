//! What `model.json` and `metrics.json` record about a training run besides the models and
//! the decision: the deployment (which rows the shipped models were fitted on), the
//! eligible customers and rates at each snapshot, and the note a training sample gets.

use crate::config::Config;
use crate::metrics;
use crate::model::{Deployment, Role, SnapshotStats};
use crate::schema;
use crate::split::SnapshotPlan;
use crate::train::candidates::{ChurnModel, ClvModel};
use crate::train::gbdt::Gbdt;
use crate::train::{pick, Dataset};

/// What `metrics.json` says about the deployed models.
pub fn deployment(
    cfg: &Config,
    data: &Dataset,
    (churn, clv): (&ChurnModel, &ClvModel),
    refit: bool,
) -> Deployment {
    // Refit: every row of the dataset; else the fit rows.
    let days: Vec<i32> =
        if refit { data.days.clone() } else { data.rows.fit.iter().map(|&i| data.days[i]).collect() };
    let n = days.len();
    let span = days
        .iter()
        .min()
        .zip(days.iter().max())
        .and_then(|(&a, &b)| Some((schema::date_of_day(a)?, schema::date_of_day(b)?)));
    let labels_until = span.map(|(_, b)| b + chrono::Duration::days(i64::from(cfg.snapshots.horizon_days)));
    let parts = if refit {
        crate::train::refit::refit_parts(churn.mix, clv.mix, clv.poisson.is_some())
    } else {
        Vec::new()
    };
    let description = match (span, labels_until) {
        (Some((a, b)), Some(u)) if refit => format!(
            "refit on every matured label: {n} rows at the snapshots {a} to {b} (fit, validation and \
             holdout; labels up to {u}), with the evaluated models' tree counts and penalty; parts \
             refit: {}; the holdout numbers are those of the evaluated model, fitted on the fit \
             snapshots only",
            if parts.is_empty() {
                "none (the shipped mixes fit nothing)".to_string()
            } else {
                parts.join(", ")
            }
        ),
        (Some((a, b)), Some(u)) => format!(
            "the evaluated model, fitted on {n} rows at the fit snapshots {a} to {b} (labels up to {u}); \
             model.refit = false"
        ),
        _ => String::new(),
    };
    Deployment {
        refit,
        rows: n,
        snapshots: span,
        labels_until,
        churn_trees: churn.gbdt.n_trees(),
        clv_trees: clv.n_trees(),
        refit_parts: parts,
        description,
    }
}

/// What the report and `metrics.json` say about a training sample.
pub fn training_sample_note(fraction: f64, rows: usize, kept: usize, max_rows: usize) -> String {
    format!(
        "trained on a sample: {kept} of {rows} rows (more than [model].max_rows = {max_rows}); the \
         customers whose id hash falls below {:.4} of the range, every snapshot of each, so the \
         holdout figures are on those customers too",
        fraction
    )
}

/// Eligible customers, churn rate and mean CLV at each snapshot; a note for each snapshot
/// where nobody was eligible (it is skipped: its rates are undefined).
pub fn snapshot_stats(plan: &SnapshotPlan, data: &Dataset) -> (Vec<SnapshotStats>, Vec<String>) {
    let (mut stats, mut notes) = (Vec::new(), Vec::new());
    for t in plan.all() {
        let d = schema::epoch_day(t);
        let idx: Vec<usize> = (0..data.days.len()).filter(|&i| data.days[i] == d).collect();
        let role = if t == plan.holdout {
            Role::Holdout
        } else if t == plan.validation {
            Role::Validation
        } else {
            Role::Fit
        };
        if idx.is_empty() {
            notes.push(format!(
                "snapshot {t} ({}) skipped: no customer had a transaction in the eligibility window before it",
                role.as_str()
            ));
            continue;
        }
        stats.push(SnapshotStats {
            snapshot: t,
            role,
            eligible: idx.len(),
            churn_rate: metrics::mean(&pick(&data.churn, &idx)),
            mean_clv: metrics::mean(&pick(&data.clv, &idx)),
        });
    }
    (stats, notes)
}

/// The notes of the samples a run fitted on: the comparison baselines' (above
/// `baselines.max_rows` fit rows) and the purged models' (`sampled`: rows kept of rows, per
/// purged snapshot).
pub fn sample_notes(cfg: &Config, n_fit: usize, sampled: &[(usize, usize)]) -> Vec<String> {
    let mut notes = Vec::new();
    if cfg.baselines.enabled && n_fit > cfg.baselines.max_rows {
        notes.push(format!(
            "the comparison baselines (linfa, smartcore) were fitted on a seeded sample of {} of the {} \
             fit rows (baselines.max_rows); the shipped models on all of them",
            cfg.baselines.max_rows, n_fit
        ));
    }
    if !sampled.is_empty() {
        let each: Vec<String> = sampled.iter().map(|(k, n)| format!("{k} of {n}")).collect();
        notes.push(format!(
            "the purged models (candidate choice, calibration) were fitted on a deterministic sample of \
             customers: {} rows with closed labels at the purged snapshots (decision.purged_max_rows = {})",
            each.join(", "),
            cfg.decision.purged_max_rows
        ));
    }
    notes
}
