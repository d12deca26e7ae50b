//! Model artifacts across formats: a model directory of the format before `format_version`
//! (committed under tests/fixtures/model_v1, made by the fidelis that wrote it, with the data
//! and the scores it gave) loads and scores the same today; a newer format is refused with
//! both versions named; a stored configuration with keys this fidelis does not know (renamed
//! or removed since) does not make a model unreadable.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{copy_dir, fidelis, model_fixture as fixture, stderr, stdout, FIXTURE_MODEL as FIXTURE_ID};
use polars::prelude::*;

/// A copy of the fixture (model, data, config) without its expected scores.
fn workspace() -> tempfile::TempDir {
    let ws = tempfile::tempdir().unwrap();
    for sub in ["models", "data"] {
        copy_dir(&fixture().join(sub), &ws.path().join(sub));
    }
    fs::copy(fixture().join("fidelis.toml"), ws.path().join("fidelis.toml")).unwrap();
    ws
}

fn read(path: &Path) -> DataFrame {
    ParquetReader::new(fs::File::open(path).unwrap()).finish().unwrap()
}

fn model_json(ws: &Path) -> PathBuf {
    ws.join("models").join(FIXTURE_ID).join("model.json")
}

#[test]
fn a_model_of_the_first_format_loads_and_scores_as_it_did() {
    let ws = workspace();
    let info: serde_json::Value = serde_json::from_slice(&fs::read(model_json(ws.path())).unwrap()).unwrap();
    assert!(info.get("format_version").is_none() && info["config"].is_object(), "the fixture is format 1");
    let out = fidelis(&["score", "--config", "fidelis.toml", "--as-of", "2024-12-31", "-q"], ws.path());
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    // Scored by the fidelis that wrote the fixture, in the layout of then.
    let then = read(&fixture().join("expected/scores/as_of=2024-12-31/scores.parquet"));
    let now = read(&ws.path().join("expected/scores/run=2024-12-31/part-0.parquet"));
    assert_eq!(then.height(), now.height());
    // Since then the scores gained `experiment_group` (after `contact`), and `contact` holds
    // the control group out; and `uplift`, `incremental_value` (before `contact`, null: the
    // model has no uplift model). Every other column is as it was, and `contact` is as it
    // was except for the control customers, who are not contacted.
    let mut columns: Vec<_> = then.get_column_names().into_iter().cloned().collect();
    let at = columns.iter().position(|c| c == "contact").unwrap();
    columns.insert(at + 1, "experiment_group".into());
    columns.insert(at, "incremental_value".into());
    columns.insert(at, "uplift".into());
    assert_eq!(columns, now.get_column_names().into_iter().cloned().collect::<Vec<_>>());
    for name in ["uplift", "incremental_value"] {
        assert_eq!(
            now.column(name).unwrap().null_count(),
            now.height(),
            "{name} is null without an uplift model"
        );
    }
    // And `top_reasons` show each feature's value and contribution (`recency_days=84
    // (+0.92)`): the features named are the ones named then, in the same order (a model of
    // then explains with the path attributions it had).
    let names = |df: &DataFrame| -> Vec<String> {
        let r = df.column("top_reasons").unwrap().str().unwrap().clone();
        r.iter()
            .map(|v| {
                let v = v.unwrap_or_default();
                v.split(", ")
                    .map(|part| part.split('=').next().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect()
    };
    assert_eq!(names(&then), names(&now));
    assert!(names(&now)
        .iter()
        .zip(now.column("top_reasons").unwrap().str().unwrap().iter())
        .any(|(n, r)| { r.is_some_and(|r| r.contains('=') && r != n) }));
    for name in then.get_column_names() {
        if name == "contact" || name == "top_reasons" {
            continue;
        }
        assert!(
            then.column(name).unwrap().equals_missing(now.column(name).unwrap()),
            "column {name} differs from what the format-1 model scored when it was written"
        );
    }
    let contact = |df: &DataFrame| df.column("contact").unwrap().bool().unwrap().clone();
    let group = now.column("experiment_group").unwrap().str().unwrap().clone();
    let (was, is) = (contact(&then), contact(&now));
    let mut held_out = 0;
    for i in 0..now.height() {
        if group.get(i) == Some("control") {
            assert!(was.get(i).unwrap() && !is.get(i).unwrap());
            held_out += 1;
        } else {
            assert_eq!(was.get(i), is.get(i), "row {i}");
        }
    }
    assert!(held_out > 0, "the default control group holds some selected customers out");
    // Its settings load as they were stored (monitoring and reports read them).
    let loaded = fidelis::model::load(&ws.path().join("models"), None).unwrap();
    assert_eq!(loaded.info.format_version, 1);
    assert_eq!(loaded.info.feature_spec.windows, vec![30, 90, 365]);
    assert_eq!(loaded.info.settings["model"]["iterations"], 40);
    assert!(loaded.info.settings.get("output").is_none(), "the output section is not carried over");
}

#[test]
fn a_newer_format_is_refused_naming_both_versions() {
    let ws = workspace();
    let path = model_json(ws.path());
    let mut info: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    info["format_version"] = 99.into();
    fs::write(&path, serde_json::to_vec(&info).unwrap()).unwrap();
    let out = fidelis(&["score", "--config", "fidelis.toml", "--as-of", "2024-12-31", "-q"], ws.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("model.json") && err.contains("99") && err.contains("up to 2"), "{err}");
    assert!(!ws.path().join("expected/scores").exists(), "nothing written");
}

#[test]
fn unknown_and_missing_config_keys_in_an_old_model_do_not_make_it_unreadable() {
    let ws = workspace();
    let path = model_json(ws.path());
    let mut info: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    // A key renamed since, a section removed since, and one this fidelis never had.
    let features = info["config"]["features"].as_object_mut().unwrap();
    let trend = features.remove("trend_days").unwrap();
    features.insert("trend_window_days".into(), trend);
    info["config"].as_object_mut().unwrap().remove("report");
    info["config"]["retired_section"] = serde_json::json!({"x": 1});
    info["a_field_from_elsewhere"] = true.into();
    fs::write(&path, serde_json::to_vec(&info).unwrap()).unwrap();
    let loaded = fidelis::model::load(&ws.path().join("models"), None).unwrap();
    // A missing key takes today's default (45 days), which this model was trained with.
    assert_eq!(loaded.info.feature_spec.trend_days, 45);
    let out = fidelis(&["score", "--config", "fidelis.toml", "--as-of", "2024-12-31", "-q"], ws.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
