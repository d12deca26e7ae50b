//! The generate job (`fidelis generate`): write a synthetic retail log, or SaaS data (log,
//! product events, customer table), as Parquet.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::generate::{self, GenerateOptions};
use crate::progress::Progress;
use crate::sink::write_parquet_atomic;

/// What kind of data to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A purchase log: `transactions.parquet`.
    Retail,
    /// Subscriptions with product events and a customer table: `transactions.parquet`,
    /// `events.parquet`, `customers.parquet`.
    Saas,
}

/// The files written: path, rows, and a note.
pub struct GenerateOutcome {
    pub files: Vec<(PathBuf, usize, String)>,
}

pub fn run(opts: &GenerateOptions, kind: Kind, out: &Path, progress: &Progress) -> Result<GenerateOutcome> {
    let customers = opts.customers;
    let mut files = Vec::new();
    if kind == Kind::Saas {
        let mut data = progress.step("generate", &format!("generating {customers} subscriptions"), || {
            generate::saas::generate_saas(opts)
        })?;
        for (name, df) in [
            ("transactions.parquet", &mut data.transactions),
            ("events.parquet", &mut data.events),
            ("customers.parquet", &mut data.customers),
        ] {
            let path = out.join(name);
            write_parquet_atomic(df, &path)?;
            files.push((path, df.height(), "rows".to_string()));
        }
        return Ok(GenerateOutcome { files });
    }
    let mut df = progress
        .step("generate", &format!("generating {customers} customers"), || generate::generate(opts))?;
    let path = out.join("transactions.parquet");
    progress.step("write", "writing parquet", || write_parquet_atomic(&mut df, &path))?;
    files.push((path, df.height(), format!("transactions, {customers} customers")));
    Ok(GenerateOutcome { files })
}

impl std::fmt::Display for GenerateOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> =
            self.files.iter().map(|(p, n, what)| format!("wrote {} ({n} {what})", p.display())).collect();
        write!(f, "{}", lines.join("\n"))
    }
}
