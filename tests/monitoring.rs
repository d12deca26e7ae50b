//! Monitoring: a generated base whose behaviour changes on 2024-05-01 (half of the customers
//! buy at a tenth of their rate from then on), a model trained on the data before
//! 2024-01-01, and the weekly job replayed every 14 days by `fidelis backtest`.

mod common;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{Duration, NaiveDate};
use common::{fidelis, stderr, stdout};
use fidelis::jobs::backtest::{self, BacktestOptions, BacktestOutcome};
use fidelis::monitor::{self, Status};
use fidelis::progress::Progress;
use fidelis::schema::CUSTOMER;
use fidelis::sink::{read_parquet, ScoreParquet};
use fidelis::Config;
use polars::prelude::*;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

const CHANGE: &str = "2024-05-01";
const FROM: &str = "2024-01-01";

struct Fixture {
    dir: PathBuf,
    backtest: BacktestOutcome,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = fidelis(
            &[
                "generate",
                "--customers",
                "20000",
                "--seed",
                "42",
                "--out",
                "gen",
                "--shift-date",
                CHANGE,
                "--shift-share",
                "0.5",
                "--shift-rate",
                "0.1",
                "-q",
            ],
            &dir,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        fs::write(
            dir.join("fidelis.toml"),
            format!(
                "[input.transactions]\npath = \"{0}/gen/transactions.parquet\"\n\n[output]\ndir = \"{0}/output\"\n\
                 sql = [\"sqlite://{0}/output/fidelis.sqlite\"]\n\n[paths]\nmodels_dir = \"{0}/models\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let cfg = Config::load(&dir.join("fidelis.toml")).unwrap();
        let opts = BacktestOptions { from: date(FROM), to: None, every_days: 14, out: None };
        let backtest = backtest::run(&cfg, &opts, &Progress::hidden()).unwrap();
        Fixture { dir, backtest }
    })
}

#[test]
fn a_behaviour_change_raises_drift_and_auc_alerts_after_it_and_not_before() {
    let f = fixture();
    let change = date(CHANGE);
    let reports = &f.backtest.reports;
    assert!(reports.len() >= 18, "{} monitoring passes", reports.len());
    // Drift: no item alerts before the change; some do after it.
    for r in reports.iter().filter(|r| r.as_of < change) {
        let alerts: Vec<_> = r.drift.iter().filter(|d| d.status == Status::Alert).collect();
        assert!(alerts.is_empty(), "drift alert at {} before the change: {alerts:?}", r.as_of);
    }
    assert!(
        reports
            .iter()
            .filter(|r| r.as_of > change)
            .any(|r| r.drift.iter().any(|d| d.status == Status::Alert)),
        "no drift alert after the change"
    );
    // Realized AUC: runs whose outcome window closed before the change are within
    // auc_drop_alert of the holdout AUC; runs scored after the change are not.
    let last = reports.last().unwrap();
    let floor = last.holdout_auc - 0.05;
    let horizon = Duration::days(90);
    let before: Vec<_> = last.auc_history.iter().filter(|(d, _)| *d + horizon <= change).collect();
    let after: Vec<_> = last.auc_history.iter().filter(|(d, _)| *d >= change).collect();
    assert!(before.len() >= 3 && after.len() >= 5, "{:?}", last.auc_history);
    assert!(before.iter().all(|(_, a)| *a >= floor), "before: {before:?}, floor {floor}");
    assert!(after.iter().all(|(_, a)| *a < floor), "after: {after:?}, floor {floor}");
    // The alert lines say so, at monitoring dates after the change only.
    let auc_alert = |r: &monitor::MonitorReport| r.alerts.iter().any(|a| a.contains("realized AUC"));
    assert!(reports.iter().filter(|r| r.as_of <= change).all(|r| !auc_alert(r)));
    assert!(reports.iter().any(auc_alert));
    // What the backtest prints lists every alert line it counts, under its date.
    let text = f.backtest.to_string();
    let total: usize = reports.iter().map(|r| r.alerts.len()).sum();
    assert!(text.contains(&format!("{total} alert line(s)")), "{text}");
    for r in reports {
        for a in &r.alerts {
            assert!(text.contains(&format!("{}: {a}", r.as_of)), "{a} missing from\n{text}");
        }
    }
    // Every run is realized exactly once in the history.
    let history = read_parquet(&f.backtest.out_dir.join("monitoring/metrics_history.parquet")).unwrap();
    let realized = history
        .lazy()
        .filter(col("kind").eq(lit("realized")).and(col("metric").eq(lit("roc_auc"))))
        .collect()
        .unwrap();
    let items: Vec<&str> = realized.column("item").unwrap().str().unwrap().iter().flatten().collect();
    let unique: HashSet<&str> = items.iter().copied().collect();
    assert_eq!(items.len(), unique.len(), "a run realized twice: {items:?}");
    assert_eq!(items.len(), last.auc_history.len());
    // And the retrain advice follows.
    assert!(last.retrain && last.advice.starts_with("retrain: yes"), "{}", last.advice);
}

/// The replayed model is the one deployed by default: refit on every label matured before
/// the first replayed date (and none after it), and its realized AUC is reported per run.
#[test]
fn the_backtest_replays_the_refit_model_and_reports_its_realized_auc() {
    let f = fixture();
    let d = &f.backtest.deployed;
    assert!(d.refit, "{d:?}");
    let (first, last) = d.snapshots.unwrap();
    assert!(first < last && d.labels_until.unwrap() <= date(FROM), "{d:?}");
    let m = fidelis::model::load(&f.backtest.out_dir.join("models"), None).unwrap().metrics().unwrap();
    assert_eq!(&m.deployed, d);
    // Every row of the training set: fit, validation and holdout.
    assert_eq!(d.rows, m.n_fit + m.n_validation + m.n_holdout);
    assert!(m.deployed.description.starts_with("refit on every matured label"), "{}", m.deployed.description);
    let auc = &f.backtest.reports.last().unwrap().auc_history;
    assert!(auc.len() >= 10 && auc.iter().all(|(_, a)| (0.5..=1.0).contains(a)), "{auc:?}");
    let text = f.backtest.to_string();
    assert!(
        text.contains(&format!(
            "deployed refit on every label matured by then, up to {}",
            d.labels_until.unwrap()
        )),
        "{text}"
    );
}

/// Mann-Whitney AUC by counting pairs (ties count one half).
fn auc_by_pairs(y: &[bool], p: &[f64]) -> f64 {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (i, &yi) in y.iter().enumerate() {
        if !yi {
            continue;
        }
        for (j, &yj) in y.iter().enumerate() {
            if yj {
                continue;
            }
            pairs += 1.0;
            wins += if p[i] > p[j] {
                1.0
            } else if p[i] == p[j] {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / pairs
}

#[test]
fn realized_auc_equals_the_auc_of_the_stored_scores_and_outcomes() {
    let f = fixture();
    let run = date("2024-01-15");
    let scores = ScoreParquet::new(&f.backtest.out_dir).read_scores(run).unwrap();
    // Outcomes straight from the generated file: active = any transaction in [run, run + 90).
    let tx = read_parquet(&f.dir.join("gen/transactions.parquet")).unwrap();
    let (lo, hi) =
        (run.and_hms_opt(0, 0, 0).unwrap(), (run + Duration::days(90)).and_hms_opt(0, 0, 0).unwrap());
    let ids = tx.column(CUSTOMER).unwrap().str().unwrap();
    let ts = tx.column("ts").unwrap().datetime().unwrap().physical().clone();
    let active: HashSet<&str> = ids
        .iter()
        .zip(ts.iter())
        .filter_map(|(id, t)| {
            let t = chrono::DateTime::from_timestamp_millis(t?)?.naive_utc();
            (t >= lo && t < hi).then_some(id?)
        })
        .collect();
    let churned: Vec<bool> = scores
        .column(CUSTOMER)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .map(|id| !active.contains(id))
        .collect();
    let p: Vec<f64> =
        scores.column("churn_probability").unwrap().f64().unwrap().into_no_null_iter().collect();
    let by_hand = auc_by_pairs(&churned, &p);

    let history = read_parquet(&f.backtest.out_dir.join("monitoring/metrics_history.parquet")).unwrap();
    let row = history
        .lazy()
        .filter(
            col("kind")
                .eq(lit("realized"))
                .and(col("metric").eq(lit("roc_auc")))
                .and(col("item").eq(lit(run.to_string()))),
        )
        .collect()
        .unwrap();
    assert_eq!(row.height(), 1);
    let stored = row.column("value").unwrap().f64().unwrap().get(0).unwrap();
    assert!((stored - by_hand).abs() < 1e-9, "stored {stored} vs by hand {by_hand}");
    // Computed at the first monitoring date where its window had closed.
    let at = row.column("as_of").unwrap().cast(&DataType::Int32).unwrap();
    let at = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
        + Duration::days(at.i32().unwrap().get(0).unwrap() as i64);
    assert!(at >= run + Duration::days(90) && at < run + Duration::days(90 + 14), "realized at {at}");
}

fn history_rows(path: &Path, as_of: &str) -> (usize, usize) {
    let h = read_parquet(path).unwrap();
    let day = (date(as_of) - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32;
    let of_day = h.clone().lazy().filter(col("as_of").cast(DataType::Int32).eq(lit(day))).collect().unwrap();
    (h.height(), of_day.height())
}

fn sqlite_rows(path: &Path, as_of: &str) -> (i64, i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let all: i64 = conn.query_row("SELECT COUNT(*) FROM model_monitoring", [], |r| r.get(0)).unwrap();
    let day: i64 = conn
        .query_row("SELECT COUNT(*) FROM model_monitoring WHERE as_of = ?1", [as_of], |r| r.get(0))
        .unwrap();
    (all, day)
}

/// A live workspace on the fixture's log: output under `<ws>/output` with the extra
/// `[output]` lines `output` (`{out}` stands for that directory), models from `models`.
fn workspace(output: &str, models: &Path) -> tempfile::TempDir {
    let ws = tempfile::tempdir().unwrap();
    let output = output.replace("{out}", &ws.path().join("output").display().to_string());
    fs::write(
        ws.path().join("fidelis.toml"),
        format!(
            "[input.transactions]\npath = \"{}\"\n\n[output]\ndir = \"{}\"\n{output}\n\n[paths]\nmodels_dir = \"{}\"\n",
            fixture().dir.join("gen/transactions.parquet").display(),
            ws.path().join("output").display(),
            models.display()
        ),
    )
    .unwrap();
    ws
}

#[test]
fn monitor_exit_codes_and_reruns_do_not_duplicate_history() {
    let f = fixture();
    // The live output: the backtest's model, weekly runs after the change.
    let ws = workspace("sql = [\"sqlite://{out}/fidelis.sqlite\"]", &f.backtest.out_dir.join("models"));
    let out_dir = ws.path().join("output");
    let run = |args: &[&str]| fidelis(args, ws.path());
    let weekly =
        run(&["weekly", "--config", "fidelis.toml", "--as-of", "2024-01-08", "--fail-on-alert", "-q"]);
    assert_eq!(weekly.status.code(), Some(0), "{}{}", stdout(&weekly), stderr(&weekly));
    assert!(stdout(&weekly).contains("retrain: no"), "{}", stdout(&weekly));

    let as_of = "2024-07-01";
    let weekly = run(&["weekly", "--config", "fidelis.toml", "--as-of", as_of, "--fail-on-alert", "-q"]);
    assert_eq!(weekly.status.code(), Some(3), "{}{}", stdout(&weekly), stderr(&weekly));
    let text = stdout(&weekly);
    assert!(text.lines().any(|l| l.starts_with("ALERT drift")), "{text}");
    assert!(text.contains("retrain: yes"), "{text}");
    // Without --fail-on-alert the alert is printed but the exit code is 0.
    let monitor = run(&["monitor", "--config", "fidelis.toml", "--as-of", as_of, "-q"]);
    assert_eq!(monitor.status.code(), Some(0), "{}", stderr(&monitor));
    assert!(stdout(&monitor).contains("ALERT drift"));

    let history = out_dir.join("monitoring/metrics_history.parquet");
    let sqlite = out_dir.join("fidelis.sqlite");
    let (parquet_before, sql_before) = (history_rows(&history, as_of), sqlite_rows(&sqlite, as_of));
    assert!(parquet_before.1 > 0 && sql_before.1 as usize == parquet_before.1);
    let again = run(&["monitor", "--config", "fidelis.toml", "--as-of", as_of, "--fail-on-alert", "-q"]);
    assert_eq!(again.status.code(), Some(3));
    assert_eq!(history_rows(&history, as_of), parquet_before, "rerun changed the Parquet history");
    assert_eq!(sqlite_rows(&sqlite, as_of), sql_before, "rerun changed the SQL history");
    // Both weekly dates are in the history.
    assert_eq!(parquet_before.0, sql_before.0 as usize);
}

#[test]
fn a_model_without_a_reference_is_a_clear_error() {
    let f = fixture();
    let models = tempfile::tempdir().unwrap();
    let src = f.backtest.out_dir.join("models");
    let id = fs::read_to_string(src.join("latest")).unwrap();
    let dst = models.path().join(id.trim());
    fs::create_dir_all(&dst).unwrap();
    for e in fs::read_dir(src.join(id.trim())).unwrap() {
        let e = e.unwrap();
        if e.file_name() != fidelis::model::file::REFERENCE {
            fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
    fs::write(models.path().join("latest"), id.trim()).unwrap();
    let ws = workspace("", models.path());
    let out = fidelis(&["monitor", "--config", "fidelis.toml", "-q"], ws.path());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("reference.json") && stderr(&out).contains("retrain"), "{}", stderr(&out));
}

#[test]
fn postgres_holds_the_same_monitoring_rows_and_reruns_replace_them() {
    let Some(db) = common::PgDb::create("monitoring") else { return };
    let f = fixture();
    let ws = workspace("sql = []\npg_schema = \"retention\"", &f.backtest.out_dir.join("models"));
    let out_dir = ws.path().join("output");
    let as_of = "2024-07-01";
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fidelis"))
            .args(["weekly", "--config", "fidelis.toml", "--as-of", as_of, "-q"])
            .current_dir(ws.path())
            .env("FIDELIS_PG_URL", &db.url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (parquet_all, parquet_day) = history_rows(&out_dir.join("monitoring/metrics_history.parquet"), as_of);
    let pg_day =
        db.count(&format!("SELECT COUNT(*) FROM retention.model_monitoring WHERE as_of = DATE '{as_of}'"));
    let pg_all = db.count("SELECT COUNT(*) FROM retention.model_monitoring");
    assert_eq!((pg_all as usize, pg_day as usize), (parquet_all, parquet_day));
    let alerts = db.count(&format!(
        "SELECT COUNT(*) FROM retention.model_monitoring WHERE as_of = DATE '{as_of}' AND status = 'alert'"
    ));
    assert!(alerts > 0, "the drift alerts of {as_of} are in PostgreSQL");
}
