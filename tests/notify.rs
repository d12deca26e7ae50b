//! Delivery against real servers on 127.0.0.1: a Slack-compatible webhook, a signed JSON
//! webhook, an SMTP server and a CRM endpoint. A hand-built three-run scenario (an account
//! goes green -> yellow -> red, another escalates, a drift alert) through the rules; reruns
//! send nothing twice; retries on 5xx, none on 4xx; a server that is down costs bounded time;
//! no secret reaches a message, the log or the output.

mod common;

use std::collections::HashMap;
use std::path::Path;

use chrono::NaiveDate;
use common::servers::{HttpSink, SlowServer, SmtpSink};
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
        "top_reasons" => vec!["recency_days=84 (+0.92), count_90d=0 (+0.41)"; n],
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
    let alerts = if i == 2 { vec!["drift: recency_days PSI 0.31 > 0.25".to_string()] } else { Vec::new() };
    deliver_with(cfg, i, &alerts, &runs()[i].1, dry_run)
}

/// `notify::deliver`, then the delivery log copied to the sinks, as the jobs do.
fn deliver_and_copy(
    cfg: &Config,
    as_of: chrono::NaiveDate,
    notices: &[notify::Notice],
    records: Option<&[crm::Record]>,
    dry_run: bool,
) -> fidelis::Result<notify::DeliveryOutcome> {
    let mut out = notify::deliver(cfg, as_of, notices, records, dry_run)?;
    let sinks = fidelis::sink::Sinks::resolve(&cfg.output)?;
    fidelis::jobs::notify::copy_deliveries(cfg, &sinks, &mut out, as_of);
    Ok(out)
}

/// Run the rules over run `i` with these monitoring alerts and these scores.
fn deliver_with(
    cfg: &Config,
    i: usize,
    alerts: &[String],
    now: &DataFrame,
    dry_run: bool,
) -> notify::DeliveryOutcome {
    let runs = runs();
    let levels: Vec<String> = LEVELS.iter().map(|s| s.to_string()).collect();
    let as_of = &runs[i].0;
    let before = (i > 0).then(|| &runs[i - 1].1);
    let accounts = notify::account_events(now, before, Some(&customers()), &levels, &cfg.escalation).unwrap();
    let alerts = alerts.to_vec();
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
    deliver_and_copy(cfg, *as_of, &notices, records.as_deref(), dry_run).unwrap()
}

fn slack_text(j: &serde_json::Value) -> String {
    j["text"].as_str().unwrap().replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")
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
    // Slack's text escapes <, > and & (Slack shows them as the characters).
    let text = &slack_text(&j);
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
        use hmac::{KeyInit, Mac};
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
    assert_eq!(recs[0]["top_reasons"], serde_json::json!(["recency_days=84 (+0.92)", "count_90d=0 (+0.41)"]));
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
        max_days_to_renewal: None,
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

    // max_days_to_renewal keeps the accounts renewing within the window; one without a known
    // renewal is left out. B renews in 30 days, C in 200, A's renewal is unknown.
    let mut now = runs()[1].1.clone();
    let renewal: Vec<Option<i32>> = vec![None, Some(30), Some(200), Some(10)];
    now.with_column(Column::new("days_to_renewal".into(), renewal)).unwrap();
    cfg.notify.rules[0].max_accounts = 20;
    cfg.notify.rules[0].max_days_to_renewal = Some(90);
    cfg.notify.rules[0].name = "renewing".into();
    deliver_with(&cfg, 1, &[], &now, false);
    let text = slack.requests()[3].json()["text"].as_str().unwrap().to_string();
    assert_eq!(ids(&text), ["B"], "{text}");
    assert!(text.contains("renews in 30 days"), "{text}");
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

#[test]
fn a_redirect_is_a_failed_delivery_and_is_never_followed() {
    // Fault 1: a 302 to another place was followed as a GET without the body, logged "sent",
    // and a rerun said "already delivered"; a 307 was "the request failed".
    for status in [302u16, 307, 301, 308] {
        let dir = tempfile::tempdir().unwrap();
        let (slack, hook, smtp, crm_server) =
            (HttpSink::start(), HttpSink::start(), SmtpSink::start(), HttpSink::start());
        let tag = format!("R{status}");
        set_env(&tag, &slack, &hook);
        std::env::set_var(format!("CRM_{tag}"), &crm_server.url);
        let extra = format!("[crm]\nurl_env = \"CRM_{tag}\"\ninclude = \"contacted\"\nbatch_size = 3\n");
        let cfg = config(dir.path(), &tag, smtp.port, &extra);
        deliver(&cfg, 0, false);
        slack.script(&[status]);
        crm_server.script(&[status]);
        let o = deliver(&cfg, 1, false);
        let slack_failed: Vec<_> = o.failed.iter().filter(|f| f.contains("cs-slack")).collect();
        assert_eq!(slack_failed.len(), 1, "{status}: {o}");
        assert!(
            slack_failed[0].contains(&format!("HTTP {status}")) && slack_failed[0].contains("redirect"),
            "{o}"
        );
        let reqs = slack.requests();
        assert_eq!(reqs.len(), 1, "{status}: no retry, nothing followed: {reqs:?}");
        assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str()), ("POST", "/hook"));
        let c = o.crm.clone().unwrap();
        assert_eq!((c.sent, c.failed), (0, 2), "{status}: the CRM push stops at the redirect: {o}");
        assert!(crm_server.requests().iter().all(|r| r.path == "/hook"), "the CRM redirect was not followed");
        assert!(o.failed(), "exit 7");
        let log = DeliveryLog::new(dir.path()).read().unwrap();
        let run2 = log.iter().filter(|d| d.as_of == runs()[1].0);
        assert!(run2.filter(|d| d.channel == "cs-slack" || d.channel == "crm").all(|d| d.status == "failed"));
        // The receiver fixed: the rerun delivers, it does not say "already delivered".
        let o = deliver(&cfg, 1, false);
        assert!(o.failed.is_empty(), "{o}");
        assert_eq!(slack.accepted().len(), 1);
        assert_eq!(o.crm.unwrap().sent, 2);
    }
}

#[test]
fn changed_content_is_delivered_and_identical_content_is_not() {
    // Fault 2: deduplication on (as_of, rule, channel, target) only: the rerun after a failed
    // run never sent its alerts, and a rerun after a data fix never pushed the changed segment.
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp, crm_server) =
        (HttpSink::start(), HttpSink::start(), SmtpSink::start(), HttpSink::start());
    set_env("C1", &slack, &hook);
    std::env::set_var("CRM_C1", &crm_server.url);
    let extra = "[crm]\nurl_env = \"CRM_C1\"\ninclude = \"contacted\"\nbatch_size = 2\ncsv = true\n";
    let cfg = config(dir.path(), "C1", smtp.port, extra);
    let run3 = runs()[2].1.clone();
    // A failed run's alert first (the run_failed message of this date)...
    let failed = RunEvents {
        as_of: runs()[2].0,
        model_id: String::new(),
        accounts: Vec::new(),
        run: vec![(fidelis::config::EventKind::RunFailed, "fidelis weekly: PostgreSQL down".into())],
        link: String::new(),
    };
    let o = deliver_and_copy(&cfg, failed.as_of, &notify::plan(&cfg.notify, &failed), None, false).unwrap();
    assert_eq!(o.sent, 1, "{o}");
    // ... then the fixed rerun: its drift alerts are new content and go out.
    let alerts: Vec<String> = (0..22).map(|i| format!("drift: feature_{i} PSI 0.4 > 0.25")).collect();
    let o = deliver_with(&cfg, 2, &alerts, &run3, false);
    assert_eq!(o.already, 0, "{o}");
    let h = hook.requests();
    assert_eq!(h.len(), 2, "the run_failed alert, then the 22 drift alerts");
    assert_eq!(h[1].json()["run_events"].as_array().unwrap().len(), 22);
    let pushed = crm_server.accepted().len();
    assert_eq!(pushed, 2, "4 records in 2 batches");
    // The same run again: nothing new, nothing sent.
    let o = deliver_with(&cfg, 2, &alerts, &run3, false);
    assert_eq!((o.sent, o.crm.as_ref().unwrap().sent), (0, 0), "{o}");
    assert_eq!(hook.requests().len(), 2);
    // A data fix changes one customer's values (C's expected loss): the batch holding C is
    // pushed again, the other is not; the CSV is rewritten.
    let mut fixed = run3.clone();
    let loss: Vec<f64> = vec![60.0, 50.0, 1200.0, 1.0];
    fixed.replace("expected_loss", Column::new("expected_loss".into(), loss)).unwrap();
    let o = deliver_with(&cfg, 2, &alerts, &fixed, false);
    let c = o.crm.clone().unwrap();
    assert_eq!((c.sent, c.already), (1, 1), "{o}");
    let last = crm_server.accepted().last().unwrap().json();
    assert!(last["records"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["customer_id"] == "C" && r["expected_loss"] == 1200.0));
    let csv = std::fs::read_to_string(dir.path().join("crm/as_of=2024-12-17/Churn_Risk_High.csv")).unwrap();
    assert!(csv.contains("1200.00"), "{csv}");
    // Every message's Idempotency-Key differs with its content.
    let keys: std::collections::HashSet<_> =
        hook.requests().iter().map(|r| r.header("Idempotency-Key").unwrap().to_string()).collect();
    assert_eq!(keys.len(), 2);
}

/// The child side of the kill test: deliver run 2 (Slack works, the SMTP server hangs).
#[test]
fn child_delivery_process() {
    let Ok(tag) = std::env::var("FIDELIS_CHILD_DELIVERY") else { return };
    let dir = std::path::PathBuf::from(std::env::var("FIDELIS_CHILD_DIR").unwrap());
    let port: u16 = std::env::var("FIDELIS_CHILD_SMTP").unwrap().parse().unwrap();
    let mut cfg = config(&dir, &tag, port, "");
    cfg.notify.message_deadline_s = 600.0;
    cfg.notify.deadline_s = 600.0;
    cfg.notify.timeout_s = 600.0;
    deliver(&cfg, 1, false);
}

#[test]
fn a_run_killed_during_delivery_resends_only_what_was_not_confirmed() {
    // Fault 3: the log was written at the end, so a kill during delivery (SMTP hanging after
    // Slack got its POST) made the rerun send every message again.
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("K1", &slack, &hook);
    let cfg = config(dir.path(), "K1", smtp.port, "");
    deliver(&cfg, 0, false);
    let hang = SlowServer::start(std::time::Duration::from_secs(1), std::time::Duration::from_secs(60));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_delivery_process", "--nocapture", "--test-threads=1"])
        .env("FIDELIS_CHILD_DELIVERY", "K1")
        .env("FIDELIS_CHILD_DIR", dir.path())
        .env("FIDELIS_CHILD_SMTP", hang.port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for Slack's POST, give the child a moment to journal it, then kill it mid-SMTP.
    let clock = std::time::Instant::now();
    while slack.accepted().is_empty() {
        assert!(clock.elapsed().as_secs() < 60, "the child never reached Slack");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let log = DeliveryLog::new(dir.path()).read().unwrap();
    assert_eq!(log.len(), 1, "Slack's delivery was journaled before the mail started: {log:?}");
    // The rerun, with the mail server back: Slack is not sent again, the 4 mails are.
    let o = deliver(&cfg, 1, false);
    assert_eq!((o.sent, o.already), (4, 1), "{o}");
    assert_eq!(slack.requests().len(), 1, "Slack got its message once");
    assert_eq!(smtp.mails().len(), 4);
    // Deleting the Parquet copy resends nothing: the journal knows.
    std::fs::remove_file(dir.path().join("notifications.parquet")).unwrap();
    let o = deliver(&cfg, 1, false);
    assert_eq!((o.sent, o.already), (0, 5), "{o}");
}

#[test]
fn a_slow_or_silent_server_costs_one_deadline_not_one_per_message() {
    // Fault 4: timeout_s bounded each read, not the session: a server greeting one byte per
    // 3 s held a 5 s timeout for 72 s; a blackholed relay cost minutes per recipient.
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook) = (HttpSink::start(), HttpSink::start());
    set_env("D1", &slack, &hook);
    // One byte every 0.3 s: every read completes well inside timeout_s.
    let slow = SlowServer::start(std::time::Duration::from_millis(300), std::time::Duration::from_secs(30));
    let mut cfg = config(dir.path(), "D1", slow.port, "");
    cfg.notify.timeout_s = 2.0;
    cfg.notify.message_deadline_s = 1.5;
    deliver(&cfg, 0, false);
    let clock = std::time::Instant::now();
    let o = deliver(&cfg, 1, false);
    let took = clock.elapsed().as_secs_f64();
    assert!(took < 4.0, "one message deadline (1.5 s) for the mail channel, took {took:.1}s: {o}");
    assert_eq!(o.sent, 1, "Slack is delivered: {o}");
    let mail_failed: Vec<_> = o.failed.iter().filter(|f| f.contains("mail")).collect();
    assert_eq!(mail_failed.len(), 4, "{o}");
    assert!(mail_failed.iter().any(|f| f.contains("deadline")), "{o}");
    assert_eq!(mail_failed.iter().filter(|f| f.contains("did not answer earlier")).count(), 3, "{o}");
    // The whole stage's deadline bounds a run too.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "D1", slow.port, "");
    cfg.notify.message_deadline_s = 60.0;
    cfg.notify.deadline_s = 1.0;
    deliver(&cfg, 0, false);
    let clock = std::time::Instant::now();
    let o = deliver(&cfg, 1, false);
    let took = clock.elapsed().as_secs_f64();
    assert!(took < 3.5, "the stage deadline (1 s), took {took:.1}s: {o}");
    assert!(o.failed() && o.failed.len() == 4, "{o}");
}

#[test]
fn secrets_never_travel_or_wait_in_clear() {
    // Fault 5: plain-text URLs to other hosts, other schemes, FIFO secret files, and a
    // password sent as AUTH PLAIN without STARTTLS.
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("S1", &slack, &hook);
    let cfg = config(dir.path(), "S1", smtp.port, "");
    for url in ["http://hooks.example.com/services/T0/B0/s3cr3tpath", "file:///etc/passwd", "unix:///run/x"] {
        std::env::set_var("SLACK_S1", url);
        let err = notify::check_secrets(&cfg).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{url}: {err}");
        let text = err.to_string();
        assert!(text.contains("notify.channels.cs-slack.url_env") && !text.contains("s3cr3tpath"), "{text}");
    }
    std::env::set_var("SLACK_S1", &slack.url);
    notify::check_secrets(&cfg).unwrap();
    // A FIFO as a secret file is refused at once instead of blocking the run.
    let fifo = dir.path().join("pw.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut cfg2 = cfg.clone();
    cfg2.notify.channels[2].password_env.clear();
    cfg2.notify.channels[2].password_file = fifo.display().to_string();
    let clock = std::time::Instant::now();
    let err = notify::check_secrets(&cfg2).unwrap_err();
    assert!(clock.elapsed().as_secs() < 2 && err.exit_code() == 2, "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    // starttls = "never" with a login to a host that is not loopback: a config error.
    let text = std::fs::read_to_string("fidelis.example.toml").unwrap();
    let bad = format!(
        "{text}\n[[notify.channels]]\nname = \"x\"\nkind = \"email\"\nsmtp_host = \"smtp.example.com\"\n\
         starttls = \"never\"\nusername = \"u\"\npassword_env = \"P\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n"
    )
    .replace("channels = []\n", "");
    let err = Config::from_toml(&bad, "bad.toml").unwrap_err();
    assert!(err.to_string().contains("starttls") && err.to_string().contains("plain text"), "{err}");
}

#[test]
fn values_from_the_data_cannot_inject_into_any_channel() {
    // Fault 6: ids reached Slack's `text` unescaped, forged lines in Slack and email, and
    // formulas in the CRM CSV.
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("I1", &slack, &hook);
    let extra = "[crm]\ninclude = \"contacted\"\ncsv = true\n";
    let cfg = config(dir.path(), "I1", smtp.port, extra);
    let before = scores(&[
        ("<!channel>", "low", "green", None, 10.0),
        ("@here <https://evil.example|Click>", "low", "green", None, 10.0),
        ("X\nRUN FAILED forged", "low", "green", None, 10.0),
        ("=cmd|' /C calc'!A0", "low", "green", None, 10.0),
    ]);
    let now = scores(&[
        ("<!channel>", "critical", "red", None, 100.0),
        ("@here <https://evil.example|Click>", "critical", "red", None, 90.0),
        ("X\nRUN FAILED forged", "critical", "red", None, 80.0),
        ("=cmd|' /C calc'!A0", "critical", "red", None, 70.0),
    ]);
    let levels: Vec<String> = LEVELS.iter().map(|s| s.to_string()).collect();
    let accounts = notify::account_events(&now, Some(&before), None, &levels, &cfg.escalation).unwrap();
    assert_eq!(accounts.len(), 4);
    let as_of = NaiveDate::from_ymd_opt(2024, 12, 10).unwrap();
    let ev = RunEvents { as_of, model_id: "m".into(), accounts, run: Vec::new(), link: "r.html".into() };
    let records = crm::records(&now, cfg.crm.include, &cfg.crm.segment, as_of).unwrap();
    let o = deliver_and_copy(&cfg, as_of, &notify::plan(&cfg.notify, &ev), Some(&records), false).unwrap();
    assert!(o.failed.is_empty(), "{o}");
    let j = slack.requests()[0].json();
    let text = j["text"].as_str().unwrap();
    let blocks = j["blocks"].to_string();
    for raw in ["<!channel>", "<https://evil.example|Click>"] {
        assert!(!text.contains(raw) && !blocks.contains(raw), "{raw} reached Slack: {text}");
    }
    assert!(text.contains("&lt;!channel&gt;"), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("RUN FAILED")), "a forged line in Slack: {text}");
    assert!(text.contains("X\\nRUN FAILED forged"), "{text}");
    for m in smtp.mails() {
        let t = mail_text(&m);
        assert!(!t.lines().any(|l| l.starts_with("RUN FAILED")), "a forged line in mail: {t}");
    }
    let csv = std::fs::read_to_string(dir.path().join("crm/as_of=2024-12-10/Churn_Risk_High.csv")).unwrap();
    assert!(csv.contains("\"'=cmd|' /C calc'!A0\"") || csv.contains("'=cmd|' /C calc'!A0"), "{csv}");
    assert!(!csv.lines().any(|l| l.starts_with('=') || l.starts_with('@')), "{csv}");
    assert!(csv.contains("'@here"), "{csv}");
}

#[test]
fn a_csm_with_a_line_break_is_an_input_error_naming_its_row() {
    // Fault 6 (CSM): a CSM value with CR/LF failed delivery every run and was echoed raw.
    let raw = df!(
        "customer_id" => ["A", "B", "C"],
        "csm" => [Some("ana@example.com"), Some("ben@example.com\r\nBcc: all@example.com"), None],
    )
    .unwrap();
    let input = fidelis::config::CustomersInput {
        path: "customers.csv".into(),
        csm: "csm".into(),
        ..Default::default()
    };
    let err = fidelis::activity::customers_from_frame(raw, &input, "customers.csv").unwrap_err();
    let text = err.to_string();
    assert_eq!(err.exit_code(), 2, "{text}");
    assert!(text.contains("customers.csv") && text.contains("`csm`") && text.contains("row 2"), "{text}");
    assert!(!text.contains('\r') && !text.contains("\nBcc"), "not echoed raw: {text}");
}

#[test]
fn slack_messages_fit_slacks_limits_and_a_failed_log_copy_does_not_unsend() {
    // Fault 7: max_accounts = 80 built 82 blocks (Slack takes 50), and a delivered alert was
    // reported "0 sent, 1 failed" when the SQL copy of the log failed.
    let text = std::fs::read_to_string("fidelis.example.toml").unwrap();
    let cfg = text
        .replace("channels = []\nrules = []\n", "")
        .replace(
            "[crm]",
            "[[notify.channels]]\nname = \"s\"\nkind = \"slack\"\nurl_env = \"X\"\n\n\
             [[notify.rules]]\nname = \"r\"\nevents = [\"risk_up\"]\nchannels = [\"s\"]\nmax_accounts = 80\n\n[crm]",
        );
    let err = Config::from_toml(&cfg, "big.toml").unwrap_err().to_string();
    assert!(err.contains("max_accounts") && err.contains("50 blocks"), "{err}");
    // 47 accounts and 22 run events: at most 50 blocks.
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("L1", &slack, &hook);
    let mut cfg = config(dir.path(), "L1", smtp.port, "");
    cfg.notify.rules[0].max_accounts = 47;
    cfg.notify.rules[0].events.push(fidelis::config::EventKind::MonitoringAlert);
    cfg.notify.rules[0].channels = vec!["cs-slack".into()];
    let rows: Vec<Row> = (0..60)
        .map(|i| {
            (Box::leak(format!("K{i:02}").into_boxed_str()) as &'static str, "critical", "green", None, 1.0)
        })
        .collect();
    let before: Vec<Row> = rows.iter().map(|r| (r.0, "low", "green", None, 1.0)).collect();
    let levels: Vec<String> = LEVELS.iter().map(|s| s.to_string()).collect();
    let accounts =
        notify::account_events(&scores(&rows), Some(&scores(&before)), None, &levels, &cfg.escalation)
            .unwrap();
    let alerts: Vec<String> = (0..22).map(|i| format!("drift: f{i} PSI 0.5")).collect();
    let as_of = NaiveDate::from_ymd_opt(2024, 12, 10).unwrap();
    let ev = RunEvents {
        as_of,
        model_id: "m".into(),
        accounts,
        run: notify::monitoring_events(&alerts, None),
        link: "r.html".into(),
    };
    // The SQL copy of the log cannot be written (a directory where the database should be).
    std::fs::create_dir_all(dir.path().join("fidelis.sqlite")).unwrap();
    let o = deliver_and_copy(&cfg, as_of, &notify::plan(&cfg.notify, &ev), None, false).unwrap();
    let j = slack.requests()[0].json();
    let n_blocks = j["blocks"].as_array().unwrap().len();
    assert!(n_blocks <= 50, "{n_blocks} blocks");
    assert_eq!(n_blocks, 1 + 1 + 47 + 1);
    assert_eq!((o.sent, o.failed.len()), (2, 0), "Slack and the webhook: delivered is delivered: {o}");
    assert_eq!(o.log_errors.len(), 1, "{o}");
    assert!(o.to_string().contains("2 messages sent") && o.to_string().contains("WARNING"), "{o}");
    // The journal has it: a rerun does not send it again.
    std::fs::remove_dir_all(dir.path().join("fidelis.sqlite")).unwrap();
    let o = deliver_and_copy(&cfg, as_of, &notify::plan(&cfg.notify, &ev), None, false).unwrap();
    assert_eq!((o.sent, o.already), (0, 2), "{o}");
}

#[test]
fn a_crm_export_that_fails_after_the_messages_does_not_resend_them() {
    // Fault 3: when the CRM CSV could not be written after messages went out, the rerun sent
    // every message again.
    let dir = tempfile::tempdir().unwrap();
    let (slack, hook, smtp) = (HttpSink::start(), HttpSink::start(), SmtpSink::start());
    set_env("X1", &slack, &hook);
    let cfg = config(dir.path(), "X1", smtp.port, "[crm]\ninclude = \"contacted\"\ncsv = true\n");
    deliver(&cfg, 0, false);
    // A directory where the CSV should go.
    let csv = dir.path().join("crm/as_of=2024-12-10/Churn_Risk_High.csv");
    std::fs::create_dir_all(&csv).unwrap();
    let o = deliver(&cfg, 1, false);
    assert_eq!(o.sent, 5, "{o}");
    assert!(o.failed.iter().any(|f| f.starts_with("crm:")), "{o}");
    std::fs::remove_dir_all(&csv).unwrap();
    let o = deliver(&cfg, 1, false);
    assert_eq!((o.sent, o.already), (0, 5), "nothing sent twice: {o}");
    assert!(csv.is_file(), "the CSV is written by the rerun");
    assert_eq!(slack.requests().len(), 1);
    assert_eq!(smtp.mails().len(), 4);
}

/// A control customer of the experiment is not contacted in any way: no account message or
/// CSM alert, no CRM record (whichever segment the CRM takes), while a treated customer with
/// the same events gets both.
#[test]
fn a_control_customer_gets_no_account_message_and_no_crm_record() {
    let before = scores(&[("A", "low", "green", None, 10.0), ("B", "low", "green", None, 10.0)]);
    let mut now = scores(&[("A", "critical", "red", None, 100.0), ("B", "critical", "red", None, 90.0)]);
    now.with_column(Column::new("experiment_group".into(), ["control", "treatment"])).unwrap();
    let cfg = Config::default();
    let levels: Vec<String> = LEVELS.iter().map(|s| s.to_string()).collect();
    let accounts =
        notify::account_events(&now, Some(&before), Some(&customers()), &levels, &cfg.escalation).unwrap();
    let ids: Vec<&str> = accounts.iter().map(|a| a.scored.customer_id.as_str()).collect();
    assert_eq!(ids, ["B"], "only the treated customer's events are sent");
    let as_of = NaiveDate::from_ymd_opt(2024, 12, 10).unwrap();
    for include in [fidelis::config::CrmInclude::TopRisk, fidelis::config::CrmInclude::Contacted] {
        let records = crm::records(&now, include, "at-risk", as_of).unwrap();
        let ids: Vec<&str> = records.iter().map(|r| r.scored.customer_id.as_str()).collect();
        assert_eq!(ids, ["B"], "{include:?}: the control customer is not pushed");
    }
    // Scores written before the experiment (no group column) push everybody, as before.
    now.drop_in_place("experiment_group").unwrap();
    let records = crm::records(&now, fidelis::config::CrmInclude::TopRisk, "at-risk", as_of).unwrap();
    assert_eq!(records.len(), 2);
}
