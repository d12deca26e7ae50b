//! Amazon S3 and S3-compatible object stores (`s3://bucket/key`), spoken directly over HTTP
//! with AWS Signature Version 4: get (to a file), put, server-side copy, delete, list.
//!
//! Settings come from where every AWS tool reads them: credentials from
//! `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, else the shared
//! credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default `~/.aws/credentials`) for the
//! profile `AWS_PROFILE` (default `default`); the region from `AWS_REGION`,
//! `AWS_DEFAULT_REGION` or the profile's `region` in `AWS_CONFIG_FILE` (`~/.aws/config`),
//! default `us-east-1`; an S3-compatible endpoint (MinIO, Ceph, a local test server) from
//! `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or the profile's `endpoint_url`, addressed
//! path-style (`endpoint/bucket/key`); AWS itself virtual-hosted
//! (`bucket.s3.region.amazonaws.com/key`). Keys and tokens are never shown.
//!
//! What S3 guarantees (and what the output mirror builds on): a PUT or a COPY of one object is
//! atomic (readers see the old object or the new one, never a part), reads after writes and
//! lists after writes are strongly consistent (since December 2020); there is no rename and no
//! transaction over several objects.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// A failed S3 operation: what was asked, of which URL, and the store's answer.
#[derive(Debug, thiserror::Error)]
#[error("{op} {url}: {message}")]
pub struct S3Error {
    pub op: &'static str,
    pub url: String,
    pub message: String,
}

type S3Result<T> = std::result::Result<T, S3Error>;

/// `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    pub key: String,
}

impl S3Url {
    /// `None` when `s` is not an `s3://` URL; an error when it is one without a bucket.
    pub fn parse(s: &str) -> Option<std::result::Result<S3Url, String>> {
        let rest = s.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(format!("{s:?}: expected s3://BUCKET/KEY")));
        }
        Some(Ok(S3Url { bucket: bucket.to_string(), key: key.to_string() }))
    }

    /// The URL of `key` in the same bucket.
    pub fn with_key(&self, key: &str) -> S3Url {
        S3Url { bucket: self.bucket.clone(), key: key.to_string() }
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// An object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

#[derive(Clone)]
struct Credentials {
    access_key: String,
    secret_key: String,
    token: Option<String>,
}

/// A client for one store (endpoint, region, credentials).
pub struct Client {
    agent: ureq::Agent,
    endpoint: Option<String>,
    region: String,
    credentials: Credentials,
}

fn home() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(std::path::PathBuf::from)
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// `key = value` of `[section]` in an AWS-style INI file.
fn ini_value(path: &Path, sections: &[String], key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = s.trim().to_string();
        } else if sections.contains(&current) {
            if let Some((k, v)) = line.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

impl Client {
    /// A client from the standard AWS settings (module docs).
    pub fn from_env() -> S3Result<Client> {
        let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
        let creds_file = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| home().map(|h| h.join(".aws/credentials")));
        let config_file = env("AWS_CONFIG_FILE")
            .map(std::path::PathBuf::from)
            .or_else(|| home().map(|h| h.join(".aws/config")));
        let from_creds =
            |key: &str| creds_file.as_ref().and_then(|f| ini_value(f, std::slice::from_ref(&profile), key));
        let config_sections = [format!("profile {profile}"), profile.clone()];
        let from_config = |key: &str| config_file.as_ref().and_then(|f| ini_value(f, &config_sections, key));
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key), Some(secret_key)) => {
                Credentials { access_key, secret_key, token: env("AWS_SESSION_TOKEN") }
            }
            _ => match (from_creds("aws_access_key_id"), from_creds("aws_secret_access_key")) {
                (Some(access_key), Some(secret_key)) => {
                    Credentials { access_key, secret_key, token: from_creds("aws_session_token") }
                }
                _ => {
                    return Err(S3Error {
                        op: "credentials",
                        url: String::new(),
                        message: format!(
                            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give \
                             profile {profile:?} keys in the shared credentials file"
                        ),
                    })
                }
            },
        };
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .or_else(|| from_config("region"))
            .unwrap_or_else(|| "us-east-1".into());
        let endpoint = env("AWS_ENDPOINT_URL_S3")
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| from_config("endpoint_url"))
            .map(|e| e.trim_end_matches('/').to_string());
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .http_status_as_error(false)
            .user_agent(concat!("fidelis/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Client { agent, endpoint, region, credentials })
    }

    /// The request URL and its host for `bucket`/`key` (`query` already encoded, sorted).
    fn target(&self, bucket: &str, key: &str, query: &str) -> (String, String, String) {
        let path_key = encode(key, false);
        let (base, path) = match &self.endpoint {
            Some(e) => (e.clone(), format!("/{bucket}/{path_key}")),
            None => (format!("https://{bucket}.s3.{}.amazonaws.com", self.region), format!("/{path_key}")),
        };
        let host = base.split_once("://").map_or(base.as_str(), |x| x.1).to_string();
        let q = if query.is_empty() { String::new() } else { format!("?{query}") };
        (format!("{base}{path}{q}"), host, path)
    }

    /// Send one signed request; the response when its status is 2xx.
    fn send(
        &self,
        op: &'static str,
        url: &S3Url,
        method: &str,
        query: &[(&str, &str)],
        extra: &[(&str, String)],
        body: &[u8],
    ) -> S3Result<ureq::http::Response<ureq::Body>> {
        let err = |message: String| S3Error { op, url: url.to_string(), message };
        let mut q: Vec<(String, String)> =
            query.iter().map(|(k, v)| (encode(k, true), encode(v, true))).collect();
        q.sort();
        let query = q.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let (full, host, path) = self.target(&url.bucket, &url.key, &query);
        let now = chrono::Utc::now();
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-amz-content-sha256".into(), hex(&Sha256::digest(body))),
            ("x-amz-date".into(), now.format("%Y%m%dT%H%M%SZ").to_string()),
        ];
        if let Some(t) = &self.credentials.token {
            headers.push(("x-amz-security-token".into(), t.clone()));
        }
        for (k, v) in extra {
            headers.push((k.to_ascii_lowercase(), v.clone()));
        }
        let auth = authorization(&self.credentials, &self.region, method, &path, &query, &mut headers, now);
        let mut req = ureq::http::Request::builder().method(method).uri(&full);
        for (k, v) in headers.iter().filter(|(k, _)| k != "host") {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.header("authorization", auth).body(body.to_vec()).map_err(|e| err(e.to_string()))?;
        let mut resp = self.agent.run(req).map_err(|e| err(format!("no answer from the store ({e})")))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let code = xml_values(&text, "Code").into_iter().next();
        let message = xml_values(&text, "Message").into_iter().next();
        Err(err(match (code, message) {
            (Some(c), Some(m)) => format!("HTTP {status} {c}: {m}"),
            (Some(c), None) => format!("HTTP {status} {c}"),
            _ => format!("HTTP {status}"),
        }))
    }

    /// Download `url` into the file `to` (streamed); the object's ETag and last-modified time
    /// (ms since the epoch).
    pub fn get_to_file(&self, url: &S3Url, to: &Path) -> S3Result<(String, Option<i64>)> {
        let mut resp = self.send("GET", url, "GET", &[], &[], b"")?;
        let err = |message: String| S3Error { op: "GET", url: url.to_string(), message };
        let etag = header(&resp, "etag");
        let modified = header(&resp, "last-modified")
            .and_then(|t| chrono::DateTime::parse_from_rfc2822(&t).ok())
            .map(|t| t.timestamp_millis());
        let mut file =
            std::fs::File::create(to).map_err(|e| err(format!("writing {}: {e}", to.display())))?;
        std::io::copy(&mut resp.body_mut().as_reader(), &mut file)
            .and_then(|_| file.flush())
            .map_err(|e| err(format!("reading the object: {e}")))?;
        Ok((etag.unwrap_or_default(), modified))
    }

    /// Upload `bytes` as `url`; its ETag.
    pub fn put(&self, url: &S3Url, bytes: &[u8]) -> S3Result<String> {
        let resp = self.send("PUT", url, "PUT", &[], &[], bytes)?;
        Ok(header(&resp, "etag").unwrap_or_default())
    }

    /// Copy `from` to `to` inside the store (atomic for `to`); the new object's ETag.
    pub fn copy(&self, from: &S3Url, to: &S3Url) -> S3Result<String> {
        let source = format!("/{}/{}", from.bucket, encode(&from.key, false));
        let mut resp = self.send("COPY", to, "PUT", &[], &[("x-amz-copy-source", source)], b"")?;
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        // A copy can fail after its 200 status: the error is then in the body.
        if text.contains("<Error>") {
            return Err(S3Error {
                op: "COPY",
                url: to.to_string(),
                message: text.chars().take(300).collect(),
            });
        }
        Ok(xml_values(&text, "ETag").into_iter().next().unwrap_or_default())
    }

    pub fn delete(&self, url: &S3Url) -> S3Result<()> {
        self.send("DELETE", url, "DELETE", &[], &[], b"").map(|_| ())
    }

    /// Every object under `prefix` of `bucket`, in key order.
    pub fn list(&self, bucket: &str, prefix: &str) -> S3Result<Vec<Object>> {
        let url = S3Url { bucket: bucket.to_string(), key: String::new() };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2"), ("prefix", prefix)];
            if let Some(t) = &token {
                query.push(("continuation-token", t.as_str()));
            }
            let mut resp = self.send("LIST", &url.with_key(""), "GET", &query, &[], b"")?;
            let text = resp.body_mut().read_to_string().map_err(|e| S3Error {
                op: "LIST",
                url: format!("s3://{bucket}/{prefix}"),
                message: e.to_string(),
            })?;
            for item in text.split("<Contents>").skip(1) {
                let item = item.split("</Contents>").next().unwrap_or_default();
                let first = |tag: &str| xml_values(item, tag).into_iter().next().unwrap_or_default();
                out.push(Object {
                    key: first("Key"),
                    size: first("Size").parse().unwrap_or(0),
                    etag: first("ETag"),
                });
            }
            token = match xml_values(&text, "IsTruncated").first().map(String::as_str) {
                Some("true") => xml_values(&text, "NextContinuationToken").into_iter().next(),
                _ => None,
            };
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// The text of every `<tag>...</tag>` in `xml`, entities decoded.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(v, _)| v))
        .map(|v| {
            v.replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&#34;", "\"")
                .replace("&amp;", "&")
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// URI-encode as SigV4 says: every byte but `A-Z a-z 0-9 - _ . ~` (and `/`, unless `slash`).
fn encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `Authorization` header of a request (SigV4, service `s3`): `headers` (lower-case
/// names, `host`, `x-amz-date` and `x-amz-content-sha256` among them) are sorted and all
/// signed; `path` and `query` as sent (encoded).
fn authorization(
    c: &Credentials,
    region: &str,
    method: &str,
    path: &str,
    query: &str,
    headers: &mut [(String, String)],
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{}\n", v.trim())).collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let payload = headers.iter().find(|(k, _)| k == "x-amz-content-sha256").map_or("", |(_, v)| v.as_str());
    let canonical = format!("{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload}");
    let date = now.format("%Y%m%d").to_string();
    let scope = format!("{date}/{region}/s3/aws4_request");
    let amz_date = now.format("%Y%m%dT%H%M%SZ");
    let to_sign =
        format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
    let k_date = hmac(format!("AWS4{}", c.secret_key).as_bytes(), &date);
    let k_signing = hmac(&hmac(&hmac(&k_date, region), "s3"), "aws4_request");
    let signature = hex(&hmac(&k_signing, &to_sign));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        c.access_key
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> (Credentials, chrono::DateTime<chrono::Utc>) {
        let c = Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            token: None,
        };
        let now =
            chrono::DateTime::parse_from_rfc3339("2013-05-24T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
        (c, now)
    }

    /// The examples of the S3 SigV4 documentation ("Signature Calculations for the
    /// Authorization Header: Transferring Payload in a Single Chunk").
    #[test]
    fn signatures_match_the_aws_documentation_examples() {
        let (c, now) = example();
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let mut get = vec![
            ("host".to_string(), "examplebucket.s3.amazonaws.com".to_string()),
            ("range".into(), "bytes=0-9".into()),
            ("x-amz-content-sha256".into(), empty.into()),
            ("x-amz-date".into(), "20130524T000000Z".into()),
        ];
        let auth = authorization(&c, "us-east-1", "GET", "/test.txt", "", &mut get, now);
        assert!(
            auth.ends_with("Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"),
            "{auth}"
        );
        assert!(auth.contains("SignedHeaders=host;range;x-amz-content-sha256;x-amz-date"));

        let body = "Welcome to Amazon S3.";
        let mut put = vec![
            ("host".to_string(), "examplebucket.s3.amazonaws.com".to_string()),
            ("date".into(), "Fri, 24 May 2013 00:00:00 GMT".into()),
            ("x-amz-content-sha256".into(), hex(&Sha256::digest(body.as_bytes()))),
            ("x-amz-date".into(), "20130524T000000Z".into()),
            ("x-amz-storage-class".into(), "REDUCED_REDUNDANCY".into()),
        ];
        let path = format!("/{}", encode("test$file.text", false));
        let auth = authorization(&c, "us-east-1", "PUT", &path, "", &mut put, now);
        assert!(
            auth.ends_with("Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"),
            "{auth}"
        );

        let mut list = vec![
            ("host".to_string(), "examplebucket.s3.amazonaws.com".to_string()),
            ("x-amz-content-sha256".into(), empty.into()),
            ("x-amz-date".into(), "20130524T000000Z".into()),
        ];
        let auth = authorization(&c, "us-east-1", "GET", "/", "max-keys=2&prefix=J", &mut list, now);
        assert!(
            auth.ends_with("Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"),
            "{auth}"
        );
    }

    #[test]
    fn urls_keys_and_listings_parse() {
        assert_eq!(
            S3Url::parse("s3://b/scores/run=2024-10-01/part-0.parquet").unwrap().unwrap(),
            S3Url { bucket: "b".into(), key: "scores/run=2024-10-01/part-0.parquet".into() }
        );
        assert!(S3Url::parse("s3:///x").unwrap().is_err());
        assert!(S3Url::parse("/tmp/x").is_none());
        assert_eq!(encode("scores/run=2024-10-01/a b", false), "scores/run%3D2024-10-01/a%20b");
        assert_eq!(encode("a/b", true), "a%2Fb");
        let xml = "<ListBucketResult><Contents><Key>a&amp;b</Key><Size>3</Size><ETag>&quot;x&quot;</ETag></Contents>\
                   <IsTruncated>false</IsTruncated></ListBucketResult>";
        assert_eq!(xml_values(xml, "Key"), vec!["a&b"]);
        assert_eq!(xml_values(xml, "ETag"), vec!["\"x\""]);
    }
}
