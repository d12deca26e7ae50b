//! The library's error type. Every variant says what went wrong in terms a user can act on:
//! the file, the config key, the column and row, and what was expected.
//!
//! Exit codes (see [`Error::exit_code`]; the CLI edge turns errors into them): 1 internal
//! error, 2 bad input, configuration or model artifact, 4 another run holds the output lock,
//! 5 an output could not be written (a sink failed and rolled back, a read-only directory, a
//! full disk), 6 the scores were written but monitoring or the weekly report then failed.
//! 3 is the monitoring alert code; 7 (a delivery failed after everything was written) is an
//! outcome, not an error: see `notify::DeliveryOutcome::failed`.

use std::path::PathBuf;

use thiserror::Error;

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// The configuration file is unreadable, malformed, or a value is out of range.
    #[error("config {path}: {key}: {message}")]
    Config { path: String, key: String, message: String },

    /// An input file cannot be used at all (missing, empty, wrong format).
    #[error("{}: {message}", path.display())]
    InputFile { path: PathBuf, message: String },

    /// A column named in the config's column mapping is not in the file.
    #[error(
        "{}: column `{column}` not found (mapped by config key [{section}].{key}); \
         columns read: {found}",
        path.display()
    )]
    MissingColumn { path: PathBuf, section: String, key: String, column: String, found: String },

    /// Too many rows failed validation (the summary lists them by reason).
    #[error("{}: {message}", path.display())]
    InvalidRows { path: PathBuf, message: String },

    /// The data does not support the requested operation (e.g. too little history).
    #[error("{0}")]
    Data(String),

    /// A model artifact is missing, unreadable or inconsistent with the data.
    #[error("model artifact {}: {message}", path.display())]
    Artifact { path: PathBuf, message: String },

    /// Writing to an output sink failed; that sink keeps its previous run.
    #[error("output {sink}: {message}")]
    Sink { sink: String, message: String },

    /// An output file or directory cannot be written (read-only, disk full, ...); whatever
    /// was there before is left as it was.
    #[error("cannot write {}: {message}", path.display())]
    Output { path: PathBuf, message: String },

    /// The scores were written (and stay), then a later step of the run failed: monitoring,
    /// the history, the weekly report. `done` says what was written.
    #[error("the scores were written, then the run failed: {source}")]
    AfterScores { done: String, source: Box<Error> },

    /// Another fidelis run holds the lock on this output directory.
    #[error("{}: {message}", path.display())]
    Locked { path: PathBuf, message: String },

    /// Model fitting failed.
    #[error("training {model}: {message}")]
    Model { model: String, message: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}: {source}")]
    Polars {
        context: String,
        #[source]
        source: polars::error::PolarsError,
    },

    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Process exit code for this error (see the module docs).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config { .. }
            | Error::InputFile { .. }
            | Error::MissingColumn { .. }
            | Error::InvalidRows { .. }
            | Error::Data(_)
            | Error::Artifact { .. } => 2,
            Error::Locked { .. } => 4,
            Error::Sink { .. } | Error::Output { .. } => 5,
            Error::AfterScores { .. } => 6,
            Error::Model { .. } | Error::Io { .. } | Error::Polars { .. } | Error::Json { .. } => 1,
        }
    }

    /// The same error naming `to` where it named the file `from` (a downloaded copy named by
    /// its source).
    pub fn renamed(self, from: &std::path::Path, to: &std::path::Path) -> Self {
        let swap = |p: PathBuf| if p == from { to.to_path_buf() } else { p };
        match self {
            Error::InputFile { path, message } => Error::InputFile { path: swap(path), message },
            Error::InvalidRows { path, message } => Error::InvalidRows { path: swap(path), message },
            Error::MissingColumn { path, section, key, column, found } => {
                Error::MissingColumn { path: swap(path), section, key, column, found }
            }
            Error::Io { path, source } => Error::Io { path: swap(path), source },
            other => other,
        }
    }

    pub fn config(path: impl Into<String>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { path: path.into(), key: key.into(), message: message.into() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Writing `path` failed (exit 5).
    pub fn output(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        Error::Output { path: path.into(), message: e.to_string() }
    }
}

/// Attach a short context to polars errors: `df.collect().polars("building features")?`.
pub trait PolarsContext<T> {
    fn polars(self, context: &str) -> Result<T>;
}

impl<T> PolarsContext<T> for polars::error::PolarsResult<T> {
    fn polars(self, context: &str) -> Result<T> {
        self.map_err(|source| Error::Polars { context: context.to_string(), source })
    }
}

/// A PostgreSQL error as the server said it (severity, message, detail and hint) instead of the
/// driver's bare "db error"; other errors with their chain of causes.
pub fn pg_message(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut m = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            m.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            m.push_str(&format!(" hint: {h}"));
        }
        return m;
    }
    let mut m = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        m.push_str(&format!(": {s}"));
        source = s.source();
    }
    m
}
