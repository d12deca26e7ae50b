//! The bad-input corpus and the run cases: what a new user and an unlucky operator do, each
//! with the exit code fidelis must give and the words its output must contain.
//!
//! - `tests/corpus/cases.toml`: one small input file per case (CSV and Parquet faults, and
//!   the cases that already held: BOM, CRLF, quoted commas, NaN amounts, mixed timestamps,
//!   unicode and long ids), run through `validate` (or `train`).
//! - [`run_cases`]: faults of a trained model and its outputs (the committed model fixture):
//!   a `latest` naming no model, a damaged reference, a foreign SQL table, an empty lock,
//!   an unwritable history or reports directory, scoring without the inputs a model needs,
//!   a date inside the training data, a backtest before the data, a training set of one
//!   class, a snapshot nobody is eligible at.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{copy_dir, model_fixture, FIXTURE_MODEL};
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    file: String,
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    transactions: String,
    #[serde(default)]
    config: String,
    exit: i32,
    #[serde(default)]
    words: Vec<String>,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    json: toml::Table,
}

fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("FIDELIS_PG_URL")
        .output()
        .unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

/// JSON value of a TOML expectation.
fn json_of(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

#[test]
fn input_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let cases: Cases = toml::from_str(&fs::read_to_string(dir.join("cases.toml")).unwrap()).unwrap();
    let mut failures = Vec::new();
    for c in &cases.case {
        let ws = tempfile::tempdir().unwrap();
        if dir.join(&c.file).is_file() {
            fs::copy(dir.join(&c.file), ws.path().join(&c.file)).unwrap();
        }
        fs::write(
            ws.path().join("fidelis.toml"),
            format!("[input.transactions]\npath = {:?}\n{}\n\n{}\n", c.file, c.transactions, c.config),
        )
        .unwrap();
        let command = c.command.as_deref().unwrap_or("validate");
        let mut args: Vec<&str> = command.split_whitespace().collect();
        args.extend(["--config", "fidelis.toml", "-q"]);
        let (code, out, err) = run(ws.path(), &args);
        let text = format!("{out}{err}");
        let mut problems = Vec::new();
        if code != Some(c.exit) {
            problems.push(format!("exit {code:?}, expected {}", c.exit));
        }
        problems.extend(c.words.iter().filter(|w| !text.contains(w.as_str())).map(|w| format!("no {w:?}")));
        problems
            .extend(c.absent.iter().filter(|w| text.contains(w.as_str())).map(|w| format!("shows {w:?}")));
        if !c.json.is_empty() {
            let (_, json, _) = run(ws.path(), &["validate", "--json", "--config", "fidelis.toml", "-q"]);
            let first = json.split("\n}\n").next().unwrap_or("").to_string() + "\n}";
            match serde_json::from_str::<serde_json::Value>(&first) {
                Ok(summary) => {
                    for (k, v) in &c.json {
                        if summary[k] != json_of(v) {
                            problems.push(format!("{k} = {}, expected {v}", summary[k]));
                        }
                    }
                }
                Err(e) => problems.push(format!("validate --json: {e}: {json}")),
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{text}", c.name, problems.join("; ")));
        }
    }
    eprintln!("input corpus: {} cases", cases.case.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A workspace with the model fixture (model, data) and `extra` config sections.
fn fixture_ws(extra: &str) -> tempfile::TempDir {
    let ws = tempfile::tempdir().unwrap();
    for sub in ["models", "data"] {
        copy_dir(&model_fixture().join(sub), &ws.path().join(sub));
    }
    fs::write(
        ws.path().join("fidelis.toml"),
        format!(
            "[input.transactions]\npath = \"data/transactions.parquet\"\n\n[model]\niterations = 40\n\n\
             [paths]\nmodels_dir = \"models\"\nreports_dir = \"reports\"\n\n{extra}\n"
        ),
    )
    .unwrap();
    if !extra.contains("[output]") {
        let mut cfg = fs::read_to_string(ws.path().join("fidelis.toml")).unwrap();
        cfg.push_str("[output]\ndir = \"output\"\nsql = [\"sqlite://output/fidelis.sqlite\"]\n");
        fs::write(ws.path().join("fidelis.toml"), cfg).unwrap();
    }
    ws
}

/// One run case: what to set up, what to run, what to expect.
struct RunCase {
    name: &'static str,
    extra: &'static str,
    setup: fn(&Path),
    args: &'static [&'static str],
    exit: i32,
    words: &'static [&'static str],
    absent: &'static [&'static str],
    after: fn(&Path) -> Option<String>,
}

fn nothing(_: &Path) {}
fn fine(_: &Path) -> Option<String> {
    None
}

fn edit_model_json(ws: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = ws.join("models").join(FIXTURE_MODEL).join("model.json");
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// Transactions rewritten as CSV after `keep` (customer, day, amount) decides per row.
fn rewrite_data(ws: &Path, rows: impl Fn(&str, i64, f64) -> bool) {
    use polars::prelude::*;
    let df =
        ParquetReader::new(fs::File::open(ws.join("data/transactions.parquet")).unwrap()).finish().unwrap();
    let ids = df.column("customer_id").unwrap().str().unwrap().clone();
    let ts = df.column("ts").unwrap().cast(&DataType::Int64).unwrap();
    let ts = ts.i64().unwrap().clone();
    let amount = df.column("amount").unwrap().f64().unwrap().clone();
    let mut csv = String::from("customer_id,ts,amount\n");
    for i in 0..df.height() {
        let (Some(c), Some(t), Some(a)) = (ids.get(i), ts.get(i), amount.get(i)) else { continue };
        if rows(c, t / 86_400_000, a) {
            let when = chrono::DateTime::from_timestamp_millis(t).unwrap().naive_utc();
            csv.push_str(&format!("{c},{},{a}\n", when.format("%Y-%m-%d %H:%M:%S")));
        }
    }
    fs::write(ws.join("data/tx.csv"), csv).unwrap();
    let cfg = fs::read_to_string(ws.join("fidelis.toml"))
        .unwrap()
        .replace("data/transactions.parquet", "data/tx.csv");
    fs::write(ws.join("fidelis.toml"), cfg).unwrap();
}

fn partition(ws: &Path) -> std::path::PathBuf {
    ws.join("output/scores/run=2024-12-31/part-0.parquet")
}

const SCORE: &[&str] = &["score", "--config", "fidelis.toml", "--as-of", "2024-12-31", "-q"];
const WEEKLY: &[&str] = &["weekly", "--config", "fidelis.toml", "--as-of", "2024-12-31", "-q"];
const TRAIN: &[&str] = &["train", "--config", "fidelis.toml", "-q"];

fn run_cases() -> Vec<RunCase> {
    vec![
        RunCase {
            name: "latest names a model that is not there",
            extra: "",
            setup: |ws| fs::write(ws.join("models/latest"), "20990101T000000Z-deadbeef\n").unwrap(),
            args: SCORE,
            exit: 2,
            words: &["names model \"20990101T000000Z-deadbeef\"", "which is not in"],
            absent: &["not a fidelis model directory"],
            after: fine,
        },
        RunCase {
            name: "a date inside the training data is scored with a warning",
            extra: "",
            setup: nothing,
            args: &["score", "--config", "fidelis.toml", "--as-of", "2024-06-01", "-q"],
            exit: 0,
            words: &["warning: 2024-06-01 is inside the data", "in-sample"],
            absent: &[],
            after: fine,
        },
        RunCase {
            name: "monitoring inside the training data is worded right",
            extra: "",
            setup: nothing,
            args: &["monitor", "--config", "fidelis.toml", "--as-of", "2024-06-01", "-q"],
            exit: 0,
            words: &["inside the model's training data"],
            absent: &["ends -"],
            after: fine,
        },
        RunCase {
            name: "a model trained with events needs [input.events]",
            extra: "",
            setup: |ws| edit_model_json(ws, |v| v["signals"]["events"] = serde_json::json!(["login"])),
            args: SCORE,
            exit: 2,
            words: &["[input.events]", "trained with product events"],
            absent: &[],
            after: |ws| partition(ws).exists().then(|| "scores were written".into()),
        },
        RunCase {
            name: "a model trained with a customer table needs [input.customers]",
            extra: "",
            setup: |ws| edit_model_json(ws, |v| v["signals"]["mrr"] = true.into()),
            args: SCORE,
            exit: 2,
            words: &["[input.customers]"],
            absent: &[],
            after: fine,
        },
        RunCase {
            name: "a foreign SQLite table is neither altered nor emptied",
            extra: "[output]\ndir = \"output\"\nsql = [\"sqlite://theirs.sqlite\"]",
            setup: |ws| {
                let c = rusqlite::Connection::open(ws.join("theirs.sqlite")).unwrap();
                c.execute_batch(
                    "CREATE TABLE churn_scores (id INTEGER, as_of TEXT, note TEXT); \
                     INSERT INTO churn_scores VALUES (1, '2024-12-31', 'theirs');",
                )
                .unwrap();
            },
            args: SCORE,
            exit: 5,
            words: &["table churn_scores exists and is not a fidelis table", "[output.tables]"],
            absent: &[],
            after: |ws| {
                let c = rusqlite::Connection::open(ws.join("theirs.sqlite")).unwrap();
                let cols: i64 = c
                    .query_row("SELECT COUNT(*) FROM pragma_table_info('churn_scores')", [], |r| r.get(0))
                    .unwrap();
                let n: i64 = c.query_row("SELECT COUNT(*) FROM churn_scores", [], |r| r.get(0)).unwrap();
                (cols != 3 || n != 1).then(|| format!("their table changed: {cols} columns, {n} rows"))
            },
        },
        RunCase {
            name: "an empty lock file (a run killed while taking it) does not block",
            extra: "",
            setup: |ws| {
                fs::create_dir_all(ws.join("output")).unwrap();
                fs::write(ws.join("output/.fidelis.lock"), "").unwrap();
            },
            args: SCORE,
            exit: 0,
            words: &[],
            absent: &[],
            after: |ws| fidelis::lock::is_held(&ws.join("output")).then(|| "the lock was left held".into()),
        },
        RunCase {
            name: "a damaged reference stops weekly before it writes anything",
            extra: "",
            setup: |ws| {
                fs::write(ws.join("models").join(FIXTURE_MODEL).join("reference.json"), "{\"x\":").unwrap()
            },
            args: WEEKLY,
            exit: 2,
            words: &["reference.json"],
            absent: &[],
            after: |ws| partition(ws).exists().then(|| "scores were written".into()),
        },
        RunCase {
            name: "a history that cannot be written after the scores: exit 6, scores kept, said on stdout",
            extra: "",
            setup: |ws| {
                fs::create_dir_all(ws.join("output")).unwrap();
                fs::write(ws.join("output/monitoring"), "not a directory").unwrap();
            },
            args: WEEKLY,
            exit: 6,
            words: &["the scores above are written", "scored"],
            absent: &[],
            after: |ws| (!partition(ws).exists()).then(|| "the scores are gone".into()),
        },
        RunCase {
            name: "a reports directory that cannot be written fails train before latest moves",
            extra: "",
            setup: |ws| {
                let cfg = fs::read_to_string(ws.join("fidelis.toml")).unwrap();
                fs::write(
                    ws.join("fidelis.toml"),
                    cfg.replace("reports_dir = \"reports\"", "reports_dir = \"blocked/r\""),
                )
                .unwrap();
                fs::write(ws.join("blocked"), "a file").unwrap();
            },
            args: TRAIN,
            exit: 5,
            words: &["blocked"],
            absent: &[],
            after: |ws| {
                let latest = fs::read_to_string(ws.join("models/latest")).unwrap();
                (latest.trim() != FIXTURE_MODEL).then(|| format!("latest moved to {latest}"))
            },
        },
        RunCase {
            name: "a backtest from before the data",
            extra: "",
            setup: nothing,
            args: &["backtest", "--config", "fidelis.toml", "--from", "2020-01-01", "-q"],
            exit: 2,
            words: &["no transaction before 2020-01-01", "the data starts 2023-"],
            absent: &["no valid transactions"],
            after: fine,
        },
        RunCase {
            name: "training data of one class",
            extra: "",
            // Every customer buys every week for two years: nobody churns at any snapshot.
            setup: |ws| {
                let mut csv = String::from("customer_id,ts,amount\n");
                let start = chrono::NaiveDate::from_ymd_opt(2023, 1, 2).unwrap();
                for c in 0..60 {
                    for w in 0..104 {
                        csv.push_str(&format!("K{c:02},{},12.5\n", start + chrono::Duration::days(7 * w)));
                    }
                }
                fs::write(ws.join("data/tx.csv"), csv).unwrap();
                let cfg = fs::read_to_string(ws.join("fidelis.toml")).unwrap();
                fs::write(ws.join("fidelis.toml"), cfg.replace("data/transactions.parquet", "data/tx.csv"))
                    .unwrap();
            },
            args: TRAIN,
            exit: 2,
            words: &["every training label is 0", "nothing to learn"],
            absent: &[],
            after: fine,
        },
        RunCase {
            name: "a snapshot nobody is eligible at is skipped with a note",
            extra: "",
            // No transaction at all for 150 days in the middle of the history.
            setup: |ws| rewrite_data(ws, |_, day, _| !(19_600..19_750).contains(&day)),
            args: TRAIN,
            exit: 0,
            words: &["note: snapshot", "skipped: no customer had a transaction"],
            absent: &[],
            after: |ws| {
                let latest = fs::read_to_string(ws.join("models/latest")).unwrap();
                let m =
                    fs::read_to_string(ws.join("models").join(latest.trim()).join("metrics.json")).unwrap();
                (!m.contains("\"notes\"") || m.contains("NaN")).then(|| "metrics.json lacks the note".into())
            },
        },
    ]
}

#[test]
fn run_corpus() {
    let cases = run_cases();
    let mut failures = Vec::new();
    for c in &cases {
        let ws = fixture_ws(c.extra);
        (c.setup)(ws.path());
        let (code, out, err) = run(ws.path(), c.args);
        let text = format!("{out}{err}");
        let mut problems = Vec::new();
        if code != Some(c.exit) {
            problems.push(format!("exit {code:?}, expected {}", c.exit));
        }
        problems.extend(c.words.iter().filter(|w| !text.contains(**w)).map(|w| format!("no {w:?}")));
        problems.extend(c.absent.iter().filter(|w| text.contains(**w)).map(|w| format!("shows {w:?}")));
        problems.extend((c.after)(ws.path()));
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{text}", c.name, problems.join("; ")));
        }
    }
    eprintln!("run corpus: {} cases", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_foreign_postgres_table_is_refused_with_the_reason() {
    let Some(db) = common::PgDb::create("foreign") else { return };
    db.client()
        .batch_execute(
            "CREATE TABLE churn_scores (id INTEGER, as_of DATE, note TEXT); \
             INSERT INTO churn_scores VALUES (1, '2024-12-31', 'theirs');",
        )
        .unwrap();
    let ws = fixture_ws(&format!("[output]\ndir = \"output\"\nsql = [{:?}]", db.url));
    let (code, out, err) = run(ws.path(), SCORE);
    assert_eq!(code, Some(5), "{out}{err}");
    assert!(err.contains("table churn_scores exists and is not a fidelis table"), "{err}");
    assert_eq!(db.count("SELECT COUNT(*) FROM churn_scores"), 1);
    assert_eq!(
        db.count("SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'churn_scores'"),
        3,
        "their table was altered"
    );
}
