//! Where outputs go: SQL sink URLs and table names, parsed and checked with the rest of the
//! configuration (the sinks only write to them).

use std::path::PathBuf;

/// Where a SQL sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlTarget {
    /// `sqlite://path/to/file.sqlite` (relative to the working directory) or
    /// `sqlite:///absolute/path.sqlite`.
    Sqlite(PathBuf),
    /// `postgres://user:password@host:port/database?params` (or `postgresql://`).
    Postgres(PgUrl),
}

impl SqlTarget {
    pub fn parse(url: &str) -> std::result::Result<SqlTarget, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("`sqlite://` needs a file path, e.g. sqlite://output/fidelis.sqlite".into());
            }
            return Ok(SqlTarget::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PgUrl::parse(url).map(SqlTarget::Postgres);
        }
        Err(format!(
            "unsupported database URL {:?}: expected sqlite://PATH or postgres://USER@HOST/DB",
            redact(url)
        ))
    }

    /// The URL without its password, for messages and logs.
    pub fn display(&self) -> String {
        match self {
            SqlTarget::Sqlite(p) => format!("sqlite://{}", p.display()),
            SqlTarget::Postgres(url) => url.shown.clone(),
        }
    }
}

/// A PostgreSQL URL, parsed: `postgres://[user[:password]@][host][:port][/dbname][?k=v&...]`.
/// The last `@` ends the user info (so a password may hold `@`, `/`, `:` or `?` unencoded),
/// and user, password, database and parameter values are percent-decoded (`%40` is `@`).
/// Parameters: `connect_timeout` (seconds), `application_name`, `options`, `host` (e.g. a
/// socket directory), `sslmode` (`disable` or `prefer`: fidelis connects without TLS).
/// `Debug` and [`SqlTarget::display`] never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub user: Option<String>,
    password: Option<String>,
    pub host: String,
    pub port: u16,
    pub dbname: Option<String>,
    pub connect_timeout: Option<u64>,
    pub application_name: Option<String>,
    pub options: Option<String>,
    /// The URL with the password replaced by `***`.
    shown: String,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgUrl({})", self.shown)
    }
}

impl PgUrl {
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The URL as shown in messages: its password replaced by `***`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The driver's connection settings (no TLS: `sslmode` is `disable` or `prefer`).
    pub fn client_config(&self) -> postgres::Config {
        let mut c = postgres::Config::new();
        c.host(&self.host).port(self.port);
        if let Some(u) = &self.user {
            c.user(u);
        }
        if let Some(p) = self.password() {
            c.password(p);
        }
        if let Some(d) = &self.dbname {
            c.dbname(d);
        }
        if let Some(t) = self.connect_timeout {
            c.connect_timeout(std::time::Duration::from_secs(t));
        }
        if let Some(a) = &self.application_name {
            c.application_name(a);
        }
        if let Some(o) = &self.options {
            c.options(o);
        }
        c
    }

    pub fn parse(url: &str) -> std::result::Result<PgUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or("expected postgres://...")?;
        let (userinfo, after) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => {
                    (Some(decode(user, "the user name")?), Some(decode(pass, "the password")?))
                }
                None => (Some(decode(u, "the user name")?), None),
            },
        };
        let user = user.filter(|u| !u.is_empty());
        let (location, query) = after.split_once('?').unwrap_or((after, ""));
        let (hostport, dbname) = location.split_once('/').unwrap_or((location, ""));
        let (host, port) = split_host_port(hostport)?;
        let mut pg = PgUrl {
            user,
            password,
            host: if host.is_empty() { "localhost".into() } else { decode(host, "the host")? },
            port,
            dbname: Some(decode(dbname, "the database name")?).filter(|d| !d.is_empty()),
            connect_timeout: None,
            application_name: None,
            options: None,
            shown: String::new(),
        };
        let mut shown_params = Vec::new();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = decode(v, &format!("parameter {k}"))?;
            match k {
                "connect_timeout" => {
                    pg.connect_timeout =
                        Some(v.parse().map_err(|_| format!("connect_timeout {v:?} is not a number of seconds"))?)
                }
                "application_name" => pg.application_name = Some(v.clone()),
                "options" => pg.options = Some(v.clone()),
                "host" => pg.host = v.clone(),
                "sslmode" if v == "disable" || v == "prefer" => {}
                "sslmode" => return Err(format!("sslmode={v} is not supported: fidelis connects without TLS")),
                "password" => {
                    pg.password = Some(v);
                    shown_params.push("password=***".to_string());
                    continue;
                }
                _ => return Err(format!("unsupported URL parameter {k:?} (connect_timeout, application_name, options, host, sslmode)")),
            }
            shown_params.push(format!("{k}={v}"));
        }
        let auth = match (&pg.user, &pg.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (Some(u), None) => format!("{u}@"),
            (None, Some(_)) => ":***@".into(),
            (None, None) => String::new(),
        };
        let query =
            if shown_params.is_empty() { String::new() } else { format!("?{}", shown_params.join("&")) };
        pg.shown =
            format!("{scheme}://{auth}{}:{}/{}{query}", pg.host, pg.port, pg.dbname.as_deref().unwrap_or(""));
        Ok(pg)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to 5432.
fn split_host_port(s: &str) -> std::result::Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or("an IPv6 host needs a closing ]")?;
        (h, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None | Some("") => 5432,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("port {p:?} is not a number in 1-65535"))?,
    };
    Ok((host, port))
}

/// Percent-decode `s` (`what` names it in the error, which never shows it).
fn decode(s: &str, what: &str) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {what} (write % as %25)"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{what} is not UTF-8 after percent-decoding"))
}

/// A URL with anything between `://` and the last `@` after the user name replaced by `***`
/// (for messages about URLs that are not parsed).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some(at) = rest.rfind('@') else { return url.to_string() };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{userinfo}@{host}"),
    }
}

/// Table names and the PostgreSQL schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub scores: String,
    pub top_risk: String,
    pub runs: String,
    pub monitoring: String,
    pub notifications: String,
    /// The measured effect of contacting: one row per monitor date x run x stratum.
    pub campaign_effect: String,
    /// PostgreSQL schema (created when missing); SQLite has none.
    pub schema: String,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            scores: "churn_scores".into(),
            top_risk: "churn_top_risk".into(),
            runs: "scoring_runs".into(),
            monitoring: "model_monitoring".into(),
            notifications: "notifications".into(),
            campaign_effect: "campaign_effect".into(),
            schema: "public".into(),
        }
    }
}

/// A plain SQL identifier: a letter or `_`, then letters, digits or `_`, at most 63 bytes
/// (PostgreSQL's limit). Anything else is refused rather than escaped.
pub fn valid_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(url: &str) -> PgUrl {
        match SqlTarget::parse(url).unwrap() {
            SqlTarget::Postgres(p) => p,
            t => panic!("{t:?}"),
        }
    }

    #[test]
    fn urls_parse_and_passwords_never_show() {
        assert_eq!(SqlTarget::parse("sqlite://out/x.sqlite"), Ok(SqlTarget::Sqlite("out/x.sqlite".into())));
        assert_eq!(SqlTarget::parse("sqlite:///tmp/x.sqlite"), Ok(SqlTarget::Sqlite("/tmp/x.sqlite".into())));
        let p = pg("postgres://team:s3cret@db:5432/crm");
        assert_eq!(SqlTarget::Postgres(p.clone()).display(), "postgres://team:***@db:5432/crm");
        assert_eq!(
            (p.user.as_deref(), p.password(), p.host.as_str(), p.port),
            (Some("team"), Some("s3cret"), "db", 5432)
        );
        assert!(SqlTarget::parse("mysql://a:s3cret@b/c").unwrap_err().contains("***"));
        assert!(SqlTarget::parse("sqlite://").is_err());
    }

    #[test]
    fn the_last_at_ends_the_user_info_and_user_info_is_percent_decoded() {
        let p = pg("postgres://fidelis:ss:LEAKED/PART@x@127.0.0.1:5433/db?connect_timeout=3");
        assert_eq!(p.password(), Some("ss:LEAKED/PART@x"));
        assert_eq!((p.host.as_str(), p.port, p.dbname.as_deref()), ("127.0.0.1", 5433, Some("db")));
        assert_eq!(p.connect_timeout, Some(3));
        let shown = SqlTarget::Postgres(p.clone()).display();
        assert_eq!(shown, "postgres://fidelis:***@127.0.0.1:5433/db?connect_timeout=3");
        for part in ["ss", "LEAKED", "PART"] {
            assert!(!shown.contains(part) && !format!("{p:?}").contains(part), "{shown}");
        }
        let p = pg("postgresql://u%40corp:p%40ss%25w%2Fd@[::1]:6000/my%20db");
        assert_eq!((p.user.as_deref(), p.password()), (Some("u@corp"), Some("p@ss%w/d")));
        assert_eq!((p.host.as_str(), p.port, p.dbname.as_deref()), ("::1", 6000, Some("my db")));
        let p = pg("postgres://u@h");
        assert_eq!((p.password(), p.port, p.dbname.as_deref()), (None, 5432, None));
        let p = pg("postgres:///db?host=/var/run/postgresql&password=pw%26x");
        assert_eq!((p.host.as_str(), p.password()), ("/var/run/postgresql", Some("pw&x")));
        assert!(!SqlTarget::Postgres(p).display().contains("pw"));
    }

    #[test]
    fn malformed_urls_are_refused_without_showing_the_password() {
        for (url, words) in [
            ("postgres://u:pw@h:54x2/db", "port \"54x2\""),
            ("postgres://u:pw@h:70000/db", "1-65535"),
            ("postgres://u:p%zzw@h/db", "percent-encoding in the password"),
            ("postgres://u:pw@h/db?sslmode=require", "sslmode"),
            ("postgres://u:pw@h/db?bogus=1", "unsupported URL parameter"),
        ] {
            let e = SqlTarget::parse(url).unwrap_err();
            assert!(e.contains(words), "{url}: {e}");
            assert!(!e.contains("pw") && !e.contains("p%zz"), "{url}: {e}");
        }
    }

    #[test]
    fn identifiers_are_validated() {
        for ok in ["churn_scores", "_t", "T2"] {
            assert!(valid_identifier(ok), "{ok}");
        }
        for bad in ["", "2t", "a-b", "a b", "x\"; DROP TABLE y; --", &"a".repeat(64)] {
            assert!(!valid_identifier(bad), "{bad}");
        }
    }
}
