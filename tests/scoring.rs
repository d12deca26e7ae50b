//! The weekly batch: `fidelis score` against a model trained once on generated data, its
//! sinks (Parquet, SQLite, PostgreSQL) and what happens when a run fails or is killed.
//!
//! PostgreSQL tests need `FIDELIS_TEST_PG_URL` (`make test` starts a throwaway server via
//! scripts/with_postgres.sh); without it they are skipped, unless `FIDELIS_REQUIRE_PG=1`
//! (CI), where a missing server is a failure.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::NaiveDate;
use common::{fidelis, stderr, stdout};
use fidelis::jobs::score::score_frame;
use fidelis::model::{self, LoadedModel};
use fidelis::schema::CUSTOMER;
use fidelis::sink::{read_parquet, ScoreParquet};
use fidelis::{ingest, Config};
use polars::prelude::*;

/// Generated data (3,000 customers, 2023-01-01 + 730 days) and a model trained on it, built
/// once per test binary.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = fidelis(&["generate", "--customers", "3000", "--seed", "11", "--out", "gen", "-q"], &dir);
        assert!(out.status.success(), "{}", stderr(&out));
        fs::write(dir.join("fidelis.toml"), "[input.transactions]\npath = \"gen/transactions.parquet\"\n")
            .unwrap();
        let out = fidelis(&["train", "--config", "fidelis.toml", "-q"], &dir);
        assert!(out.status.success(), "{}", stderr(&out));
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A fresh directory with the fixture's data and model and a config with `output` settings.
fn workspace(output: &str) -> tempfile::TempDir {
    let ws = tempfile::tempdir().unwrap();
    copy_dir(&fixture().join("gen"), &ws.path().join("gen"));
    copy_dir(&fixture().join("models"), &ws.path().join("models"));
    fs::write(
        ws.path().join("fidelis.toml"),
        format!("[input.transactions]\npath = \"gen/transactions.parquet\"\n\n[output]\n{output}\n"),
    )
    .unwrap();
    ws
}

fn score_cli(ws: &Path, as_of: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fidelis"));
    cmd.args(["score", "--config", "fidelis.toml", "-q", "--as-of", as_of])
        .current_dir(ws)
        .env_remove("RUST_LOG")
        .env_remove("FIDELIS_PG_URL")
        .env_remove("FIDELIS_FAULT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "exit {:?}\nstdout: {}\nstderr: {}", out.status, stdout(out), stderr(out));
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// `customer_id -> (risk_score, churn_probability)` of a scores frame.
fn rows_of(df: &DataFrame) -> BTreeMap<String, (i64, f64)> {
    let ids = df.column(CUSTOMER).unwrap().str().unwrap().clone();
    let s = df.column("risk_score").unwrap().cast(&DataType::Int64).unwrap();
    let p = df.column("churn_probability").unwrap().f64().unwrap().clone();
    ids.iter()
        .zip(s.i64().unwrap().iter())
        .zip(p.iter())
        .map(|((id, s), p)| (id.unwrap().to_string(), (s.unwrap(), p.unwrap())))
        .collect()
}

fn sqlite_rows(db: &Path, table: &str, as_of: &str) -> BTreeMap<String, (i64, f64)> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT customer_id, risk_score, churn_probability FROM {table} WHERE as_of = ?1"))
        .unwrap();
    let rows = stmt
        .query_map([as_of], |r| Ok((r.get::<_, String>(0)?, (r.get::<_, i64>(1)?, r.get::<_, f64>(2)?))))
        .unwrap();
    rows.map(|r| r.unwrap()).collect()
}

fn sqlite_count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

fn load(ws: &Path) -> (Config, LoadedModel, DataFrame) {
    let mut cfg = Config::load(&ws.join("fidelis.toml")).unwrap();
    cfg.input.transactions.path = ws.join("gen/transactions.parquet").display().to_string();
    let model = model::load(&ws.join("models"), None).unwrap();
    let tx = ingest::load_transactions(&cfg.input.transactions, cfg.input.sql_batch_rows).unwrap().frame;
    (cfg, model, tx)
}

#[test]
fn one_customer_scores_exactly_as_within_the_whole_base() {
    let ws = workspace("parquet = false\nsql = []");
    let (cfg, model, tx) = load(ws.path());
    let as_of = date("2024-10-01");
    let all =
        score_frame(&cfg, &model, &tx, &Default::default(), as_of, None, &Default::default()).unwrap().scores;
    assert!(all.height() > 1000, "{}", all.height());
    let ids = all.column(CUSTOMER).unwrap().str().unwrap().clone();
    // A spread of customers: first, last, and some in between.
    let n = all.height();
    for i in [0, n / 7, n / 3, n / 2, n - 1] {
        let id = ids.get(i).unwrap();
        let one_tx = tx.clone().lazy().filter(col(CUSTOMER).eq(lit(id))).collect().unwrap();
        let one = score_frame(&cfg, &model, &one_tx, &Default::default(), as_of, None, &Default::default())
            .unwrap()
            .scores;
        assert_eq!(one.height(), 1);
        for c in [
            "churn_probability",
            "risk_score",
            "risk_level",
            "predicted_clv",
            "expected_loss",
            "contact",
            "top_reasons",
        ] {
            let a = all.column(c).unwrap().get(i).unwrap().into_static();
            let b = one.column(c).unwrap().get(0).unwrap().into_static();
            assert_eq!(a, b, "customer {id}, column {c}");
        }
    }
}

#[test]
fn as_of_in_the_past_scores_only_who_was_eligible_then() {
    let ws = workspace("sql = []");
    let (cfg, model, tx) = load(ws.path());
    let as_of = date("2023-06-01");
    let scored =
        score_frame(&cfg, &model, &tx, &Default::default(), as_of, None, &Default::default()).unwrap().scores;
    let got: HashSet<String> =
        scored.column(CUSTOMER).unwrap().str().unwrap().iter().map(|s| s.unwrap().to_string()).collect();
    // Eligible: a transaction in the 90 days before as_of (and nothing after it counts).
    let from = date("2023-03-03").and_hms_opt(0, 0, 0).unwrap();
    let to = as_of.and_hms_opt(0, 0, 0).unwrap();
    let expected = tx
        .lazy()
        .filter(col("ts").gt_eq(lit(from)).and(col("ts").lt(lit(to))))
        .select([col(CUSTOMER).unique()])
        .collect()
        .unwrap();
    let expected: HashSet<String> =
        expected.column(CUSTOMER).unwrap().str().unwrap().iter().map(|s| s.unwrap().to_string()).collect();
    assert!(!expected.is_empty());
    assert_eq!(got, expected);

    // Before the first transaction nobody is eligible: a clear error, exit code 2.
    let out = score_cli(ws.path(), "2022-06-01", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("no customer is eligible at 2022-06-01"), "{}", stderr(&out));
}

#[test]
fn score_writes_every_column_and_the_top_decile() {
    let ws = workspace("sql = []");
    let out = score_cli(ws.path(), "2024-10-01", &[]);
    ok(&out);
    let text = stdout(&out);
    for needle in ["scored ", "low", "imminent", "top-risk segment:", "expected loss", "written to "] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let parquet = ScoreParquet::new(&ws.path().join("output"));
    let scores = read_parquet(&parquet.scores_file(date("2024-10-01"))).unwrap();
    let top = read_parquet(&parquet.top_risk_file(date("2024-10-01"))).unwrap();
    for c in [
        "as_of",
        "customer_id",
        "churn_probability",
        "risk_score",
        "risk_level",
        "playbook",
        "predicted_clv",
        "expected_loss",
        "contact",
        "risk_rank",
        "in_top_decile",
        "score_change",
        "rfm_r",
        "rfm_f",
        "rfm_m",
        "rfm_segment",
        "top_reasons",
        "model_id",
    ] {
        assert!(scores.column(c).is_ok(), "column {c} missing");
    }
    let n = scores.height();
    assert_eq!(top.height(), (0.1 * n as f64).round() as usize);
    // The top segment is the highest probabilities, ranked 1..k.
    let p = scores.column("churn_probability").unwrap().f64().unwrap().clone();
    let mut sorted: Vec<f64> = p.into_no_null_iter().collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let top_p: Vec<f64> =
        top.column("churn_probability").unwrap().f64().unwrap().into_no_null_iter().collect();
    assert_eq!(top_p, sorted[..top.height()].to_vec());
    let ranks: Vec<u32> = top.column("risk_rank").unwrap().u32().unwrap().into_no_null_iter().collect();
    assert_eq!(ranks, (1..=top.height() as u32).collect::<Vec<_>>());
    // Risk levels follow the scores' bands; reasons are `feature=value (+contribution)`, the
    // largest positive contributions first.
    let reasons = scores.column("top_reasons").unwrap().str().unwrap().clone();
    let model: serde_json::Value = serde_json::from_slice(
        &fs::read(ws.path().join("models").join(latest(ws.path())).join("model.json")).unwrap(),
    )
    .unwrap();
    let features: HashSet<&str> =
        model["features"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    let mut named = 0;
    for r in reasons.iter().flatten().filter(|r| !r.is_empty()) {
        let parts: Vec<(&str, f64)> = r
            .split(", ")
            .map(|part| {
                let (name, rest) = part.split_once('=').unwrap_or_else(|| panic!("{r}"));
                let c = rest
                    .rsplit_once(" (+")
                    .and_then(|(_, c)| c.strip_suffix(')'))
                    .unwrap_or_else(|| panic!("{r}"));
                (name, c.parse::<f64>().unwrap_or_else(|_| panic!("{r}")))
            })
            .collect();
        assert!(parts.len() <= 3 && parts.iter().all(|(f, c)| features.contains(f) && *c >= 0.0), "{r}");
        assert!(parts.windows(2).all(|w| w[0].1 >= w[1].1), "{r}");
        named += 1;
    }
    assert!(named > n / 2, "{named} of {n} customers have reasons");
    // No previous run: score_change is null everywhere.
    assert_eq!(scores.column("score_change").unwrap().null_count(), n);
}

fn latest(ws: &Path) -> String {
    fs::read_to_string(ws.join("models/latest")).unwrap().trim().to_string()
}

#[test]
fn parquet_and_sqlite_hold_the_same_rows_and_reruns_replace() {
    let ws = workspace("sql = [\"sqlite://output/fidelis.sqlite\"]");
    let db = ws.path().join("output/fidelis.sqlite");
    for as_of in ["2024-09-03", "2024-10-01", "2024-10-01"] {
        ok(&score_cli(ws.path(), as_of, &[]));
    }
    let parquet = ScoreParquet::new(&ws.path().join("output"));
    assert_eq!(parquet.run_dates().unwrap(), vec![date("2024-09-03"), date("2024-10-01")]);
    for as_of in ["2024-09-03", "2024-10-01"] {
        let scores = parquet.read_scores(date(as_of)).unwrap();
        let from_parquet = rows_of(&scores);
        assert_eq!(sqlite_rows(&db, "churn_scores", as_of), from_parquet, "{as_of}");
        let top = read_parquet(&parquet.top_risk_file(date(as_of))).unwrap();
        assert_eq!(sqlite_rows(&db, "churn_top_risk", as_of), rows_of(&top), "{as_of}");
    }
    // The rerun of 2024-10-01 replaced its rows: counts are those of one run.
    let n_sep = sqlite_count(&db, "SELECT count(*) FROM churn_scores WHERE as_of = '2024-09-03'");
    let n_oct = sqlite_count(&db, "SELECT count(*) FROM churn_scores WHERE as_of = '2024-10-01'");
    assert_eq!(sqlite_count(&db, "SELECT count(*) FROM churn_scores"), n_sep + n_oct);
    assert_eq!(sqlite_count(&db, "SELECT count(*) FROM scoring_runs"), 2);
    assert_eq!(sqlite_count(&db, "SELECT scored FROM scoring_runs WHERE as_of = '2024-10-01'"), n_oct);
    assert_eq!(sqlite_count(&db, "SELECT count(*) FROM scoring_runs WHERE status = 'ok'"), 2);

    // score_change = this run's score minus the previous run's, for customers in both.
    let sep = rows_of(&parquet.read_scores(date("2024-09-03")).unwrap());
    let oct = parquet.read_scores(date("2024-10-01")).unwrap();
    let ids = oct.column(CUSTOMER).unwrap().str().unwrap().clone();
    let change = oct.column("score_change").unwrap().i32().unwrap().clone();
    let score = oct.column("risk_score").unwrap().cast(&DataType::Int64).unwrap();
    let mut both = 0;
    for ((id, ch), s) in ids.iter().zip(change.iter()).zip(score.i64().unwrap().iter()) {
        match sep.get(id.unwrap()) {
            Some((old, _)) => {
                both += 1;
                assert_eq!(ch.map(i64::from), Some(s.unwrap() - old));
            }
            None => assert_eq!(ch, None),
        }
    }
    assert!(both > 100, "{both}");
}

#[test]
fn a_failing_sql_sink_rolls_back_and_keeps_the_previous_run() {
    let ws = workspace("parquet = false\nsql = [\"sqlite://out.sqlite\"]");
    let db = ws.path().join("out.sqlite");
    ok(&score_cli(ws.path(), "2024-10-01", &[]));
    let before = sqlite_rows(&db, "churn_scores", "2024-10-01");
    let runs_before = sqlite_count(&db, "SELECT count(*) FROM scoring_runs");
    // Inject a constraint violation half-way through the next load of the same date.
    let victim = before.keys().nth(before.len() / 2).unwrap().clone();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "CREATE TRIGGER injected BEFORE INSERT ON churn_scores \
             WHEN NEW.customer_id = '{victim}' OR NEW.as_of = '2024-11-01' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
        ))
        .unwrap();
    let out = score_cli(ws.path(), "2024-10-01", &[]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("sqlite://out.sqlite")
            && err.contains("injected failure")
            && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(sqlite_rows(&db, "churn_scores", "2024-10-01"), before);
    assert_eq!(sqlite_count(&db, "SELECT count(*) FROM scoring_runs"), runs_before);
    assert_eq!(sqlite_count(&db, "SELECT count(*) FROM scoring_runs WHERE status = 'ok'"), runs_before);

    // A failed first run of a date is recorded as such, with no rows.
    let out = score_cli(ws.path(), "2024-11-01", &[]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(sqlite_count(&db, "SELECT count(*) FROM churn_scores WHERE as_of = '2024-11-01'"), 0);
    assert_eq!(
        sqlite_count(
            &db,
            "SELECT count(*) FROM scoring_runs WHERE as_of = '2024-11-01' AND status = 'failed'"
        ),
        1
    );
    // Fixed: the rerun succeeds and replaces the failed record.
    rusqlite::Connection::open(&db).unwrap().execute_batch("DROP TRIGGER injected").unwrap();
    ok(&score_cli(ws.path(), "2024-11-01", &[]));
    assert_eq!(
        sqlite_count(&db, "SELECT count(*) FROM scoring_runs WHERE as_of = '2024-11-01' AND status = 'ok'"),
        1
    );
}

#[test]
fn a_process_killed_mid_write_leaves_the_previous_run_intact() {
    let ws = workspace("sql = [\"sqlite://output/fidelis.sqlite\"]");
    let db = ws.path().join("output/fidelis.sqlite");
    ok(&score_cli(ws.path(), "2024-10-01", &[]));
    let parquet = ScoreParquet::new(&ws.path().join("output"));
    let (scores_file, top_file) =
        (parquet.scores_file(date("2024-10-01")), parquet.top_risk_file(date("2024-10-01")));
    let scores_bytes = fs::read(&scores_file).unwrap();
    let top_bytes = fs::read(&top_file).unwrap();
    let rows = sqlite_rows(&db, "churn_scores", "2024-10-01");

    // Killed after one of the two Parquet files of the rerun was written.
    let out = score_cli(ws.path(), "2024-10-01", &[("FIDELIS_FAULT", "parquet-write")]);
    assert!(!out.status.success() && out.status.code().is_none(), "killed by a signal: {:?}", out.status);
    assert_eq!(fs::read(&scores_file).unwrap(), scores_bytes);
    assert_eq!(fs::read(&top_file).unwrap(), top_bytes);
    // The killed run's lock is stale and its temporary directory is cleaned by the next run.
    // Killed half-way through the SQLite load of the rerun (after the Parquet swap).
    let out = score_cli(ws.path(), "2024-10-01", &[("FIDELIS_FAULT", "sql-write")]);
    assert!(out.status.code().is_none(), "killed by a signal: {:?}", out.status);
    assert_eq!(sqlite_rows(&db, "churn_scores", "2024-10-01"), rows);
    assert_eq!(sqlite_count(&db, "SELECT count(*) FROM scoring_runs"), 1);

    ok(&score_cli(ws.path(), "2024-10-01", &[]));
    let hidden: Vec<String> = fs::read_dir(ws.path().join("output/scores"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(hidden.is_empty(), "left over: {hidden:?}");
    assert!(!fidelis::lock::is_held(&ws.path().join("output")), "the lock is released");
    assert_eq!(sqlite_rows(&db, "churn_scores", "2024-10-01"), rows, "same data, same scores");
}

#[test]
fn a_second_run_on_the_same_output_is_refused() {
    let ws = workspace("sql = []");
    // A live run (this test) holds the lock.
    let lock = fidelis::lock::RunLock::acquire(&ws.path().join("output")).unwrap();
    let out = score_cli(ws.path(), "2024-10-01", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("another fidelis run"), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("pid {}", std::process::id())), "{}", stderr(&out));
    assert!(!ws.path().join("output/scores").exists());
    drop(lock);
    // Fault 9: a run killed in a container whose hostname changes on restart left a lock that
    // every later run read as "held by another host". The lock of a dead process of another
    // host never blocks.
    fs::write(
        ws.path().join("output/.fidelis.lock"),
        "pid=4242\nhost=fidelis-weekly-28911-x7k2p\nstarted=2024-01-01T00:00:00Z\n",
    )
    .unwrap();
    let out = score_cli(ws.path(), "2024-10-01", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_model_whose_features_differ_from_the_data_is_a_clear_error() {
    let ws = workspace("sql = []");
    let path = ws.path().join("models").join(latest(ws.path())).join("model.json");
    let mut info: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    info["features"].as_array_mut().unwrap().retain(|f| f != "trend_ratio");
    fs::write(&path, serde_json::to_vec(&info).unwrap()).unwrap();
    let out = score_cli(ws.path(), "2024-10-01", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("model.json") && err.contains("retrain") && err.contains("trend_ratio"), "{err}");
}

#[test]
fn the_shipped_candidate_is_what_scores_and_its_files_are_required() {
    let ws = workspace("parquet = false\nsql = []");
    let dir = ws.path().join("models").join(latest(ws.path()));
    let (cfg, model, tx) = load(ws.path());
    let metrics: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("metrics.json")).unwrap()).unwrap();
    let chosen = |task: &str| {
        metrics["candidates"][task].as_array().unwrap().iter().find(|c| c["chosen"] == true).unwrap()["mix"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // model.json records the candidates chosen at training; scoring loads exactly those.
    let info: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("model.json")).unwrap()).unwrap();
    assert_eq!(info["churn_model"].as_str().unwrap(), chosen("churn"));
    assert_eq!(info["clv_model"].as_str().unwrap(), chosen("clv"));
    assert!(model.churn.logistic.is_some() && model.clv.poisson.is_some());
    let as_of = date("2024-10-01");
    let run = score_frame(&cfg, &model, &tx, &Default::default(), as_of, None, &Default::default()).unwrap();
    assert!(run.scores.height() > 100);
    // A model that needs the logistic regression but lacks its file is a clear error...
    let mut forced = info.clone();
    forced["churn_model"] = "blend".into();
    fs::write(dir.join("model.json"), serde_json::to_vec(&forced).unwrap()).unwrap();
    fs::remove_file(dir.join("logistic.json")).unwrap();
    let err = model::load(&ws.path().join("models"), None).err().unwrap().to_string();
    assert!(err.contains("logistic.json") && err.contains("gbdt + logistic"), "{err}");
    // Likewise the Poisson CLV GBDT.
    forced["churn_model"] = "gbdt".into();
    forced["clv_model"] = "poisson_bgnbd".into();
    fs::write(dir.join("model.json"), serde_json::to_vec(&forced).unwrap()).unwrap();
    fs::remove_file(dir.join("clv_poisson.json")).unwrap();
    let err = model::load(&ws.path().join("models"), None).err().unwrap().to_string();
    assert!(err.contains("clv_poisson.json") && err.contains("poisson gbdt + bg/nbd"), "{err}");
    // ...and a model from before the candidates (no churn_model, no logistic.json) is the GBDT.
    let mut old = info;
    old.as_object_mut().unwrap().remove("churn_model");
    old.as_object_mut().unwrap().remove("clv_model");
    fs::write(dir.join("model.json"), serde_json::to_vec(&old).unwrap()).unwrap();
    let m = model::load(&ws.path().join("models"), None).unwrap();
    assert!(m.churn.logistic.is_none() && m.clv.poisson.is_none());
    let gbdt = score_frame(&cfg, &m, &tx, &Default::default(), as_of, None, &Default::default()).unwrap();
    assert_eq!(gbdt.scores.height(), run.scores.height());
}

#[test]
fn bad_output_config_names_the_key() {
    for (output, key) in [
        ("sql = [\"mysql://x\"]", "output.sql[0]"),
        ("[output.tables]\nscores = \"churn scores; drop\"", "output.tables.scores"),
        ("pg_schema = \"1x\"", "output.pg_schema"),
        ("top_share = 0", "output.top_share"),
    ] {
        let ws = workspace(output);
        let out = score_cli(ws.path(), "2024-10-01", &[]);
        assert_eq!(out.status.code(), Some(2), "{output}: {}", stderr(&out));
        assert!(stderr(&out).contains(key), "{output}: {}", stderr(&out));
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL, against a real server.

use common::PgDb;

#[test]
fn postgres_parquet_and_sqlite_hold_the_same_rows() {
    let Some(pg) = PgDb::create("same") else { return };
    let ws = workspace("sql = [\"sqlite://output/fidelis.sqlite\"]\npg_schema = \"retention\"");
    let db = ws.path().join("output/fidelis.sqlite");
    for as_of in ["2024-09-03", "2024-10-01", "2024-10-01"] {
        let out = score_cli(ws.path(), as_of, &[("FIDELIS_PG_URL", &pg.url)]);
        ok(&out);
        assert!(stdout(&out).contains("written to postgres://"), "{}", stdout(&out));
    }
    let parquet = ScoreParquet::new(&ws.path().join("output"));
    for as_of in ["2024-09-03", "2024-10-01"] {
        let from_parquet = rows_of(&parquet.read_scores(date(as_of)).unwrap());
        assert_eq!(pg.rows("retention.churn_scores", as_of), from_parquet, "{as_of}");
        assert_eq!(sqlite_rows(&db, "churn_scores", as_of), from_parquet, "{as_of}");
        let top = rows_of(&read_parquet(&parquet.top_risk_file(date(as_of))).unwrap());
        assert_eq!(pg.rows("retention.churn_top_risk", as_of), top, "{as_of}");
    }
    assert_eq!(
        pg.count("SELECT count(*) FROM retention.churn_scores"),
        sqlite_count(&db, "SELECT count(*) FROM churn_scores")
    );
    assert_eq!(pg.count("SELECT count(*) FROM retention.scoring_runs WHERE status = 'ok'"), 2);
    // Same column values, not just keys: a text, a boolean, a nullable integer.
    let (seg, contact, change): (String, bool, Option<i32>) = {
        let r = pg
            .client()
            .query_one(
                "SELECT rfm_segment, contact, score_change FROM retention.churn_scores \
                 WHERE as_of = '2024-10-01' ORDER BY risk_rank LIMIT 1",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (seg2, contact2, change2): (String, bool, Option<i32>) = conn
        .query_row(
            "SELECT rfm_segment, contact, score_change FROM churn_scores WHERE as_of = '2024-10-01' \
             ORDER BY risk_rank LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((seg, contact, change), (seg2, contact2, change2));
}

#[test]
fn postgres_failures_roll_back_and_keep_the_previous_run() {
    let Some(pg) = PgDb::create("fault") else { return };
    let ws = workspace("parquet = false\nsql = []");
    let env = [("FIDELIS_PG_URL", pg.url.as_str())];
    ok(&score_cli(ws.path(), "2024-10-01", &env));
    let before = pg.rows("churn_scores", "2024-10-01");
    assert!(!before.is_empty());

    // A constraint violation injected half-way through the COPY of the rerun.
    let victim = before.keys().nth(before.len() / 2).unwrap().clone();
    pg.client()
        .batch_execute(&format!(
            "CREATE FUNCTION injected() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF NEW.customer_id = '{victim}' THEN RAISE EXCEPTION 'injected failure'; END IF; \
               RETURN NEW; END $$; \
             CREATE TRIGGER injected BEFORE INSERT ON churn_scores FOR EACH ROW EXECUTE FUNCTION injected();"
        ))
        .unwrap();
    let out = score_cli(ws.path(), "2024-10-01", &env);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("injected failure") && err.contains("rolled back"), "{err}");
    assert_eq!(pg.rows("churn_scores", "2024-10-01"), before);
    assert_eq!(pg.count("SELECT count(*) FROM scoring_runs WHERE status = 'ok'"), 1);
    pg.client().batch_execute("DROP TRIGGER injected ON churn_scores").unwrap();

    // The process killed half-way through the COPY: the server rolls the transaction back.
    let out = score_cli(ws.path(), "2024-10-01", &[env[0], ("FIDELIS_FAULT", "sql-write")]);
    assert!(out.status.code().is_none(), "killed by a signal: {:?}", out.status);
    assert_eq!(pg.rows("churn_scores", "2024-10-01"), before);

    // An unreachable server: exit code 5, the URL shown without its password.
    let dead = "postgres://fidelis:secret@127.0.0.1:1/nowhere";
    let out = score_cli(ws.path(), "2024-10-01", &[("FIDELIS_PG_URL", dead)]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("postgres://fidelis:***@127.0.0.1:1/nowhere"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("secret"));

    // And the rerun, fixed, replaces without duplicating.
    ok(&score_cli(ws.path(), "2024-10-01", &env));
    assert_eq!(pg.count("SELECT count(*) FROM churn_scores"), before.len() as i64);
    assert_eq!(pg.count("SELECT count(*) FROM scoring_runs"), 1);
}

#[test]
fn weekly_runs_the_batch_for_the_scheduler() {
    let ws = workspace("sql = [\"sqlite://output/fidelis.sqlite\"]");
    let out = fidelis(&["weekly", "--config", "fidelis.toml", "-q"], ws.path());
    ok(&out);
    // Default as_of: the day after the last transaction.
    let (_, _, tx) = load(ws.path());
    let last = tx.column("ts").unwrap().datetime().unwrap().physical().max().unwrap();
    let as_of =
        chrono::DateTime::from_timestamp_millis(last).unwrap().date_naive() + chrono::Duration::days(1);
    assert!(stdout(&out).contains(&format!("eligible at {as_of}")), "{}", stdout(&out));
    assert!(ws.path().join(format!("output/scores/run={as_of}/part-0.parquet")).is_file());
    let db = ws.path().join("output/fidelis.sqlite");
    let sql = format!("SELECT count(*) FROM scoring_runs WHERE as_of = '{as_of}' AND status = 'ok'");
    assert_eq!(sqlite_count(&db, &sql), 1);
}

#[test]
fn delivery_waiting_on_a_slow_receiver_does_not_hold_the_output_lock() {
    // Fault 4: a run held the output lock for the whole delivery (333 s for a blackholed
    // relay). The scores are written and the lock released before delivery starts; the
    // next run can write while this one waits on the CRM.
    // A server that takes connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let ws =
        workspace("sql = []\n\n[notify]\ntimeout_s = 4.0\nretries = 0\n\n[crm]\nurl_env = \"CRM_SLOW\"\n");
    let mut first = std::process::Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(["score", "--config", "fidelis.toml", "-q", "--as-of", "2024-10-01"])
        .current_dir(ws.path())
        .env("CRM_SLOW", format!("http://127.0.0.1:{port}/crm"))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let output = ws.path().join("output");
    let parquet = ScoreParquet::new(&output);
    let clock = std::time::Instant::now();
    // Wait until the first run has written its scores and let go of the lock.
    while parquet.run_dates().unwrap_or_default().is_empty() || fidelis::lock::is_held(&output) {
        assert!(clock.elapsed().as_secs() < 60, "the first run never got to delivery");
        assert!(first.try_wait().unwrap().is_none(), "the first run ended before delivering");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // A second run on the same output (it delivers nothing, so it waits for no delivery
    // lock) writes and ends while the first still waits on the CRM.
    fs::write(
        ws.path().join("second.toml"),
        "[input.transactions]\npath = \"gen/transactions.parquet\"\n\n[output]\nsql = []\n",
    )
    .unwrap();
    let second = fidelis(&["score", "--config", "second.toml", "-q", "--as-of", "2024-09-03"], ws.path());
    ok(&second);
    assert!(first.try_wait().unwrap().is_none(), "the second run finished while the first still delivers");
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(7), "the CRM timed out: {}", stdout(&out));
    assert_eq!(parquet.run_dates().unwrap(), vec![date("2024-09-03"), date("2024-10-01")]);
}

/// Each row's (group, contact, churn probability, risk level) by customer id.
fn groups_of(scores: &DataFrame) -> BTreeMap<String, (Option<String>, bool, f64, String)> {
    let ids = scores.column(CUSTOMER).unwrap().str().unwrap().clone();
    let g = scores.column("experiment_group").unwrap().str().unwrap().clone();
    let c = scores.column("contact").unwrap().bool().unwrap().clone();
    let p = scores.column("churn_probability").unwrap().f64().unwrap().clone();
    let l = scores.column("risk_level").unwrap().str().unwrap().clone();
    (0..scores.height())
        .map(|i| {
            let row = (
                g.get(i).map(str::to_string),
                c.get(i).unwrap(),
                p.get(i).unwrap(),
                l.get(i).unwrap().to_string(),
            );
            (ids.get(i).unwrap().to_string(), row)
        })
        .collect()
}

/// The control group as a retention team relies on it: by default 10% of the customers the
/// decision contacts are held out (`contact = false`, group `control`), the others treated,
/// nobody else in a group; every band with two or more selected customers has both groups; a
/// customer keeps its group from one weekly run to the next; the run says how many are held
/// out and what that forgoes; `control_share = 0` holds out nobody, and a new experiment name
/// draws new groups.
#[test]
fn the_control_group_is_a_stable_stratified_tenth_of_the_customers_to_contact() {
    let ws = workspace("");
    let model = model::load(&ws.path().join("models"), None).unwrap();
    let mut runs = Vec::new();
    for as_of in ["2024-09-03", "2024-09-10"] {
        let out = score_cli(ws.path(), as_of, &[]);
        ok(&out);
        let parquet = ScoreParquet::new(&ws.path().join("output"));
        runs.push((groups_of(&parquet.read_scores(date(as_of)).unwrap()), stdout(&out)));
    }
    for (rows, text) in &runs {
        let decided: Vec<_> = rows.values().filter(|r| model.decision.contacts(r.2)).collect();
        let control = decided.iter().filter(|r| r.0.as_deref() == Some("control")).count();
        assert!(decided.len() > 200, "{} customers to contact", decided.len());
        let share = control as f64 / decided.len() as f64;
        assert!((0.06..0.14).contains(&share), "{control} of {} held out", decided.len());
        for (g, contact, p, _) in rows.values() {
            match g.as_deref() {
                Some("control") => assert!(!contact && model.decision.contacts(*p)),
                Some("treatment") => assert!(*contact && model.decision.contacts(*p)),
                None => assert!(!contact && !model.decision.contacts(*p)),
                other => panic!("unexpected group {other:?}"),
            }
        }
        let mut per_band: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for r in &decided {
            let e = per_band.entry(r.3.as_str()).or_default();
            if r.0.as_deref() == Some("control") {
                e.0 += 1
            } else {
                e.1 += 1
            }
        }
        for (band, (c, t)) in per_band {
            assert!(c + t < 2 || (c > 0 && t > 0), "band {band}: {c} control, {t} treatment");
        }
        assert!(text.contains(&format!("control group: {control} held out")), "{text}");
        assert!(text.contains("forgoes an expected"), "{text}");
    }
    let (first, second) = (&runs[0].0, &runs[1].0);
    let both: Vec<_> = first
        .keys()
        .filter(|id| first[*id].0.is_some() && second.get(*id).is_some_and(|r| r.0.is_some()))
        .collect();
    let moved = both.iter().filter(|id| first[**id].0 != second[**id].0).count();
    assert!(both.len() > 100, "{} customers selected in both runs", both.len());
    assert!(moved <= 5, "{moved} of {} customers changed group between two weekly runs", both.len());

    // Off: everybody the decision selects is contacted.
    let off = workspace("\n[experiment]\ncontrol_share = 0");
    ok(&score_cli(off.path(), "2024-09-03", &[]));
    let rows =
        groups_of(&ScoreParquet::new(&off.path().join("output")).read_scores(date("2024-09-03")).unwrap());
    assert!(rows.values().all(|r| r.1 == model.decision.contacts(r.2)));
    assert!(rows.values().all(|r| r.0.as_deref() != Some("control")));
    // Another experiment draws other groups.
    let renamed = workspace("\n[experiment]\nname = \"q4-winback\"");
    ok(&score_cli(renamed.path(), "2024-09-03", &[]));
    let rows = groups_of(
        &ScoreParquet::new(&renamed.path().join("output")).read_scores(date("2024-09-03")).unwrap(),
    );
    let changed = first.iter().filter(|(id, r)| r.0.is_some() && rows[*id].0 != r.0).count();
    assert!(changed > 20, "only {changed} customers changed group under a new experiment name");
}

/// When a run's outcome window closes, monitoring measures the effect of contacting: churn of
/// the treated against the control group of that run, with Newcombe's 95% interval, in the
/// printed report and the history (overall, per band and per playbook). The generated data
/// has no campaign in it (contacting changes nothing), so the interval covers zero and no
/// harm alert fires.
#[test]
fn a_matured_run_measures_the_effect_of_contacting_against_its_control_group() {
    let ws = workspace("");
    ok(&score_cli(ws.path(), "2024-09-03", &[]));
    let run =
        groups_of(&ScoreParquet::new(&ws.path().join("output")).read_scores(date("2024-09-03")).unwrap());
    let count = |g: &str| run.values().filter(|r| r.0.as_deref() == Some(g)).count();
    let out = fidelis(&["monitor", "--config", "fidelis.toml", "--as-of", "2024-12-31", "-q"], ws.path());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.starts_with("effect of contacting, run at 2024-09-03"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(&format!("treated (n {})", count("treatment"))), "{line}");
    assert!(line.contains(&format!("control (n {})", count("control"))), "{line}");
    assert!(!text.contains("ALERT contacting"), "{text}");
    let history = read_parquet(&ws.path().join("output/monitoring/metrics_history.parquet")).unwrap();
    let effect = history.lazy().filter(col("kind").eq(lit("effect"))).collect().unwrap();
    let value = |item: &str, metric: &str| {
        let rows = effect
            .clone()
            .lazy()
            .filter(col("item").eq(lit(item)).and(col("metric").eq(lit(metric))))
            .collect()
            .unwrap();
        rows.column("value").unwrap().f64().unwrap().get(0).unwrap()
    };
    let (low, high) = (value("2024-09-03", "reduction_low"), value("2024-09-03", "reduction_high"));
    assert!(low < 0.0 && 0.0 < high, "no campaign happened, yet the interval is [{low}, {high}]");
    assert_eq!(value("2024-09-03", "control") as usize, count("control"));
    let churn_c = value("2024-09-03", "churn_control");
    assert!(
        (value("2024-09-03", "reduction") - (churn_c - value("2024-09-03", "churn_treatment"))).abs() < 1e-12
    );
    let items: Vec<String> =
        effect.column("item").unwrap().str().unwrap().iter().map(|s| s.unwrap().to_string()).collect();
    assert!(items.iter().any(|i| i.starts_with("2024-09-03 band=")), "{items:?}");
    assert!(items.iter().any(|i| i.starts_with("2024-09-03 playbook=")), "{items:?}");
    // The weekly report shows it: a section, the run's row, and what it concludes.
    let out = fidelis(&["weekly", "--config", "fidelis.toml", "--as-of", "2024-12-31", "-q"], ws.path());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let md = fs::read_to_string(ws.path().join("reports/weekly/2024-12-31.md")).unwrap();
    let section = &md[md.find("Is contacting working?").unwrap_or_else(|| panic!("{md}"))..];
    assert!(section.contains("| 2024-09-03 |"), "{section}");
    assert!(section.contains("not distinguishable from zero"), "{section}");
}
