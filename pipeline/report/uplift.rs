//! The evaluation report's uplift section: how the uplift model was chosen and judged on the
//! held-out run (Qini curves of every learner and of the risk rankings), and whether it ships.

use super::chart::{self, HLine, Line, LineChart};
use super::Doc;
use crate::error::Result;
use crate::train::uplift::UpliftReport;

/// "Whom contacting changes": the uplift section (nothing when no experiment has matured).
pub fn section(d: &mut Doc, u: &UpliftReport) -> Result<()> {
    d.section("uplift", "Whom contacting changes: the uplift model");
    let Some(held) = u.held_out_run else {
        d.para(&format!("{}.", sentence(&u.why)));
        return Ok(());
    };
    let lines: Vec<Line> = u
        .rankings
        .iter()
        .enumerate()
        .map(|(k, r)| {
            let pts: Vec<(f64, f64)> = r.curve.iter().map(|&(x, q)| (100.0 * x, 100.0 * q)).collect();
            let line = Line::new(format!("{} (Qini {:.3})", r.name, r.qini), pts, k);
            if r.name == "churn probability" || r.name == "expected loss" {
                line.dashed()
            } else {
                line
            }
        })
        .collect();
    let svg = chart::line_chart(&LineChart {
        title: format!("Qini curves on the held-out run {held}"),
        x_label: "customers targeted, highest score first (%)".into(),
        y_label: "incremental retained customers (% of the run)".into(),
        lines,
        hlines: vec![HLine { y: 0.0, label: "nothing gained".into(), color: 5 }],
        legend_low: true,
        ..LineChart::default()
    })?;
    d.chart(
        "qini",
        svg,
        &format!(
            "Fitted on the customers new to the experiment at {} earlier run(s) ({} customers) and judged on \
             the {} new at {held} ({} treated, {} control): each curve counts the customers a ranking keeps \
             by contacting its top share, against the control group. {}.",
            u.runs.len().saturating_sub(1),
            u.fit_rows,
            u.held_out_rows,
            u.held_out_treated,
            u.held_out_control,
            sentence(&u.why)
        ),
    );
    let rows: Vec<Vec<String>> = u
        .rankings
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("{:.4}", r.qini),
                format!("{:+.4}", r.uplift_at_10),
                format!("{:+.4}", r.uplift_at_30),
            ]
        })
        .collect();
    d.table(&["ranking", "Qini coefficient", "uplift@10%", "uplift@30%"], &rows, None);
    Ok(())
}

/// `why` as a sentence: its first letter capitalized.
fn sentence(why: &str) -> String {
    let mut c = why.chars();
    c.next().map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}
