//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod servers;

/// The real datasets: `$FIDELIS_DATASETS`, else `../shared/datasets`, else `data/external`
/// (filled by `make datasets`). Also exported as FIDELIS_DATASETS for the configs.
pub fn datasets_dir() -> PathBuf {
    let dir = std::env::var("FIDELIS_DATASETS")
        .ok()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| ["../shared/datasets", "data/external"].iter().map(PathBuf::from).find(|p| p.join("cdnow").is_dir()))
        .expect("real datasets not found: set FIDELIS_DATASETS, or run `make datasets` to fetch them into data/external");
    assert!(dir.join("cdnow/CDNOW_master.txt").is_file(), "{} has no cdnow/CDNOW_master.txt", dir.display());
    std::env::set_var("FIDELIS_DATASETS", &dir);
    dir
}

pub fn fidelis(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("run fidelis")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A database of its own for one test, dropped at the end.
pub struct PgDb {
    pub admin: String,
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub fn create(tag: &str) -> Option<PgDb> {
        let admin = match std::env::var("FIDELIS_TEST_PG_URL") {
            Ok(u) if !u.is_empty() => u,
            _ => {
                assert!(
                    std::env::var("FIDELIS_REQUIRE_PG").map_or(true, |v| v != "1"),
                    "FIDELIS_REQUIRE_PG=1 but FIDELIS_TEST_PG_URL is not set"
                );
                eprintln!("skipped: FIDELIS_TEST_PG_URL is not set (make test starts a server)");
                return None;
            }
        };
        let name = format!("fidelis_test_{tag}_{}", std::process::id());
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let (base, _) = admin.rsplit_once('/').unwrap();
        let url = format!("{base}/{name}");
        Some(PgDb { admin, name, url })
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }

    pub fn rows(&self, table: &str, as_of: &str) -> BTreeMap<String, (i64, f64)> {
        let as_of = chrono::NaiveDate::parse_from_str(as_of, "%Y-%m-%d").unwrap();
        self.client()
            .query(
                &format!("SELECT customer_id, risk_score, churn_probability FROM {table} WHERE as_of = $1"),
                &[&as_of],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), (i64::from(r.get::<_, i32>(1)), r.get::<_, f64>(2))))
            .collect()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).unwrap().get(0)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.admin, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// Copy a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// The committed model fixture (a small trained model, its data and config).
pub fn model_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model_v1")
}

/// The id of the fixture's model.
pub const FIXTURE_MODEL: &str = "20261129T143704Z-3c140140";

/// Every file under `dir` holding `needle` (as bytes).
pub fn files_containing(dir: &Path, needle: &str, found: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_containing(&p, needle, found);
        } else if std::fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(p.display().to_string());
        }
    }
}

/// No file under `dir` holds any of `secrets`.
pub fn assert_no_secret(dir: &Path, secrets: &[&str]) {
    for s in secrets {
        let mut found = Vec::new();
        files_containing(dir, s, &mut found);
        assert!(found.is_empty(), "{s:?} is written in {found:?}");
    }
}
