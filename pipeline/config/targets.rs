//! Where outputs go: SQL sink URLs and table names, parsed and checked with the rest of the
//! configuration (the sinks only write to them).

use std::path::PathBuf;

/// Where a SQL sink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlTarget {
    /// `sqlite://path/to/file.sqlite` (relative to the working directory) or
    /// `sqlite:///absolute/path.sqlite`.
    Sqlite(PathBuf),
    /// `postgres://user:password@host:port/database` (or `postgresql://`), or any libpq
    /// connection string the `postgres` crate accepts after the scheme.
    Postgres(String),
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
            return Ok(SqlTarget::Postgres(url.to_string()));
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
            SqlTarget::Postgres(url) => redact(url),
        }
    }
}

/// `scheme://user:secret@host` -> `scheme://user:***@host`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Table names and the PostgreSQL schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub scores: String,
    pub top_risk: String,
    pub runs: String,
    pub monitoring: String,
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
