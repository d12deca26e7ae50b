//! The experiment's matured runs as the uplift model's training rows (what `train` fits it
//! on, [`crate::train::uplift::choose`]): every customer once, at the first run that gave it a
//! group (treatment or control: the draw alone decided it, before any contact), with the
//! features the model being trained builds at that run, its churn over the horizon after it
//! (from the transaction log), and the run's churn probability and expected loss from its
//! scores (`output.dir`'s Parquet partitions).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use chrono::{Duration, NaiveDate};
use polars::prelude::*;

use crate::bgnbd::Probabilistic;
use crate::error::{PolarsContext, Result};
use crate::experiment::Group;
use crate::features::{self, Daily, FeatureMatrix, FeatureSpec};
use crate::schema::{self, CUSTOMER};
use crate::signals::{SignalData, SignalSpec};
use crate::sink::ScoreParquet;
use crate::train::uplift::ExperimentRows;

/// What the training rows are built from.
pub struct Sources<'a> {
    pub output_dir: &'a Path,
    pub daily: &'a Daily,
    pub spec: &'a FeatureSpec,
    pub signal_spec: &'a SignalSpec,
    pub signals: &'a SignalData,
    /// Feature names in model order.
    pub names: &'a [String],
    pub probabilistic: Option<&'a Probabilistic>,
    /// The day after the last transaction: runs whose horizon ends later have not matured.
    pub data_end: NaiveDate,
}

/// One customer at its first selection, before its features are built.
struct Entry {
    run: NaiveDate,
    customer: String,
    treated: bool,
    churn_probability: f64,
    expected_loss: f64,
}

/// The matured runs with both groups among their new customers, and (when there are at
/// least `needed` of them) the training rows; `None` when no run has a control group.
pub fn experiment_rows(
    s: &Sources,
    needed: usize,
) -> Result<Option<(Vec<NaiveDate>, Option<ExperimentRows>)>> {
    let horizon = Duration::days(i64::from(s.spec.horizon_days));
    let parquet = ScoreParquet::new(s.output_dir);
    let mut seen: HashSet<String> = HashSet::new();
    let mut entries: Vec<Entry> = Vec::new();
    for run in parquet.run_dates()?.into_iter().filter(|&r| r + horizon <= s.data_end) {
        let Some(scores) = parquet.experiment_columns(run, &["churn_probability", "expected_loss"])? else {
            continue;
        };
        let ctx = format!("the scores of the run at {run}");
        let text = |name: &str| -> Result<Vec<Option<String>>> {
            let c = scores.column(name).polars(&ctx)?.cast(&DataType::String).polars(&ctx)?;
            Ok(c.str().polars(&ctx)?.iter().map(|v| v.map(str::to_string)).collect())
        };
        let number = |name: &str| features::column_f64(&scores, name);
        let (ids, groups) = (text(CUSTOMER)?, text(schema::EXPERIMENT_GROUP)?);
        let (p, loss) = (number("churn_probability")?, number("expected_loss")?);
        for i in 0..ids.len() {
            let (Some(id), Some(group)) = (&ids[i], groups[i].as_deref().and_then(Group::parse)) else {
                continue;
            };
            if !seen.insert(id.clone()) || group == Group::Exempt {
                continue;
            }
            entries.push(Entry {
                run,
                customer: id.clone(),
                treated: group == Group::Treatment,
                churn_probability: p[i],
                expected_loss: loss[i],
            });
        }
    }
    if entries.is_empty() {
        return Ok(None);
    }
    // Runs with both groups among their new customers.
    let mut groups: HashMap<NaiveDate, (bool, bool)> = HashMap::new();
    for e in &entries {
        let g = groups.entry(e.run).or_default();
        if e.treated {
            g.0 = true;
        } else {
            g.1 = true;
        }
    }
    let mut runs: Vec<NaiveDate> =
        groups.into_iter().filter(|(_, (t, c))| *t && *c).map(|(r, _)| r).collect();
    runs.sort_unstable();
    if runs.len() < needed.max(2) {
        return Ok(Some((runs, None)));
    }
    let kept: HashSet<NaiveDate> = runs.iter().copied().collect();
    entries.retain(|e| kept.contains(&e.run));
    entries.sort_by(|a, b| (a.run, &a.customer).cmp(&(b.run, &b.customer)));
    let rows = build(s, &runs, entries, horizon)?;
    Ok(Some((runs, Some(rows))))
}

/// Features at each run and churn after it for the entries (in their order); entries the
/// features do not have (not eligible at the run on today's log) are left out.
fn build(s: &Sources, runs: &[NaiveDate], entries: Vec<Entry>, horizon: Duration) -> Result<ExperimentRows> {
    let mut frame = features::features_with(s.daily, s.spec, runs, s.probabilistic)?;
    crate::signals::append(&mut frame, s.signal_spec, s.signals)?;
    let ctx = "the features at the experiment's runs";
    let days = frame.column(schema::SNAPSHOT).polars(ctx)?.cast(&DataType::Int32).polars(ctx)?;
    let ids = frame.column(CUSTOMER).polars(ctx)?.str().polars(ctx)?;
    let at: HashMap<(i32, &str), usize> = days
        .i32()
        .polars(ctx)?
        .iter()
        .zip(ids.iter())
        .enumerate()
        .filter_map(|(i, (d, id))| Some(((d?, id?), i)))
        .collect();
    let active: HashMap<NaiveDate, HashMap<String, f64>> =
        runs.iter().map(|&r| (r, crate::monitor::outcomes_between(s.daily, r, r + horizon))).collect();
    let x_all = FeatureMatrix::from_frame(&frame, s.names)?;
    let mut rows = ExperimentRows {
        run: Vec::new(),
        customer: Vec::new(),
        x: FeatureMatrix { names: s.names.to_vec(), rows: 0, data: Vec::new() },
        treated: Vec::new(),
        churned: Vec::new(),
        churn_probability: Vec::new(),
        expected_loss: Vec::new(),
    };
    let mut index = Vec::new();
    for e in entries {
        let Some(&i) = at.get(&(schema::epoch_day(e.run), e.customer.as_str())) else { continue };
        index.push(i);
        let stayed = active.get(&e.run).is_some_and(|a| a.contains_key(&e.customer));
        rows.churned.push(f64::from(u8::from(!stayed)));
        rows.run.push(e.run);
        rows.customer.push(e.customer);
        rows.treated.push(e.treated);
        rows.churn_probability.push(e.churn_probability);
        rows.expected_loss.push(e.expected_loss);
    }
    rows.x = x_all.select_rows(&index);
    Ok(rows)
}
