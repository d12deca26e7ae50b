//! The CRM push at size: 10,000 top-risk records as batched JSON upserts (500 per request,
//! 20 requests) to a real HTTP server on 127.0.0.1, through `notify::crm::push` (rendering,
//! idempotency keys, the HTTP client, the delivery log, the CSV export). Prints a table
//! (median of 5 runs, each into a fresh output directory) and writes
//! reports/bench/deliver.json.
//!
//! `cargo bench --bench deliver` (run by `make bench`); `FIDELIS_BENCH_RECORDS` changes the
//! size.

#[allow(dead_code)]
#[path = "../tests/common/servers.rs"]
mod servers;

use std::time::Instant;

use chrono::NaiveDate;
use fidelis::notify::crm;
use fidelis::Config;
use polars::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("FIDELIS_BENCH_RECORDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let ids: Vec<String> = (0..n).map(|i| format!("C{i:07}")).collect();
    let scores = df!(
        "customer_id" => ids,
        "churn_probability" => (0..n).map(|i| 0.5 + 0.4 * (i as f64 / n as f64)).collect::<Vec<_>>(),
        "predicted_clv" => (0..n).map(|i| 100.0 + (i % 997) as f64).collect::<Vec<_>>(),
        "risk_score" => (0..n).map(|i| 60 + (i % 40) as i32).collect::<Vec<_>>(),
        "risk_level" => vec!["critical"; n],
        "playbook" => vec!["personal call from the account manager"; n],
        "expected_loss" => (0..n).map(|i| 50.0 + (i % 500) as f64).collect::<Vec<_>>(),
        "contact" => vec![true; n],
        "risk_rank" => (1..=n as i64).collect::<Vec<_>>(),
        "in_top_decile" => vec![true; n],
        "top_reasons" => vec!["recency_days, count_90d, amount_trend"; n],
    )
    .expect("a scores frame");
    let as_of = NaiveDate::from_ymd_opt(2024, 12, 31).expect("a date");
    let server = servers::HttpSink::start();
    std::env::set_var("FIDELIS_BENCH_CRM_URL", &server.url);
    let mut times = Vec::new();
    let mut batches = 0;
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("a temp dir");
        let cfg = Config::from_toml(
            &format!(
                "[output]\ndir = \"{}\"\nsql = []\n\n[crm]\nurl_env = \"FIDELIS_BENCH_CRM_URL\"\nbatch_size = 500\ncsv = true\n",
                dir.path().display()
            ),
            "bench",
        )
        .expect("a config");
        server.clear();
        let clock = Instant::now();
        let records = crm::records(&scores, cfg.crm.include, &cfg.crm.segment, as_of).expect("records");
        let out = fidelis::notify::deliver(&cfg, as_of, &[], Some(&records), false).expect("a delivery");
        times.push(clock.elapsed().as_secs_f64());
        let c = out.crm.expect("a CRM outcome");
        assert_eq!((c.records, c.failed), (n, 0));
        let got: usize =
            server.accepted().iter().map(|r| r.json()["records"].as_array().map_or(0, Vec::len)).sum();
        assert_eq!(got, n, "every record reached the endpoint");
        batches = c.batches;
    }
    let med = median(times.clone());
    println!("| CRM push | records | batches | median s | runs s | records/s |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| local HTTP | {n} | {batches} | {med:.3} | {} | {:.0} |",
        times.iter().map(|t| format!("{t:.3}")).collect::<Vec<_>>().join(", "),
        n as f64 / med
    );
    let json =
        serde_json::json!({"crm_push": {"records": n, "batches": batches, "median_s": med, "runs_s": times}});
    let path = std::path::Path::new("reports/bench/deliver.json");
    if std::fs::create_dir_all("reports/bench").is_ok() {
        let _ = std::fs::write(path, serde_json::to_string_pretty(&json).unwrap_or_default());
        println!("written to {}", path.display());
    }
}
