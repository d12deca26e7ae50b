//! The evaluation report's time-to-cancellation section (churn as a cancellation): observed
//! (Kaplan-Meier) against predicted survival on the holdout by predicted risk, the model's
//! concordance, integrated Brier score and S(90) calibration beside the sBG baseline's, the
//! candidates and the subscription CLV against MRR x tenure.

use super::chart::{self, Line, LineChart};
use super::Doc;
use crate::error::Result;
use crate::features::PERIOD_ENDS;
use crate::format::{f4, pct};
use crate::train::survival::{SurvivalMix, SurvivalReport};

/// "Time to cancellation": nothing for a model whose churn is inactivity.
pub fn section(d: &mut Doc, s: &SurvivalReport) -> Result<()> {
    d.section("survival", "Time to cancellation");
    let point = |k: usize, v: f64| (f64::from(PERIOD_ENDS[k]), 100.0 * v);
    let mut lines = Vec::new();
    for (c, g) in s.curves.iter().enumerate() {
        let start = std::iter::once((0.0, 100.0));
        let predicted = start.clone().chain(g.predicted.iter().enumerate().map(|(k, &v)| point(k, v)));
        lines.push(Line::new(format!("{} ({}): predicted", g.name, g.rows), predicted.collect(), c));
        if !g.observed.is_empty() {
            let observed = start.chain(g.observed.iter().enumerate().map(|(k, &v)| point(k, v)));
            lines.push(Line::new(format!("{}: observed", g.name), observed.collect(), c).dots());
        }
    }
    if let Some(all) = s.curves.first() {
        let sbg = std::iter::once((0.0, 100.0)).chain(all.sbg.iter().enumerate().map(|(k, &v)| point(k, v)));
        lines.push(Line::new("every row: sBG baseline", sbg.collect(), s.curves.len()).dashed());
    }
    let observed_days = s.curves.first().map_or(0, |g| g.observed.len());
    let svg = chart::line_chart(&LineChart {
        title: "Share still subscribed after the holdout snapshot".into(),
        x_label: "days after the snapshot".into(),
        y_label: "still subscribed (%)".into(),
        // From 0: the legend sits below the curves.
        y: Some(0.0..102.0),
        lines,
        legend_low: true,
        ..LineChart::default()
    })?;
    d.chart(
        "survival-curves",
        svg,
        &format!(
            "Lines: the mean predicted survival S(t) of the holdout rows and of thirds of them by predicted \
             lifetime; dots: the Kaplan-Meier estimate of what happened, as far as the data goes ({}). A model \
             that ranks well spreads the thirds apart; a calibrated one puts the dots on the lines.",
            if observed_days == 0 {
                "nothing observed yet".to_string()
            } else {
                format!("{} days", PERIOD_ENDS[observed_days - 1])
            }
        ),
    );
    let rows = vec![
        eval_row(&format!("fidelis hazard ({})", s.mix.name()), &s.model),
        eval_row("sBG per billing cohort", &s.sbg),
    ];
    d.table(
        &[
            "model (holdout)",
            "Harrell's C",
            "integrated Brier",
            "S(90) ECE",
            "churn in 90 days: predicted",
            "observed",
        ],
        &rows,
        None,
    );
    d.reading(&format!(
        "Harrell's C is the share of comparable pairs of holdout rows (one cancelled before the other's \
         follow-up ended) that the predicted lifetime orders correctly: 0.5 is chance. The integrated Brier \
         score averages the squared error of S(t) over the observed periods, weighted for censoring (lower is \
         better). Subscription CLV (a year of MRR x S(t)) ranks the holdout's revenue with a normalized Gini \
         of {} against {} for MRR x tenure.",
        f4(s.clv_gini),
        f4(s.clv_gini_mrr_tenure)
    ));
    let rows: Vec<Vec<String>> = s
        .candidates
        .iter()
        .map(|c| {
            vec![
                c.mix.name().to_string(),
                if c.mix == SurvivalMix::Gbdt { "-".into() } else { c.l2.to_string() },
                f4(c.out_of_time_concordance),
                c.standard_error.map_or("-".into(), f4),
                if c.holdout_concordance.is_finite() { f4(c.holdout_concordance) } else { "-".into() },
                if c.chosen { "shipped".into() } else { String::new() },
            ]
        })
        .collect();
    d.table(&["hazard candidate", "L2", "choice C", "SE", "holdout C", ""], &rows, None);
    d.reading(&format!(
        "Chosen on {}: the simplest of logistic, blend and GBDT within one standard error of the best \
         (holdout C for information only). {} trees; {} person-period rows for the evaluated model, {} for \
         the shipped one.",
        s.basis, s.trees, s.fit_periods, s.deployed_periods
    ));
    Ok(())
}

fn eval_row(name: &str, e: &crate::train::survival::SurvivalEval) -> Vec<String> {
    vec![
        name.to_string(),
        f4(e.concordance),
        f4(e.integrated_brier),
        f4(e.s90_ece),
        pct(e.s90_predicted),
        pct(e.s90_observed),
    ]
}
