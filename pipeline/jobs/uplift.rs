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

/// The customers of the experiment's matured runs, each at its first selection: what the
/// uplift model's rows are built for ([`Selected::rows`]).
pub struct Selected {
    /// The matured runs with both groups among their new customers, oldest first.
    pub runs: Vec<NaiveDate>,
    /// Their customers at their first selection, by (run, customer); empty when there are
    /// fewer runs than needed.
    entries: Vec<Entry>,
}

/// The columns of a run's scores the uplift rows read (with the customer id and the group).
pub const SCORE_COLUMNS: [&str; 2] = ["churn_probability", "expected_loss"];

impl Selected {
    /// From the runs' scores (`(run, frame)` in run order; each frame with the customer id,
    /// `experiment_group` and [`SCORE_COLUMNS`]), the runs whose horizon ends by `data_end`;
    /// `None` when none has a control group. A customer counts at the first run that gave it
    /// a group; exempt customers are left out. Entries are kept when at least `needed`
    /// (and 2) runs have both groups.
    pub fn of(
        scores: impl IntoIterator<Item = Result<(NaiveDate, DataFrame)>>,
        horizon_days: i32,
        data_end: NaiveDate,
        needed: usize,
    ) -> Result<Option<Selected>> {
        let horizon = Duration::days(i64::from(horizon_days));
        let mut seen: HashSet<String> = HashSet::new();
        let mut entries: Vec<Entry> = Vec::new();
        for found in scores {
            let (run, scores) = found?;
            if run + horizon > data_end {
                continue;
            }
            let ctx = format!("the scores of the run at {run}");
            let text = |name: &str| -> Result<Vec<Option<String>>> {
                let c = scores.column(name).polars(&ctx)?.cast(&DataType::String).polars(&ctx)?;
                Ok(c.str().polars(&ctx)?.iter().map(|v| v.map(str::to_string)).collect())
            };
            let number = |name: &str| features::column_f64(&scores, name);
            let (ids, groups) = (text(CUSTOMER)?, text(schema::EXPERIMENT_GROUP)?);
            let (p, loss) = (number(SCORE_COLUMNS[0])?, number(SCORE_COLUMNS[1])?);
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
            return Ok(Some(Selected { runs, entries: Vec::new() }));
        }
        let kept: HashSet<NaiveDate> = runs.iter().copied().collect();
        entries.retain(|e| kept.contains(&e.run));
        entries.sort_by(|a, b| (a.run, &a.customer).cmp(&(b.run, &b.customer)));
        Ok(Some(Selected { runs, entries }))
    }

    /// [`Selected::of`] from one frame of many runs' scores with an `as_of` column (a date
    /// or `YYYY-MM-DD` text), as a partitioned engine reads them.
    pub fn of_frame(
        scores: &DataFrame,
        horizon_days: i32,
        data_end: NaiveDate,
        needed: usize,
    ) -> Result<Option<Selected>> {
        let ctx = "the scores of the experiment's runs";
        let runs = scores.column("as_of").polars(ctx)?.cast(&DataType::String).polars(ctx)?;
        let runs: Vec<Option<NaiveDate>> = runs
            .str()
            .polars(ctx)?
            .iter()
            .map(|v| v.and_then(|v| NaiveDate::parse_from_str(&v[..v.len().min(10)], "%Y-%m-%d").ok()))
            .collect();
        let mut dates: Vec<NaiveDate> = runs.iter().flatten().copied().collect();
        dates.sort_unstable();
        dates.dedup();
        let parts = dates.into_iter().map(|run| {
            let keep: BooleanChunked = runs.iter().map(|r| Some(*r == Some(run))).collect();
            Ok((run, scores.filter(&keep).polars(ctx)?))
        });
        Selected::of(parts, horizon_days, data_end, needed)
    }

    /// Whether there are enough runs to train on (entries kept).
    pub fn enough(&self) -> bool {
        !self.entries.is_empty()
    }

    /// The training rows from `labelled`: features and labels at the runs
    /// ([`features::labelled_with`] at [`Selected::runs`], signal features appended; any row
    /// order, other customers allowed). Entries it lacks (not eligible at the run on today's
    /// log) are left out.
    pub fn rows(self, labelled: &DataFrame, names: &[String]) -> Result<ExperimentRows> {
        let ctx = "the features at the experiment's runs";
        let days = labelled.column(schema::SNAPSHOT).polars(ctx)?.cast(&DataType::Date).polars(ctx)?;
        let days = days.cast(&DataType::Int32).polars(ctx)?;
        let ids = labelled.column(CUSTOMER).polars(ctx)?.str().polars(ctx)?;
        let at: HashMap<(i32, &str), usize> = days
            .i32()
            .polars(ctx)?
            .iter()
            .zip(ids.iter())
            .enumerate()
            .filter_map(|(i, (d, id))| Some(((d?, id?), i)))
            .collect();
        let churn = features::column_f64(labelled, schema::CHURN)?;
        let x_all = FeatureMatrix::from_frame(labelled, names)?;
        let mut rows = ExperimentRows {
            run: Vec::new(),
            customer: Vec::new(),
            x: FeatureMatrix { names: names.to_vec(), rows: 0, data: Vec::new() },
            treated: Vec::new(),
            churned: Vec::new(),
            churn_probability: Vec::new(),
            expected_loss: Vec::new(),
        };
        let mut index = Vec::new();
        for e in self.entries {
            let Some(&i) = at.get(&(schema::epoch_day(e.run), e.customer.as_str())) else { continue };
            index.push(i);
            rows.churned.push(churn[i]);
            rows.run.push(e.run);
            rows.customer.push(e.customer);
            rows.treated.push(e.treated);
            rows.churn_probability.push(e.churn_probability);
            rows.expected_loss.push(e.expected_loss);
        }
        rows.x = x_all.select_rows(&index);
        Ok(rows)
    }
}

/// The matured runs with both groups among their new customers, and (when there are at
/// least `needed` of them) the training rows; `None` when no run has a control group.
pub fn experiment_rows(
    s: &Sources,
    needed: usize,
) -> Result<Option<(Vec<NaiveDate>, Option<ExperimentRows>)>> {
    let parquet = ScoreParquet::new(s.output_dir);
    let scores = parquet.run_dates()?.into_iter().filter_map(|run| {
        match parquet.experiment_columns(run, &SCORE_COLUMNS) {
            Ok(Some(df)) => Some(Ok((run, df))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    });
    let Some(selected) = Selected::of(scores, s.spec.horizon_days, s.data_end, needed)? else {
        return Ok(None);
    };
    if !selected.enough() {
        return Ok(Some((selected.runs, None)));
    }
    let mut labelled = features::labelled_with(
        s.daily,
        s.spec,
        &selected.runs,
        s.probabilistic,
        s.signals.subscriptions.as_ref(),
    )?;
    crate::signals::append(&mut labelled, s.signal_spec, s.signals)?;
    let runs = selected.runs.clone();
    Ok(Some((runs, Some(selected.rows(&labelled, s.names)?))))
}
