//! Email over SMTP (lettre): plain text and HTML alternatives, STARTTLS never /
//! opportunistic / required, login when a username is set. Errors carry the SMTP status, never
//! the password.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use super::message::Mail;
use super::{Attempt, Secret};
use crate::config::{ChannelConfig, StartTls};

fn transport(
    ch: &ChannelConfig,
    password: Option<&Secret>,
    timeout: Duration,
) -> Result<SmtpTransport, String> {
    let params = || TlsParameters::new(ch.smtp_host.clone()).map_err(|e| format!("TLS setup failed: {e}"));
    let tls = match ch.starttls {
        StartTls::Never => Tls::None,
        StartTls::Opportunistic => Tls::Opportunistic(params()?),
        StartTls::Required => Tls::Required(params()?),
    };
    let mut b = SmtpTransport::builder_dangerous(ch.smtp_host.as_str())
        .port(ch.smtp_port)
        .tls(tls)
        .timeout(Some(timeout));
    if !ch.username.is_empty() {
        let pw = password.map(|p| p.expose().to_string()).unwrap_or_default();
        b = b.credentials(Credentials::new(ch.username.clone(), pw));
    }
    Ok(b.build())
}

/// Send `mail` to `to` through the channel's server: one attempt.
pub fn send(
    ch: &ChannelConfig,
    password: Option<&Secret>,
    to: &str,
    mail: &Mail,
    timeout: Duration,
) -> Attempt {
    let from: Mailbox = match ch.from.parse() {
        Ok(m) => m,
        Err(_) => return Attempt::Fail(format!("{:?} is not a valid sender address", ch.from)),
    };
    let rcpt: Mailbox = match to.parse() {
        Ok(m) => m,
        Err(_) => return Attempt::Fail(format!("{to:?} is not a valid address")),
    };
    let msg = Message::builder()
        .from(from)
        .to(rcpt)
        .subject(mail.subject.clone())
        .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()));
    let msg = match msg {
        Ok(m) => m,
        Err(e) => return Attempt::Fail(format!("cannot build the message: {e}")),
    };
    let t = match transport(ch, password, timeout) {
        Ok(t) => t,
        Err(e) => return Attempt::Fail(e),
    };
    match t.send(&msg) {
        Ok(_) => Attempt::Done,
        Err(e) => {
            let code = e.status().map_or(String::new(), |c| format!(" {c}"));
            if e.is_permanent() {
                Attempt::Fail(format!("SMTP permanent error{code}"))
            } else if e.is_transient() {
                Attempt::Retry(format!("SMTP transient error{code}"))
            } else if e.is_timeout() {
                Attempt::Retry("SMTP timed out".into())
            } else {
                Attempt::Retry("SMTP connection failed".into())
            }
        }
    }
}
