//! The top-risk segment into the CRM: batched JSON upserts to `[crm]`'s endpoint and a CSV
//! export in the column layout CRM imports expect.
//!
//! A request is `POST <url>` with
//! `{"segment", "as_of", "batch", "batches", "records": [...]}`, header
//! `Idempotency-Key: fidelis-crm-<as_of>-<batch>-<hash of the ids>`; each record carries
//! `idempotency_key = "<as_of>:<customer_id>"`, so an endpoint upserting on it never
//! duplicates a customer however often a batch is retried or a run repeated. Batches are in
//! risk-rank order; a batch logged as sent for this as_of is not sent again, and the first batch that fails
//! for good stops the push (the rest go at the next run of this as_of).

use std::collections::HashSet;
use std::path::PathBuf;

use chrono::{NaiveDate, Utc};
use polars::prelude::*;
use serde::Serialize;
use serde_json::json;

use super::{http, RetryPolicy, Secret};
use crate::config::{Config, CrmInclude};
use crate::error::{Error, PolarsContext, Result};
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

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
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
pub fn push(
    cfg: &Config,
    as_of: NaiveDate,
    records: &[Record],
    delivered: &HashSet<(String, String, String)>,
    rows: &mut Vec<Delivery>,
    dry_run: bool,
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
    let Some(url) = Secret::resolve("crm.url", &c.url_env, &c.url_file)? else { return Ok(out) };
    let token = Secret::resolve("crm.token", &c.token_env, &c.token_file)?;
    let policy = RetryPolicy::of(&cfg.notify);
    let agent = http::agent(policy.timeout);
    let clock = std::time::Instant::now();
    for (i, batch) in batches.iter().enumerate() {
        let target = format!("batch {}/{}", i + 1, batches.len());
        if delivered.contains(&("crm".to_string(), "crm".to_string(), target.clone())) {
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
        let ids = batch.iter().map(|r| r.scored.customer_id.as_str()).collect::<Vec<_>>().join("\u{1f}");
        let idem =
            format!("fidelis-crm-{as_of}-{}-{:016x}", i + 1, xxhash_rust::xxh3::xxh3_64(ids.as_bytes()));
        let (attempts, error) = policy.run(|| http::post(&agent, &url, &body, &idem, None, token.as_ref()));
        let failed = error.is_some();
        rows.push(Delivery {
            as_of,
            rule: "crm".into(),
            channel: "crm".into(),
            target,
            items: batch.len() as i64,
            status: if error.is_none() { "sent" } else { "failed" }.into(),
            attempts,
            error,
            logged_at: Utc::now(),
        });
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
