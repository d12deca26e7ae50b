//! What a notice says, per channel: Slack blocks, a JSON document for webhooks, an email in
//! plain text and HTML. Secrets never reach a message (they are not in a notice).
//!
//! Values from the data (ids, levels, playbooks, CSM names, event details) go through
//! [`one_line`] in every text line, so no value can start a line of its own (a forged
//! "RUN FAILED"); Slack text and blocks escape `&`, `<` and `>` (no `<!channel>`, `@here` links
//! or `<url|label>` links from the data); HTML is escaped; the webhook's JSON carries the
//! values as they are (JSON strings are escaped by construction).

use serde_json::{json, Value};

use super::{Account, Notice};
use crate::config::{EventKind, NotifyConfig};
use crate::format;

/// `s` on one line: every control character (CR, LF, tab, NUL, the Unicode line and paragraph
/// separators) shown as an escape (`\n`, `\u{2028}`), so a value cannot break a line.
pub fn one_line(s: &str) -> String {
    if !s.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}') {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn money(v: f64) -> String {
    format::int(v.round() as i128)
}

fn title(n: &Notice) -> String {
    let mut parts = Vec::new();
    let accounts = n.accounts.len() + n.more;
    if accounts > 0 {
        parts.push(format!("{accounts} account{}", if accounts == 1 { "" } else { "s" }));
    }
    if !n.run.is_empty() {
        let what = n.run.iter().map(|(k, _)| k.as_str()).collect::<std::collections::BTreeSet<_>>();
        parts.push(what.into_iter().collect::<Vec<_>>().join(", ").replace('_', " "));
    }
    one_line(&format!("fidelis {} [{}]: {}", n.as_of, n.rule, parts.join("; ")))
}

/// One account on one line: id, risk, money, what changed.
fn account_line(a: &Account) -> String {
    let what = a.events.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>().join("; ");
    let arr = a.arr.map_or(String::new(), |v| format!(", ARR {}", money(v)));
    let arr = match a.days_to_renewal {
        Some(d) => format!("{arr}, renews in {d} day{}", if d == 1 { "" } else { "s" }),
        None => arr,
    };
    let csm = a.csm.as_deref().map_or(String::new(), |c| format!(", CSM {c}"));
    one_line(&format!(
        "{} - {} ({}, churn {:.0}%), CLV {}, expected loss {}{arr}{csm}: {what}. Playbook: {}",
        a.scored.customer_id,
        a.scored.risk_level,
        a.scored.risk_score,
        100.0 * a.scored.churn_probability,
        money(a.scored.predicted_clv),
        money(a.scored.expected_loss),
        a.scored.playbook
    ))
}

fn more_line(n: &Notice) -> Option<String> {
    (n.more > 0).then(|| one_line(&format!("... and {} more: {}", n.more, n.link)))
}

fn run_line((k, text): &(EventKind, String)) -> String {
    let text = one_line(text);
    match k {
        EventKind::MonitoringAlert => format!("ALERT {text}"),
        EventKind::Retrain => format!("RETRAIN {text}"),
        EventKind::RunFailed => format!("RUN FAILED {text}"),
        _ => text,
    }
}

/// The message as lines of plain text (title first).
pub fn lines(n: &Notice) -> Vec<String> {
    let mut out = vec![title(n)];
    out.extend(n.run.iter().map(run_line));
    out.extend(n.accounts.iter().map(account_line));
    out.extend(more_line(n));
    if n.more == 0 && !n.link.is_empty() {
        out.push(one_line(&format!("Report: {}", n.link)));
    }
    out
}

fn escape_mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Slack's limits: 3,000 characters in a section's text, 150 in a header.
fn cut(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Slack-compatible incoming webhook payload: `text` (the fallback every client shows, escaped
/// like the blocks) and `blocks` (a header, one section with the run events, one section per
/// account, a footer: at most 50 blocks for the at most 47 accounts a rule may list).
pub fn slack(n: &Notice) -> Value {
    let text = escape_mrkdwn(&lines(n).join("\n"));
    let mut blocks =
        vec![json!({"type": "header", "text": {"type": "plain_text", "text": cut(title(n), 150)}})];
    if !n.run.is_empty() {
        let run = n.run.iter().map(run_line).collect::<Vec<_>>().join("\n");
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(escape_mrkdwn(&run), 3000)}}),
        );
    }
    for a in &n.accounts {
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(escape_mrkdwn(&account_line(a)), 3000)}}),
        );
    }
    let footer = more_line(n).unwrap_or_else(|| one_line(&format!("Report: {}", n.link)));
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": cut(escape_mrkdwn(&footer), 3000)}]}));
    json!({"text": text, "blocks": blocks})
}

/// The generic webhook's JSON document.
pub fn webhook(n: &Notice) -> Value {
    let accounts: Vec<Value> = n
        .accounts
        .iter()
        .map(|a| {
            json!({
                "customer_id": a.scored.customer_id,
                "events": a.events.iter().map(|(k, d)| json!({"event": k.as_str(), "detail": d})).collect::<Vec<_>>(),
                "risk_score": a.scored.risk_score,
                "risk_level": a.scored.risk_level,
                "churn_probability": a.scored.churn_probability,
                "predicted_clv": a.scored.predicted_clv,
                "expected_loss": a.scored.expected_loss,
                "playbook": a.scored.playbook,
                "health_score": a.health_score,
                "arr": a.arr,
                "days_to_renewal": a.days_to_renewal,
                "csm": a.csm,
            })
        })
        .collect();
    json!({
        "source": "fidelis",
        "as_of": n.as_of.to_string(),
        "model_id": n.model_id,
        "rule": n.rule,
        "title": title(n),
        "run_events": n.run.iter().map(|(k, d)| json!({"event": k.as_str(), "detail": d})).collect::<Vec<_>>(),
        "accounts": accounts,
        "more_accounts": n.more,
        "report": n.link,
    })
}

/// An email: subject, plain text and HTML.
pub struct Mail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn email(n: &Notice, _cfg: &NotifyConfig) -> Mail {
    let subject = title(n);
    let text = lines(n).join("\n") + "\n";
    let mut html = format!("<h2>{}</h2>\n", html_escape(&subject));
    if !n.run.is_empty() {
        html.push_str("<ul>\n");
        for r in &n.run {
            html.push_str(&format!("<li>{}</li>\n", html_escape(&run_line(r))));
        }
        html.push_str("</ul>\n");
    }
    if !n.accounts.is_empty() {
        html.push_str(
            "<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\">\n<tr><th>customer</th><th>risk</th>\
             <th>churn</th><th>CLV</th><th>expected loss</th><th>what changed</th><th>playbook</th></tr>\n",
        );
        for a in &n.accounts {
            let what = a.events.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>().join("; ");
            html.push_str(&format!(
                "<tr><td>{}</td><td>{} ({})</td><td>{:.0}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                html_escape(&one_line(&a.scored.customer_id)),
                html_escape(&a.scored.risk_level),
                a.scored.risk_score,
                100.0 * a.scored.churn_probability,
                money(a.scored.predicted_clv),
                money(a.scored.expected_loss),
                html_escape(&one_line(&what)),
                html_escape(&a.scored.playbook)
            ));
        }
        html.push_str("</table>\n");
    }
    if let Some(m) = more_line(n) {
        html.push_str(&format!("<p>{}</p>\n", html_escape(&m)));
    } else if !n.link.is_empty() {
        html.push_str(&format!("<p>Report: {}</p>\n", html_escape(&n.link)));
    }
    Mail { subject, text, html }
}

/// `--dry-run`: the message as it would go out, with its route.
pub fn dry_run(n: &Notice) -> String {
    let mut out = format!("WOULD SEND {} -> {} ({}):", n.rule, n.channel, n.target);
    for l in lines(n) {
        out.push_str("\n  ");
        out.push_str(&l);
    }
    out
}

/// The `Idempotency-Key` header of a message: the same (as_of, rule, channel, target) and
/// content give the same key, so a receiver can drop a retried duplicate; changed content
/// gives a new key.
pub fn idempotency_key(n: &Notice) -> String {
    let key =
        format!("{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}", n.as_of, n.rule, n.channel, n.target, n.content_hash());
    format!("fidelis-{}-{:016x}", n.as_of, xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}
