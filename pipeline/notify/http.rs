//! HTTP delivery (Slack-compatible webhooks, signed JSON webhooks, the CRM endpoint).
//!
//! A signed request carries `X-Fidelis-Timestamp` (Unix seconds) and
//! `X-Fidelis-Signature: sha256=<hex>`, the HMAC-SHA256 of `"<timestamp>.<body>"` under the
//! shared key; a receiver recomputes it (see [`verify`]) and rejects stale timestamps.
//! Errors name what happened, never the URL (webhook URLs are secrets).

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Attempt, Secret};

/// An agent with one timeout for the whole request; statuses are handled here, not as errors.
/// Redirects are never followed: a client following a 301/302/303 re-sends a POST as a `GET`
/// without its body (the receiver gets nothing, the sender sees a 2xx), and a redirect to
/// another host would carry the signature and the token there. A 3xx is a failed delivery
/// naming its status.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("fidelis/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256=<hex>`: HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    format!("sha256={}", hex(&signed(key, timestamp, body).finalize().into_bytes()))
}

/// The HMAC-SHA256 state after `"<timestamp>.<body>"`.
fn signed(key: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Whether `header` is the signature of `body` sent at `timestamp` under `key` (compared in
/// constant time).
pub fn verify(key: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else { return false };
    let Some(sig) = (0..hex_sig.len())
        .step_by(2)
        .map(|i| hex_sig.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
    else {
        return false;
    };
    signed(key, timestamp, body).verify_slice(&sig).is_ok()
}

/// What went wrong, in words that contain no part of the URL.
fn describe(e: &ureq::Error) -> Attempt {
    use ureq::Error as E;
    match e {
        E::Timeout(t) => Attempt::Retry(format!("timed out ({t})")),
        E::Io(io) => Attempt::Retry(format!("connection error ({:?})", io.kind())),
        E::ConnectionFailed => Attempt::Retry("connection failed".into()),
        E::HostNotFound => Attempt::Retry("host not found".into()),
        E::BadUri(_) => Attempt::Fail("the URL is not valid".into()),
        E::Tls(_) | E::Rustls(_) => Attempt::Retry("TLS error".into()),
        _ => Attempt::Retry("the request failed".into()),
    }
}

/// POST `body` (JSON) to `url`, with an `Idempotency-Key` and, given a key, the signature
/// headers. 2xx is done, 5xx / 408 / 429 / network errors are worth a retry, other statuses
/// (a 3xx redirect among them: see [`agent`]) are not.
pub fn post_json(
    agent: &ureq::Agent,
    url: &Secret,
    body: &[u8],
    idempotency: &str,
    key: Option<&Secret>,
) -> Attempt {
    post(agent, url, body, idempotency, key, None)
}

/// [`post_json`] with an optional bearer token.
pub fn post(
    agent: &ureq::Agent,
    url: &Secret,
    body: &[u8],
    idempotency: &str,
    key: Option<&Secret>,
    bearer: Option<&Secret>,
) -> Attempt {
    let mut req = agent
        .post(url.expose())
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", idempotency);
    if let Some(k) = key {
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = signature(k.expose().as_bytes(), &ts, body);
        req = req.header("X-Fidelis-Timestamp", &ts).header("X-Fidelis-Signature", &sig);
    }
    if let Some(t) = bearer {
        req = req.header("Authorization", &format!("Bearer {}", t.expose()));
    }
    match req.send(body) {
        Ok(resp) => {
            let status = resp.status();
            let code = status.as_u16();
            let what = format!("HTTP {code} {}", status.canonical_reason().unwrap_or(""));
            match code {
                200..=299 => Attempt::Done,
                300..=399 => Attempt::Fail(format!(
                    "{}: the endpoint redirects; redirects are not followed for a POST (configure \
                     the final URL)",
                    what.trim_end()
                )),
                408 | 429 | 500..=599 => Attempt::Retry(what.trim_end().to_string()),
                _ => Attempt::Fail(what.trim_end().to_string()),
            }
        }
        Err(e) => describe(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let key = b"k3y";
        let sig = signature(key, "1700000000", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify(key, "1700000000", b"{\"a\":1}", &sig));
        assert!(!verify(key, "1700000000", b"{\"a\":2}", &sig));
        assert!(!verify(key, "1700000001", b"{\"a\":1}", &sig));
        assert!(!verify(b"other", "1700000000", b"{\"a\":1}", &sig));
        assert!(!verify(key, "1700000000", b"{\"a\":1}", "sha256=zz"));
        // Python: hmac.new(b"Jefe", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"Jefe", "1700000000", b"{\"a\":1}"),
            "sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }
}
