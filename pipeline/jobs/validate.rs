//! The validate job (`fidelis validate`): read and validate every configured input and say
//! what was kept and dropped, by reason.

use serde::Serialize;

use crate::activity::EventsSummary;
use crate::config::{Config, InputSource};
use crate::error::{Error, Result};
use crate::ingest::{self, ValidationSummary};
use crate::progress::Progress;
use crate::signals::SignalData;

/// What the inputs hold.
#[derive(Debug, Clone, Serialize)]
pub struct ValidateOutcome {
    pub transactions: ValidationSummary,
    pub events: Option<EventsSummary>,
    /// The customer table: its file, rows and columns.
    pub customers: Option<(String, usize, Vec<String>)>,
    /// The contact log (`[input.contacts]`).
    pub contacts: Option<crate::activity::ContactsSummary>,
    /// The subscription table (`[input.subscriptions]`): its source, rows, customers, columns,
    /// and the revenue at the end of the transactions.
    pub subscriptions:
        Option<(String, usize, usize, Vec<String>, crate::activity::subscriptions::RevenueKpis)>,
}

pub fn run(cfg: &Config, progress: &Progress) -> Result<ValidateOutcome> {
    let tx = progress.step("ingest", "reading and validating transactions", || {
        ingest::load_transactions(&cfg.input.transactions, cfg.input.sql_batch_rows)
    })?;
    let signals = progress.step("signals", "reading events and customers", || SignalData::load(cfg))?;
    let contacts = match cfg.input.contacts.path.as_str() {
        "" => None,
        _ => Some(
            progress
                .step("contacts", "reading the contact log", || {
                    crate::activity::load_contacts(&cfg.input.contacts)
                })?
                .summary,
        ),
    };
    let subscriptions = if cfg.input.subscriptions.is_given() {
        let s = progress.step("subscriptions", "reading the subscription table", || {
            crate::activity::load_subscriptions(&cfg.input.subscriptions, cfg.input.sql_batch_rows)
        })?;
        let end = crate::schema::epoch_day(tx.data_end()?);
        let revenue = s.revenue_at(end);
        Some((s.path.display().to_string(), s.rows, s.by_customer.len(), s.columns, revenue))
    } else {
        None
    };
    Ok(ValidateOutcome {
        contacts,
        subscriptions,
        transactions: tx.summary,
        events: signals.events.map(|e| e.summary),
        customers: signals.customers.map(|c| (c.path.display().to_string(), c.rows.len(), c.columns)),
    })
}

impl ValidateOutcome {
    /// The summaries as JSON documents (`validate --json`): transactions, then events.
    pub fn to_json(&self) -> Result<String> {
        let mut out = pretty(&self.transactions)?;
        if let Some(e) = &self.events {
            out.push('\n');
            out.push_str(&pretty(e)?);
        }
        Ok(out)
    }
}

fn pretty<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value)
        .map_err(|source| Error::Json { context: "serializing the summary".into(), source })
}

impl std::fmt::Display for ValidateOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.transactions)?;
        if let Some(s) = &self.events {
            write!(f, "\nevents: {}", s.path.display())?;
            write!(f, "\n  rows read {:>12}\n  rows valid {:>11}", s.rows_read, s.rows_valid)?;
            write_dropped(f, &s.invalid)?;
            let names: Vec<String> = s.events.iter().map(|(k, v)| format!("{k} {v}")).collect();
            write!(f, "\n  events by name: {}", names.join(", "))?;
        }
        if let Some((path, rows, columns)) = &self.customers {
            write!(f, "\ncustomers: {path}: {rows} rows, columns {}", columns.join(", "))?;
        }
        if let Some(c) = &self.contacts {
            write!(f, "\ncontacts: {}", c.path.display())?;
            write!(
                f,
                "\n  rows read {:>12}\n  rows valid {:>11}\n  reached {:>14}",
                c.rows_read, c.rows_valid, c.rows_reached
            )?;
            if !c.channels.is_empty() {
                write!(f, "\n  channels: {}", c.channels.join(", "))?;
            }
            write_dropped(f, &c.invalid)?;
        }
        if let Some((path, rows, customers, columns, r)) = &self.subscriptions {
            write!(
                f,
                "\nsubscriptions: {path}: {rows} rows, {customers} customers, columns {}",
                columns.join(", ")
            )?;
            let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", 100.0 * v));
            write!(
                f,
                "\n  at the end of the data: MRR {:.2} from {} customers; last month NRR {}, GRR {}; \
                 last 12 months NRR {}, GRR {}",
                r.mrr,
                r.customers,
                pct(r.month.nrr),
                pct(r.month.grr),
                pct(r.trailing_12_months.nrr),
                pct(r.trailing_12_months.grr)
            )?;
        }
        Ok(())
    }
}

/// One line per reason rows were dropped, with examples.
fn write_dropped(f: &mut std::fmt::Formatter<'_>, invalid: &[crate::activity::Invalid]) -> std::fmt::Result {
    for i in invalid {
        let ex: Vec<String> = i.examples.iter().map(|(r, v)| format!("row {r}: {v}")).collect();
        write!(f, "\n  dropped: {} in `{}`: {} ({})", i.reason, i.column, i.count, ex.join(", "))?;
    }
    Ok(())
}
