//! `[notify]` and `[crm]`: who hears about what a run found, and where the top-risk segment
//! goes. Secrets (webhook URLs, the HMAC key, the SMTP password, the CRM token) are never
//! config values: a `*_env` key names an environment variable, a `*_file` key a file holding
//! the secret (Docker / Kubernetes secrets); the secret is read when a message is sent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Notification channels and the rules that route events to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Where a message points for the full list (the weekly report); "" = the report's path.
    pub report_url: String,
    /// Seconds one HTTP request or one SMTP read or write may take.
    pub timeout_s: f64,
    /// Seconds one message may take in all, its retries and their waits included (a server
    /// trickling its answer a byte at a time is cut off here).
    pub message_deadline_s: f64,
    /// Seconds the whole delivery of a run may take; messages not tried by then are reported
    /// as failed (a rerun of the same as_of sends them).
    pub deadline_s: f64,
    /// Attempts after a failed first one (server errors, timeouts, refused connections;
    /// never after a 4xx or a permanent SMTP error).
    pub retries: u32,
    /// Wait before the first retry in seconds, doubled for each further one.
    pub backoff_s: f64,
    /// CSM name (the customer table's `csm` column) -> email address, for names that are
    /// not addresses themselves.
    pub csm_addresses: BTreeMap<String, String>,
    pub channels: Vec<ChannelConfig>,
    pub rules: Vec<RuleConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            report_url: String::new(),
            timeout_s: 10.0,
            message_deadline_s: 60.0,
            deadline_s: 300.0,
            retries: 3,
            backoff_s: 1.0,
            csm_addresses: BTreeMap::new(),
            channels: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// `slack`: a Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat);
/// `webhook`: JSON POST signed with HMAC-SHA256; `email`: SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Slack,
    Webhook,
    Email,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartTls {
    /// Plain SMTP (a relay on localhost or inside the network).
    Never,
    /// STARTTLS when the server offers it.
    Opportunistic,
    /// STARTTLS or fail.
    #[default]
    Required,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// The name rules use, and the `target` of a Slack or webhook delivery in the log.
    pub name: String,
    pub kind: ChannelKind,
    /// slack / webhook: the URL, from this environment variable ...
    #[serde(default)]
    pub url_env: String,
    /// ... or from this file.
    #[serde(default)]
    pub url_file: String,
    /// webhook: the HMAC-SHA256 key (environment variable or file).
    #[serde(default)]
    pub hmac_key_env: String,
    #[serde(default)]
    pub hmac_key_file: String,
    /// email: the SMTP server.
    #[serde(default)]
    pub smtp_host: String,
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    #[serde(default)]
    pub starttls: StartTls,
    /// email: login (none when empty); the password from the environment or a file.
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password_env: String,
    #[serde(default)]
    pub password_file: String,
    #[serde(default)]
    pub from: String,
    /// email: fixed recipients of every message of this channel.
    #[serde(default)]
    pub to: Vec<String>,
    /// email: also write to each account's CSM about their accounts.
    #[serde(default)]
    pub to_csm: bool,
}

fn default_smtp_port() -> u16 {
    587
}

/// What a rule listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Health colour turned red from green or yellow since the previous run.
    HealthRed,
    /// Risk level moved up into critical or imminent since the previous run.
    RiskUp,
    /// An escalation that the previous run did not have.
    Escalation,
    /// A review flag that the previous run did not have.
    ReviewFlag,
    /// A monitoring alert (drift, realized-AUC drop).
    MonitoringAlert,
    /// Monitoring advises retraining.
    Retrain,
    /// The run failed.
    RunFailed,
}

impl EventKind {
    pub fn is_account(self) -> bool {
        matches!(
            self,
            EventKind::HealthRed | EventKind::RiskUp | EventKind::Escalation | EventKind::ReviewFlag
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HealthRed => "health_red",
            EventKind::RiskUp => "risk_up",
            EventKind::Escalation => "escalation",
            EventKind::ReviewFlag => "review_flag",
            EventKind::MonitoringAlert => "monitoring_alert",
            EventKind::Retrain => "retrain",
            EventKind::RunFailed => "run_failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub events: Vec<EventKind>,
    pub channels: Vec<String>,
    /// Account events only for accounts whose ARR is at least this (0 = every account,
    /// also those without a known ARR).
    #[serde(default)]
    pub min_arr: f64,
    /// Account events only in these risk levels (empty = any).
    #[serde(default)]
    pub levels: Vec<String>,
    /// Account events only for accounts whose next renewal (the scores' `days_to_renewal`,
    /// with `[input.subscriptions]`) is at most this many days away; accounts without a known
    /// renewal are left out (unset = every account).
    #[serde(default)]
    pub max_days_to_renewal: Option<i32>,
    /// At most this many accounts listed in one message; the rest are counted and pointed
    /// to the weekly report.
    #[serde(default = "default_max_accounts")]
    pub max_accounts: usize,
}

fn default_max_accounts() -> usize {
    20
}

/// Slack accepts at most 50 blocks in a message: a header, one block of run events, the
/// accounts and a footer.
pub const SLACK_MAX_ACCOUNTS: usize = 47;

/// Whether `host` names this machine's loopback interface (127.0.0.0/8, ::1, localhost):
/// the only place a secret may travel in plain text.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.to_ascii_lowercase().ends_with(".localhost")
        || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Check a webhook or CRM URL before anything is sent: `https://`, or `http://` to a loopback
/// host only (a plain-text URL to another host would carry the secret path, the signature and
/// the token in clear); any other scheme is refused. The message never contains the URL.
pub fn check_endpoint_url(url: &str) -> std::result::Result<(), String> {
    let Some((scheme, rest)) = url.trim().split_once("://") else {
        return Err("is not a URL (expected https://host/path)".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.split_once(']').map_or(host_port, |(h, _)| h).trim_start_matches('[')
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Ok(()),
        "http" if is_loopback_host(host) => Ok(()),
        "http" => Err("is plain http:// to a host that is not loopback: use https:// (the URL and its \
                       secrets would travel in clear)"
            .into()),
        other => {
            Err(format!("has the scheme {other:?}: only https:// (or http:// to loopback) is supported"))
        }
    }
}

/// Whether `s` holds a control character (CR, LF, NUL, ...): never valid in an address or a
/// header value.
pub fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Whether `a` can be an email address: one `@`, something on each side, no spaces or
/// control characters.
pub fn is_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else { return false };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !has_control(a)
        && !a.chars().any(char::is_whitespace)
}

/// `[crm]`: the top-risk segment as batched JSON upserts to an HTTP endpoint, and/or a CSV
/// file in the column layout CRMs import.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrmConfig {
    /// The endpoint, from this environment variable or file (none: no push).
    pub url_env: String,
    pub url_file: String,
    /// Bearer token (environment variable or file; none: no Authorization header).
    pub token_env: String,
    pub token_file: String,
    /// Segment name written on every record.
    pub segment: String,
    /// `top_risk`: the top-risk segment; `contacted`: every customer the decision contacts.
    pub include: CrmInclude,
    /// Records per request.
    pub batch_size: usize,
    /// Also write `<output.dir>/crm/as_of=DATE/<segment>.csv`.
    pub csv: bool,
}

impl Default for CrmConfig {
    fn default() -> Self {
        CrmConfig {
            url_env: String::new(),
            url_file: String::new(),
            token_env: String::new(),
            token_file: String::new(),
            segment: "Churn_Risk_High".into(),
            include: CrmInclude::TopRisk,
            batch_size: 500,
            csv: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrmInclude {
    TopRisk,
    Contacted,
}

impl CrmConfig {
    /// Whether anything is pushed or exported.
    pub fn enabled(&self) -> bool {
        self.csv || !self.url_env.is_empty() || !self.url_file.is_empty()
    }
}

type Checked = std::result::Result<(), (String, String)>;

fn bad(key: String, message: String) -> Checked {
    Err((key, message))
}

/// One secret source: an environment variable or a file, not both.
fn check_source(key: &str, env: &str, file: &str, required: bool) -> Checked {
    if !env.is_empty() && !file.is_empty() {
        return bad(key.to_string(), format!("set {key}_env or {key}_file, not both"));
    }
    if required && env.is_empty() && file.is_empty() {
        return bad(
            format!("{key}_env"),
            format!("name the environment variable (or {key}_file) holding it"),
        );
    }
    Ok(())
}

/// One `[[notify.channels]]` entry: its secrets' sources, and for email its server, sender,
/// recipients and the rule that a login never goes out in plain text to a remote server.
fn check_channel(i: usize, c: &ChannelConfig) -> Checked {
    let key = |k: &str| format!("notify.channels[{i}].{k}");
    match c.kind {
        ChannelKind::Slack | ChannelKind::Webhook => {
            check_source(&key("url"), &c.url_env, &c.url_file, true)?;
            check_source(&key("hmac_key"), &c.hmac_key_env, &c.hmac_key_file, false)?;
        }
        ChannelKind::Email => {
            if c.smtp_host.trim().is_empty() {
                return bad(key("smtp_host"), "an email channel needs its SMTP server".into());
            }
            if !is_address(&c.from) {
                return bad(key("from"), format!("{:?} is not an email address", c.from));
            }
            if c.to.is_empty() && !c.to_csm {
                return bad(key("to"), "no recipient: list addresses in `to` or set `to_csm`".into());
            }
            if let Some(a) = c.to.iter().find(|a| !is_address(a)) {
                return bad(key("to"), format!("{a:?} is not an email address"));
            }
            check_source(&key("password"), &c.password_env, &c.password_file, !c.username.is_empty())?;
            if !c.username.is_empty() && c.starttls == StartTls::Never && !is_loopback_host(&c.smtp_host) {
                return bad(
                    key("starttls"),
                    format!(
                        "\"never\" with a username would send the password in plain text to {}: \
                         use \"required\" (plain-text login is allowed only to a loopback relay)",
                        c.smtp_host
                    ),
                );
            }
        }
    }
    Ok(())
}

pub(super) fn check_notify(n: &NotifyConfig, levels: &[String], parquet: bool) -> Checked {
    if !(n.timeout_s > 0.0 && n.timeout_s <= 600.0) {
        return bad("notify.timeout_s".into(), format!("must be in (0, 600], got {}", n.timeout_s));
    }
    if n.retries > 10 {
        return bad("notify.retries".into(), format!("at most 10, got {}", n.retries));
    }
    if !(n.backoff_s >= 0.0 && n.backoff_s <= 60.0) {
        return bad("notify.backoff_s".into(), format!("must be in [0, 60], got {}", n.backoff_s));
    }
    if !(n.message_deadline_s > 0.0 && n.message_deadline_s <= 3600.0) {
        return bad(
            "notify.message_deadline_s".into(),
            format!("must be in (0, 3600], got {}", n.message_deadline_s),
        );
    }
    if !(n.deadline_s > 0.0 && n.deadline_s <= 86_400.0) {
        return bad("notify.deadline_s".into(), format!("must be in (0, 86400], got {}", n.deadline_s));
    }
    let mut names = std::collections::HashSet::new();
    for (i, c) in n.channels.iter().enumerate() {
        if c.name.trim().is_empty() || !names.insert(c.name.as_str()) {
            return bad(
                format!("notify.channels[{i}].name"),
                format!("{:?}: every channel needs a name of its own", c.name),
            );
        }
        check_channel(i, c)?;
    }
    let mut rule_names = std::collections::HashSet::new();
    for (i, r) in n.rules.iter().enumerate() {
        let key = |k: &str| format!("notify.rules[{i}].{k}");
        if r.name.trim().is_empty() || !rule_names.insert(r.name.as_str()) {
            return bad(key("name"), format!("{:?}: every rule needs a name of its own", r.name));
        }
        if r.events.is_empty() {
            return bad(key("events"), "list the events the rule sends".into());
        }
        if !parquet && r.events.iter().any(|e| e.is_account()) {
            return bad(
                key("events"),
                "account events compare a run with the previous one in the Parquet output: \
                 set output.parquet = true"
                    .into(),
            );
        }
        if r.channels.is_empty() {
            return bad(key("channels"), "list the channels the rule sends to".into());
        }
        if let Some(c) = r.channels.iter().find(|c| !names.contains(c.as_str())) {
            return bad(key("channels"), format!("{c:?} is not the name of a [[notify.channels]] entry"));
        }
        if let Some(l) = r.levels.iter().find(|l| !levels.contains(l)) {
            return bad(key("levels"), format!("{l:?} is not a risk level (one of {})", levels.join(", ")));
        }
        if !(r.min_arr >= 0.0 && r.min_arr.is_finite()) {
            return bad(key("min_arr"), format!("must be >= 0, got {}", r.min_arr));
        }
        if r.max_accounts == 0 {
            return bad(key("max_accounts"), "must be at least 1".into());
        }
        let to_slack = r
            .channels
            .iter()
            .any(|c| n.channels.iter().any(|ch| &ch.name == c && ch.kind == ChannelKind::Slack));
        if to_slack && r.max_accounts > SLACK_MAX_ACCOUNTS {
            return bad(
                key("max_accounts"),
                format!(
                    "{} accounts would not fit a Slack message (50 blocks: at most {SLACK_MAX_ACCOUNTS} \
                     accounts beside the header, the run events and the footer)",
                    r.max_accounts
                ),
            );
        }
    }
    for (name, a) in &n.csm_addresses {
        if !is_address(a) {
            return bad(format!("notify.csm_addresses.{name}"), format!("{a:?} is not an email address"));
        }
    }
    Ok(())
}

pub(super) fn check_crm(c: &CrmConfig) -> Checked {
    check_source("crm.url", &c.url_env, &c.url_file, false)?;
    check_source("crm.token", &c.token_env, &c.token_file, false)?;
    if c.batch_size == 0 || c.batch_size > 10_000 {
        return bad("crm.batch_size".into(), format!("must be in 1..=10000, got {}", c.batch_size));
    }
    let ok = |ch: char| ch.is_ascii_alphanumeric() || "_-. ".contains(ch);
    if c.segment.trim().is_empty() || !c.segment.chars().all(ok) {
        return bad("crm.segment".into(), format!("{:?}: letters, digits, _ - . and spaces", c.segment));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls_must_be_https_or_loopback_http() {
        assert!(check_endpoint_url("https://hooks.example.com/T/B/secret").is_ok());
        assert!(check_endpoint_url("http://127.0.0.1:8080/hook").is_ok());
        assert!(check_endpoint_url("http://localhost/hook").is_ok());
        assert!(check_endpoint_url("http://[::1]:9/x").is_ok());
        assert!(check_endpoint_url("http://127.9.9.9/x").is_ok());
        for bad in [
            "http://hooks.example.com/T/B/s3cr3t",
            "http://10.0.0.5/hook",
            "http://user:pw@evil.example/x",
            "http://127.0.0.1.evil.example/x",
            "file:///etc/passwd",
            "unix:///run/x.sock",
            "ftp://example.com/x",
            "hooks.example.com/x",
            "https:///nohost",
        ] {
            let e = check_endpoint_url(bad).unwrap_err();
            assert!(!e.contains("s3cr3t") && !e.contains("passwd") && !e.contains("pw@"), "{bad}: {e}");
        }
    }

    #[test]
    fn addresses_with_control_characters_are_not_addresses() {
        assert!(is_address("ana@example.com"));
        for a in ["ana", "ana@example.com\r\nBcc: x@evil", "a b@example.com", "@example.com", "a@", "a@b@c"] {
            assert!(!is_address(a), "{a:?}");
        }
    }
}
