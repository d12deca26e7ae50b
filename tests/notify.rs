//! Delivery against real servers on 127.0.0.1: a Slack-compatible webhook, a signed JSON
//! webhook, an SMTP server and a CRM endpoint. A hand-built three-run scenario (an account
//! goes green -> yellow -> red, another escalates, a drift alert) through the rules; reruns
//! send nothing twice; retries on 5xx, none on 4xx; a server that is down costs bounded time;
//! no secret reaches a message, the log or the output.

mod common;

use std::collections::HashMap;
use std::path::Path;

use chrono::NaiveDate;
use common::servers::{HttpSink, SmtpSink};
use fidelis::activity::{Customer, Customers};
use fidelis::config::{Config, EscalationRule};
use fidelis::notify::{self, crm, RunEvents};
use fidelis::sink::DeliveryLog;
use polars::prelude::*;

const LEVELS: [&str; 5] = ["low", "moderate", "high", "critical", "imminent"];

/// One account in one run: (id, risk level, health colour, escalation, expected loss).
type Row = (&'static str, &'static str, &'static str, Option<&'static str>, f64);

fn scores(rows: &[Row]) -> DataFrame {
    let ids: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let level: Vec<&str> = rows.iter().map(|r| r.1).collect();
    let score: Vec<i32> =
        rows.iter().map(|r| 20 * LEVELS.iter().position(|l| *l == r.1).unwrap() as i32 + 10).collect();
    let p: Vec<f64> = score.iter().map(|&s| f64::from(s) / 100.0).collect();
    let colour: Vec<&str> = rows.iter().map(|r| r.2).collect();
    let health: Vec<f64> = rows
        .iter()
        .map(|r| match r.2 {
            "green" => 80.0,
            "yellow" => 55.0,
            _ => 30.0,
        })
        .collect();
    let esc: Vec<Option<&str>> = rows.iter().map(|r| r.3).collect();
    let loss: Vec<f64> = rows.iter().map(|r| r.4).collect();
    let n = rows.len();
    let mut rank: Vec<(usize, i32)> = score.iter().copied().enumerate().collect();
    rank.sort_by_key(|&(i, s)| (-s, i));
    let mut risk_rank = vec![0i64; n];
    for (r, (i, _)) in rank.iter().enumerate() {
        risk_rank[*i] = r as i64 + 1;
    }
    df!(
        "customer_id" => ids,
        "churn_probability" => p,
        "predicted_clv" => vec![1000.0; n],
        "risk_score" => score,
        "risk_level" => level,
        "playbook" => vec!["call"; n],
        "expected_loss" => loss,
        "contact" => vec![true; n],
        "risk_rank" => risk_rank.clone(),
        "in_top_decile" => risk_rank.iter().map(|&r| r <= 2).collect::<Vec<_>>(),
        "top_reasons" => vec!["recency_days, count_90d"; n],
        "health_score" => health,
        "health_colour" => colour,
        "review_flag" => vec![false; n],
        "review_reason" => vec![None::<&str>; n],
        "escalation" => esc,
    )
    .unwrap()
}

fn customers() -> Customers {
    let c = |arr: f64, csm: &str| Customer { arr: Some(arr), csm: Some(csm.into()), ..Customer::default() };
    let rows: HashMap<String, Customer> = [
        ("A", c(5_000.0, "Ana")),
        ("B", c(8_000.0, "ben@example.com")),
        ("C", c(20_000.0, "Ana")),
        ("D", c(1_000.0, "Dev")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Customers {
        path: "customers.parquet".into(),
        rows,
        columns: vec!["arr".into(), "csm".into()],
        attributes: Vec::new(),
    }
}

/// The three runs: A green -> yellow -> red; B yellow -> red at run 2; C high -> critical with
/// an escalation at run 2; D never changes.
fn runs() -> Vec<(NaiveDate, DataFrame)> {
    let d = |day| NaiveDate::from_ymd_opt(2024, 12, day).unwrap();
    let esc = Some("ARR 20,000 > 10,000 in critical: manager immediately");
    vec![
        (
            d(3),
            scores(&[
                ("A", "low", "green", None, 10.0),
                ("B", "moderate", "yellow", None, 40.0),
                ("C", "high", "green", None, 300.0),
                ("D", "low", "green", None, 1.0),
            ]),
        ),
        (
            d(10),
            scores(&[
                ("A", "low", "yellow", None, 12.0),
                ("B", "moderate", "red", None, 50.0),
                ("C", "critical", "green", esc, 900.0),
                ("D", "low", "green", None, 1.0),
            ]),
        ),
        (
            d(17),
            scores(&[
                ("A", "moderate", "red", None, 60.0),
                ("B", "moderate", "red", None, 50.0),
                ("C", "critical", "green", esc, 900.0),
                ("D", "low", "green", None, 1.0),
            ]),
        ),
    ]
}

fn config(dir: &Path, tag: &str, smtp_port: u16, extra: &str) -> Config {
    let text = format!(
        r#"
[output]
dir = "{out}"
sql = ["sqlite://{out}/fidelis.sqlite"]

[notify]
timeout_s = 2.0
retries = 2
backoff_s = 0.05

[notify.csm_addresses]
Ana = "ana@example.com"

[[notify.channels]]
name = "cs-slack"
kind = "slack"
url_env = "SLACK_{tag}"

[[notify.channels]]
name = "ops"
kind = "webhook"
url_env = "HOOK_{tag}"
hmac_key_env = "HOOKKEY_{tag}"

[[notify.channels]]
name = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
starttls = "never"
username = "fidelis"
password_env = "SMTPPW_{tag}"
from = "fidelis@example.com"
to = ["lead@example.com"]
to_csm = true

[[notify.rules]]
name = "accounts"
events = ["health_red", "risk_up", "escalation", "review_flag"]
channels = ["cs-slack", "mail"]

[[notify.rules]]
name = "model-health"
events = ["monitoring_alert", "retrain", "run_failed"]
channels = ["ops"]

[[escalation.rules]]
min_arr = 10000.0
level = "critical"
action = "manager immediately"
recipients = ["manager@example.com"]
{extra}
"#,
        out = dir.display()
    );
    Config::from_toml(&text, "test.toml").unwrap()
}

const SECRETS: [&str; 3] = ["hmac-Key-s3cr3t-XYZ", "smtp-Pa55-s3cr3t-QRS", "crm-T0ken-s3cr3t-UVW"];

fn set_env(tag: &str, slack: &HttpSink, hook: &HttpSink) {
    std::env::set_var(format!("SLACK_{tag}"), &slack.url);
    std::env::set_var(format!("HOOK_{tag}"), &hook.url);
    std::env::set_var(format!("HOOKKEY_{tag}"), SECRETS[0]);
    std::env::set_var(format!("SMTPPW_{tag}"), SECRETS[1]);
}

/// Run the rules over run `i` of the scenario (with a drift alert at the third).
fn deliver(cfg: &Config, i: usize, dry_run: bool) -> notify::DeliveryOutcome {
    let runs = runs();
    let levels: Vec<String> = LEVELS.iter().map(|s| s.to_string()).collect();
    let (as_of, now) = &runs[i];
    let before = (i > 0).then(|| &runs[i - 1].1);
    let accounts = notify::account_events(now, before, Some(&customers()), &levels, &cfg.escalation).unwrap();
    let alerts = if i == 2 { vec!["drift: recency_days PSI 0.31 > 0.25".to_string()] } else { Vec::new() };
    let ev = RunEvents {
        as_of: *as_of,
        model_id: "m1".into(),
        accounts,
        run: notify::monitoring_events(&alerts, None),
        link: "reports/weekly/report.html".into(),
    };
    let notices = notify::plan(&cfg.notify, &ev);
    let records =
        cfg.crm.enabled().then(|| crm::records(now, cfg.crm.include, &cfg.crm.segment, *as_of).unwrap());
    notify::deliver(cfg, *as_of, &notices, records.as_deref(), dry_run).unwrap()
}

fn ids(text: &str) -> Vec<String> {
    let mut out: Vec<String> = ["A -", "B -", "C -", "D -"]
        .iter()
        .filter(|p| text.contains(*p))
        .map(|p| p[..1].to_string())
        .collect();
    out.sort();
    out
}

/// A mail's text with quoted-printable soft line breaks joined.
fn mail_text(m: &common::servers::Mail) -> String {
    m.data.replace("=\r\n", "").replace("=3D", "=")
}

#[test]
fn three_runs_reach_every_channel_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("T1", &slack, &hook);
    let cfg = config(dir.path(), "T1", smtp.port, "");

    // Run 1: nothing moved, nothing escalated, no alert: nothing sent.
    let o = deliver(&cfg, 0, false);
    assert_eq!((o.sent, o.failed.len(), o.accounts), (0, 0, 0), "{o}");
    assert!(slack.requests().is_empty() && hook.requests().is_empty() && smtp.mails().is_empty());

    // Run 2: B yellow -> red; C high -> critical with a new escalation.
    let o = deliver(&cfg, 1, false);
    assert!(o.failed.is_empty(), "{o}");
    let s = slack.requests();
    assert_eq!(s.len(), 1, "one Slack message");
    let j = s[0].json();
    let text = j["text"].as_str().unwrap();
    assert_eq!(ids(text), ["B", "C"], "{text}");
    assert!(text.contains("health yellow -> red") && text.contains("risk high -> critical"), "{text}");
    assert!(text.contains("escalation: ARR 20,000 > 10,000 in critical"), "{text}");
    // Highest expected loss first.
    assert!(text.find("C -").unwrap() < text.find("B -").unwrap(), "{text}");
    assert!(j["blocks"].as_array().unwrap().len() >= 3, "{j}");
    assert!(hook.requests().is_empty(), "no run event yet");
    let mails = smtp.mails();
    let mut to: Vec<&str> = mails.iter().map(|m| m.to[0].as_str()).collect();
    to.sort();
    // The lead gets all; Ana (C's CSM, by csm_addresses) gets C; ben@ (B's CSM is an
    // address) gets B; the escalation rule's manager gets C.
    assert_eq!(to, ["ana@example.com", "ben@example.com", "lead@example.com", "manager@example.com"]);
    for m in &mails {
        let t = mail_text(m);
        let want: &[&str] = match m.to[0].as_str() {
            "lead@example.com" => &["B", "C"],
            "ben@example.com" => &["B"],
            _ => &["C"],
        };
        assert_eq!(ids(&t), want, "{}: {t}", m.to[0]);
        assert!(t.contains("text/plain") && t.contains("text/html"), "{t}");
        assert_eq!(m.auth.as_ref().map(|a| a.1.as_str()), Some(SECRETS[1]), "the server got the password");
    }

    // Run 3: A yellow -> red, a drift alert; C's escalation is not new, B stays red.
    slack.clear();
    smtp.clear();
    let o = deliver(&cfg, 2, false);
    assert!(o.failed.is_empty(), "{o}");
    let s = slack.requests();
    assert_eq!(s.len(), 1);
    assert_eq!(ids(s[0].json()["text"].as_str().unwrap()), ["A"]);
    let h = hook.requests();
    assert_eq!(h.len(), 1, "the drift alert goes to the data team's webhook");
    let j = h[0].json();
    assert_eq!(j["run_events"][0]["event"], "monitoring_alert");
    assert!(j["run_events"][0]["detail"].as_str().unwrap().contains("PSI 0.31"));
    assert_eq!(j["accounts"].as_array().unwrap().len(), 0, "the data team's rule has no account events");
    // The signature verifies with the shared key (computed here independently of fidelis'
    // own helper), and fails for a tampered body.
    let (ts, sig) =
        (h[0].header("X-Fidelis-Timestamp").unwrap(), h[0].header("X-Fidelis-Signature").unwrap());
    let expect = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRETS[0].as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(&h[0].body);
        let bytes = mac.finalize().into_bytes();
        format!("sha256={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    assert_eq!(sig, expect);
    assert!(notify::http::verify(SECRETS[0].as_bytes(), ts, &h[0].body, sig));
    let mut tampered = h[0].body.clone();
    tampered[10] ^= 1;
    assert!(!notify::http::verify(SECRETS[0].as_bytes(), ts, &tampered, sig));
    assert!(h[0].header("Idempotency-Key").is_some_and(|k| k.starts_with("fidelis-2024-12-17-")));
    let mut to: Vec<String> = smtp.mails().iter().map(|m| m.to[0].clone()).collect();
    to.sort();
    assert_eq!(to, ["ana@example.com", "lead@example.com"], "A's CSM and the lead");

    // Rerun of run 3: everything is in the log as sent; nothing goes out twice.
    let (n_slack, n_hook, n_mail) = (slack.requests().len(), hook.requests().len(), smtp.mails().len());
    let o = deliver(&cfg, 2, false);
    assert_eq!((o.sent, o.already), (0, 4), "{o}");
    assert_eq!(
        (slack.requests().len(), hook.requests().len(), smtp.mails().len()),
        (n_slack, n_hook, n_mail)
    );

    // The log: the Parquet file and the SQLite table agree; no secret anywhere.
    let log = DeliveryLog::new(dir.path()).read().unwrap();
    assert_eq!(log.len(), 5 + 4, "run 2: slack + 4 mails; run 3: slack, webhook, 2 mails");
    assert!(log.iter().all(|d| d.status == "sent" && d.attempts == 1));
    let db = rusqlite::Connection::open(dir.path().join("fidelis.sqlite")).unwrap();
    let n: i64 =
        db.query_row("SELECT count(*) FROM notifications WHERE status = 'sent'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 9);
    common::assert_no_secret(dir.path(), &SECRETS);
}

#[test]
fn server_errors_are_retried_client_errors_are_not_and_a_rerun_sends_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("T2", &slack, &hook);
    let cfg = config(dir.path(), "T2", smtp.port, "");
    deliver(&cfg, 0, false);

    // Slack answers 500 then 200: retried and delivered in two attempts.
    slack.script(&[500, 200]);
    let o = deliver(&cfg, 1, false);
    assert!(o.failed.is_empty(), "{o}");
    assert_eq!(slack.requests().iter().map(|r| r.status).collect::<Vec<_>>(), [500, 200]);
    let log = DeliveryLog::new(dir.path()).read().unwrap();
    let s = log.iter().find(|d| d.channel == "cs-slack").unwrap();
    assert_eq!((s.status.as_str(), s.attempts), ("sent", 2));

    // Run 3: the webhook answers 400: one attempt, logged as failed; Slack and mail go out.
    hook.script(&[400]);
    let o = deliver(&cfg, 2, false);
    assert_eq!(o.failed.len(), 1, "{o}");
    assert!(o.failed[0].contains("HTTP 400") && o.failed(), "{o}");
    assert_eq!(hook.requests().len(), 1, "no retry on a 4xx");
    let log = DeliveryLog::new(dir.path()).read().unwrap();
    let h = log.iter().find(|d| d.channel == "ops").unwrap();
    assert_eq!(
        (h.status.as_str(), h.attempts, h.error.as_deref()),
        ("failed", 1, Some("HTTP 400 Bad Request"))
    );

    // The receiver is fixed: the rerun sends only the undelivered webhook message.
    let n_slack = slack.requests().len();
    let o = deliver(&cfg, 2, false);
    assert_eq!((o.sent, o.failed.len()), (1, 0), "{o}");
    assert_eq!(hook.accepted().len(), 1);
    assert_eq!(slack.requests().len(), n_slack, "Slack got run 3's message once");
    let log = DeliveryLog::new(dir.path()).read().unwrap();
    let ops: Vec<_> = log.iter().filter(|d| d.channel == "ops").map(|d| d.status.as_str()).collect();
    assert_eq!(ops, ["failed", "sent"], "the log shows the failure and the later delivery");
}

#[test]
fn a_server_that_is_down_costs_bounded_time_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("T3", &slack, &hook);
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::env::set_var("SLACK_T3", format!("http://127.0.0.1:{closed}/hook"));
    let cfg = config(dir.path(), "T3", smtp.port, "");
    deliver(&cfg, 0, false);
    let clock = std::time::Instant::now();
    let o = deliver(&cfg, 1, false);
    let took = clock.elapsed().as_secs_f64();
    assert!(o.failed(), "{o}");
    assert_eq!(o.failed.len(), 1, "only Slack failed: {o}");
    assert!(o.failed[0].contains("cs-slack") && !o.failed[0].contains(&closed.to_string()), "no URL: {o}");
    // 3 attempts, 0.05 + 0.1 s of backoff, refused at once: far below one timeout of 2 s each.
    assert!(took < 3.0 * 2.0 + 1.0, "took {took}s");
    let log = DeliveryLog::new(dir.path()).read().unwrap();
    let s = log.iter().find(|d| d.channel == "cs-slack").unwrap();
    assert_eq!((s.status.as_str(), s.attempts), ("failed", 3));
    assert_eq!(smtp.mails().len(), 4, "the mail channel is not held up by Slack");
}

#[test]
fn dry_run_prints_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("T4", &slack, &hook);
    let cfg = config(dir.path(), "T4", smtp.port, "");
    let o = deliver(&cfg, 1, true);
    assert_eq!(o.sent, 0);
    let shown = o.to_string();
    assert!(shown.contains("WOULD SEND accounts -> cs-slack (cs-slack)"), "{shown}");
    assert!(shown.contains("WOULD SEND accounts -> mail (manager@example.com)"), "{shown}");
    assert!(slack.requests().is_empty() && smtp.mails().is_empty());
    assert!(!dir.path().join("notifications.parquet").exists(), "a dry run logs nothing");
    for s in SECRETS {
        assert!(!shown.contains(s));
    }
}

#[test]
fn crm_upserts_in_batches_with_idempotency_keys_and_a_csv() {
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp, crm_server) =
        (HttpSink::start(), HttpSink::start(), SmtpSink::start(), HttpSink::start());
    set_env("T5", &slack, &hook);
    std::env::set_var("CRM_T5", &crm_server.url);
    std::env::set_var("CRMTOKEN_T5", SECRETS[2]);
    let extra = "[crm]\nurl_env = \"CRM_T5\"\ntoken_env = \"CRMTOKEN_T5\"\ninclude = \"contacted\"\nbatch_size = 3\ncsv = true\n";
    let cfg = config(dir.path(), "T5", smtp.port, extra);
    crm_server.script(&[503]);
    let o = deliver(&cfg, 1, false);
    let c = o.crm.clone().unwrap();
    assert_eq!((c.records, c.batches, c.sent, c.failed), (4, 2, 2, 0), "{o}");
    let reqs = crm_server.accepted();
    assert_eq!(reqs.len(), 2);
    assert_eq!(crm_server.requests().len(), 3, "the 503 was retried");
    assert_eq!(reqs[0].header("Authorization"), Some(format!("Bearer {}", SECRETS[2]).as_str()));
    let first = reqs[0].json();
    assert_eq!(first["segment"], "Churn_Risk_High");
    let recs = first["records"].as_array().unwrap();
    // Risk-rank order: C (critical) first.
    assert_eq!(recs[0]["customer_id"], "C");
    assert_eq!(recs[0]["idempotency_key"], "2024-12-10:C");
    assert_eq!(recs[0]["top_reasons"], serde_json::json!(["recency_days", "count_90d"]));
    let csv = std::fs::read_to_string(dir.path().join("crm/as_of=2024-12-10/Churn_Risk_High.csv")).unwrap();
    assert!(csv.starts_with("Customer ID,Segment,As Of,Risk Score"), "{csv}");
    assert_eq!(csv.lines().count(), 5);
    // A rerun pushes nothing twice.
    let o = deliver(&cfg, 1, false);
    let c = o.crm.unwrap();
    assert_eq!((c.sent, c.already), (0, 2));
    assert_eq!(crm_server.accepted().len(), 2);
    common::assert_no_secret(dir.path(), &SECRETS);
}

#[test]
fn rules_filter_by_arr_and_level_and_cap_the_list() {
    // min_arr and levels filter the accounts of a rule.
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("T6", &slack, &hook);
    let mut cfg = config(dir.path(), "T6", smtp.port, "");
    cfg.notify.rules[0].min_arr = 10_000.0;
    cfg.notify.rules[0].channels = vec!["cs-slack".into()];
    cfg.escalation.rules = vec![EscalationRule {
        min_arr: 10_000.0,
        level: "critical".into(),
        action: "manager immediately".into(),
        recipients: Vec::new(),
    }];
    deliver(&cfg, 0, false);
    deliver(&cfg, 1, false);
    let s = slack.requests();
    assert_eq!(ids(s[0].json()["text"].as_str().unwrap()), ["C"], "B's ARR is below 10,000");
    cfg.notify.rules[0].min_arr = 0.0;
    cfg.notify.rules[0].levels = vec!["moderate".into()];
    cfg.notify.rules[0].name = "moderate-only".into();
    deliver(&cfg, 1, false);
    let s = slack.requests();
    assert_eq!(ids(s[1].json()["text"].as_str().unwrap()), ["B"]);
    // At most max_accounts listed (highest expected loss first), the rest counted.
    cfg.notify.rules[0].levels = Vec::new();
    cfg.notify.rules[0].max_accounts = 1;
    cfg.notify.rules[0].name = "capped".into();
    deliver(&cfg, 1, false);
    let text = slack.requests()[2].json()["text"].as_str().unwrap().to_string();
    assert_eq!(ids(&text), ["C"], "{text}");
    assert!(text.contains("... and 1 more: reports/weekly/report.html"), "{text}");
}

#[test]
fn starttls_required_never_sends_in_plain_text() {
    // The sink offers no STARTTLS: a channel that requires it must not fall back to plain text.
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("T7", &slack, &hook);
    let mut cfg = config(dir.path(), "T7", smtp.port, "");
    cfg.notify.channels[2].starttls = fidelis::config::StartTls::Required;
    deliver(&cfg, 0, false);
    let o = deliver(&cfg, 1, false);
    assert!(smtp.mails().is_empty(), "nothing went out in plain text");
    assert_eq!(o.failed.len(), 4, "{o}");
    assert!(o.failed.iter().all(|f| f.contains("mail") && !f.contains(SECRETS[1])), "{o}");
    // Opportunistic falls back to plain text when the server offers no TLS.
    cfg.notify.channels[2].starttls = fidelis::config::StartTls::Opportunistic;
    let o = deliver(&cfg, 1, false);
    assert!(o.failed.is_empty(), "{o}");
    assert_eq!(smtp.mails().len(), 4);
}

#[test]
fn the_delivery_log_is_mirrored_to_postgresql() {
    let Some(pg) = common::PgDb::create("notify") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("T8", &slack, &hook);
    let mut cfg = config(dir.path(), "T8", smtp.port, "");
    cfg.output.sql.push(pg.url.clone());
    deliver(&cfg, 0, false);
    hook.script(&[400]);
    deliver(&cfg, 1, false);
    deliver(&cfg, 2, false);
    deliver(&cfg, 2, false);
    // Run 2: Slack + 4 mails; run 3: Slack, 2 mails and the webhook (400, then sent).
    let q = |status: &str| pg.count(&format!("SELECT count(*) FROM notifications WHERE status = '{status}'"));
    assert_eq!((q("sent"), q("failed")), (9, 1));
    let failed: (String, i32, Option<String>) = {
        let row = pg
            .client()
            .query_one("SELECT channel, attempts, error FROM notifications WHERE status = 'failed'", &[])
            .unwrap();
        (row.get(0), row.get(1), row.get(2))
    };
    assert_eq!(failed, ("ops".to_string(), 1, Some("HTTP 400 Bad Request".to_string())));
    let db = rusqlite::Connection::open(dir.path().join("fidelis.sqlite")).unwrap();
    let n: i64 = db.query_row("SELECT count(*) FROM notifications", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 10, "SQLite holds the same rows");
}
