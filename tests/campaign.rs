//! A campaign that follows fidelis, against ground truth: generated customers, a model, weekly
//! runs with a control group, the same customers regenerated as if the runs had been acted on
//! (`fidelis generate --campaign`, with both potential outcomes of every selected customer in
//! truth.parquet), the runs scored again on the realized data, and the effect fidelis measures
//! when the first run matures compared with the true effect.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use common::{fidelis, stderr, stdout};
use fidelis::sink::{read_parquet, ScoreParquet};
use polars::prelude::*;

/// The run the examples score (its outcome window closes by 2024-12-31, the data's end).
const RUN: &str = "2024-08-06";
/// Three weekly runs from it.
const RUNS: [&str; 3] = [RUN, "2024-08-13", "2024-08-20"];

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "exit {:?}\n{}{}", out.status, stdout(out), stderr(out));
}

fn config(dir: &Path, name: &str, data: &str, output: &str) {
    let text = format!(
        "[input.transactions]\npath = \"{data}/transactions.parquet\"\n\n[output]\ndir = \"{output}\"\nsql = []\n"
    );
    fs::write(dir.join(name), text).unwrap();
}

/// [`config`] with the default SQLite sink (`<output>/fidelis.sqlite`).
fn config_with_sqlite(dir: &Path, name: &str, data: &str, output: &str) {
    let text = format!(
        "[input.transactions]\npath = \"{data}/transactions.parquet\"\n\n[output]\ndir = \"{output}\"\n\
         sql = [\"sqlite://{output}/fidelis.sqlite\"]\n"
    );
    fs::write(dir.join(name), text).unwrap();
}

fn text(df: &DataFrame, name: &str) -> Vec<String> {
    df.column(name)
        .unwrap()
        .cast(&DataType::String)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect()
}

/// The true effect of every customer of a truth.parquet outside the exempt group.
fn kept_effects(truth: &DataFrame) -> Vec<f64> {
    let groups = text(truth, "group");
    let effect = truth.column("true_effect").unwrap().cast(&DataType::Float64).unwrap();
    let effect = effect.f64().unwrap();
    effect.iter().zip(&groups).filter(|(_, g)| *g != "exempt").map(|(v, _)| v.unwrap()).collect()
}

/// A metric of the monitoring history's `effect` rows of `item` (a run, `pooled`, ...).
fn effect_value(history: &DataFrame, item: &str, metric: &str) -> f64 {
    let keep =
        col("kind").eq(lit("effect")).and(col("item").eq(lit(item))).and(col("metric").eq(lit(metric)));
    let rows = history.clone().lazy().filter(keep).collect().unwrap();
    rows.column("value").unwrap().f64().unwrap().get(0).unwrap()
}

/// The command lines of the campaign example in docs/decision.md (the `sh` block after "tests/campaign.rs
/// runs these lines"), each as its arguments.
fn readme_lines() -> Vec<Vec<String>> {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/decision.md")).unwrap();
    let at = readme
        .find("(`tests/campaign.rs` runs these lines")
        .expect("the campaign example of docs/decision.md");
    let block = &readme[at..];
    let block = &block[block.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    block.lines().map(|l| l.split_whitespace().skip(1).map(str::to_string).collect()).collect()
}

#[test]
fn the_effect_measured_on_a_generated_campaign_covers_the_true_effect() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    config(d, "plain.toml", "plain", "untreated");
    config_with_sqlite(d, "realized.toml", "realized", "measured");
    let lines = readme_lines();
    assert_eq!(lines.len(), 6, "{lines:?}");
    let mut outputs = Vec::new();
    for args in &lines {
        let args: Vec<&str> = args.iter().map(String::as_str).chain(["-q"]).collect();
        let out = fidelis(&args, d);
        ok(&out);
        outputs.push(out);
    }
    assert!(stdout(&outputs[3]).contains("truth.parquet"), "{}", stdout(&outputs[3]));
    let out = &outputs[5];
    // The example's runs are the run this test checks.
    assert!(lines[2].contains(&RUN.to_string()) && lines[4].contains(&RUN.to_string()));

    // Before its first contact a customer's data is the same, so the runs on the realized
    // data select every customer of the first run, in the same group.
    let truth = read_parquet(&d.join("realized/truth.parquet")).unwrap();
    let first_run = text(&truth, "first_run");
    let (ids, groups) = (text(&truth, "customer_id"), text(&truth, "group"));
    let measured = ScoreParquet::new(&d.join("measured"));
    let run1 = measured.read_scores(RUN.parse().unwrap()).unwrap();
    let in_run1: HashMap<String, String> =
        text(&run1, "customer_id").into_iter().zip(text(&run1, "experiment_group")).collect();
    let mut first = 0;
    for i in 0..ids.len() {
        if first_run[i] == RUN {
            assert_eq!(in_run1.get(&ids[i]), Some(&groups[i]), "{}", ids[i]);
            first += 1;
        }
    }
    assert!(first > 300, "{first} customers selected by the first run");
    // The effect is heterogeneous: some are won back, some annoyed into leaving.
    let effects = text(&truth, "effect");
    for kind in ["Persuaded", "Annoyed", "SureThing"] {
        assert!(effects.iter().any(|e| e == kind), "no {kind} in the truth");
    }

    // The first run matures; its measured effect against the true average effect of the
    // customers it selected (each of them at its first selection).
    let true_effect = truth.column("true_effect").unwrap().cast(&DataType::Float64).unwrap();
    let true_effect = true_effect.f64().unwrap();
    let (mut sum, mut n) = (0.0, 0.0);
    for i in 0..ids.len() {
        if first_run[i] == RUN && groups[i] != "exempt" {
            sum += true_effect.get(i).unwrap();
            n += 1.0;
        }
    }
    let truth_mean = sum / n;
    let history = read_parquet(&d.join("measured/monitoring/metrics_history.parquet")).unwrap();
    let value = |metric: &str| effect_value(&history, RUN, metric);
    let (low, high) = (value("reduction_low"), value("reduction_high"));
    eprintln!(
        "run {}: {n} customers, true effect {truth_mean:.4}, measured {:.4} [{low:.4}, {high:.4}]",
        RUN,
        value("reduction")
    );
    assert!(
        low <= truth_mean && truth_mean <= high,
        "true effect {truth_mean:.4} outside [{low:.4}, {high:.4}]\n{}",
        stdout(out)
    );
    assert!(truth_mean.abs() > 0.0, "the campaign has an effect to measure");

    // The same figures in SQL: the run's rows (all, new, per band and playbook) and the pooled one.
    let db = rusqlite::Connection::open(d.join("measured/fidelis.sqlite")).unwrap();
    let sql = |q: &str| -> (String, i64, i64, f64, f64, f64) {
        db.query_row(q, [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .unwrap()
    };
    let select =
        "SELECT stratum, treatment, control, reduction, reduction_low, reduction_high FROM campaign_effect";
    let all = sql(&format!("{select} WHERE as_of = '2024-12-31' AND run = '{RUN}' AND stratum = 'all'"));
    assert_eq!((all.3, all.4, all.5), (value("reduction"), low, high));
    assert_eq!((all.1 + all.2) as f64, value("treatment") + value("control"));
    let pooled = sql(&format!("{select} WHERE run = 'pooled'"));
    assert_eq!((pooled.1, pooled.2), (all.1, all.2), "one run: every customer is new to the experiment");
    let bands: i64 = db
        .query_row(
            &format!("SELECT count(*) FROM campaign_effect WHERE run = '{RUN}' AND stratum = 'band'"),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(bands >= 2, "{bands} bands");
    assert!(
        stdout(out)
            .contains("effect of contacting, pooled over 1 run (each customer at its first selection)"),
        "{}",
        stdout(out)
    );
    // What was actually done: a contact log where the calls reached every other treated
    // customer of the run (and nobody of the control group, whom nobody called). The effect
    // among the reached is the list's effect over the difference in reach (Wald).
    // Calls by phone and by e-mail (the log's `via` column, named as the channel).
    let mut log = String::from("customer_id,ts,reached,via\n");
    let (run_ids, run_groups) = (text(&run1, "customer_id"), text(&run1, "experiment_group"));
    let mut treated = 0;
    for (id, g) in run_ids.iter().zip(&run_groups) {
        if g == "treatment" {
            log.push_str(&format!(
                "{id},2024-08-0{},{},{}\n",
                7 + treated % 2,
                if treated % 2 == 0 { "yes" } else { "no" },
                if treated % 4 == 0 { "email" } else { "phone" }
            ));
            treated += 1;
        }
    }
    fs::write(d.join("contacts.csv"), log).unwrap();
    let cfg = fs::read_to_string(d.join("realized.toml")).unwrap();
    let contacts = "[input.contacts]\npath = \"contacts.csv\"\nchannel = \"via\"\n";
    fs::write(d.join("reach.toml"), format!("{cfg}\n{contacts}")).unwrap();
    let validated = fidelis(&["validate", "--config", "reach.toml", "-q"], d);
    ok(&validated);
    assert!(stdout(&validated).contains("channels: email, phone"), "{}", stdout(&validated));
    let again = fidelis(&["monitor", "--config", "reach.toml", "--as-of", "2024-12-31", "-q"], d);
    ok(&again);
    let line = stdout(&again)
        .lines()
        .find(|l| l.starts_with("effect of contacting, run at"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("reached 50% of the treated, 0% of the control group, among the reached"),
        "{line}"
    );
    let history = read_parquet(&d.join("measured/monitoring/metrics_history.parquet")).unwrap();
    let metric = |m: &str| effect_value(&history, RUN, m);
    let reach = metric("reach_treatment");
    assert!((reach - 0.5).abs() < 0.01 && metric("reach_control") == 0.0, "{reach}");
    assert!((metric("reached_reduction") - metric("reduction") / reach).abs() < 1e-9);
    eprintln!("with a contact log reaching half the treated: {line}");
    // Per channel: each reached a quarter of the treated, against the whole control group.
    let channel = |c: &str, m: &str| effect_value(&history, &format!("{RUN} channel={c}"), m);
    let all = metric("treatment");
    for c in ["email", "phone"] {
        assert!(
            (channel(c, "treatment") / all - 0.25).abs() < 0.01,
            "{c}: {} of {all}",
            channel(c, "treatment")
        );
        assert_eq!(channel(c, "control"), metric("control"));
    }
    let by = stdout(&again).lines().find(|l| l.contains("by channel")).unwrap_or_default().to_string();
    assert!(
        by.contains("email reached") && by.contains("phone reached") && by.contains("not randomized"),
        "{by}"
    );
    eprintln!("{by}");
}

/// The pooled effect's 95% interval (Newcombe, each customer at the run that first selected
/// it) against the true average effect of the customers the runs selected, on 20 generated
/// campaigns of three weekly runs (seeds 1..=20, one model trained on another seed): it must
/// cover the truth on at least 18 of them.
#[test]
fn the_pooled_effect_interval_covers_the_truth_on_at_least_18_of_20_campaigns() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let size = ["--customers", "5000", "-q"];
    ok(&fidelis(&[&["generate", "--seed", "99", "--out", "base"][..], &size[..]].concat(), d));
    config(d, "base.toml", "base", "base_out");
    ok(&fidelis(&["train", "--config", "base.toml", "-q"], d));
    let mut covered = 0;
    let mut lines = Vec::new();
    for seed in 1..=20 {
        let seed = seed.to_string();
        let (plain, realized) = (format!("plain{seed}"), format!("realized{seed}"));
        let (untreated, measured) = (format!("untreated{seed}"), format!("measured{seed}"));
        ok(&fidelis(&[&["generate", "--seed", &seed, "--out", &plain][..], &size[..]].concat(), d));
        config(d, "plain.toml", &plain, &untreated);
        for run in RUNS {
            ok(&fidelis(&["score", "--config", "plain.toml", "--as-of", run, "-q"], d));
        }
        let args = ["generate", "--seed", &seed, "--out", &realized, "--campaign", &untreated];
        ok(&fidelis(&[&args[..], &size[..]].concat(), d));
        config(d, "realized.toml", &realized, &measured);
        for run in RUNS {
            ok(&fidelis(&["score", "--config", "realized.toml", "--as-of", run, "-q"], d));
        }
        let out = fidelis(&["monitor", "--config", "realized.toml", "--as-of", "2024-12-31", "-q"], d);
        ok(&out);
        let truth = read_parquet(&d.join(&realized).join("truth.parquet")).unwrap();
        let kept = kept_effects(&truth);
        let truth_mean = kept.iter().sum::<f64>() / kept.len() as f64;
        let history = read_parquet(&d.join(&measured).join("monitoring/metrics_history.parquet")).unwrap();
        let value = |metric: &str| effect_value(&history, "pooled", metric);
        assert_eq!(value("runs"), 3.0, "{}", stdout(&out));
        assert_eq!((value("treatment") + value("control")) as usize, kept.len(), "each customer once");
        let (low, high) = (value("reduction_low"), value("reduction_high"));
        covered += usize::from(low <= truth_mean && truth_mean <= high);
        // The last run alone, every customer it selected (most of them selected before).
        let last = stdout(&out)
            .lines()
            .find(|l| l.starts_with(&format!("effect of contacting, run at {}", RUNS[2])))
            .map(|l| l.split(": ").nth(1).unwrap_or_default().to_string())
            .unwrap_or_default();
        lines.push(format!(
            "seed {seed}: truth {truth_mean:.4}, pooled {:.4} [{low:.4}, {high:.4}] over {} customers; run {} alone: {last}",
            value("reduction"),
            kept.len(),
            RUNS[2]
        ));
    }
    eprintln!("{}\ncovered {covered} of 20", lines.join("\n"));
    assert!(covered >= 18, "covered {covered} of 20\n{}", lines.join("\n"));
}

/// Two campaigns on the same customers and runs: one where a contact changes nothing (every
/// true effect is zero; the interval covers zero and nothing alerts) and one where it harms
/// (annoys active customers into leaving; monitoring raises the harm alert).
#[test]
fn no_effect_is_measured_as_none_and_a_harmful_campaign_raises_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let gen = ["generate", "--customers", "6000", "--seed", "31", "-q"];
    ok(&fidelis(&[&gen[..], &["--out", "plain"]].concat(), d));
    config(d, "plain.toml", "plain", "untreated");
    ok(&fidelis(&["train", "--config", "plain.toml", "-q"], d));
    ok(&fidelis(&["score", "--config", "plain.toml", "--as-of", RUN, "-q"], d));
    let mut texts = Vec::new();
    for response in ["none", "harmful"] {
        let data = format!("realized_{response}");
        let extra = ["--out", &data, "--campaign", "untreated", "--campaign-response", response];
        ok(&fidelis(&[&gen[..], &extra[..]].concat(), d));
        config(d, "r.toml", &data, &format!("measured_{response}"));
        ok(&fidelis(&["score", "--config", "r.toml", "--as-of", RUN, "-q"], d));
        let out = fidelis(&["monitor", "--config", "r.toml", "--as-of", "2024-12-31", "-q"], d);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let truth = read_parquet(&d.join(&data).join("truth.parquet")).unwrap();
        let effect = truth.column("true_effect").unwrap().cast(&DataType::Float64).unwrap();
        let effect: Vec<f64> = effect.f64().unwrap().iter().flatten().collect();
        texts.push((stdout(&out), effect));
    }
    let (none, zero) = &texts[0];
    assert!(zero.iter().all(|&e| e == 0.0), "a contact that changes nothing has no effect");
    let line =
        none.lines().find(|l| l.starts_with("effect of contacting")).unwrap_or_else(|| panic!("{none}"));
    let bounds = line.split("[95% ").nth(1).unwrap().split(']').next().unwrap();
    let (low, high): (f64, f64) = {
        let mut b = bounds.split(", ").map(|v| v.parse::<f64>().unwrap());
        (b.next().unwrap(), b.next().unwrap())
    };
    assert!(low <= 0.0 && 0.0 <= high, "{line}");
    assert!(!none.contains("ALERT contacting"), "{none}");
    // Once measured, the decision stops recommending mass contact: trained with
    // save_rate = "measured" on the campaign with no effect, it contacts (nearly) nobody.
    let share = |dir: &Path| -> (f64, String) {
        let id = fs::read_to_string(dir.join("models/latest")).unwrap();
        let path = dir.join("models").join(id.trim()).join("metrics.json");
        let m: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        let d = &m["decision"];
        (
            d["holdout"]["contacted_share"].as_f64().unwrap(),
            d["save_rate"]["why"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (assumed, why) = share(d);
    assert!(assumed > 0.5 && why.contains("assumed"), "{assumed} {why}");
    let text = fs::read_to_string(d.join("r.toml")).unwrap().replace("measured_harmful", "measured_none");
    fs::write(d.join("m.toml"), format!("{text}\n[decision]\nsave_rate = \"measured\"\n")).unwrap();
    let trained = fidelis(&["train", "--config", "m.toml", "-q"], d);
    ok(&trained);
    let (measured, why) = share(d);
    assert!(stdout(&trained).contains("save rate: measured save_rate: 0.000"), "{}", stdout(&trained));
    assert!(measured < 0.05, "contacted share {measured} with nothing measured: {why}");
    eprintln!(
        "contacted share of the holdout: assumed save rate {assumed:.3}, measured {measured:.3} ({why})"
    );
    let (harmful, effects) = &texts[1];
    let mean = effects.iter().sum::<f64>() / effects.len() as f64;
    assert!(mean < -0.05, "the harmful campaign's true effect is {mean}");
    assert!(harmful.contains("ALERT contacting increased churn in the run at 2024-08-06"), "{harmful}");
    let harm = harmful.lines().find(|l| l.starts_with("effect of contacting")).unwrap_or_default();
    eprintln!("no effect: {line}\nharmful (true mean {mean:.4}): {harm}");
}

/// The SaaS kind (`fidelis generate --kind saas --campaign`): subscriptions with product
/// events and a customer table, contacted as fidelis's weekly runs say. The realized tables
/// are all written, the first run's customers are selected again in the same groups, every
/// kind of response occurs (a subscriber who already cancelled is a lost cause), and the
/// pooled effect's interval covers the true average effect.
#[test]
fn a_generated_saas_campaign_is_measured_against_its_truth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let saas = |name: &str, data: &str, output: &str| {
        let text = format!(
            "[input.transactions]\npath = \"{data}/transactions.parquet\"\n\n[input.events]\n\
             path = \"{data}/events.parquet\"\n\n[input.customers]\npath = \"{data}/customers.parquet\"\n\n\
             [snapshots]\neligibility_days = 31\n\n[experiment]\ncontrol_share = 0.4\n\n\
             [output]\ndir = \"{output}\"\nsql = []\n"
        );
        fs::write(d.join(name), text).unwrap();
    };
    let gen = ["generate", "--kind", "saas", "-q"];
    ok(&fidelis(&[&gen[..], &["--customers", "5000", "--seed", "99", "--out", "base"]].concat(), d));
    saas("base.toml", "base", "base_out");
    ok(&fidelis(&["train", "--config", "base.toml", "-q"], d));
    let size = ["--customers", "10000", "--seed", "1"];
    ok(&fidelis(&[&gen[..], &size[..], &["--out", "plain"]].concat(), d));
    saas("plain.toml", "plain", "untreated");
    for run in RUNS {
        ok(&fidelis(&["score", "--config", "plain.toml", "--as-of", run, "-q"], d));
    }
    let made = fidelis(&[&gen[..], &size[..], &["--out", "realized", "--campaign", "untreated"]].concat(), d);
    ok(&made);
    for file in ["transactions", "events", "customers", "truth"] {
        assert!(stdout(&made).contains(&format!("realized/{file}.parquet")), "{}", stdout(&made));
    }
    saas("realized.toml", "realized", "measured");
    for run in RUNS {
        ok(&fidelis(&["score", "--config", "realized.toml", "--as-of", run, "-q"], d));
    }
    let out = fidelis(&["monitor", "--config", "realized.toml", "--as-of", "2024-12-31", "-q"], d);
    ok(&out);

    let truth = read_parquet(&d.join("realized/truth.parquet")).unwrap();
    let (ids, groups, first_run) =
        (text(&truth, "customer_id"), text(&truth, "group"), text(&truth, "first_run"));
    let run1 = ScoreParquet::new(&d.join("measured")).read_scores(RUN.parse().unwrap()).unwrap();
    let in_run1: HashMap<String, String> =
        text(&run1, "customer_id").into_iter().zip(text(&run1, "experiment_group")).collect();
    let mut first = 0;
    for i in 0..ids.len() {
        assert!(ids[i].starts_with('S'), "{}", ids[i]);
        if first_run[i] == RUN {
            assert_eq!(in_run1.get(&ids[i]), Some(&groups[i]), "{}", ids[i]);
            first += 1;
        }
    }
    assert!(first > 300, "{first} subscribers selected by the first run");
    let effects = text(&truth, "effect");
    for kind in ["Persuaded", "NotPersuaded", "Annoyed", "SureThing", "LostCause"] {
        assert!(effects.iter().any(|e| e == kind), "no {kind} in the truth");
    }
    let kept = kept_effects(&truth);
    let truth_mean = kept.iter().sum::<f64>() / kept.len() as f64;
    let history = read_parquet(&d.join("measured/monitoring/metrics_history.parquet")).unwrap();
    let value = |metric: &str| effect_value(&history, "pooled", metric);
    assert_eq!(value("runs"), 3.0, "{}", stdout(&out));
    assert_eq!((value("treatment") + value("control")) as usize, kept.len(), "each subscriber once");
    let (low, high) = (value("reduction_low"), value("reduction_high"));
    eprintln!(
        "SaaS campaign: {} subscribers, true effect {truth_mean:.4}, pooled {:.4} [{low:.4}, {high:.4}]",
        kept.len(),
        value("reduction")
    );
    assert!(
        low <= truth_mean && truth_mean <= high,
        "{truth_mean} outside [{low}, {high}]\n{}",
        stdout(&out)
    );
}
