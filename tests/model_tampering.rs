//! A model directory edited by hand or damaged (reliability round three, fault 12): each case
//! below edits one file of a freshly trained model, once as it is (the checksum in
//! `model.json` no longer matches) and once with that checksum rewritten to match (only the
//! structural checks can catch it). Every case must end `fidelis score` with exit 2 naming
//! the file and the reason: never a panic (101), never exit 0 with different scores.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{copy_dir, fidelis, model_fixture, stderr, stdout};
use serde_json::{json, Value};

/// A workspace with the fixture's data and config and a model trained by this fidelis.
fn trained() -> (tempfile::TempDir, PathBuf) {
    let ws = tempfile::tempdir().unwrap();
    copy_dir(&model_fixture().join("data"), &ws.path().join("data"));
    let config = fs::read_to_string(model_fixture().join("fidelis.toml"))
        .unwrap()
        .replace("\"expected\"", "\"output\"");
    fs::write(ws.path().join("fidelis.toml"), config).unwrap();
    let out = fidelis(&["train", "--config", "fidelis.toml", "-q"], ws.path());
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    let id = fs::read_to_string(ws.path().join("models/latest")).unwrap().trim().to_string();
    let dir = ws.path().join("models").join(id);
    (ws, dir)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Rewrite `file`'s checksum in model.json to match its (edited) content.
fn rechecksum(dir: &Path, file: &str) {
    let bytes = fs::read(dir.join(file)).unwrap();
    let mut info = read_json(&dir.join("model.json"));
    info["checksums"][file] = json!(fidelis::model::sha256_hex(&bytes));
    fs::write(dir.join("model.json"), serde_json::to_vec_pretty(&info).unwrap()).unwrap();
}

/// The first inner node of the first tree with one (index of tree, index of node).
fn first_split(trees: &Value) -> (usize, usize) {
    for (t, tree) in trees.as_array().unwrap().iter().enumerate() {
        for (i, n) in tree["nodes"].as_array().unwrap().iter().enumerate() {
            if n["feature"].as_u64() != Some(u64::MAX) {
                return (t, i);
            }
        }
    }
    panic!("no split in the model")
}

type Edit = fn(&mut Value, usize);

struct Case {
    name: &'static str,
    file: &'static str,
    edit: Edit,
    /// Words the structural check's message must hold.
    reason: &'static str,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a split on feature 999 of the model's features",
            file: "churn.json",
            edit: |v, _| {
                let (t, i) = first_split(&v["trees"]);
                v["trees"][t]["nodes"][i]["feature"] = json!(999);
            },
            reason: "reads feature 999",
        },
        Case {
            name: "a child index of 1,000,000",
            file: "churn.json",
            edit: |v, _| {
                let (t, i) = first_split(&v["trees"]);
                v["trees"][t]["nodes"][i]["left"] = json!(1_000_000);
            },
            reason: "child 1000000",
        },
        Case {
            name: "a feature index of 2^32 + 3 (was truncated to feature 3)",
            file: "churn.json",
            edit: |v, _| {
                let (t, i) = first_split(&v["trees"]);
                v["trees"][t]["nodes"][i]["feature"] = json!(4_294_967_299u64);
            },
            reason: "out of range",
        },
        Case {
            name: "a self-loop",
            file: "clv.json",
            edit: |v, _| {
                let (t, i) = first_split(&v["trees"]);
                v["trees"][t]["nodes"][i]["right"] = json!(i);
            },
            reason: "not a node after it",
        },
        Case {
            name: "an empty tree list",
            file: "churn.json",
            edit: |v, _| v["trees"] = json!([]),
            reason: "no trees",
        },
        Case {
            name: "leaf values of +-1e308 (every probability 1.0)",
            file: "churn.json",
            edit: |v, _| {
                for tree in v["trees"].as_array_mut().unwrap() {
                    for n in tree["nodes"].as_array_mut().unwrap() {
                        n["value"] = json!(1e308);
                    }
                }
            },
            reason: "not a finite number within",
        },
        Case {
            name: "a churn model marked as a CLV model",
            file: "churn.json",
            edit: |v, _| v["task"] = json!("clv"),
            reason: "where the churn model belongs",
        },
        Case {
            name: "a null threshold (nobody contacted)",
            file: "decision.json",
            edit: |v, _| v["threshold"] = Value::Null,
            reason: "no threshold, but",
        },
        Case {
            name: "a threshold of 2.0 (nobody contacted)",
            file: "decision.json",
            edit: |v, _| v["threshold"] = json!(2.0),
            reason: "not a probability",
        },
        Case {
            name: "an isotonic calibrator with unsorted x and fewer y than x",
            file: "calibration.json",
            edit: |v, _| *v = json!({"method": "isotonic", "x": [0.5, 0.1, 0.9], "y": [0.9, 0.9]}),
            reason: "3 x values but 2 y values",
        },
        Case {
            name: "an isotonic calibrator with unsorted x",
            file: "calibration.json",
            edit: |v, _| *v = json!({"method": "isotonic", "x": [0.5, 0.1, 0.9], "y": [0.1, 0.5, 0.9]}),
            reason: "not finite and increasing",
        },
        Case {
            name: "a logistic part with 3 coefficients",
            file: "logistic.json",
            edit: |v, n| {
                let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
                if v.is_null() {
                    *v = json!({"features": names, "scaler": {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]},
                        "intercept": 0.0, "coef": [1.0, 1.0, 1.0], "l2": 1.0, "iterations": 1});
                } else {
                    v["coef"] = json!([1.0, 1.0, 1.0]);
                }
            },
            reason: "3 coefficients",
        },
    ]
}

fn score(ws: &Path) -> std::process::Output {
    fidelis(&["score", "--config", "fidelis.toml", "-q"], ws)
}

#[test]
fn every_tampered_model_is_refused_naming_file_and_reason() {
    let (ws, dir) = trained();
    let n_features = read_json(&dir.join("model.json"))["features"].as_array().unwrap().len();
    // The untouched model scores.
    let out = score(ws.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pristine = ws.path().join("pristine");
    copy_dir(&dir, &pristine);
    let mut failures = Vec::new();
    for case in cases() {
        for rewrite_checksum in [false, true] {
            // Start from the pristine model each time.
            fs::remove_dir_all(&dir).unwrap();
            copy_dir(&pristine, &dir);
            let path = dir.join(case.file);
            let mut v = read_json(&path);
            (case.edit)(&mut v, n_features);
            fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
            if rewrite_checksum {
                rechecksum(&dir, case.file);
            }
            let out = score(ws.path());
            let err = stderr(&out);
            let want = if rewrite_checksum { case.reason } else { "changed after training" };
            let ok = out.status.code() == Some(2) && err.contains(case.file) && err.contains(want);
            if !ok {
                failures.push(format!(
                    "{} ({}): exit {:?}, wanted 2 with {:?} and {:?}: {err}",
                    case.name,
                    if rewrite_checksum { "checksum rewritten" } else { "as edited" },
                    out.status.code(),
                    case.file,
                    want
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_model_file_edited_by_one_byte_is_refused_and_its_copy_restored_scores_again() {
    let (ws, dir) = trained();
    let reference = dir.join("reference.json");
    let bytes = fs::read(&reference).unwrap();
    let mut edited = bytes.clone();
    let at = edited.iter().position(|b| b.is_ascii_digit()).unwrap();
    edited[at] = if edited[at] == b'9' { b'8' } else { edited[at] + 1 };
    fs::write(&reference, &edited).unwrap();
    // `weekly` reads the reference: refused before anything is written.
    let out = fidelis(&["weekly", "--config", "fidelis.toml", "-q"], ws.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("reference.json") && stderr(&out).contains("changed after training"));
    assert!(!ws.path().join("output/scores").exists(), "nothing written");
    fs::write(&reference, &bytes).unwrap();
    let out = fidelis(&["weekly", "--config", "fidelis.toml", "-q"], ws.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
