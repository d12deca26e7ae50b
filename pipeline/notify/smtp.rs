//! Email over SMTP (lettre): plain text and HTML alternatives, STARTTLS never /
//! opportunistic / required, login when a username is set. Errors carry the SMTP status, never
//! the password.
//!
//! A password never travels in plain text except to a loopback relay: with a username and a
//! server that is not loopback, STARTTLS is required whatever `starttls` says (`opportunistic`
//! would otherwise log in in clear to a server that offers no STARTTLS; `never` is refused by
//! the config check). `timeout` bounds each read and write; the caller bounds the session.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use super::message::Mail;
use super::{Attempt, Secret};
use crate::config::{ChannelConfig, StartTls};

/// The STARTTLS mode used: `required` whenever a login would go to a server that is not
/// loopback.
pub fn effective_starttls(ch: &ChannelConfig) -> StartTls {
    if !ch.username.is_empty() && !crate::config::notify::is_loopback_host(&ch.smtp_host) {
        StartTls::Required
    } else {
        ch.starttls
    }
}

fn transport(
    ch: &ChannelConfig,
    password: Option<&Secret>,
    timeout: Duration,
) -> Result<SmtpTransport, String> {
    let params = || TlsParameters::new(ch.smtp_host.clone()).map_err(|e| format!("TLS setup failed: {e}"));
    let tls = match effective_starttls(ch) {
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
        Ok(m) if !crate::config::notify::has_control(to) => m,
        _ => return Attempt::Fail(format!("{:?} is not a valid address", super::message::one_line(to))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChannelKind;

    fn channel(host: &str, user: &str, starttls: StartTls) -> ChannelConfig {
        ChannelConfig {
            name: "mail".into(),
            kind: ChannelKind::Email,
            url_env: String::new(),
            url_file: String::new(),
            hmac_key_env: String::new(),
            hmac_key_file: String::new(),
            smtp_host: host.into(),
            smtp_port: 587,
            starttls,
            username: user.into(),
            password_env: "PW".into(),
            password_file: String::new(),
            from: "f@example.com".into(),
            to: vec!["t@example.com".into()],
            to_csm: false,
        }
    }

    #[test]
    fn a_login_to_a_remote_server_always_requires_starttls() {
        use StartTls::*;
        assert_eq!(effective_starttls(&channel("smtp.example.com", "u", Opportunistic)), Required);
        assert_eq!(effective_starttls(&channel("smtp.example.com", "u", Never)), Required);
        assert_eq!(effective_starttls(&channel("10.1.2.3", "u", Opportunistic)), Required);
        // Without a login nothing secret travels; to loopback the relay is this machine.
        assert_eq!(effective_starttls(&channel("smtp.example.com", "", Opportunistic)), Opportunistic);
        assert_eq!(effective_starttls(&channel("127.0.0.1", "u", Never)), Never);
        assert_eq!(effective_starttls(&channel("localhost", "u", Opportunistic)), Opportunistic);
    }
}
