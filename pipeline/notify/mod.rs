//! Delivery: what a run found, told to the people who act on it.
//!
//! - **Account events** come from comparing this run's scores with the previous run's:
//!   `health_red` (health colour red, was green or yellow), `risk_up` (risk level moved up
//!   into one of the two highest bands), `escalation` (an escalation the previous run did not
//!   have), `review_flag` (a review flag the previous run did not have).
//! - **Run events**: `monitoring_alert` (each monitoring alert line), `retrain` (retrain
//!   advice), `run_failed`.
//! - **Rules** (`[[notify.rules]]`) pick events, filter accounts by ARR and risk level, and
//!   route them to **channels** (`[[notify.channels]]`): Slack-compatible webhooks, signed
//!   JSON webhooks, email. A message lists at most `max_accounts` accounts (highest expected
//!   loss first); the rest are counted and pointed to the weekly report.
//! - **Delivery** retries server errors, timeouts and refused connections with exponential
//!   backoff (never a 4xx, never a redirect), journals every message as it goes out (see
//!   [`crate::sink::notifications`]), and never sends a message whose (as_of, rule, channel,
//!   target) and content are logged as sent: a rerun sends only what is missing or changed.
//!   One message may take `message_deadline_s` in all, the whole delivery `deadline_s`; a
//!   channel that did not answer is not tried again in the same run. The scores are committed
//!   before any of this starts; a failed delivery is its own exit code (7).
//! - Every value from the data (customer ids, CSM names, reasons) is escaped for the channel
//!   it goes to: control characters shown as escapes (no forged lines), Slack's `<`, `>`, `&`
//!   escaped in `text` and blocks, CSV cells that a spreadsheet would run as a formula
//!   prefixed with `'`.
//! - [`crm`]: the top-risk segment as batched upserts to a CRM endpoint, and a CSV export.
//!
//! Secrets are read from the environment or files when a message is sent ([`Secret`]); no
//! message, log line or log row contains them (error texts name the channel, never its URL).

pub mod crm;
pub mod http;
pub mod message;
pub mod smtp;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use polars::prelude::*;

use crate::activity::Customers;
use crate::config::{
    ChannelConfig, ChannelKind, Config, EscalationConfig, EventKind, NotifyConfig, RuleConfig,
};
use crate::error::{Error, PolarsContext, Result};
use crate::schema::CUSTOMER;
use crate::sink::{Delivery, DeliveryLog};

/// A secret read from the environment or a file. Never shown: `Debug` and `Display` print
/// `***`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret named by `env` (an environment variable) or `file`; `None` when both are
    /// empty. `what` names the config key in errors.
    pub fn resolve(what: &str, env: &str, file: &str) -> Result<Option<Secret>> {
        if !env.is_empty() {
            return match std::env::var(env) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(Secret(v.trim().to_string()))),
                _ => Err(Error::Config {
                    path: "(environment)".into(),
                    key: format!("{what}_env"),
                    message: format!("the environment variable {env} is not set or empty"),
                }),
            };
        }
        if !file.is_empty() {
            // A FIFO or a device would block the run (or never end): only a regular file.
            match std::fs::metadata(file) {
                Ok(m) if !m.is_file() => {
                    return Err(Error::Config {
                        path: file.to_string(),
                        key: format!("{what}_file"),
                        message: "not a regular file (a FIFO, device or directory is refused)".into(),
                    })
                }
                _ => {}
            }
            let v = std::fs::read_to_string(file).map_err(|e| Error::Config {
                path: file.to_string(),
                key: format!("{what}_file"),
                message: format!("cannot read the secret file: {}", e.kind()),
            })?;
            if v.trim().is_empty() {
                return Err(Error::Config {
                    path: file.to_string(),
                    key: format!("{what}_file"),
                    message: "the secret file is empty".into(),
                });
            }
            return Ok(Some(Secret(v.trim().to_string())));
        }
        Ok(None)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The columns of a scored customer that messages and the CRM carry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scored {
    pub customer_id: String,
    pub risk_score: i32,
    pub risk_level: String,
    pub churn_probability: f64,
    pub predicted_clv: f64,
    pub expected_loss: f64,
    pub playbook: String,
}

/// One [`Scored`] per row of a scores frame (missing values as 0 / "").
pub fn scored_rows(df: &DataFrame) -> Result<Vec<Scored>> {
    let text = |name: &str| -> Result<Vec<String>> {
        Ok(text_col(df, name)?.into_iter().map(Option::unwrap_or_default).collect())
    };
    let num = |name: &str| -> Result<Vec<f64>> {
        Ok(f64_col(df, name)?.into_iter().map(Option::unwrap_or_default).collect())
    };
    let (ids, level, playbook) = (text(CUSTOMER)?, text("risk_level")?, text("playbook")?);
    let (risk, p, clv, loss) =
        (num("risk_score")?, num("churn_probability")?, num("predicted_clv")?, num("expected_loss")?);
    Ok((0..df.height())
        .map(|i| Scored {
            customer_id: ids[i].clone(),
            risk_score: risk[i] as i32,
            risk_level: level[i].clone(),
            churn_probability: p[i],
            predicted_clv: clv[i],
            expected_loss: loss[i],
            playbook: playbook[i].clone(),
        })
        .collect())
}

/// What a message says about one account.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub scored: Scored,
    pub health_score: Option<f64>,
    pub arr: Option<f64>,
    /// Days to the next renewal (with subscriptions).
    pub days_to_renewal: Option<i32>,
    pub csm: Option<String>,
    /// The events of this account, with what changed ("health yellow -> red (34)").
    pub events: Vec<(EventKind, String)>,
    /// Addresses of the escalation rule that fired (for `escalation`).
    pub escalation_recipients: Vec<String>,
}

/// One run's view for the rules: its accounts with events, and its run-level events.
#[derive(Debug, Clone, Default)]
pub struct RunEvents {
    pub as_of: NaiveDate,
    pub model_id: String,
    /// Accounts with at least one event, highest expected loss first (then customer id).
    pub accounts: Vec<Account>,
    pub run: Vec<(EventKind, String)>,
    /// Where the full list is (the weekly report, or `notify.report_url`).
    pub link: String,
}

/// The previous run's state of one account.
#[derive(Debug, Clone, Default)]
struct Before {
    colour: Option<String>,
    level: Option<String>,
    escalation: Option<String>,
    review: bool,
}

fn text_col(df: &DataFrame, name: &str) -> Result<Vec<Option<String>>> {
    let ctx = format!("reading `{name}` of the scores");
    match df.column(name) {
        Ok(c) => {
            let c = c.cast(&DataType::String).polars(&ctx)?;
            Ok(c.str().polars(&ctx)?.iter().map(|v| v.map(str::to_string)).collect())
        }
        Err(_) => Ok(vec![None; df.height()]),
    }
}

fn f64_col(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    let ctx = format!("reading `{name}` of the scores");
    match df.column(name) {
        Ok(c) => {
            let c = c.cast(&DataType::Float64).polars(&ctx)?;
            Ok(c.f64().polars(&ctx)?.iter().collect())
        }
        Err(_) => Ok(vec![None; df.height()]),
    }
}

fn bool_col(df: &DataFrame, name: &str) -> Result<Vec<bool>> {
    let ctx = format!("reading `{name}` of the scores");
    match df.column(name) {
        Ok(c) => {
            let c = c.cast(&DataType::Boolean).polars(&ctx)?;
            Ok(c.bool().polars(&ctx)?.iter().map(|v| v.unwrap_or(false)).collect())
        }
        Err(_) => Ok(vec![false; df.height()]),
    }
}

fn previous_states(previous: Option<&DataFrame>) -> Result<Option<HashMap<String, Before>>> {
    let Some(df) = previous else { return Ok(None) };
    let ids = text_col(df, CUSTOMER)?;
    let (colour, level, esc) =
        (text_col(df, "health_colour")?, text_col(df, "risk_level")?, text_col(df, "escalation")?);
    let review = bool_col(df, "review_flag")?;
    let mut out = HashMap::with_capacity(ids.len());
    for (i, id) in ids.into_iter().enumerate() {
        if let Some(id) = id {
            let b = Before {
                colour: colour[i].clone(),
                level: level[i].clone(),
                escalation: esc[i].clone(),
                review: review[i],
            };
            out.insert(id, b);
        }
    }
    Ok(Some(out))
}

/// Account events of a run (`scores`) against the previous run (`previous`; `None` when this
/// is the first run, where escalations and review flags are new and nothing has "moved").
/// `levels` are the risk levels lowest first (the model's bands).
pub fn account_events(
    scores: &DataFrame,
    previous: Option<&DataFrame>,
    customers: Option<&Customers>,
    levels: &[String],
    escalation: &EscalationConfig,
) -> Result<Vec<Account>> {
    let before = previous_states(previous)?;
    let rank = |l: &str| levels.iter().position(|x| x == l);
    let top_two = levels.len().saturating_sub(2);
    let rows = scored_rows(scores)?;
    let (colour, esc, health) = (
        text_col(scores, "health_colour")?,
        text_col(scores, "escalation")?,
        f64_col(scores, "health_score")?,
    );
    let (review, reason) = (bool_col(scores, "review_flag")?, text_col(scores, "review_reason")?);
    let (mrr, renewal) = (f64_col(scores, "mrr")?, f64_col(scores, "days_to_renewal")?);
    let group = text_col(scores, crate::schema::EXPERIMENT_GROUP)?;
    let none = Before::default();
    let mut out = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        let (id, lvl) = (&row.customer_id, row.risk_level.clone());
        // A control customer is not contacted in any way: no CSM alert, no account message.
        if id.is_empty() || group[i].as_deref() == Some(crate::experiment::Group::Control.as_str()) {
            continue;
        }
        let was = before.as_ref().map(|b| b.get(id).unwrap_or(&none));
        let mut events = Vec::new();
        if let (Some("red"), Some(Before { colour: Some(c), .. })) = (colour[i].as_deref(), was) {
            if c == "green" || c == "yellow" {
                let h = health[i].map_or(String::new(), |h| format!(" ({h:.0})"));
                events.push((EventKind::HealthRed, format!("health {c} -> red{h}")));
            }
        }
        if let (Some(now), Some(Before { level: Some(l), .. })) = (rank(lvl.as_str()), was) {
            if now >= top_two && rank(l.as_str()).is_some_and(|then| then < now) {
                events.push((EventKind::RiskUp, format!("risk {l} -> {lvl}")));
            }
        }
        let customer = customers.and_then(|c| c.rows.get(id));
        // ARR from the customer table, else 12 x the subscription's MRR (as the escalation).
        let arr = customer.and_then(|c| c.arr()).or(mrr[i].map(|m| 12.0 * m));
        let days_to_renewal = renewal[i].map(|d| d as i32);
        let mut recipients = Vec::new();
        if let Some(e) = &esc[i] {
            if was.is_none_or(|w| w.escalation.as_ref() != Some(e)) {
                events.push((EventKind::Escalation, format!("escalation: {e}")));
                if let Some(r) = escalation.rule_for(&lvl, arr, days_to_renewal) {
                    recipients.clone_from(&r.recipients);
                }
            }
        }
        if review[i] && was.is_none_or(|w| !w.review) {
            let why = reason[i].clone().unwrap_or_default();
            events.push((EventKind::ReviewFlag, format!("review: {why}")));
        }
        if events.is_empty() {
            continue;
        }
        out.push(Account {
            scored: row,
            health_score: health[i],
            arr,
            days_to_renewal,
            csm: customer.and_then(|c| c.csm.clone()),
            events,
            escalation_recipients: recipients,
        });
    }
    out.sort_by(|a, b| {
        b.scored
            .expected_loss
            .total_cmp(&a.scored.expected_loss)
            .then_with(|| a.scored.customer_id.cmp(&b.scored.customer_id))
    });
    Ok(out)
}

/// Run events from a monitoring result (its alert lines and retrain advice).
pub fn monitoring_events(alerts: &[String], retrain: Option<&str>) -> Vec<(EventKind, String)> {
    let mut out: Vec<(EventKind, String)> =
        alerts.iter().map(|a| (EventKind::MonitoringAlert, a.clone())).collect();
    if let Some(advice) = retrain {
        out.push((EventKind::Retrain, advice.to_string()));
    }
    out
}

/// One message to one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub as_of: NaiveDate,
    pub model_id: String,
    pub rule: String,
    pub channel: String,
    pub kind: ChannelKind,
    /// The channel's name (Slack, webhook) or an email address.
    pub target: String,
    /// Listed accounts, each with only the events the rule listens to.
    pub accounts: Vec<Account>,
    /// Accounts matching the rule but not listed (over `max_accounts`).
    pub more: usize,
    pub run: Vec<(EventKind, String)>,
    pub link: String,
}

impl Notice {
    /// Accounts and run events in the message.
    pub fn items(&self) -> usize {
        self.accounts.len() + self.more + self.run.len()
    }

    /// A hash of everything the message says (its channel kind, target and the webhook
    /// document, which holds every field any channel shows): the delivery log keys on it, so
    /// a rerun whose message changed sends the new one and an identical one is not sent twice.
    pub fn content_hash(&self) -> String {
        let doc = message::webhook(self).to_string();
        let key = format!("{:?}\u{1f}{}\u{1f}{doc}", self.kind, self.target);
        format!("{:032x}", xxhash_rust::xxh3::xxh3_128(key.as_bytes()))
    }
}

/// The accounts of `events` a rule sends, each keeping only the rule's events.
fn rule_accounts(rule: &RuleConfig, accounts: &[Account]) -> Vec<Account> {
    accounts
        .iter()
        .filter(|a| rule.levels.is_empty() || rule.levels.contains(&a.scored.risk_level))
        .filter(|a| rule.min_arr <= 0.0 || a.arr.is_some_and(|arr| arr >= rule.min_arr))
        .filter(|a| rule.max_days_to_renewal.is_none_or(|m| a.days_to_renewal.is_some_and(|d| d <= m)))
        .filter_map(|a| {
            let events: Vec<_> = a.events.iter().filter(|(k, _)| rule.events.contains(k)).cloned().collect();
            (!events.is_empty()).then(|| Account { events, ..a.clone() })
        })
        .collect()
}

/// The address of an account's CSM: the name itself when it is an address, else
/// `notify.csm_addresses`.
fn csm_address(n: &NotifyConfig, csm: Option<&str>) -> Option<String> {
    let csm = csm?;
    if csm.contains('@') {
        return Some(csm.to_string());
    }
    n.csm_addresses.get(csm).cloned()
}

/// Every message the rules make of a run's events: per rule, per channel, per target (an
/// email channel writes to its `to` addresses, each account's CSM with `to_csm`, and an
/// escalation rule's recipients). Targets without anything to say get no message.
pub fn plan(cfg: &NotifyConfig, ev: &RunEvents) -> Vec<Notice> {
    let channels: HashMap<&str, &ChannelConfig> = cfg.channels.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut out = Vec::new();
    for rule in &cfg.rules {
        let accounts = rule_accounts(rule, &ev.accounts);
        let run: Vec<_> = ev.run.iter().filter(|(k, _)| rule.events.contains(k)).cloned().collect();
        for name in &rule.channels {
            let Some(ch) = channels.get(name.as_str()) else { continue };
            let mut targets: BTreeMap<String, (Vec<Account>, bool)> = BTreeMap::new();
            match ch.kind {
                ChannelKind::Slack | ChannelKind::Webhook => {
                    targets.insert(ch.name.clone(), (accounts.clone(), true));
                }
                ChannelKind::Email => {
                    for to in &ch.to {
                        targets.insert(to.clone(), (accounts.clone(), true));
                    }
                    for a in &accounts {
                        let escalated = a.events.iter().any(|(k, _)| *k == EventKind::Escalation);
                        let mut personal =
                            if escalated { a.escalation_recipients.clone() } else { Vec::new() };
                        if ch.to_csm {
                            personal.extend(csm_address(cfg, a.csm.as_deref()));
                        }
                        for to in personal {
                            let t = targets.entry(to).or_insert_with(|| (Vec::new(), false));
                            if !t.0.iter().any(|x| x.scored.customer_id == a.scored.customer_id) {
                                t.0.push(a.clone());
                            }
                        }
                    }
                }
            }
            for (target, (mut listed, gets_run)) in targets {
                let run = if gets_run { run.clone() } else { Vec::new() };
                if listed.is_empty() && run.is_empty() {
                    continue;
                }
                let more = listed.len().saturating_sub(rule.max_accounts);
                listed.truncate(rule.max_accounts);
                out.push(Notice {
                    as_of: ev.as_of,
                    model_id: ev.model_id.clone(),
                    rule: rule.name.clone(),
                    channel: ch.name.clone(),
                    kind: ch.kind,
                    target,
                    accounts: listed,
                    more,
                    run,
                    link: ev.link.clone(),
                });
            }
        }
    }
    out
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Done,
    /// Worth another try: a server error, a timeout, a refused connection.
    Retry(String),
    /// Not worth another try: a 4xx, a permanent SMTP error, a bad address.
    Fail(String),
}

/// Timeouts, deadlines and retries (`[notify]`).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// One HTTP request, or one SMTP read or write.
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    /// One message, its retries and waits included.
    pub message_deadline: Duration,
}

impl RetryPolicy {
    pub fn of(cfg: &NotifyConfig) -> RetryPolicy {
        RetryPolicy {
            timeout: Duration::from_secs_f64(cfg.timeout_s),
            retries: cfg.retries,
            backoff: Duration::from_secs_f64(cfg.backoff_s),
            message_deadline: Duration::from_secs_f64(cfg.message_deadline_s),
        }
    }

    /// Run `attempt` (given the time it may take) until it is done, fails for good, the
    /// retries are used up, or the message's deadline (or `stage_end`, the end of the whole
    /// delivery, if sooner) has passed; returns the attempts made and the last error.
    pub fn run(
        &self,
        stage_end: Option<Instant>,
        mut attempt: impl FnMut(Duration) -> Attempt,
    ) -> (i32, Option<String>) {
        let mut end = Instant::now() + self.message_deadline;
        if let Some(s) = stage_end {
            end = end.min(s);
        }
        let mut wait = self.backoff;
        let mut n = 0;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let e = if n == 0 {
                    "not tried: the delivery deadline had passed"
                } else {
                    "the deadline passed"
                };
                return (n, Some(e.into()));
            }
            n += 1;
            match attempt(self.timeout.min(left)) {
                Attempt::Done => return (n, None),
                Attempt::Fail(e) => return (n, Some(e)),
                Attempt::Retry(e) if n > self.retries as i32 => return (n, Some(e)),
                Attempt::Retry(e) => {
                    let left = end.saturating_duration_since(Instant::now());
                    if wait >= left {
                        return (n, Some(format!("{e}; no time left for a retry before the deadline")));
                    }
                    log::warn!("attempt {n} failed ({e}); retrying in {:.1}s", wait.as_secs_f64());
                    std::thread::sleep(wait);
                    wait = wait.saturating_mul(2);
                }
            }
        }
    }
}

/// Run `f` on a thread of its own and wait at most `limit` for it: a peer that keeps each
/// read short but never finishes (an SMTP server answering a byte at a time) cannot hold the
/// run past its deadline. A call still running then is left to end on its own socket timeout.
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .map_err(|_| format!("{what} took longer than its deadline ({:.0}s)", limit.as_secs_f64()))
}

/// What delivery did.
#[derive(Debug, Clone, Default)]
pub struct DeliveryOutcome {
    /// Messages sent now.
    pub sent: usize,
    /// Messages (or CRM batches) that failed after their retries.
    pub failed: Vec<String>,
    /// Messages skipped: the log says they were delivered by an earlier run of this as_of.
    pub already: usize,
    /// `--dry-run`: what would have been sent, rendered.
    pub dry_run: Vec<String>,
    /// CRM: records pushed and the CSV written.
    pub crm: Option<crm::CrmOutcome>,
    /// Accounts with events (before the rules' filters).
    pub accounts: usize,
    /// Events found, by kind (accounts and run events, before the rules' filters).
    pub events: BTreeMap<&'static str, usize>,
    /// Copies of the delivery log that could not be written (the journal has every row; the
    /// next delivery writes them). What was sent stays counted as sent.
    pub log_errors: Vec<String>,
    /// Deliveries journaled by this run: the job copies the log to the sinks when any
    /// (`sink::Sinks::copy_deliveries`).
    pub journaled: usize,
}

impl DeliveryOutcome {
    pub fn failed(&self) -> bool {
        !self.failed.is_empty() || self.crm.as_ref().is_some_and(|c| c.failed > 0)
    }
}

impl std::fmt::Display for DeliveryOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for d in &self.dry_run {
            writeln!(f, "{d}")?;
        }
        let kinds = self.events.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ");
        write!(
            f,
            "notifications: {} accounts with events ({}), {} messages sent, {} already delivered, {} failed",
            self.accounts,
            if kinds.is_empty() { "no events".to_string() } else { kinds },
            self.sent,
            self.already,
            self.failed.len()
        )?;
        for e in &self.failed {
            write!(f, "\nDELIVERY FAILED {e}")?;
        }
        if let Some(c) = &self.crm {
            write!(f, "\n{c}")?;
        }
        for e in &self.log_errors {
            write!(f, "\nWARNING {e}")?;
        }
        Ok(())
    }
}

/// A webhook or CRM URL read from its secret and checked (https, or http to loopback).
pub(crate) fn endpoint(what: &str, env: &str, file: &str) -> Result<Option<Secret>> {
    let Some(url) = Secret::resolve(what, env, file)? else { return Ok(None) };
    crate::config::notify::check_endpoint_url(url.expose()).map_err(|m| Error::Config {
        path: if file.is_empty() { "(environment)".into() } else { file.to_string() },
        key: if file.is_empty() { format!("{what}_env") } else { format!("{what}_file") },
        message: format!("the URL {m}"),
    })?;
    Ok(Some(url))
}

/// Send one notice through its channel, within the message's deadline (and the stage's).
fn send(
    ch: &ChannelConfig,
    n: &Notice,
    cfg: &NotifyConfig,
    policy: RetryPolicy,
    stage_end: Instant,
) -> Result<(i32, Option<String>)> {
    Ok(match ch.kind {
        ChannelKind::Slack | ChannelKind::Webhook => {
            let Some(url) = endpoint(&format!("notify.channels.{}.url", ch.name), &ch.url_env, &ch.url_file)?
            else {
                return Ok((0, Some("no URL configured".into())));
            };
            let key = Secret::resolve(
                &format!("notify.channels.{}.hmac_key", ch.name),
                &ch.hmac_key_env,
                &ch.hmac_key_file,
            )?;
            let body = match ch.kind {
                ChannelKind::Slack => message::slack(n),
                _ => message::webhook(n),
            };
            let body = serde_json::to_vec(&body)
                .map_err(|e| Error::Json { context: "rendering a message".into(), source: e })?;
            let idem = message::idempotency_key(n);
            policy.run(Some(stage_end), |timeout| {
                http::post_json(&http::agent(timeout), &url, &body, &idem, key.as_ref())
            })
        }
        ChannelKind::Email => {
            let password = Secret::resolve(
                &format!("notify.channels.{}.password", ch.name),
                &ch.password_env,
                &ch.password_file,
            )?;
            let mail = std::sync::Arc::new(message::email(n, cfg));
            let (ch, to) = (std::sync::Arc::new(ch.clone()), n.target.clone());
            policy.run(Some(stage_end), |timeout| {
                let (ch, mail, to, pw) = (ch.clone(), mail.clone(), to.clone(), password.clone());
                within(timeout, "the SMTP session", move || smtp::send(&ch, pw.as_ref(), &to, &mail, timeout))
                    .unwrap_or_else(Attempt::Retry)
            })
        }
    })
}

/// Whether an error says the channel did not answer at all (so its other messages of this run
/// would only wait for the same timeouts).
fn unreachable(error: &str) -> bool {
    ["timed out", "deadline", "connection", "host not found", "took longer"].iter().any(|w| error.contains(w))
}

/// Journals each delivery as it happens (see [`crate::sink::notifications`]).
pub(crate) struct Journal<'a> {
    log: &'a DeliveryLog,
    pub(crate) written: usize,
}

impl Journal<'_> {
    pub(crate) fn record(&mut self, row: Delivery) -> Result<()> {
        self.log.journal(&row)?;
        self.written += 1;
        Ok(())
    }
}

/// Deliver `notices`: skip what the log says was delivered for this as_of with the same
/// content, send the rest (or render them with `dry_run`) and journal each as it happens (the
/// job then copies the log to the sinks: `sink::Sinks::copy_deliveries`). `crm` are the records of the CRM push and
/// export (`None`: nothing configured).
pub fn deliver(
    cfg: &Config,
    as_of: NaiveDate,
    notices: &[Notice],
    crm: Option<&[crm::Record]>,
    dry_run: bool,
) -> Result<DeliveryOutcome> {
    let log = DeliveryLog::new(std::path::Path::new(&cfg.output.dir));
    let delivered = log.delivered(as_of)?;
    let policy = RetryPolicy::of(&cfg.notify);
    let stage_end = Instant::now() + Duration::from_secs_f64(cfg.notify.deadline_s);
    let channels: HashMap<&str, &ChannelConfig> =
        cfg.notify.channels.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut out = DeliveryOutcome::default();
    let mut journal = Journal { log: &log, written: 0 };
    let mut down: HashSet<String> = HashSet::new();
    for n in notices {
        let content = n.content_hash();
        if delivered.contains(&n.rule, &n.channel, &n.target, &content) {
            out.already += 1;
            continue;
        }
        if dry_run {
            out.dry_run.push(message::dry_run(n));
            continue;
        }
        let Some(ch) = channels.get(n.channel.as_str()) else { continue };
        let (attempts, error) = if down.contains(&n.channel) {
            (0, Some(format!("not tried: {} did not answer earlier in this run", n.channel)))
        } else {
            send(ch, n, &cfg.notify, policy, stage_end)?
        };
        match &error {
            None => out.sent += 1,
            Some(e) => {
                if unreachable(e) {
                    down.insert(n.channel.clone());
                }
                out.failed.push(format!(
                    "{} -> {} ({}): {e}",
                    message::one_line(&n.rule),
                    message::one_line(&n.channel),
                    message::one_line(&n.target)
                ))
            }
        }
        journal.record(Delivery {
            as_of,
            rule: n.rule.clone(),
            channel: n.channel.clone(),
            target: n.target.clone(),
            content,
            items: n.items() as i64,
            status: if error.is_none() { "sent" } else { "failed" }.into(),
            attempts,
            error,
            logged_at: Utc::now(),
        })?;
    }
    if let Some(records) = crm {
        // A CRM step that cannot run (its CSV cannot be written) fails on its own: the
        // messages above are sent and journaled, and the log is still copied.
        match crm::push(cfg, as_of, records, &delivered, &mut journal, dry_run, stage_end) {
            Ok(c) => out.crm = Some(c),
            Err(e) => out.failed.push(format!("crm: {e}")),
        }
    }
    out.journaled = journal.written;
    Ok(out)
}

/// Read every secret the configured channels and the CRM push need, so that a missing one
/// stops a run before it writes anything (exit 2) instead of after the scores.
pub fn check_secrets(cfg: &Config) -> Result<()> {
    let used: std::collections::HashSet<&str> =
        cfg.notify.rules.iter().flat_map(|r| r.channels.iter().map(String::as_str)).collect();
    for ch in cfg.notify.channels.iter().filter(|c| used.contains(c.name.as_str())) {
        let key = |k: &str| format!("notify.channels.{}.{k}", ch.name);
        endpoint(&key("url"), &ch.url_env, &ch.url_file)?;
        Secret::resolve(&key("hmac_key"), &ch.hmac_key_env, &ch.hmac_key_file)?;
        Secret::resolve(&key("password"), &ch.password_env, &ch.password_file)?;
    }
    endpoint("crm.url", &cfg.crm.url_env, &cfg.crm.url_file)?;
    Secret::resolve("crm.token", &cfg.crm.token_env, &cfg.crm.token_file)?;
    Ok(())
}
