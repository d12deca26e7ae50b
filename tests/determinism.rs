//! Deterministic under any row order and thread count: the same rows, shuffled or grouped by
//! customer, as order lines summed by `order_id`, with several orders of one customer at
//! the same timestamp, trained with RAYON_NUM_THREADS=1 and =2, give byte-identical model
//! files (but for `created_at` and `timings_s` in model.json) and byte-identical
//! scores.parquet.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{stderr, stdout};
use fidelis::rng::Rng;
use polars::prelude::*;

/// One order line of the test log.
struct Line {
    customer: String,
    ts: String,
    amount: f64,
    order: String,
}

/// A generated log turned into order lines with ties: each transaction becomes 1-3 lines of
/// one order whose amounts do not add up exactly in floating point in every order, and every
/// fifth transaction gets a second order of the same customer at the same timestamp.
fn lines_with_ties(dir: &Path) -> Vec<Line> {
    let out = fidelis_in(dir, &[], &["generate", "--customers", "1500", "--seed", "5", "--out", "gen", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let df =
        ParquetReader::new(fs::File::open(dir.join("gen/transactions.parquet")).unwrap()).finish().unwrap();
    let df = df.drop_nulls::<String>(None).unwrap();
    let ids = df.column("customer_id").unwrap().str().unwrap().clone();
    let ts = df.column("ts").unwrap().cast(&DataType::Int64).unwrap();
    let ts = ts.i64().unwrap().clone();
    let amount = df.column("amount").unwrap().f64().unwrap().clone();
    let mut rng = Rng::new(11);
    let mut lines = Vec::new();
    for i in 0..df.height() {
        let (Some(c), Some(t), Some(a)) = (ids.get(i), ts.get(i), amount.get(i)) else { continue };
        let when = chrono::DateTime::from_timestamp_millis(t).unwrap().naive_utc();
        let when = when.format("%Y-%m-%d %H:%M:%S").to_string();
        let shares: &[f64] = [&[1.0][..], &[0.3, 0.7], &[0.1, 0.2, 0.7]][rng.below(3) as usize];
        for share in shares {
            lines.push(Line {
                customer: c.into(),
                ts: when.clone(),
                amount: a * share,
                order: format!("o{i}"),
            });
        }
        if i % 5 == 0 {
            lines.push(Line { customer: c.into(), ts: when, amount: 0.1 + a * 0.3, order: format!("o{i}b") });
        }
    }
    lines
}

fn write_csv(path: &Path, lines: &[&Line]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut text = String::from("customer,ts,amount,order\n");
    for l in lines {
        writeln!(text, "{},{},{},{}", l.customer, l.ts, l.amount, l.order).unwrap();
    }
    fs::write(path, text).unwrap();
}

fn fidelis_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fidelis"));
    cmd.args(args).current_dir(dir).env_remove("RUST_LOG").env("FIDELIS_PG_URL", "");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

const CONFIG: &str = "[input.transactions]\npath = \"data/tx.csv\"\ncustomer_id = \"customer\"\n\
    timestamp = \"ts\"\namount = \"amount\"\norder_id = \"order\"\n\n[model]\niterations = 60\n\n\
    [output]\ndir = \"output\"\nsql = []\n\n[paths]\nmodels_dir = \"models\"\nreports_dir = \"reports\"\n";

/// A workspace with `lines` as data/tx.csv, trained with `threads` threads; the model id.
fn train(dir: &Path, lines: &[&Line], threads: &str) -> String {
    write_csv(&dir.join("data/tx.csv"), lines);
    fs::write(dir.join("fidelis.toml"), CONFIG).unwrap();
    let env = [("RAYON_NUM_THREADS", threads), ("POLARS_MAX_THREADS", threads)];
    let out = fidelis_in(dir, &env, &["train", "--config", "fidelis.toml", "-q"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    fs::read_to_string(dir.join("models/latest")).unwrap().trim().to_string()
}

/// Every file of a model directory, with the model id replaced and model.json's creation
/// time and step timings removed (they describe the run, not the model).
fn model_files(dir: &Path, id: &str) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for e in fs::read_dir(dir.join("models").join(id)).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let mut bytes = fs::read(&p).unwrap();
        if name.ends_with(".json") {
            let mut text = String::from_utf8(bytes).unwrap().replace(id, "MODEL_ID");
            if name == "model.json" {
                let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let o = v.as_object_mut().unwrap();
                assert!(o.remove("created_at").is_some() && o.remove("timings_s").is_some());
                // metrics.json holds the id and the timings: its checksum differs with them;
                // every other file's checksum must be the same.
                let sums = o.get_mut("checksums").and_then(|c| c.as_object_mut()).unwrap();
                assert!(sums.remove("metrics.json").is_some() && sums.contains_key("churn.json"));
                text = serde_json::to_string_pretty(&v).unwrap();
            }
            bytes = text.into_bytes();
        }
        files.insert(name, bytes);
    }
    files
}

fn score(dir: &Path, model_dir: &Path, threads: &str) -> Vec<u8> {
    let models = model_dir.join("models").display().to_string();
    let cfg = CONFIG.replace("models_dir = \"models\"", &format!("models_dir = {models:?}"));
    fs::write(dir.join("score.toml"), cfg).unwrap();
    let env = [("RAYON_NUM_THREADS", threads), ("POLARS_MAX_THREADS", threads)];
    let out = fidelis_in(dir, &env, &["score", "--config", "score.toml", "--as-of", "2024-12-01", "-q"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    fs::read(dir.join("output/scores/run=2024-12-01/part-0.parquet")).unwrap()
}

#[test]
fn same_rows_in_any_order_and_thread_count_give_identical_models_and_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = lines_with_ties(tmp.path());
    assert!(lines.len() > 40_000, "{}", lines.len());
    // Grouped by customer (the generator's order) and shuffled.
    let grouped: Vec<&Line> = lines.iter().collect();
    let mut shuffled = grouped.clone();
    let mut rng = Rng::new(3);
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let a: PathBuf = tmp.path().join("a");
    let b: PathBuf = tmp.path().join("b");
    let id_a = train(&a, &grouped, "1");
    let id_b = train(&b, &shuffled, "2");
    assert_eq!(id_a[id_a.len() - 8..], id_b[id_b.len() - 8..], "model ids hash the same data and settings");
    let (fa, fb) = (model_files(&a, &id_a), model_files(&b, &id_b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (name, bytes) in &fa {
        assert!(bytes == &fb[name], "{name} differs between the grouped/1-thread and shuffled/2-thread runs");
    }
    // The same model scores both logs, with 1 and 2 threads: identical bytes.
    let sa = score(&a, &a, "1");
    let sb = score(&b, &a, "2");
    assert!(sa == sb, "scores.parquet differs between the grouped/1-thread and shuffled/2-thread runs");
}
