//! The transaction log read by a query on PostgreSQL (`[input.transactions] sql` + `query`)
//! instead of a file, against the real server `make test` starts: the same rows give
//! byte-identical model files and scores as the Parquet file they were loaded from (also with
//! `varchar` ids, `timestamptz` times and `numeric` amounts); the validation summary names the
//! query; the password (from the environment) is in no file and no message; a query error, a
//! missing column and a connection lost half-way are clear errors (exit 2) that write nothing.
//!
//! Needs `FIDELIS_TEST_PG_URL` (see tests/scoring.rs); skipped without it unless
//! `FIDELIS_REQUIRE_PG=1`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_no_secret, stderr, stdout, PgDb};
use polars::prelude::*;

const PASSWORD: &str = "Sql-1nput-Pa55word";
const AS_OF: &str = "2024-10-01";

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fidelis"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("FIDELIS_PG_URL")
        .env("FIDELIS_SQL_PASSWORD", PASSWORD)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    stdout(out)
}

/// `postgres://fidelis:${FIDELIS_SQL_PASSWORD}@HOST:PORT/DB` for the test database (the
/// server trusts loopback, so any password connects: what matters is where it ends up).
fn url_with_password(db: &PgDb, host_port: Option<&str>) -> String {
    let rest = db.url.split_once("://").unwrap().1;
    let (user, after) = rest.split_once('@').unwrap();
    let after = match host_port {
        Some(hp) => format!("{hp}/{}", after.split_once('/').unwrap().1),
        None => after.to_string(),
    };
    format!("postgres://{user}:${{FIDELIS_SQL_PASSWORD}}@{after}")
}

fn host_port(db: &PgDb) -> String {
    let after = db.url.split_once('@').unwrap().1;
    after.split_once('/').unwrap().0.to_string()
}

/// The generated transactions loaded into two tables: `tx` (text, timestamp, double
/// precision) and `tx_typed` (varchar, timestamptz, numeric). Returns the row count.
fn load_tables(db: &PgDb, parquet: &Path) -> usize {
    let df = read_parquet(parquet);
    load_frame(db, "tx", &df);
    // Through text, a double reads as the shortest decimal that gives it back: numeric keeps it.
    db.client()
        .batch_execute(
            "CREATE TABLE tx_typed AS SELECT customer_id::varchar(40) AS customer_id, \
             ts AT TIME ZONE 'UTC' AS ts, amount::text::numeric AS amount FROM tx",
        )
        .unwrap();
    df.height()
}

/// `df` as a new table `name` (text, double precision, bigint, timestamp, date columns), by COPY.
fn load_frame(db: &PgDb, name: &str, df: &DataFrame) {
    let mut columns = Vec::new();
    for c in df.columns() {
        let ty = match c.dtype() {
            DataType::String => "text",
            DataType::Float64 => "double precision",
            DataType::Date => "date",
            DataType::Datetime(_, _) => "timestamp",
            d if d.is_integer() => "bigint",
            d => panic!("no table type for {d}"),
        };
        columns.push(format!("\"{}\" {ty}", c.name()));
    }
    let mut c = db.client();
    c.batch_execute(&format!("CREATE TABLE {name} ({})", columns.join(", "))).unwrap();
    let cast = df
        .clone()
        .lazy()
        .with_columns(
            df.columns()
                .iter()
                .map(|c| {
                    let e = col(c.name().clone());
                    match c.dtype() {
                        DataType::Datetime(_, _) => e.dt().strftime("%Y-%m-%d %H:%M:%S%.3f"),
                        // Shortest round-trip text, as `{}` prints it.
                        DataType::Float64 => e.map(
                            |s| {
                                Ok(s.f64()?
                                    .iter()
                                    .map(|v| v.map(|v| format!("{v}")))
                                    .collect::<StringChunked>()
                                    .into_column())
                            },
                            |_, f| Ok(Field::new(f.name().clone(), DataType::String)),
                        ),
                        _ => e.cast(DataType::String),
                    }
                })
                .collect::<Vec<_>>(),
        )
        .collect()
        .unwrap();
    let mut text = String::new();
    for i in 0..cast.height() {
        let fields: Vec<String> = cast
            .columns()
            .iter()
            .map(|c| c.str().unwrap().get(i).map_or("\\N".to_string(), |v| v.replace('\t', " ")))
            .collect();
        text.push_str(&fields.join("\t"));
        text.push('\n');
    }
    let mut w = c.copy_in(&format!("COPY {name} FROM STDIN")).unwrap();
    w.write_all(text.as_bytes()).unwrap();
    w.finish().unwrap();
}

fn read_parquet(path: &Path) -> DataFrame {
    ParquetReader::new(fs::File::open(path).unwrap()).finish().unwrap()
}

/// A workspace: generated data (3,000 customers), `fidelis.toml` reading `input`.
fn workspace(gen: &Path, input: &str) -> tempfile::TempDir {
    let ws = tempfile::tempdir().unwrap();
    common::copy_dir(gen, &ws.path().join("gen"));
    fs::write(
        ws.path().join("fidelis.toml"),
        format!(
            "[input]\nsql_batch_rows = 2000\n\n[input.transactions]\n{input}\n\n[model]\niterations = 40\n"
        ),
    )
    .unwrap();
    ws
}

fn sql_input(url: &str, query: &str) -> String {
    format!("sql = \"{url}\"\nquery = \"{query}\"")
}

/// Every file of a model directory with what names the run or the source left out: the model
/// id, model.json's creation time, timings, the checksum of metrics.json (which holds the id),
/// the recorded input section, data path and format. What remains is the model.
fn model_files(ws: &Path) -> BTreeMap<String, Vec<u8>> {
    let id = fs::read_to_string(ws.join("models/latest")).unwrap().trim().to_string();
    let mut files = BTreeMap::new();
    for e in fs::read_dir(ws.join("models").join(&id)).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        let mut bytes = fs::read(&p).unwrap();
        if name.ends_with(".json") {
            let mut text = String::from_utf8(bytes).unwrap().replace(&id, "MODEL_ID");
            if name == "model.json" {
                let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let o = v.as_object_mut().unwrap();
                o.remove("created_at");
                o.remove("timings_s");
                o["checksums"].as_object_mut().unwrap().remove("metrics.json");
                o["settings"]["input"].as_object_mut().unwrap().remove("transactions");
                o["data"].as_object_mut().unwrap().remove("path");
                let validation = o["validation"].as_object_mut().unwrap();
                validation.remove("path");
                validation.remove("format");
                text = serde_json::to_string_pretty(&v).unwrap();
            }
            bytes = text.into_bytes();
        }
        files.insert(name, bytes);
    }
    files
}

fn model_json(ws: &Path) -> serde_json::Value {
    let id = fs::read_to_string(ws.join("models/latest")).unwrap().trim().to_string();
    serde_json::from_str(&fs::read_to_string(ws.join("models").join(id).join("model.json")).unwrap()).unwrap()
}

fn scores(ws: &Path) -> Vec<u8> {
    fs::read(ws.join(format!("output/scores/run={AS_OF}/part-0.parquet"))).unwrap()
}

/// Forwards one connection at a time to `to`, cutting both sides once `limit` bytes have come
/// back from the server: a connection lost half-way through the result.
fn cutting_proxy(to: String, limit: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(&to) else { return };
            let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = c_read.read(&mut buf) {
                    if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            let (mut s_read, mut c_write) = (server, client);
            let mut sent = 0;
            let mut buf = [0u8; 8192];
            while let Ok(n) = s_read.read(&mut buf) {
                let n = n.min(limit - sent);
                if n == 0 || c_write.write_all(&buf[..n]).is_err() {
                    break;
                }
                sent += n;
                if sent >= limit {
                    break;
                }
            }
            let _ = c_write.shutdown(Shutdown::Both);
            let _ = s_read.shutdown(Shutdown::Both);
        }
    });
    addr
}

#[test]
fn a_postgresql_query_gives_the_models_and_scores_of_the_file() {
    let Some(db) = PgDb::create("sqlin") else { return };
    let base = tempfile::tempdir().unwrap();
    ok(&run(base.path(), &["generate", "--customers", "3000", "--seed", "11", "--out", "gen", "-q"]));
    let gen = base.path().join("gen");
    let rows = load_tables(&db, &gen.join("transactions.parquet"));
    let url = url_with_password(&db, None);

    let file = workspace(&gen, "path = \"gen/transactions.parquet\"");
    let sql = workspace(&gen, &sql_input(&url, "SELECT customer_id, ts, amount FROM tx"));
    let typed =
        workspace(&gen, &sql_input(&url, "SELECT customer_id, ts, amount FROM tx_typed ORDER BY random()"));
    let mut printed = String::new();

    // The validation summary names the query (and the server, without its password).
    let out = ok(&run(sql.path(), &["validate", "--config", "fidelis.toml"]));
    assert!(out.contains("query \"SELECT customer_id, ts, amount FROM tx\""), "{out}");
    assert!(
        out.contains("(postgresql)") && out.contains(&format!("fidelis:***@{}", host_port(&db))),
        "{out}"
    );
    let read = out.lines().find_map(|l| l.trim().strip_prefix("rows read")).unwrap();
    assert_eq!(read.chars().filter(char::is_ascii_digit).collect::<String>(), rows.to_string(), "{out}");
    printed.push_str(&out);

    for ws in [&file, &sql, &typed] {
        printed.push_str(&ok(&run(ws.path(), &["train", "--config", "fidelis.toml", "-q"])));
    }
    let reference = model_files(file.path());
    for (what, ws) in [
        ("tx (text, timestamp, double precision)", &sql),
        ("tx_typed (varchar, timestamptz, numeric)", &typed),
    ] {
        let files = model_files(ws.path());
        assert_eq!(files.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>());
        for (name, bytes) in &reference {
            assert!(bytes == &files[name], "{name} differs between the Parquet file and the query on {what}");
        }
        // The fingerprint covers the rows read, whatever their source.
        assert_eq!(model_json(ws.path())["data"]["xxh3"], model_json(file.path())["data"]["xxh3"]);
        assert_eq!(model_json(ws.path())["data"]["rows"], rows);
        let recorded = model_json(ws.path())["data"]["path"].as_str().unwrap().to_string();
        assert!(recorded.contains("query \"SELECT customer_id") && recorded.contains(":***@"), "{recorded}");
    }

    // The same model scores the rows read both ways: identical bytes.
    common::copy_dir(&file.path().join("models"), &sql.path().join("models"));
    for ws in [&file, &sql] {
        printed
            .push_str(&ok(&run(ws.path(), &["score", "--config", "fidelis.toml", "--as-of", AS_OF, "-q"])));
    }
    assert!(scores(file.path()) == scores(sql.path()), "the scores differ between the file and the query");

    // The password came from the environment: it is in nothing written or printed.
    assert!(!printed.contains(PASSWORD));
    assert_no_secret(sql.path(), &[PASSWORD]);
    assert_no_secret(typed.path(), &[PASSWORD]);
}

/// Exit 2, the message names the query and says `what`, and the workspace holds no model.
fn fails_writing_nothing(ws: &Path, args: &[&str], what: &[&str]) {
    let out = run(ws, args);
    let err = stderr(&out);
    eprintln!("{err}");
    assert_eq!(out.status.code(), Some(2), "{}{err}", stdout(&out));
    for w in what {
        assert!(err.contains(w), "expected {w:?} in: {err}");
    }
    assert!(!err.contains(PASSWORD), "{err}");
    let models: Vec<PathBuf> =
        fs::read_dir(ws.join("models")).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    assert!(models.is_empty(), "a failed read left {models:?}");
}

#[test]
fn a_bad_query_a_missing_column_and_a_lost_connection_are_clear_errors_that_write_nothing() {
    let Some(db) = PgDb::create("sqlbad") else { return };
    let base = tempfile::tempdir().unwrap();
    ok(&run(base.path(), &["generate", "--customers", "3000", "--seed", "11", "--out", "gen", "-q"]));
    let gen = base.path().join("gen");
    load_tables(&db, &gen.join("transactions.parquet"));
    let url = url_with_password(&db, None);
    let train = ["train", "--config", "fidelis.toml", "-q"];

    let ws = workspace(&gen, &sql_input(&url, "SELECT customer_id, ts, amount FROM no_such_table"));
    fails_writing_nothing(
        ws.path(),
        &train,
        &["query \"SELECT", "the query failed", "no_such_table", "does not exist"],
    );

    let ws = workspace(&gen, &sql_input(&url, "SELECT customer_id, ts AS amount_at FROM tx"));
    fails_writing_nothing(
        ws.path(),
        &train,
        &["column `ts` not found", "[input.transactions].timestamp", "amount_at"],
    );

    let ws =
        workspace(&gen, &sql_input(&url, "SELECT customer_id, ts, amount::numeric::money AS amount FROM tx"));
    fails_writing_nothing(ws.path(), &train, &["column `amount` has type money", "cast it in the query"]);

    // The server's answers cut after 200 kB (the table is several MB, read 2,000 rows at a time).
    let proxy = cutting_proxy(host_port(&db), 200_000);
    let cut = url_with_password(&db, Some(&proxy));
    let ws = workspace(&gen, &sql_input(&cut, "SELECT customer_id, ts, amount FROM tx"));
    fails_writing_nothing(ws.path(), &train, &["the connection to the server was lost after", "rows"]);

    // A scoring run that loses the connection leaves the previous partition as it was.
    let ws = workspace(&gen, "path = \"gen/transactions.parquet\"");
    ok(&run(ws.path(), &train));
    ok(&run(ws.path(), &["score", "--config", "fidelis.toml", "--as-of", AS_OF, "-q"]));
    let before = scores(ws.path());
    let cfg = fs::read_to_string(ws.path().join("fidelis.toml")).unwrap().replace(
        "path = \"gen/transactions.parquet\"",
        &sql_input(&cut, "SELECT customer_id, ts, amount FROM tx"),
    );
    fs::write(ws.path().join("fidelis.toml"), cfg).unwrap();
    let out = run(ws.path(), &["score", "--config", "fidelis.toml", "--as-of", AS_OF, "-q"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("connection to the server was lost"), "{}", stderr(&out));
    assert!(scores(ws.path()) == before, "a failed read changed the scores");
}

#[test]
fn events_and_the_customer_table_read_by_queries_give_the_models_of_their_files() {
    let Some(db) = PgDb::create("sqlsig") else { return };
    let base = tempfile::tempdir().unwrap();
    ok(&run(
        base.path(),
        &["generate", "--kind", "saas", "--customers", "800", "--seed", "3", "--out", "gen", "-q"],
    ));
    let gen = base.path().join("gen");
    load_frame(&db, "events", &read_parquet(&gen.join("events.parquet")));
    load_frame(&db, "accounts", &read_parquet(&gen.join("customers.parquet")));
    let url = url_with_password(&db, None);
    let tx = "path = \"gen/transactions.parquet\"\n\n[snapshots]\neligibility_days = 31";
    let files = workspace(&gen, &format!(
        "{tx}\n\n[input.events]\npath = \"gen/events.parquet\"\n\n[input.customers]\npath = \"gen/customers.parquet\""
    ));
    let queries = workspace(
        &gen,
        &format!(
            "{tx}\n\n[input.events]\n{}\n\n[input.customers]\n{}",
            sql_input(&url, "SELECT * FROM events"),
            sql_input(&url, "SELECT * FROM accounts")
        ),
    );
    let mut printed = String::new();
    for ws in [&files, &queries] {
        printed.push_str(&ok(&run(ws.path(), &["train", "--config", "fidelis.toml", "-q"])));
    }
    let (a, b) = (model_files(files.path()), model_files(queries.path()));
    assert!(a["model.json"].windows(6).any(|w| w == b"nps_90"), "the model learnt from the events");
    for (name, bytes) in &a {
        if name != "model.json" {
            assert!(bytes == &b[name], "{name} differs between the files and the queries");
        }
    }
    // model.json records where the signals came from; the rest of it is the same.
    let strip = |ws: &Path| {
        let mut v: serde_json::Value = serde_json::from_slice(&model_files(ws)["model.json"]).unwrap();
        let input = v["settings"]["input"].as_object_mut().unwrap();
        assert!(input.remove("events").is_some() && input.remove("customers").is_some());
        v
    };
    assert_eq!(strip(files.path()), strip(queries.path()));
    assert!(!printed.contains(PASSWORD));
    assert_no_secret(queries.path(), &[PASSWORD]);
}
