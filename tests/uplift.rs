//! The uplift model against ground truth: a generated campaign that followed fidelis's monthly
//! runs with a 40% control group (an experiment phase: an uplift model needs controls to learn
//! from), the model `train` fits on the matured runs, then a later run scored with it and
//! judged on the customers new to the experiment there, whose true effect is known.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use common::{fidelis, stderr, stdout};
use fidelis::qini;
use fidelis::sink::{read_parquet, ScoreParquet};
use polars::prelude::*;

/// Monthly runs the uplift model learns from, then the run it is judged on (not yet scored
/// on the realized data when it trains).
const RUNS: [&str; 7] =
    ["2024-03-05", "2024-04-02", "2024-04-30", "2024-05-28", "2024-06-25", "2024-07-23", "2024-08-20"];
const JUDGED: &str = "2024-09-17";

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "exit {:?}\n{}{}", out.status, stdout(out), stderr(out));
}

fn config(dir: &Path, name: &str, data: &str, output: &str) {
    let text = format!(
        "[input.transactions]\npath = \"{data}/transactions.parquet\"\n\n[experiment]\ncontrol_share = 0.4\n\n\
         [output]\ndir = \"{output}\"\nsql = []\n"
    );
    fs::write(dir.join(name), text).unwrap();
}

fn strings(df: &DataFrame, name: &str) -> Vec<String> {
    let c = df.column(name).unwrap().cast(&DataType::String).unwrap();
    c.str().unwrap().iter().map(|v| v.unwrap_or_default().to_string()).collect()
}

fn numbers(df: &DataFrame, name: &str) -> Vec<f64> {
    let c = df.column(name).unwrap().cast(&DataType::Float64).unwrap();
    c.f64().unwrap().iter().map(|v| v.unwrap_or(f64::NAN)).collect()
}

#[test]
fn the_uplift_model_beats_the_risk_rankings_on_a_later_run_and_ships() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gen = ["generate", "--customers", "20000", "--seed", "5", "-q"];
    ok(&fidelis(&[&gen[..], &["--out", "plain"]].concat(), d));
    config(d, "plain.toml", "plain", "untreated");
    ok(&fidelis(&["train", "--config", "plain.toml", "-q"], d));
    for run in RUNS.iter().chain([&JUDGED]) {
        ok(&fidelis(&["score", "--config", "plain.toml", "--as-of", run, "-q"], d));
    }
    ok(&fidelis(&[&gen[..], &["--out", "realized", "--campaign", "untreated"]].concat(), d));
    config(d, "realized.toml", "realized", "measured");
    for run in RUNS {
        ok(&fidelis(&["score", "--config", "realized.toml", "--as-of", run, "-q"], d));
    }
    let trained = fidelis(&["train", "--config", "realized.toml", "-q"], d);
    ok(&trained);
    let text = stdout(&trained);
    assert!(text.contains("uplift: the ") && text.contains(" ships "), "{text}");
    // The evaluation report shows the choice: the Qini curves of every ranking on the held-out run.
    let id = fs::read_to_string(d.join("models/latest")).unwrap();
    let report = fs::read_to_string(d.join("reports").join(id.trim()).join("evaluation.md")).unwrap();
    assert!(report.contains("## Whom contacting changes") && report.contains("judged on the"), "{report}");
    assert!(report.contains("ships (refitted on"), "the report says which learner ships");
    for name in ["T-learner", "X-learner", "transformed outcome", "churn probability", "expected loss"] {
        assert!(report.contains(name), "{name} missing from the uplift section");
    }

    // Out of time: the run after the ones it learned from, scored with it.
    ok(&fidelis(&["score", "--config", "realized.toml", "--as-of", JUDGED, "-q"], d));
    let scores = ScoreParquet::new(&d.join("measured")).read_scores(JUDGED.parse().unwrap()).unwrap();
    let ids = strings(&scores, "customer_id");
    let (uplift, p, loss) = (
        numbers(&scores, "uplift"),
        numbers(&scores, "churn_probability"),
        numbers(&scores, "expected_loss"),
    );
    let contact: Vec<bool> =
        scores.column("contact").unwrap().bool().unwrap().iter().map(|v| v.unwrap()).collect();
    assert!(uplift.iter().all(|u| u.is_finite() && (-1.0..=1.0).contains(u)));
    assert!(numbers(&scores, "incremental_value").iter().all(|v| v.is_finite()));
    let vetoed = (0..ids.len()).filter(|&i| uplift[i] < -0.05).count();
    assert!(
        (0..ids.len()).all(|i| uplift[i] >= -0.05 || !contact[i]),
        "a customer a contact is expected to lose"
    );
    let at: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();

    // The customers new to the experiment at that run, with both potential outcomes.
    let truth = read_parquet(&d.join("realized/truth.parquet")).unwrap();
    let (tid, first, group) =
        (strings(&truth, "customer_id"), strings(&truth, "first_run"), strings(&truth, "group"));
    let (effect, expected, if_contacted, if_not) = (
        numbers(&truth, "true_effect"),
        numbers(&truth, "expected_effect"),
        numbers(&truth, "churn_if_contacted"),
        numbers(&truth, "churn_if_not"),
    );
    let (mut retained, mut treated, mut by) =
        (Vec::new(), Vec::new(), [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()]);
    for i in 0..tid.len() {
        let Some(&j) = at.get(tid[i].as_str()).filter(|_| first[i] == JUDGED && group[i] != "exempt") else {
            continue;
        };
        let t = group[i] == "treatment";
        treated.push(t);
        retained.push(1.0 - if t { if_contacted[i] } else { if_not[i] });
        for (k, v) in [uplift[j], p[j], loss[j], effect[i], expected[i]].into_iter().enumerate() {
            by[k].push(v);
        }
    }
    // Two oracles: the true effect knows each customer's own draw (who a call would persuade);
    // the expected effect knows only its state, the ceiling of any model of it.
    let names = [
        "uplift model",
        "churn probability",
        "expected loss",
        "oracle (true effect)",
        "oracle (expected effect)",
    ];
    let q: Vec<f64> = by.iter().map(|s| qini::qini_coefficient(&retained, s, &treated)).collect();
    // Churners a contact saves among the top 30% of each ranking (true effects), at 65 each.
    let saved = |score: &[f64]| -> f64 {
        let mut idx: Vec<usize> = (0..score.len()).collect();
        idx.sort_by(|&a, &b| score[b].total_cmp(&score[a]));
        idx[..score.len() * 3 / 10].iter().map(|&i| by[3][i]).sum::<f64>() * 65.0
    };
    let lines: Vec<String> = (0..5)
        .map(|k| format!("{:<22} Qini {:.4}  top-30% value {:.0}", names[k], q[k], saved(&by[k])))
        .collect();
    eprintln!(
        "{} customers new at {JUDGED}, {vetoed} never contacted (uplift < -0.05)\n{}\n\
         uplift model: {:.0}% of the true-effect oracle's Qini, {:.0}% of the expected-effect oracle's",
        retained.len(),
        lines.join("\n"),
        100.0 * q[0] / q[3],
        100.0 * q[0] / q[4]
    );
    assert!(retained.len() > 500, "{} judged customers", retained.len());
    assert!(q[0] > q[1] && q[0] > q[2], "{}", lines.join("\n"));
    assert!(q[0] >= 0.6 * q[3], "{}", lines.join("\n"));
    assert!(saved(&by[0]) > saved(&by[1]), "{}", lines.join("\n"));
}
