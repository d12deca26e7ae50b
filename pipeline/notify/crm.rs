//! The top-risk segment into the CRM: batched JSON upserts to `[crm]`'s endpoint and a CSV
//! export in the column layout CRM imports expect.
//!
//! A request is `POST <url>` with
//! `{"segment", "as_of", "batch", "batches", "records": [...]}`, header
//! `Idempotency-Key: fidelis-crm-<as_of>-<batch>-<hash of the ids>`; each record carries
//! `idempotency_key = "<as_of>:<customer_id>"`, so an endpoint upserting on it never
//! duplicates a customer however often a batch is retried or a run repeated. Batches are in
//! risk-rank order; a batch logged as sent for this as_of **with the same records and values**
//! is not sent again (a rerun after a data fix that changed the segment pushes the batches
//! that changed), and the first batch that fails for good stops the push (the rest go at the
//! next run of this as_of). Customers that left the segment are not deleted from the CRM: the
//! records carry `as_of`, so the CRM's own view of the latest segment filters on it.
//!
//! The CSV escapes cells for spreadsheets: a text cell starting with `=`, `+`, `-`, `@`, a
//! tab or a carriage return is prefixed with `'` (OWASP's advice against formula injection).

use std::path::PathBuf;
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use polars::prelude::*;
use serde::Serialize;
use serde_json::json;

use super::{http, Journal, RetryPolicy, Secret};
use crate::config::{Config, CrmInclude};
use crate::error::{Error, PolarsContext, Result};
use crate::sink::notifications::Delivered;
use crate::sink::Delivery;

/// One customer as the CRM receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    #[serde(flatten)]
    pub scored: super::Scored,
    pub segment: String,
    pub as_of: String,
    pub top_reasons: Vec<String>,
    pub idempotency_key: String,
}

/// The records of a run's scores: the top-risk segment (`in_top_decile`) or every contacted
/// customer, in risk-rank order.
pub fn records(
    scores: &DataFrame,
    include: CrmInclude,
    segment: &str,
    as_of: NaiveDate,
) -> Result<Vec<Record>> {
    let ctx = "selecting the CRM segment";
    let keep = match include {
        CrmInclude::TopRisk => col("in_top_decile"),
        CrmInclude::Contacted => col("contact"),
    };
    // The control group is held out of the CRM too (scores written before the experiment
    // have no group column).
    let group = crate::schema::EXPERIMENT_GROUP;
    let keep = if scores.column(group).is_ok() {
        keep.and(col(group).neq(lit(crate::experiment::Group::Control.as_str())).fill_null(lit(true)))
    } else {
        keep
    };
    let df = scores
        .clone()
        .lazy()
        .filter(keep)
        .sort(["risk_rank"], SortMultipleOptions::default())
        .collect()
        .polars(ctx)?;
    let reasons = super::text_col(&df, "top_reasons")?;
    let day = as_of.to_string();
    Ok(super::scored_rows(&df)?
        .into_iter()
        .zip(reasons)
        .map(|(scored, reasons)| Record {
            idempotency_key: format!("{day}:{}", scored.customer_id),
            scored,
            segment: segment.to_string(),
            as_of: day.clone(),
            top_reasons: reasons
                .unwrap_or_default()
                .split(", ")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        })
        .collect())
}

/// A text cell: prefixed with `'` when a spreadsheet would read it as a formula, quoted when
/// it holds a separator, a quote or a line break.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The CSV export: a header row CRMs map on import, one row per record.
pub fn csv(records: &[Record]) -> String {
    let mut out = String::from(
        "Customer ID,Segment,As Of,Risk Score,Risk Level,Churn Probability,Predicted CLV,Expected Loss,\
         Playbook,Top Reasons\n",
    );
    for r in records {
        let row = [
            csv_field(&r.scored.customer_id),
            csv_field(&r.segment),
            r.as_of.clone(),
            r.scored.risk_score.to_string(),
            csv_field(&r.scored.risk_level),
            format!("{:.4}", r.scored.churn_probability),
            format!("{:.2}", r.scored.predicted_clv),
            format!("{:.2}", r.scored.expected_loss),
            csv_field(&r.scored.playbook),
            csv_field(&r.top_reasons.join("; ")),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

/// What the CRM step did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CrmOutcome {
    pub records: usize,
    pub batches: usize,
    pub sent: usize,
    pub already: usize,
    pub failed: usize,
    pub csv: Option<PathBuf>,
    pub dry_run: bool,
    pub seconds: f64,
}

impl std::fmt::Display for CrmOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.dry_run && self.batches > 0 {
            write!(f, "WOULD PUSH to the CRM: {} records in {} batches", self.records, self.batches)?;
        } else if self.batches > 0 {
            write!(
                f,
                "CRM: {} records in {} batches: {} sent, {} already delivered, {} failed ({:.2}s)",
                self.records, self.batches, self.sent, self.already, self.failed, self.seconds
            )?;
        } else {
            write!(f, "CRM: {} records", self.records)?;
        }
        if let Some(p) = &self.csv {
            write!(f, "; CSV {}", p.display())?;
        }
        Ok(())
    }
}

/// Export and push `records` (see the module docs); log rows are appended to `rows`.
pub(crate) fn push(
    cfg: &Config,
    as_of: NaiveDate,
    records: &[Record],
    delivered: &Delivered,
    journal: &mut Journal,
    dry_run: bool,
    stage_end: Instant,
) -> Result<CrmOutcome> {
    let c = &cfg.crm;
    let mut out = CrmOutcome { records: records.len(), dry_run, ..CrmOutcome::default() };
    if c.csv {
        let dir = std::path::Path::new(&cfg.output.dir).join("crm").join(format!("as_of={as_of}"));
        std::fs::create_dir_all(&dir).map_err(|e| Error::output(&dir, e))?;
        let path = dir.join(format!("{}.csv", c.segment.replace(' ', "_")));
        crate::files::write_atomic(&path, csv(records).as_bytes())?;
        out.csv = Some(path);
    }
    if c.url_env.is_empty() && c.url_file.is_empty() {
        return Ok(out);
    }
    let batches: Vec<&[Record]> = records.chunks(c.batch_size).collect();
    out.batches = batches.len();
    if dry_run {
        return Ok(out);
    }
    let Some(url) = super::endpoint("crm.url", &c.url_env, &c.url_file)? else { return Ok(out) };
    let token = Secret::resolve("crm.token", &c.token_env, &c.token_file)?;
    let policy = RetryPolicy::of(&cfg.notify);
    let clock = std::time::Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        let target = format!("batch {}/{}", i + 1, batches.len());
        let records = serde_json::to_vec(batch)
            .map_err(|e| Error::Json { context: "rendering a CRM batch".into(), source: e })?;
        let content = format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128(&[c.segment.as_bytes(), b"\x1f", &records].concat())
        );
        if delivered.contains("crm", "crm", &target, &content) {
            out.already += 1;
            continue;
        }
        let body = json!({
            "segment": c.segment,
            "as_of": as_of.to_string(),
            "batch": i + 1,
            "batches": batches.len(),
            "records": batch,
        });
        let body = serde_json::to_vec(&body)
            .map_err(|e| Error::Json { context: "rendering a CRM batch".into(), source: e })?;
        // The same records and values give the same key (a receiver drops a retried
        // duplicate); changed values give a new one.
        let idem = format!("fidelis-crm-{as_of}-{}-{}", i + 1, &content[..16]);
        let (attempts, error) = policy.run(Some(stage_end), |timeout| {
            http::post(&http::agent(timeout), &url, &body, &idem, None, token.as_ref())
        });
        let failed = error.is_some();
        journal.record(Delivery {
            as_of,
            rule: "crm".into(),
            channel: "crm".into(),
            target,
            content,
            items: batch.len() as i64,
            status: if error.is_none() { "sent" } else { "failed" }.into(),
            attempts,
            error,
            logged_at: Utc::now(),
        })?;
        if failed {
            // The endpoint is down or refuses: the rest wait for the next run of this as_of.
            out.failed += batches.len() - i;
            break;
        }
        out.sent += 1;
    }
    out.seconds = clock.elapsed().as_secs_f64();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_a_spreadsheet_would_run_are_prefixed_and_line_breaks_quoted() {
        assert_eq!(csv_field("=HYPERLINK(\"http://x\")"), "\"'=HYPERLINK(\"\"http://x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("a\nb"), "\"a\nb\"");
        assert_eq!(csv_field("C-17"), "C-17", "a dash inside is data");
    }
}
