//! What `fidelis train` prints: the comparison table of the shipped models, candidates and
//! baselines on the holdout, the candidate choice, the decision and the save rate.

use super::TrainOutcome;
use crate::format::opt4;
use crate::metrics::{ChurnMetrics, ClvMetrics};
use crate::model::TrainMetrics;

impl std::fmt::Display for TrainOutcome {
    /// The comparison table, the candidates, the decision, and where the model went.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", summary_table(&self.metrics))?;
        for n in &self.metrics.notes {
            writeln!(f, "note: {n}")?;
        }
        if let Some(s) = &self.metrics.decision.save_rate {
            writeln!(f, "save rate: {}", s.why)?;
        }
        if let Some(u) = &self.metrics.uplift {
            writeln!(f, "uplift: {}", u.why)?;
            for r in &u.rankings {
                writeln!(
                    f,
                    "  {:<20} Qini {:>8.4}  uplift@10% {:>+8.4}  uplift@30% {:>+8.4}",
                    r.name, r.qini, r.uplift_at_10, r.uplift_at_30
                )?;
            }
        }
        if let Some(s) = &self.metrics.survival {
            write!(f, "{}", survival_lines(s))?;
        }
        if !self.metrics.deployed.description.is_empty() {
            writeln!(f, "deployed: {}", self.metrics.deployed.description)?;
        }
        write!(f, "model {} written to {}", self.model_id, self.dir.display())?;
        if let Some(r) = &self.report {
            write!(f, "\nevaluation report: {}", r.display())?;
        }
        if let Some(m) = &self.mlflow {
            write!(f, "\n{m}")?;
        }
        Ok(())
    }
}

/// The time-to-cancellation model: its holdout figures beside the sBG's, and its candidates.
fn survival_lines(s: &crate::train::survival::SurvivalReport) -> String {
    let mut out = format!(
        "time to cancellation: hazard {} (l2 {}, {} trees); holdout ({} rows): Harrell's C {:.4} \
         (sBG per billing cohort {:.4}), integrated Brier {:.4} (sBG {:.4}), S(90) ECE {:.4}; \
         subscription CLV Gini {:.4} (MRR x tenure {:.4})\n  candidates, chosen on {}:\n",
        s.mix.name(),
        s.l2,
        s.trees,
        s.holdout_rows,
        s.model.concordance,
        s.sbg.concordance,
        s.model.integrated_brier,
        s.sbg.integrated_brier,
        s.model.s90_ece,
        s.clv_gini,
        s.clv_gini_mrr_tenure,
        s.basis
    );
    for c in &s.candidates {
        out.push_str(&format!(
            "  {:<18} l2 {:<7} choice C {:.4} (SE {})  holdout C {}{}\n",
            c.mix.name(),
            if c.mix == crate::train::survival::SurvivalMix::Gbdt {
                "-".to_string()
            } else {
                c.l2.to_string()
            },
            c.out_of_time_concordance,
            c.standard_error.map_or("-".to_string(), |e| format!("{e:.4}")),
            if c.holdout_concordance.is_finite() {
                format!("{:.4}", c.holdout_concordance)
            } else {
                "-".into()
            },
            if c.chosen { "  <- shipped" } else { "" }
        ));
    }
    out
}

/// The comparison table printed at the end of `fidelis train`.
fn summary_table(m: &TrainMetrics) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "holdout {} ({} customers, churn rate {:.1}%); validation {} ({}); fit rows {}\n",
        m.holdout_snapshot,
        m.n_holdout,
        100.0 * m.churn.holdout.churn_rate,
        m.validation_snapshot,
        m.n_validation,
        m.n_fit
    ));
    out.push_str(&format!(
        "{:<34} {:>8} {:>8} {:>8} {:>9} | {:>9} {:>9} {:>9}\n",
        "model (holdout)", "ROC AUC", "PR AUC", "Brier", "lift@10%", "CLV Gini", "Spearman", "MAE"
    ));
    let row = |name: &str, c: Option<&ChurnMetrics>, v: Option<&ClvMetrics>| {
        format!(
            "{:<34} {:>8} {:>8} {:>8} {:>9} | {:>9} {:>9} {:>9}\n",
            name,
            opt4(c.map(|c| c.roc_auc)),
            opt4(c.map(|c| c.pr_auc)),
            opt4(c.map(|c| c.brier)),
            opt4(c.map(|c| c.top10_lift)),
            opt4(v.map(|v| v.normalized_gini)),
            opt4(v.map(|v| v.spearman)),
            opt4(v.map(|v| v.mae)),
        )
    };
    let chosen = |churn: bool| {
        let c = &m.candidates;
        let name = if churn {
            c.churn.iter().find(|k| k.chosen).map(|k| k.name.as_str())
        } else {
            c.clv.iter().find(|k| k.chosen).map(|k| k.name.as_str())
        };
        name.unwrap_or("gbdt").to_string()
    };
    out.push_str(&row(
        &format!("fidelis ({} / {})", chosen(true), chosen(false)),
        Some(&m.churn.holdout),
        Some(&m.clv.holdout),
    ));
    for (name, b) in &m.baselines {
        out.push_str(&row(name, b.churn.as_ref().map(|c| &c.holdout), b.clv.as_ref().map(|c| &c.holdout)));
    }
    out.push_str(&candidate_summary(m));
    out.push_str(&decision_summary(m));
    out
}

/// The candidates lines of the summary: what was compared, on what, and what was shipped.
fn candidate_summary(m: &TrainMetrics) -> String {
    let c = &m.candidates;
    if c.churn.is_empty() {
        return String::new();
    }
    let mut out = format!("candidates, chosen on {}:\n", c.basis);
    for k in c.rows() {
        out.push_str(&format!(
            "  {:<5} {:<21} choice {}{}  validation {:.4}  holdout {:.4}{}\n",
            k.task,
            k.name,
            opt4(k.choice),
            k.standard_error.map_or(String::new(), |e| format!(" (SE {e:.4})")),
            k.validation,
            k.holdout,
            if k.chosen { "  <- shipped" } else { "" }
        ));
    }
    if let Some(line) = c.penalty_line() {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// The calibration and decision lines of the summary.
fn decision_summary(m: &TrainMetrics) -> String {
    let c = &m.calibration;
    let d = &m.decision;
    let h = &d.holdout;
    let threshold = d.threshold.map_or("none (contact nobody)".to_string(), |t| format!("{t:.4}"));
    let latest = c
        .choice
        .latest_snapshot_ece
        .map_or(String::new(), |(b, a)| format!(" (the latest snapshot left out: {b:.4} -> {a:.4})"))
        + &c.choice.forward_ece.map_or(String::new(), |(b, a)| {
            format!(" (fitted on the earlier fit rows, at validation: {b:.4} -> {a:.4})")
        });
    let mut out = format!(
        "calibration: {} (over {} {} predictions of {} at {}: log loss none {:.5}, Platt {:.5}, \
         isotonic {:.5}; ECE none {:.4}, best calibrator {:.4}{latest}; a calibrator must lower both, \
         ECE by a clear margin); holdout ECE {:.4} -> {:.4}, Brier {:.4} -> {:.4}, log loss {:.4} -> {:.4}\n",
        c.method,
        c.choice.n_rows,
        c.choice.scheme,
        c.choice.source,
        c.choice.snapshots.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
        c.choice.cv_log_loss_uncalibrated,
        c.choice.cv_log_loss_platt,
        c.choice.cv_log_loss_isotonic,
        c.choice.cv_ece_uncalibrated,
        c.choice.cv_ece_calibrated,
        c.holdout_ece_before,
        c.holdout_ece_after,
        c.holdout_brier_before,
        c.holdout_brier_after,
        c.holdout_log_loss_before,
        c.holdout_log_loss_after
    );
    out.push_str(&format!(
        "decision ({:?} value): contact when churn probability >= {threshold}; holdout: {} contacted \
         ({:.1}%), precision {:.3}, recall {:.3}, net value {:.0} (everyone {:.0}, nobody 0, \
         top 10% {:.0}, oracle {:.0})\n",
        d.policy,
        h.contacted,
        100.0 * h.contacted_share,
        h.precision,
        h.recall,
        h.net_value,
        h.net_all,
        h.net_top10,
        h.net_oracle
    ));
    out.push_str(&format!("  {}\n", d.explanation));
    out
}
