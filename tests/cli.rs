//! The `fidelis` binary end to end: bad input gives a clear error and exit code 2; a small
//! generated log trains and writes a complete artifact.

mod common;

use std::fs;
use std::path::Path;

use common::{fidelis, stderr, stdout};

fn config(dir: &Path, input: &str, extra: &str) -> String {
    let text = format!(
        "[input.transactions]\npath = \"{}\"\n{extra}\n[paths]\nmodels_dir = \"{}\"\n",
        dir.join(input).display(),
        dir.join("models").display()
    );
    fs::write(dir.join("fidelis.toml"), text).unwrap();
    dir.join("fidelis.toml").display().to_string()
}

/// `validate` on `input` (written with `content`) must fail with exit code 2 and a message
/// containing every string in `needles`.
fn expect_bad_input(name: &str, content: &[u8], extra: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(name), content).unwrap();
    let cfg = config(dir.path(), name, extra);
    let out = fidelis(&["validate", "--config", &cfg], dir.path());
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{name}: exit code, stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "{name}: stderr should mention {n:?}: {err}");
    }
}

#[test]
fn bad_input_is_exit_code_2_with_a_clear_message() {
    expect_bad_input("empty.csv", b"", "", &["empty.csv", "empty"]);
    expect_bad_input("header.csv", b"customer_id,ts,amount\n", "", &["header.csv", "no data rows"]);
    expect_bad_input(
        "cols.csv",
        b"customer_id,date,amount\na,2024-01-01,3\n",
        "",
        &["cols.csv", "`ts`", "[input.transactions].timestamp", "customer_id, date, amount"],
    );
    expect_bad_input("data.xlsx", b"PK\x03\x04", "", &["data.xlsx", "cannot tell the format"]);
    expect_bad_input("fake.parquet", b"customer_id,ts,amount\n", "", &["fake.parquet", "not a Parquet file"]);
    expect_bad_input("bin.csv", b"\x00\x01\x02", "", &["bin.csv", "binary"]);
    expect_bad_input(
        "mostly_bad.csv",
        b"customer_id,ts,amount\na,2024-01-01,x\nb,yesterday,1\nc,2024-01-02,2\n",
        "",
        &["mostly_bad.csv", "2 of 3 rows", "unparsable timestamp", "row 2", "non-numeric", "row 1"],
    );
    // A file that does not exist.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "nowhere.csv", "");
    let out = fidelis(&["validate", "--config", &cfg], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nowhere.csv"), "{}", stderr(&out));
}

#[test]
fn bad_config_is_exit_code_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("t.csv"), "customer_id,ts,amount\na,2024-01-01,1\n").unwrap();
    let cfg = config(dir.path(), "t.csv", "[model]\nmax_depth = 0\n");
    let out = fidelis(&["validate", "--config", &cfg], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("model.max_depth"), "{}", stderr(&out));
    let out = fidelis(&["train", "--config", "missing.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
}

#[test]
fn validate_reports_dropped_rows_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("customer_id,ts,amount\n");
    for i in 0..98 {
        csv.push_str(&format!("c{},2024-01-{:02},{}\n", i % 7, 1 + i % 28, 10 + i));
    }
    csv.push_str(",2024-01-05,3\nc1,2024-13-45,3\n");
    fs::write(dir.path().join("t.csv"), csv).unwrap();
    let cfg = config(dir.path(), "t.csv", "");
    let out = fidelis(&["validate", "--config", &cfg, "--json"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["rows_read"], 100);
    assert_eq!(v["rows_valid"], 98);
    let dropped = v["dropped"].as_array().unwrap();
    assert_eq!(dropped.len(), 2);
    assert_eq!(dropped[0]["reason"], "missing_customer_id");
    assert_eq!(dropped[0]["examples"][0][0], 99);
    assert_eq!(dropped[1]["reason"], "unparsable_timestamp");
    assert_eq!(dropped[1]["examples"][0][1], "\"2024-13-45\"");
}

#[test]
fn generate_then_train_writes_a_complete_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    for out_dir in ["gen", "gen2"] {
        let out = fidelis(&["generate", "--customers", "3000", "--seed", "5", "--out", out_dir], p);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let first = fs::read(p.join("gen/transactions.parquet")).unwrap();
    assert_eq!(first, fs::read(p.join("gen2/transactions.parquet")).unwrap(), "generate is deterministic");

    let cfg = config(p, "gen/transactions.parquet", "");
    let out = fidelis(&["train", "--config", &cfg, "--quiet"], p);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "--quiet and no terminal: nothing on stderr, got {}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("fidelis (") && table.contains("logistic_regression"), "{table}");
    assert!(table.contains("candidates, chosen on") && table.contains("<- shipped"), "{table}");

    let id = fs::read_to_string(p.join("models/latest")).unwrap().trim().to_string();
    let m = p.join("models").join(&id);
    for f in [
        "model.json",
        "metrics.json",
        "churn.json",
        "clv.json",
        "logistic.json",
        "clv_poisson.json",
        "calibration.json",
        "decision.json",
        "reference.json",
        "predictions.parquet",
    ] {
        assert!(m.join(f).is_file(), "{f} missing");
    }
    let metrics: serde_json::Value =
        serde_json::from_slice(&fs::read(m.join("metrics.json")).unwrap()).unwrap();
    for k in ["roc_auc", "pr_auc", "brier", "log_loss", "top10_lift", "top10_capture"] {
        assert!(metrics["churn"]["holdout"][k].is_number(), "churn.holdout.{k}");
        assert!(metrics["churn"]["validation"][k].is_number(), "churn.validation.{k}");
    }
    for k in ["mae", "rmse", "spearman", "normalized_gini", "top10_revenue_share"] {
        assert!(metrics["clv"]["holdout"][k].is_number(), "clv.holdout.{k}");
    }
    for b in ["logistic_regression", "decision_tree", "random_forest"] {
        assert!(metrics["baselines"][b]["churn"]["holdout"]["roc_auc"].is_number(), "baseline {b}");
    }
    for k in
        ["net_value", "net_all", "net_none", "net_top10", "net_oracle", "precision", "recall", "contacted"]
    {
        assert!(metrics["decision"]["holdout"][k].is_number(), "decision.holdout.{k}");
    }
    assert!(metrics["decision"]["threshold"].is_number());
    assert_eq!(metrics["decision"]["policy"], "flat");
    for k in ["holdout_ece_before", "holdout_ece_after"] {
        assert!(metrics["calibration"][k].is_number(), "calibration.{k}");
    }
    assert!(["none", "platt", "isotonic"].contains(&metrics["calibration"]["method"].as_str().unwrap()));
    // Calibration never hurts: the holdout ECE after is at most 0.005 above before (on this
    // log Platt once cleared the out-of-fold checks and doubled it, 0.0225 -> 0.0425).
    let ece = |k: &str| metrics["calibration"][k].as_f64().unwrap();
    assert!(ece("holdout_ece_after") <= ece("holdout_ece_before") + 0.005, "{}", metrics["calibration"]);
    // The deployed model is refit on every matured label (fit, validation and holdout rows).
    let d = &metrics["deployed"];
    assert_eq!(d["refit"], true, "{d}");
    let rows =
        ["n_fit", "n_validation", "n_holdout"].iter().map(|k| metrics[*k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(d["rows"].as_u64(), Some(rows), "{d}");
    assert!(table.contains("deployed: refit on every matured label"), "{table}");
    assert!(table.contains("contact when churn probability >="), "{table}");
    assert!(metrics["holdout_snapshot"].is_string() && metrics["n_holdout"].as_u64().unwrap() > 100);
    // The generator plants real signal: the churn model must find it.
    assert!(
        metrics["churn"]["holdout"]["roc_auc"].as_f64().unwrap() > 0.75,
        "{}",
        metrics["churn"]["holdout"]
    );
    let info: serde_json::Value = serde_json::from_slice(&fs::read(m.join("model.json")).unwrap()).unwrap();
    assert_eq!(info["model_id"], id.as_str());
    assert!(info["features"].as_array().unwrap().len() >= 20);
    // The data fingerprint identifies the validated rows (not the file's bytes: the same rows
    // in another order or format are the same data).
    assert_eq!(info["data"]["rows"], info["validation"]["transactions"]);
    assert_eq!(info["data"]["xxh3"].as_str().unwrap().len(), 16);
    assert_eq!(info["format_version"], 2);
    assert!(info["libraries"]["polars"].as_str().unwrap().starts_with("0."));
    // Fitted by fidelis's own engine; the refit parts are exactly those the shipped mixes use.
    assert_eq!(metrics["gbdt"]["engine"], "fidelis-hist");
    let churn_file: serde_json::Value =
        serde_json::from_slice(&fs::read(m.join("churn.json")).unwrap()).unwrap();
    assert_eq!(churn_file["engine"], "fidelis-hist");
    let parts: Vec<&str> = d["refit_parts"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let churn_mix = info["churn_model"].as_str().unwrap();
    assert_eq!(
        parts.contains(&"churn gbdt"),
        ["gbdt", "blend"].contains(&churn_mix),
        "{parts:?} {churn_mix}"
    );
    assert_eq!(parts.contains(&"churn logistic"), ["logistic", "blend"].contains(&churn_mix), "{parts:?}");
    let clv_mix = info["clv_model"].as_str().unwrap();
    assert_eq!(parts.contains(&"clv poisson gbdt"), clv_mix.starts_with("poisson"), "{parts:?} {clv_mix}");

    // Rolling origins: origin 0 is this very training (same data and settings, so the same
    // holdout numbers), origin 1 the snapshot one step (28 days) earlier, trained on what was
    // known then; the models directory is left as it was.
    let listing = || {
        let mut v: Vec<_> =
            fs::read_dir(p.join("models")).unwrap().flatten().map(|e| e.file_name()).collect();
        v.sort();
        v
    };
    let models_before = listing();
    let latest = fs::read_to_string(p.join("models/latest")).unwrap();
    let out = fidelis(&["evaluate", "--config", &cfg, "--origins", "2", "-q"], p);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let r: serde_json::Value =
        serde_json::from_slice(&fs::read(p.join("reports/rolling_origins.json")).unwrap()).unwrap();
    let origins = r["origins"].as_array().unwrap();
    assert_eq!(origins.len(), 2, "{text}");
    assert_eq!(origins[0]["origin"], metrics["holdout_snapshot"]);
    assert_eq!(origins[0]["churn_roc_auc"], metrics["churn"]["holdout"]["roc_auc"]);
    assert_eq!(origins[0]["clv_normalized_gini"], metrics["clv"]["holdout"]["normalized_gini"]);
    assert_eq!(origins[0]["holdout_ece_after"], metrics["calibration"]["holdout_ece_after"]);
    let day =
        |v: &serde_json::Value| chrono::NaiveDate::parse_from_str(v.as_str().unwrap(), "%Y-%m-%d").unwrap();
    assert_eq!((day(&origins[0]["origin"]) - day(&origins[1]["origin"])).num_days(), 28);
    let aucs: Vec<f64> = origins.iter().map(|o| o["churn_roc_auc"].as_f64().unwrap()).collect();
    let mean = (aucs[0] + aucs[1]) / 2.0;
    assert!((r["churn_roc_auc"]["mean"].as_f64().unwrap() - mean).abs() < 1e-12, "{}", r["churn_roc_auc"]);
    assert!(text.contains("shipped churn ROC AUC") && text.contains(&format!("{mean:.4} +/-")), "{text}");
    // Every candidate at every origin; the CLV one that shipped scored the shipped Gini.
    for o in origins {
        let cands = o["candidates"].as_array().unwrap();
        for task in ["churn", "clv"] {
            let chosen: Vec<_> = cands.iter().filter(|c| c["task"] == task && c["chosen"] == true).collect();
            assert_eq!(chosen.len(), 1, "{task} at {}: {cands:?}", o["origin"]);
        }
        let clv = cands.iter().find(|c| c["task"] == "clv" && c["chosen"] == true).unwrap();
        assert_eq!(clv["holdout"], o["clv_normalized_gini"]);
        let ece = |k: &str| o[k].as_f64().unwrap();
        assert!(ece("holdout_ece_after") <= ece("holdout_ece_before") + 0.005, "{o}");
        assert!(["none", "platt", "isotonic"].contains(&o["calibration"].as_str().unwrap()), "{o}");
    }
    let n_candidates = origins[0]["candidates"].as_array().unwrap().len();
    assert_eq!(r["candidates"].as_array().unwrap().len(), n_candidates, "{}", r["candidates"]);
    let shipped: u64 =
        r["candidates"].as_array().unwrap().iter().map(|c| c["shipped"].as_u64().unwrap()).sum();
    assert_eq!(shipped, 4, "two origins, one churn and one CLV model each");
    assert!(text.contains("for the best candidate in hindsight"), "{text}");
    assert_eq!(models_before, listing());
    assert_eq!(fs::read_to_string(p.join("models/latest")).unwrap(), latest);
    assert!(fs::read_dir(p.join("reports"))
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with(".rolling")));
}
