//! Reading the transaction log: the 1,000,000-customer generated Parquet file against the
//! same rows in a PostgreSQL table read by a query (`[input.transactions] sql` + `query`), each
//! through `fidelis validate` (read, map, validate: what every command does first), as a child
//! process: wall seconds and peak RSS, the file's rows in time order too (customers scattered
//! over it, as most logs are written), the query at three `[input] sql_batch_rows` (the memory
//! grows with the batch, not with the table). Prints a table and writes
//! reports/bench/input.json.
//!
//! Needs a PostgreSQL server: `make bench` runs it under scripts/with_postgres.sh (a throwaway
//! local server); without `FIDELIS_TEST_PG_URL` it says so and stops. `FIDELIS_BENCH_CUSTOMERS`
//! changes the size; under `cargo test` it is a smoke run on 20,000 customers.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::{median, run};
use polars::prelude::*;

/// A fresh database `name` on the server of `admin` (dropped first if it exists); its URL.
fn fresh_db(admin: &str, name: &str) -> String {
    let mut c = postgres::Client::connect(admin, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

/// The Parquet file's rows into a new table `tx`, through COPY (CSV as polars writes it).
fn load(url: &str, file: &Path) -> f64 {
    let t = Instant::now();
    let mut df = ParquetReader::new(std::fs::File::open(file).unwrap()).finish().unwrap();
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    c.batch_execute("CREATE TABLE tx (customer_id text, ts timestamp, amount double precision)").unwrap();
    let mut w = c.copy_in("COPY tx FROM STDIN (FORMAT csv, HEADER true)").unwrap();
    CsvWriter::new(&mut w).include_header(true).finish(&mut df).unwrap();
    w.finish().unwrap();
    c.batch_execute("ANALYZE tx").unwrap();
    t.elapsed().as_secs_f64()
}

/// This bench binary run again with `args` (see `main`), its standard output. Work that holds
/// the data in memory runs there: a child's peak RSS starts at its parent's (Linux carries the
/// high-water mark over fork and exec), so the bench itself stays small.
fn in_child(args: &[&str]) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap()).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `file`'s rows sorted by time (cached beside it as `transactions_by_time.parquet`; sorted in
/// a child process).
fn time_ordered(file: &Path) -> PathBuf {
    let out = file.with_file_name("transactions_by_time.parquet");
    if !out.is_file() {
        let tmp = out.with_extension("parquet.tmp");
        in_child(&["--sort-by-time", file.to_str().unwrap(), tmp.to_str().unwrap()]);
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

fn sort_by_time(src: &str, dst: &str) {
    let df = ParquetReader::new(std::fs::File::open(src).unwrap()).finish().unwrap();
    let mut sorted = df.sort(["ts"], SortMultipleOptions::default().with_maintain_order(true)).unwrap();
    ParquetWriter::new(std::fs::File::create(dst).unwrap()).finish(&mut sorted).unwrap();
}

fn config(root: &Path, name: &str, input: &str) -> String {
    let path = root.join(format!("input_{name}.toml"));
    std::fs::write(&path, format!("[input]\n{input}")).unwrap();
    path.display().to_string()
}

/// `fidelis validate` `runs` times: median wall seconds, largest peak RSS, and its JSON summary.
fn validate(cfg: &str, runs: usize) -> (f64, u64, serde_json::Value) {
    let (mut walls, mut peak, mut summary) = (Vec::new(), 0, serde_json::Value::Null);
    for _ in 0..runs {
        let (out, secs, rss) = run(&["validate", "--config", cfg, "--json"], &[("RUST_LOG", "")]);
        walls.push(secs);
        peak = peak.max(rss);
        summary = serde_json::from_slice(&out.stdout).unwrap();
    }
    (median(walls), peak, summary)
}

/// The same file read from a local S3-compatible server (moto in server mode, from the test
/// virtual environment `.venv`): `fidelis validate` with `path = "s3://..."`. Null when moto
/// is not installed.
fn s3_read(root: &Path, file: &Path, runs: usize, line: &dyn Fn(&str, f64, u64)) -> serde_json::Value {
    let python = PathBuf::from(".venv/bin/python");
    let has_moto =
        std::process::Command::new(&python).args(["-c", "import moto"]).status().is_ok_and(|s| s.success());
    if !has_moto {
        println!("S3 read skipped: no moto in .venv (make python installs it)");
        return serde_json::Value::Null;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new(&python)
        .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let env = [
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
    ];
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    // moto creates a bucket on a PUT of the bucket itself.
    let client = fidelis::s3::Client::from_env().unwrap();
    let bucket = fidelis::s3::S3Url { bucket: "bench".into(), key: String::new() };
    client.put(&bucket, b"").unwrap();
    let object = bucket.with_key("transactions.parquet");
    client.put(&object, &std::fs::read(file).unwrap()).unwrap();
    let cfg = config(root, "s3", &format!("[input.transactions]\npath = {:?}\n", object.to_string()));
    let (mut walls, mut peak) = (Vec::new(), 0);
    for _ in 0..runs {
        let (_, secs, rss) = run(&["validate", "--config", &cfg, "--json"], &env);
        walls.push(secs);
        peak = peak.max(rss);
    }
    let wall = median(walls);
    line(&format!("S3 object, local moto server (median of {runs})"), wall, peak);
    let _ = server.kill();
    let _ = server.wait();
    serde_json::json!({"wall_seconds": wall, "peak_rss_bytes": peak})
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, a, b] = &args[..] {
        match flag.as_str() {
            "--sort-by-time" => return sort_by_time(a, b),
            "--load" => return println!("{}", load(a, Path::new(b))),
            _ => {}
        }
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let default_size = if bench { 1_000_000 } else { 20_000 };
    let customers: usize =
        std::env::var("FIDELIS_BENCH_CUSTOMERS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_size);
    let Some(admin) = std::env::var("FIDELIS_TEST_PG_URL").ok().filter(|u| !u.is_empty()) else {
        println!("input bench skipped: FIDELIS_TEST_PG_URL is not set (make bench starts a local server)");
        return;
    };
    let root = PathBuf::from(if bench { "data/bench" } else { "data/bench/smoke" });
    let file = common::ensure_data(&root, customers);
    let url = fresh_db(&admin, "fidelis_bench_input");
    // In a child process (see `in_child`): the file read into memory would otherwise set the
    // floor of every later child's peak RSS.
    let load_s: f64 = in_child(&["--load", url.as_str(), file.to_str().unwrap()]).trim().parse().unwrap();
    eprintln!("loaded {} into PostgreSQL in {load_s:.1} s", file.display());

    let runs = if bench { 3 } else { 1 };
    let parquet =
        config(&root, "parquet", &format!("[input.transactions]\npath = {:?}\n", file.display().to_string()));
    let (p_wall, p_rss, p_summary) = validate(&parquet, runs);
    let rows = p_summary["rows_read"].as_u64().unwrap_or_default();
    println!(
        "reading the transaction log of {customers} customers ({rows} rows): fidelis validate, child process"
    );
    println!("{:<44} {:>10} {:>12} {:>12}", "source", "wall, s", "peak RSS, GB", "M rows/s");
    let line = |what: &str, wall: f64, rss: u64| {
        println!("{what:<44} {wall:>10.2} {:>12.2} {:>12.2}", rss as f64 / 1e9, rows as f64 / wall / 1e6);
    };
    line(&format!("Parquet file (median of {runs})"), p_wall, p_rss);
    // The same rows in time order, as most logs are written (customers scattered over the
    // file): what it costs to bring each customer's rows together.
    let by_time = time_ordered(&file);
    let timed = config(
        &root,
        "by_time",
        &format!("[input.transactions]\npath = {:?}\n", by_time.display().to_string()),
    );
    let (t_wall, t_rss, t_summary) = validate(&timed, runs);
    assert_eq!(t_summary["rows_valid"], p_summary["rows_valid"], "the time-ordered file gives other rows");
    line(&format!("Parquet file, rows in time order (median of {runs})"), t_wall, t_rss);
    let mut sql = Vec::new();
    for batch in [10_000usize, 50_000, 1_000_000] {
        let cfg = config(
            &root,
            &format!("sql_{batch}"),
            &format!(
                "sql_batch_rows = {batch}\n\n[input.transactions]\nsql = {url:?}\nquery = \"SELECT customer_id, ts, amount FROM tx\"\n"
            ),
        );
        let (wall, rss, summary) = validate(&cfg, if batch == 50_000 { runs } else { 1 });
        assert_eq!(summary["rows_valid"], p_summary["rows_valid"], "the query and the file give other rows");
        line(&format!("PostgreSQL query, sql_batch_rows = {batch}"), wall, rss);
        sql.push(serde_json::json!({"batch_rows": batch, "wall_seconds": wall, "peak_rss_bytes": rss}));
    }
    let s3 = s3_read(&root, &file, runs, &line);
    let default = &sql[1];
    println!(
        "query / file (sql_batch_rows = 50000): wall {:.2}x, peak RSS {:.2}x; loading the table (COPY) took {load_s:.1} s",
        default["wall_seconds"].as_f64().unwrap() / p_wall,
        default["peak_rss_bytes"].as_f64().unwrap() / p_rss as f64
    );
    common::record(bench, "input", || {
        serde_json::json!({
            "customers": customers,
            "rows": rows,
            "parquet": {"wall_seconds": p_wall, "peak_rss_bytes": p_rss},
            "parquet_time_ordered": {"wall_seconds": t_wall, "peak_rss_bytes": t_rss},
            "postgresql": sql,
            "copy_load_seconds": load_s,
            "s3": s3,
        })
    });
}
