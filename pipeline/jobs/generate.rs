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

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Retail => "retail",
            Kind::Saas => "saas",
        }
    }

    /// The id the generator gives customer `idx` (0-based).
    fn id_of(self, idx: u32) -> String {
        match self {
            Kind::Retail => format!("C{:07}", idx + 1),
            Kind::Saas => format!("S{:06}", idx + 1),
        }
    }

    /// The 0-based index of a generated id (`C0000001` / `S000001` is 0).
    fn index_of(self, id: &str) -> Option<u32> {
        let prefix = match self {
            Kind::Retail => 'C',
            Kind::Saas => 'S',
        };
        id.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok()).filter(|&n| n >= 1).map(|n| n - 1)
    }
}

/// Write the three SaaS tables under `out`.
fn write_saas(mut data: generate::saas::SaasData, out: &Path) -> Result<Vec<(PathBuf, usize, String)>> {
    let mut files = Vec::new();
    let mut tables = vec![
        ("transactions.parquet", &mut data.transactions),
        ("events.parquet", &mut data.events),
        ("customers.parquet", &mut data.customers),
        ("subscriptions.parquet", &mut data.subscriptions),
    ];
    if data.hazard.height() > 0 {
        tables.push(("hazard.parquet", &mut data.hazard));
    }
    for (name, df) in tables {
        let path = out.join(name);
        write_parquet_atomic(df, &path)?;
        files.push((path, df.height(), "rows".to_string()));
    }
    Ok(files)
}

/// The files written: path, rows, and a note.
pub struct GenerateOutcome {
    pub files: Vec<(PathBuf, usize, String)>,
}

pub fn run(opts: &GenerateOptions, kind: Kind, out: &Path, progress: &Progress) -> Result<GenerateOutcome> {
    let customers = opts.customers;
    let mut files = Vec::new();
    if kind == Kind::Saas {
        let data = progress.step("generate", &format!("generating {customers} subscriptions"), || {
            generate::saas::generate_saas(opts)
        })?;
        files.extend(write_saas(data, out)?);
        return Ok(GenerateOutcome { files });
    }
    let mut df = progress
        .step("generate", &format!("generating {customers} customers"), || generate::generate(opts))?;
    let path = out.join("transactions.parquet");
    progress.step("write", "writing parquet", || write_parquet_atomic(&mut df, &path))?;
    files.push((path, df.height(), format!("transactions, {customers} customers")));
    Ok(GenerateOutcome { files })
}

/// `fidelis generate --campaign <OUTPUT>`: the same customers (same options and seed) as if
/// fidelis's weekly runs under `<OUTPUT>/scores` had been acted on: each customer in a run's
/// experiment is contacted at the first run that selected it unless it is in the control group;
/// its purchases from then on follow its contacted path (`generate::generate_campaign`). `kind`
/// says which generator made the customers (retail: purchases; SaaS: subscriptions, see
/// `generate::saas::customer_path`). Writes the realized data (`transactions.parquet`, for SaaS
/// also `events.parquet` and `customers.parquet`) and `truth.parquet`: per customer ever
/// selected, its first run, group, what a contact does to it (`effect`), and its two potential
/// outcomes over `horizon_days` from that run (`churn_if_contacted`, `churn_if_not`;
/// `true_effect` = the second minus the first), and `expected_effect`: the effect expected from
/// the customer's state, every effect a contact could have had on it weighted by its
/// probability (the ceiling of any model of the state; `true_effect` also knows the customer's
/// own draw). Features are per customer and a customer's two paths are the same draws before
/// the contact, so the runs scored on the uncontacted data select the same customers at their
/// first selection as runs on the realized data would.
pub fn run_campaign(
    opts: &GenerateOptions,
    kind: Kind,
    output: &Path,
    horizon_days: i32,
    response: crate::generate::Response,
    out: &Path,
    progress: &Progress,
) -> Result<GenerateOutcome> {
    use std::collections::HashMap;

    use polars::prelude::*;

    use crate::error::PolarsContext;
    use crate::experiment::Group;

    let first = first_selections(output, kind)?;
    let day_of = |d: chrono::NaiveDate| (d - opts.start).num_days() as f64;
    let contacts: HashMap<u32, f64> = first
        .iter()
        .filter(|(_, (_, g))| Group::contacted(Some(*g)))
        .map(|(&i, (d, _))| (i, day_of(*d)))
        .collect();
    let customers = opts.customers;
    let what = format!("generating {customers} customers, {} contacted", contacts.len());
    let mut files = Vec::new();
    match kind {
        Kind::Retail => {
            let (mut df, _) = progress
                .step("generate", &what, || crate::generate::generate_campaign(opts, &contacts, response))?;
            let path = out.join("transactions.parquet");
            progress.step("write", "writing parquet", || write_parquet_atomic(&mut df, &path))?;
            let note = format!("transactions, {customers} customers, {} contacted", contacts.len());
            files.push((path, df.height(), note));
        }
        Kind::Saas => {
            let data = progress.step("generate", &what, || {
                crate::generate::saas::generate_saas_campaign(opts, &contacts, response)
            })?;
            files.extend(write_saas(data, out)?);
        }
    }
    let days = |idx: u32, contact: Option<(f64, Option<crate::generate::ContactEffect>)>| match kind {
        Kind::Retail => crate::generate::activity_days(opts, idx, contact, response),
        Kind::Saas => crate::generate::saas::payment_days(opts, idx, contact, response),
    };
    let mut truth = progress.step("truth", "both potential outcomes of every selected customer", || {
        let churned = |days: &[i32], from: f64| {
            let (from, to) = (from as i32, from as i32 + horizon_days);
            !days.iter().any(|&d| d >= from && d < to)
        };
        let mut rows: Vec<(String, i32, &'static str, String, bool, bool, f64)> = Vec::new();
        for (&idx, &(run, group)) in &first {
            let day = day_of(run);
            let (contacted, effect) = days(idx, Some((day, None)));
            let (plain, _) = days(idx, None);
            let not = churned(&plain, day);
            // The expected effect over what the contact could have done to this customer in
            // its state: every possible effect followed, weighted by its probability.
            let expected = effect.as_ref().map_or(0.0, |(drawn, odds)| {
                odds.iter()
                    .map(|&(e, p)| {
                        // The drawn effect's path is the contacted one already followed.
                        let gone = if e == *drawn {
                            churned(&contacted, day)
                        } else {
                            churned(&days(idx, Some((day, Some(e)))).0, day)
                        };
                        p * (f64::from(u8::from(not)) - f64::from(u8::from(gone)))
                    })
                    .sum()
            });
            let effect = effect.map_or(String::new(), |(e, _)| format!("{e:?}"));
            rows.push((
                kind.id_of(idx),
                crate::schema::epoch_day(run),
                group.as_str(),
                effect,
                churned(&contacted, day),
                not,
                expected,
            ));
        }
        let run = Column::new("first_run".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>())
            .cast(&DataType::Date)
            .polars("first_run")?;
        DataFrame::new_infer_height(vec![
            Column::new("customer_id".into(), rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>()),
            run,
            Column::new("group".into(), rows.iter().map(|r| r.2).collect::<Vec<_>>()),
            Column::new("effect".into(), rows.iter().map(|r| r.3.as_str()).collect::<Vec<_>>()),
            Column::new("churn_if_contacted".into(), rows.iter().map(|r| r.4).collect::<Vec<_>>()),
            Column::new("churn_if_not".into(), rows.iter().map(|r| r.5).collect::<Vec<_>>()),
            Column::new(
                "true_effect".into(),
                rows.iter().map(|r| i32::from(r.5) - i32::from(r.4)).collect::<Vec<_>>(),
            ),
            Column::new("expected_effect".into(), rows.iter().map(|r| r.6).collect::<Vec<_>>()),
        ])
        .polars("assembling the truth")
    })?;
    let truth_path = out.join("truth.parquet");
    write_parquet_atomic(&mut truth, &truth_path)?;
    files.push((truth_path, truth.height(), "customers selected by a run (both potential outcomes)".into()));
    Ok(GenerateOutcome { files })
}

/// Each customer's first run in the experiment under `output` (by generated index), and its
/// group there.
fn first_selections(
    output: &Path,
    kind: Kind,
) -> Result<std::collections::BTreeMap<u32, (chrono::NaiveDate, crate::experiment::Group)>> {
    use std::collections::BTreeMap;

    use crate::error::{Error, PolarsContext};
    use crate::experiment::Group;

    let runs = crate::sink::ScoreParquet::new(output);
    let dates = runs.run_dates()?;
    if dates.is_empty() {
        return Err(Error::Data(format!(
            "{}: no scoring runs under it (score the generated data first: fidelis score --as-of ...)",
            output.display()
        )));
    }
    let mut first: BTreeMap<u32, (chrono::NaiveDate, Group)> = BTreeMap::new();
    for run in &dates {
        // Only the id and group columns, and none for a run without an experiment.
        let Some(scores) = runs.experiment_columns(*run, &[])? else { continue };
        let ctx = format!("the scores of the run at {run}");
        let groups = scores.column(crate::schema::EXPERIMENT_GROUP).polars(&ctx)?.str().polars(&ctx)?;
        let ids = scores.column(crate::schema::CUSTOMER).polars(&ctx)?.str().polars(&ctx)?;
        for (id, g) in ids.iter().zip(groups.iter()) {
            let (Some(id), Some(g)) = (id, g.and_then(Group::parse)) else { continue };
            let idx = kind.index_of(id).ok_or_else(|| {
                Error::Data(format!(
                    "{ctx}: customer {id:?} is not a generated {} id ({} ...)",
                    kind.name(),
                    kind.id_of(0)
                ))
            })?;
            first.entry(idx).or_insert((*run, g));
        }
    }
    Ok(first)
}

impl std::fmt::Display for GenerateOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> =
            self.files.iter().map(|(p, n, what)| format!("wrote {} ({n} {what})", p.display())).collect();
        write!(f, "{}", lines.join("\n"))
    }
}
