//! The decision a model ships, assembled from its calibrated predictions: what calibration did
//! on the holdout, the contact threshold chosen on validation by net value
//! ([`crate::threshold`]) and its outcome on the holdout, the risk bands, and `decision.json`.

use super::{CalibrationReport, DecisionArtifact, DecisionReport};
use crate::calibration::{self, CalibrationChoice};
use crate::config::DecisionConfig;
use crate::experiment::SaveRateSource;
use crate::metrics;
use crate::monitor::estimate::HoldoutCheck;
use crate::threshold::{self, RiskBands};

/// One role's rows as the decision sees them: raw and calibrated churn probabilities, the
/// predicted CLV and the churn labels.
pub struct Rows<'a> {
    pub raw: &'a [f64],
    pub calibrated: &'a [f64],
    pub clv: &'a [f64],
    pub churn: &'a [f64],
}

/// What the calibrator (`method`, chosen as `choice` says) did to the holdout's probabilities.
pub fn calibration_report(method: &str, choice: CalibrationChoice, hold: &Rows) -> CalibrationReport {
    let y = hold.churn;
    CalibrationReport {
        method: method.into(),
        choice,
        holdout_ece_before: calibration::ece(y, hold.raw, 10),
        holdout_ece_after: calibration::ece(y, hold.calibrated, 10),
        holdout_brier_before: metrics::brier(y, hold.raw),
        holdout_brier_after: metrics::brier(y, hold.calibrated),
        holdout_log_loss_before: metrics::log_loss(y, hold.raw),
        holdout_log_loss_after: metrics::log_loss(y, hold.calibrated),
        holdout_roc_auc_before: metrics::roc_auc(y, hold.raw),
        holdout_roc_auc_after: metrics::roc_auc(y, hold.calibrated),
    }
}

/// The threshold that maximizes net value on validation under `d` (its save rate resolved:
/// `save_rate` says from where), its outcome on the holdout, and the artifact `score` applies.
pub fn decide(
    d: &DecisionConfig,
    save_rate: SaveRateSource,
    val: &Rows,
    hold: &Rows,
) -> (DecisionReport, DecisionArtifact) {
    let chosen = threshold::choose_threshold(
        val.calibrated,
        val.churn,
        &threshold::tp_values(d, val.calibrated, val.clv),
        d,
    );
    let outcome = threshold::evaluate(
        hold.calibrated,
        hold.churn,
        &threshold::tp_values(d, hold.calibrated, hold.clv),
        chosen.threshold,
        d,
    );
    let bands = RiskBands::from_config(d);
    let explanation = threshold::explain(d, &outcome);
    let contact: Vec<bool> =
        hold.calibrated.iter().map(|&p| threshold::contacts(chosen.threshold, p)).collect();
    let holdout_estimate = HoldoutCheck::of(hold.calibrated, hold.clv, hold.churn, &contact, d);
    let report = DecisionReport {
        threshold: chosen.threshold,
        policy: d.value,
        break_even_probability: threshold::break_even(d),
        validation_net_value: chosen.net_value,
        holdout: outcome,
        explanation: explanation.clone(),
        holdout_bands: threshold::band_outcomes(&bands, hold.calibrated, hold.churn),
        save_rate: Some(save_rate.clone()),
        holdout_estimate: Some(holdout_estimate),
    };
    let artifact = DecisionArtifact {
        threshold: chosen.threshold,
        config: d.clone(),
        bands,
        validation_curve: threshold::downsample(&chosen.curve, chosen.threshold, threshold::CURVE_POINTS),
        explanation,
        save_rate: Some(save_rate),
    };
    (report, artifact)
}
