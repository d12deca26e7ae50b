//! The train job (`fidelis train`): read and validate the inputs, build features and labels
//! over the snapshot grid, fit the models and candidates, choose out of time, calibrate,
//! choose the contact threshold, fit the baselines, write the model directory, read it back,
//! write the evaluation report, and only then point `models/latest` at the new model.

mod present;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{NaiveDate, NaiveDateTime, Utc};
use polars::prelude::*;

use crate::bgnbd::Probabilistic;
use crate::calibration::Calibrator;
use crate::config::{Config, InputSource};
use crate::error::{Error, PolarsContext, Result};
use crate::features::{self, FeatureMatrix, FeatureSpec};
use crate::files::to_json_bytes;
use crate::ingest::{self, Transactions, ValidationSummary};
use crate::metrics;
use crate::model::{
    self, decision, file, record, BaselineEval, BaselinePredictions, CalibrationReport, ChurnEval, ClvEval,
    DataFingerprint, DecisionArtifact, DecisionReport, Deployment, GbdtInfo, ModelInfo, RolePredictions,
    TrainMetrics, TrainingSettings,
};
use crate::monitor::Reference;
use crate::progress::Progress;
use crate::schema;
use crate::signals::{SignalData, SignalSpec};
use crate::split::{self, SnapshotPlan};
use crate::train::candidates::{CandidateReport, ChurnModel, ClvModel};
use crate::train::gbdt::{Gbdt, Task};
use crate::train::hist::Binned;
use crate::train::oot::{self, OutOfTime, Trees};
use crate::train::poisson::PoissonGbdt;
use crate::train::uplift::UpliftReport;
use crate::train::{baselines, choose, mean_abs_columns, Dataset, Engine, RoleSet};

/// Options of a training run beyond the config.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Train on the transactions before this date only.
    pub cutoff: Option<NaiveDate>,
    /// Also write the feature matrix with labels and each row's role (fit / validation /
    /// holdout) to this Parquet file (for other tools: benchmarks, notebooks).
    pub export_features: Option<PathBuf>,
    /// Move the MLflow alias to the new version whatever its metrics (`train --promote`).
    pub promote: bool,
}

/// What a training run produced.
pub struct TrainOutcome {
    pub model_id: String,
    pub dir: PathBuf,
    /// The evaluation report (HTML; `.md` and `.json` beside it), when written.
    pub report: Option<PathBuf>,
    /// The MLflow run and registration, when `[mlflow]` names a server.
    pub mlflow: Option<crate::sink::mlflow::Logged>,
    pub info: ModelInfo,
    pub metrics: TrainMetrics,
}

/// `fidelis train`: train, write the model directory and the evaluation report
/// (`<reports_dir>/<model_id>/evaluation.{html,md,json}`), then publish the model as
/// `latest`. A failure at any step leaves `latest` where it was.
pub fn run(cfg: &Config, opts: &TrainOptions, progress: &Progress) -> Result<TrainOutcome> {
    let outcome = train_model(cfg, opts, progress)?;
    publish(cfg, outcome, opts.promote, progress)
}

/// Write the evaluation report of a written model, log it to MLflow (`[mlflow]`), then point
/// `latest` at it: a failure to log leaves `latest` where it was (the model directory stays,
/// complete).
fn publish(
    cfg: &Config,
    mut outcome: TrainOutcome,
    promote: bool,
    progress: &Progress,
) -> Result<TrainOutcome> {
    let report = progress.step("report", "writing the evaluation report", || {
        crate::report::evaluation::write_evaluation(&outcome.dir, &cfg.models_dir(), &cfg.reports_dir())
    })?;
    if !cfg.mlflow.tracking_uri.is_empty() {
        outcome.mlflow = Some(progress.step("mlflow", "logging to MLflow", || {
            crate::sink::mlflow::log_training(&cfg.mlflow, &outcome.dir, report.parent(), promote)
        })?);
    }
    outcome.report = Some(report);
    model::store::set_latest(&cfg.models_dir(), &outcome.model_id)?;
    Ok(outcome)
}

/// Train on the transactions before `cutoff` only (a backtest's model, as if trained that
/// day; `None` = all of them), without a report; published as `latest` of `cfg`'s models.
pub fn until(cfg: &Config, cutoff: Option<NaiveDate>, progress: &Progress) -> Result<TrainOutcome> {
    let outcome = train_model(cfg, &TrainOptions { cutoff, ..TrainOptions::default() }, progress)?;
    model::store::set_latest(&cfg.models_dir(), &outcome.model_id)?;
    Ok(outcome)
}

/// Training data prepared where the transactions are: features and labels at every snapshot
/// of the plan (`dataset`: `customer_id`, `snapshot`, the features, `churn`, `clv`), the
/// features of the customers eligible at the end of the data (`at_end`: the drift reference)
/// and the BG/NBD models fitted there. A partitioned engine (fidelis.spark) builds it per
/// bucket of customers with [`features::dataset_with`] and hands it to [`run_prepared`]; rows
/// may come in any order. With events or a customer table, the frames already hold the signal
/// features of `signal_spec` (chosen from [`crate::signals::SignalCounts`] merged over the
/// parts, appended per part by [`crate::signals::append`]).
pub struct Prepared {
    pub signal_spec: SignalSpec,
    /// The validation summaries of every partition, merged ([`ingest::merge_summaries`]).
    pub summary: ValidationSummary,
    /// Row count and hash of the validated transactions ([`ingest::Fingerprint`]).
    pub fingerprint: ingest::Fingerprint,
    /// Every row, or (to bound what reaches this machine) only the customers of the
    /// training sample ([`training_sample`]): rows of other customers are dropped here.
    pub dataset: DataFrame,
    pub at_end: DataFrame,
    /// Rows of the whole dataset before any sample.
    pub dataset_rows: usize,
    /// BG/NBD + Gamma-Gamma at the end of the data (stored with the model, for scoring).
    pub probabilistic: Option<Probabilistic>,
    /// The experiment's customers at their first selection (from the runs' scores,
    /// [`super::uplift::Selected::of_frame`]) and, when there are enough runs, their features
    /// and labels at those runs ([`features::labelled_with`] with the end-of-data model, the
    /// signal features appended; rows of other customers allowed): the uplift model's rows.
    pub experiment: Option<(super::uplift::Selected, Option<DataFrame>)>,
}

/// The share of customers ([`crate::rng::customer_share`] below it) training keeps when the
/// dataset has `rows` rows (`None`: every row; `[model].max_rows` bounds them).
pub fn training_sample(cfg: &Config, rows: usize) -> Option<f64> {
    if cfg.model.max_rows == 0 {
        return None;
    }
    crate::rng::sample_fraction(cfg.model.max_rows, rows)
}

/// The snapshot plan of transactions from `first` to `last` (what a partitioned engine needs
/// before it builds the features: the dates, and the end of the data).
pub fn plan(cfg: &Config, first: NaiveDateTime, last: NaiveDateTime) -> Result<(SnapshotPlan, NaiveDate)> {
    Ok((split::plan(first, last, &cfg.snapshots)?, last.date() + chrono::Duration::days(1)))
}

/// [`run`] on prepared data: fit, write the model directory and the evaluation report, then
/// publish the model as `latest`.
/// `opts.cutoff` must be `None` (cut the rows before preparing them).
pub fn run_prepared(
    cfg: &Config,
    prepared: Prepared,
    opts: &TrainOptions,
    progress: &Progress,
) -> Result<TrainOutcome> {
    if opts.cutoff.is_some() {
        return Err(Error::Data("a cutoff applies to the transactions, before the rows are prepared".into()));
    }
    crate::files::remove_stale_temps(&cfg.models_dir())?;
    crate::files::remove_stale_temps(&cfg.reports_dir())?;
    let mut inputs = Inputs::new(cfg, prepared.summary, prepared.fingerprint, SignalData::default(), None)?;
    inputs.names = inputs.spec.names();
    inputs.names.extend(prepared.signal_spec.names());
    inputs.signal_spec = prepared.signal_spec;
    let ctx = "ordering the prepared rows";
    let order = |df: DataFrame, by: &[&str]| -> Result<DataFrame> {
        let by: Vec<PlSmallStr> = by.iter().map(|c| PlSmallStr::from(*c)).collect();
        let df = df
            .lazy()
            .with_columns([
                col(schema::SNAPSHOT).cast(DataType::Date),
                col(schema::CUSTOMER).cast(DataType::String),
            ])
            .collect()
            .polars(ctx)?;
        df.sort(by, SortMultipleOptions::default()).polars(ctx)
    };
    let mut dataset = order(prepared.dataset, &[schema::SNAPSHOT, schema::CUSTOMER])?;
    dataset = dataset
        .lazy()
        .with_columns([col(schema::CHURN).cast(DataType::Int32), col(schema::CLV).cast(DataType::Float64)])
        .collect()
        .polars(ctx)?;
    let uplift = match prepared.experiment {
        None => None,
        Some((selected, None)) => Some((selected.runs, None)),
        Some((selected, Some(labelled))) if selected.enough() => {
            let runs = selected.runs.clone();
            Some((runs, Some(selected.rows(&labelled, &inputs.names)?)))
        }
        Some((selected, Some(_))) => Some((selected.runs, None)),
    };
    let frames = Frames {
        dataset,
        at_end: order(prepared.at_end, &[schema::CUSTOMER])?,
        rows: prepared.dataset_rows,
        probabilistic: prepared.probabilistic,
        with_signals: true,
        uplift,
    };
    let outcome = fit_and_write(cfg, opts, &inputs, frames, progress)?;
    publish(cfg, outcome, false, progress)
}

/// Everything up to a model directory that was written and read back whole.
fn train_model(cfg: &Config, opts: &TrainOptions, progress: &Progress) -> Result<TrainOutcome> {
    crate::files::remove_stale_temps(&cfg.models_dir())?;
    crate::files::remove_stale_temps(&cfg.reports_dir())?;
    let (inputs, tx) = read_inputs(cfg, opts.cutoff, progress)?;
    let frames = build_frames(cfg, &inputs, &tx, progress)?;
    drop(tx);
    fit_and_write(cfg, opts, &inputs, frames, progress)
}

/// The feature frames of a run, before the training sample and the signals.
struct Frames {
    dataset: DataFrame,
    at_end: DataFrame,
    /// Rows of the whole dataset (before a sample that may already have been taken).
    rows: usize,
    probabilistic: Option<Probabilistic>,
    /// The signal features are in the frames already (prepared elsewhere).
    with_signals: bool,
    /// The experiment's matured runs with a control group, and the uplift model's training
    /// rows when there are enough of them (`None`: no experiment, or prepared elsewhere).
    uplift: Option<(Vec<NaiveDate>, Option<crate::train::uplift::ExperimentRows>)>,
}

/// Keep the rows of the customers of the training sample (every row without one).
fn sampled(df: DataFrame, fraction: Option<f64>) -> Result<DataFrame> {
    let Some(f) = fraction else { return Ok(df) };
    let ctx = "taking the training sample";
    let ids = df.column(schema::CUSTOMER).polars(ctx)?.str().polars(ctx)?;
    let keep: BooleanChunked =
        ids.iter().map(|id| Some(crate::rng::customer_share(id.unwrap_or_default()) < f)).collect();
    df.filter(&keep).polars(ctx)
}

/// The uplift model's report and, when one ships, the model (see `train::uplift::choose`).
fn fit_uplift(
    cfg: &Config,
    uplift: Option<(Vec<NaiveDate>, Option<crate::train::uplift::ExperimentRows>)>,
    progress: &Progress,
) -> Result<(Option<UpliftReport>, Option<crate::train::uplift::UpliftModel>)> {
    Ok(match uplift {
        None => (None, None),
        Some((runs, None)) => (Some(UpliftReport::too_few(runs, cfg.uplift.min_runs)), None),
        Some((_, Some(rows))) => {
            let params = crate::train::uplift::gbdt_params(&cfg.model, &cfg.uplift);
            let (report, model) = progress.step("uplift", "choosing and fitting the uplift model", || {
                crate::train::uplift::choose(&rows, &params, cfg.uplift.min_runs, cfg.uplift.ship_confidence)
            })?;
            (Some(report), model)
        }
    })
}

/// Fit, decide and write the model directory from the feature frames.
fn fit_and_write(
    cfg: &Config,
    opts: &TrainOptions,
    inputs: &Inputs,
    frames: Frames,
    progress: &Progress,
) -> Result<TrainOutcome> {
    let fraction = training_sample(cfg, frames.rows);
    let sample = fraction.map(|f| (f, frames.rows));
    let mut dataset = sampled(frames.dataset, fraction)?;
    let mut at_end = sampled(frames.at_end, fraction)?;
    if !frames.with_signals {
        crate::signals::append(&mut dataset, &inputs.signal_spec, &inputs.signals)?;
        crate::signals::append(&mut at_end, &inputs.signal_spec, &inputs.signals)?;
    }
    let data = Dataset::new(dataset, &inputs.names, &inputs.plan)?;
    let probabilistic = frames.probabilistic;
    let (holdout_day, end_day) = (schema::epoch_day(inputs.plan.holdout), schema::epoch_day(inputs.data_end));
    if let Some(path) = &opts.export_features {
        export_features(&data, path, (holdout_day, end_day), progress)?;
    }
    // Validation and holdout as matrices of their own (small); the fit rows are only read
    // through indices into `data` (a copy of them is the largest allocation of a big run).
    let roles = Roles { val: data.role(&data.rows.validation), hold: data.role(&data.rows.holdout) };
    // Every fit of this run (main, purged, refit) shares one binning, its cuts from the fit rows.
    let binned = progress.step("binning", "binning the feature matrix", || {
        Ok::<_, Error>(Binned::new(&data.x, Some(&data.rows.fit), cfg.model.nbins as usize))
    })?;
    let mut fitted = fit_models(cfg, &inputs.plan, &data, &binned, &roles, progress)?;
    fitted.churn.add_explainer(&data.x, &data.rows.fit, probabilistic.as_ref(), cfg.snapshots.horizon_days);
    let decided = decide(cfg, &inputs.plan, &data, &roles, &fitted, progress)?;
    let (uplift_report, uplift_model) = fit_uplift(cfg, frames.uplift, progress)?;
    let survival = fit_survival(cfg, &data, fitted.oot.as_ref(), (holdout_day, end_day), progress)?;
    // The refit and the comparison baselines are independent (and the baselines mostly
    // single-threaded): side by side, each step timed on its own wall clock.
    let (refitted, baselines) = rayon::join(
        || -> Result<_> {
            if !cfg.model.refit {
                return Ok(None);
            }
            Ok(Some(progress.step("refit", "refitting the shipped models on every matured label", || {
                crate::train::refit::refit(&cfg.model, &data, &binned, (&fitted.churn, &fitted.clv))
            })?))
        },
        || -> Result<BaselineResults> {
            if cfg.baselines.enabled {
                fit_baselines(cfg, &data, &roles, progress)
            } else {
                Ok(Default::default())
            }
        },
    );
    let (refitted, (baseline_evals, baseline_preds)) = (refitted?, baselines?);
    let (churn_model, clv_model) = match &refitted {
        Some((c, v)) => (c, v),
        None => (&fitted.churn, &fitted.clv),
    };
    let x_end = FeatureMatrix::from_frame(&at_end, &inputs.names)?;
    let reference = Reference::build(
        inputs.data_end,
        &x_end,
        &decided.calibrator.apply_all(&churn_model.predict(&x_end)),
        &clv_model.predict(&x_end),
    );
    let mut predictions = model::predictions_frame(
        &data.frame,
        decided.val.of(&data.rows.validation),
        decided.hold.of(&data.rows.holdout),
        &baseline_preds,
    )?;
    add_survival_predictions(&mut predictions, data.rows.validation.len(), survival.as_ref().map(|s| &s.2))?;
    let deployed = record::deployment(cfg, &data, (churn_model, clv_model), refitted.is_some());
    let run = Trained { inp: inputs, data: &data, r: &roles, f: &fitted, d: &decided, sample, deployed };
    let (mut info, mut metrics) = describe(cfg, &run, baseline_evals, probabilistic, progress)?;
    metrics.uplift = uplift_report;
    info.uplift = uplift_model.as_ref().map(|m| m.learner);
    let survival = record_survival(&mut info, &mut metrics, survival);
    let mut files = vec![
        (file::METRICS, to_json_bytes(&metrics, file::METRICS)?),
        (file::CHURN_GBDT, churn_model.gbdt.to_json()?.into_bytes()),
        (file::CLV_GBDT, clv_model.gbdt.to_json()?.into_bytes()),
        (file::LOGISTIC, to_json_bytes(&churn_model.logistic, file::LOGISTIC)?),
        (file::CLV_POISSON, to_json_bytes(&clv_model.poisson, file::CLV_POISSON)?),
        (file::CALIBRATION, to_json_bytes(&decided.calibrator, file::CALIBRATION)?),
        (file::DECISION, to_json_bytes(&decided.artifact, file::DECISION)?),
        (file::REFERENCE, to_json_bytes(&reference, file::REFERENCE)?),
        (file::PREDICTIONS, crate::sink::parquet_bytes(predictions)?),
    ];
    if let Some(m) = &uplift_model {
        files.push((file::UPLIFT, m.to_json()?.into_bytes()));
    }
    if let Some(m) = &survival {
        files.push((file::SURVIVAL, m.to_json()?.into_bytes()));
    }
    // model.json names every other file with its checksum, and is written with them.
    info.checksums = files.iter().map(|(name, bytes)| (name.to_string(), model::sha256_hex(bytes))).collect();
    files.insert(0, (file::MODEL, to_json_bytes(&info, file::MODEL)?));
    let models_dir = cfg.models_dir();
    let dir = progress.step("write", "writing the model artifact", || {
        let dir = model::store::write_model_dir(&models_dir, &info.model_id, &files)?;
        // Read back what scoring and monitoring will read; a model that does not read back is
        // removed (`latest` never named it).
        let read_back = || -> Result<()> {
            let back = model::load(&models_dir, Some(&info.model_id))?;
            back.metrics()?;
            back.reference()?;
            Ok(())
        };
        if let Err(e) = read_back() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok::<_, Error>(dir)
    })?;
    Ok(TrainOutcome { model_id: info.model_id.clone(), dir, report: None, mlflow: None, info, metrics })
}

/// The survival model with churn as a cancellation (`None` otherwise).
fn fit_survival(
    cfg: &Config,
    data: &Dataset,
    oot: Option<&OutOfTime>,
    days: (i32, i32),
    progress: &Progress,
) -> Result<Option<SurvivalParts>> {
    // The churn choice's purged snapshots (none when it cross-fitted).
    let purged: Vec<i32> =
        oot.map(|o| o.dates.iter().map(|&d| schema::epoch_day(d)).collect()).unwrap_or_default();
    let purged = &purged[..];
    progress.step("survival", "fitting the time-to-cancellation model", || {
        let (m, max_rows) = (&cfg.model, cfg.model.survival_max_rows);
        crate::train::survival::train((m, &m.logistic_l2, max_rows), m.refit, data, purged, days)
    })
}

/// The survival report into `metrics.json`, its presence into `model.json`; the model to write.
fn record_survival(
    info: &mut ModelInfo,
    metrics: &mut TrainMetrics,
    survival: Option<SurvivalParts>,
) -> Option<crate::train::survival::SurvivalModel> {
    info.survival = survival.is_some();
    survival.map(|(report, model, _)| {
        metrics.survival = Some(report);
        model
    })
}

type SurvivalParts = (
    crate::train::survival::SurvivalReport,
    crate::train::survival::SurvivalModel,
    crate::train::survival::HoldoutSurvival,
);

/// `--export-features`: the training rows with their role and, with churn as a
/// cancellation, each row's follow-up as the evaluation sees it (for survival models fitted
/// elsewhere on the same rows: benches/compare/survival.py).
fn export_features(
    data: &Dataset,
    path: &std::path::Path,
    (holdout, end): (i32, i32),
    progress: &Progress,
) -> Result<()> {
    let mut out = data.frame.clone();
    out.with_column(Column::new("role".into(), data.roles())).polars("adding roles")?;
    if let Some((days, event)) = crate::train::survival::evaluation_follow_up(data, holdout, end)? {
        out.with_column(Column::new("survival_days".into(), days)).polars("adding follow-up")?;
        out.with_column(Column::new("survival_event".into(), event)).polars("adding follow-up")?;
    }
    progress.step("export", &format!("writing {}", path.display()), || {
        crate::sink::write_parquet_atomic(&mut out, path)
    })
}

/// The evaluated survival model's holdout predictions, if any, in `predictions.parquet` (after
/// the `n_val` validation rows, which get none).
fn add_survival_predictions(
    predictions: &mut DataFrame,
    n_val: usize,
    h: Option<&crate::train::survival::HoldoutSurvival>,
) -> Result<()> {
    let Some(h) = h else { return Ok(()) };
    for (name, v) in [("survival_90d", &h.s90), ("expected_lifetime_days", &h.rmst)] {
        let col: Vec<Option<f64>> =
            std::iter::repeat_n(None, n_val).chain(v.iter().map(|&x| Some(x))).collect();
        predictions.with_column(Column::new(name.into(), col)).polars("adding survival predictions")?;
    }
    Ok(())
}

/// The validated inputs and the snapshot plan.
struct Inputs {
    summary: ValidationSummary,
    fingerprint: ingest::Fingerprint,
    signals: SignalData,
    plan: SnapshotPlan,
    spec: FeatureSpec,
    signal_spec: SignalSpec,
    /// Feature names in model order.
    names: Vec<String>,
    first: NaiveDateTime,
    /// The day after the last transaction.
    data_end: NaiveDate,
    cutoff: Option<NaiveDate>,
}

impl Inputs {
    fn new(
        cfg: &Config,
        summary: ValidationSummary,
        fingerprint: ingest::Fingerprint,
        signals: SignalData,
        cutoff: Option<NaiveDate>,
    ) -> Result<Inputs> {
        let (first, last) = match (summary.first_ts, summary.last_ts) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(Error::Data("no valid transactions".into())),
        };
        let (plan, data_end) = plan(cfg, first, last)?;
        let spec = FeatureSpec::from_config(cfg);
        let signal_spec = SignalSpec::from_data(&signals, &cfg.health);
        let mut names = spec.names();
        names.extend(signal_spec.names());
        Ok(Inputs { summary, fingerprint, signals, plan, spec, signal_spec, names, first, data_end, cutoff })
    }
}

fn read_inputs(
    cfg: &Config,
    cutoff: Option<NaiveDate>,
    progress: &Progress,
) -> Result<(Inputs, Transactions)> {
    let mut tx = progress.step("ingest", "reading and validating transactions", || {
        ingest::load_transactions(&cfg.input.transactions, cfg.input.sql_batch_rows)
    })?;
    if let Some(c) = cutoff {
        tx = ingest::truncate(tx, c)?;
    }
    let signals = progress.step("signals", "reading events and customers", || SignalData::load(cfg))?;
    let fingerprint = tx.fingerprint()?;
    Ok((Inputs::new(cfg, tx.summary.clone(), fingerprint, signals, cutoff)?, tx))
}

/// The training rows, and the customers eligible at the end of the data (the drift
/// reference: what the first scoring run after training sees).
fn build_frames(cfg: &Config, inp: &Inputs, tx: &Transactions, progress: &Progress) -> Result<Frames> {
    let snapshots = inp.plan.all();
    progress.step(
        "features",
        &format!("building features and labels at {} snapshots", snapshots.len()),
        || {
            let daily = features::daily_activity(&tx.frame)?;
            let spec = &inp.spec;
            let probabilistic =
                if spec.probabilistic { features::fit_probabilistic(&daily, inp.data_end) } else { None };
            let subscriptions = inp.signals.subscriptions.as_ref();
            let dataset = features::dataset_at(&daily, spec, &snapshots, subscriptions)?;
            let uplift = if cfg.uplift.min_runs == 0 {
                None
            } else {
                let sources = super::uplift::Sources {
                    output_dir: std::path::Path::new(&cfg.output.dir),
                    daily: &daily,
                    spec,
                    signal_spec: &inp.signal_spec,
                    signals: &inp.signals,
                    names: &inp.names,
                    probabilistic: probabilistic.as_ref(),
                    data_end: inp.data_end,
                };
                super::uplift::experiment_rows(&sources, cfg.uplift.min_runs)?
            };
            Ok(Frames {
                rows: dataset.height(),
                dataset,
                at_end: features::features_with(
                    &daily,
                    spec,
                    &[inp.data_end],
                    probabilistic.as_ref(),
                    subscriptions,
                )?,
                probabilistic,
                with_signals: false,
                uplift,
            })
        },
    )
}

/// The three roles' rows.
struct Roles {
    val: RoleSet,
    hold: RoleSet,
}

/// The shipped models and how they were chosen.
struct Fitted {
    churn: ChurnModel,
    clv: ClvModel,
    candidates: CandidateReport,
    oot: Option<OutOfTime>,
}

/// The main models on the fit rows (early-stopped on validation), the out-of-time
/// predictions, the logistic penalty and the candidate choice.
fn fit_models(
    cfg: &Config,
    plan: &SnapshotPlan,
    data: &Dataset,
    binned: &Binned,
    r: &Roles,
    progress: &Progress,
) -> Result<Fitted> {
    // The three main models side by side (each fit alone leaves part of the cores idle
    // between its parallel sections); each is timed on its own too.
    let fit_churn = || {
        progress.step("train_churn", "training the churn model (GBDT)", || {
            let fit = &data.rows.fit;
            Engine::fit_binned(
                &cfg.model,
                Task::Churn,
                binned,
                fit,
                &data.churn,
                Some((&r.val.x, &r.val.churn)),
            )
        })
    };
    let fit_clv = || {
        progress.step("train_clv", "training the CLV model (GBDT)", || {
            Engine::fit_binned(
                &cfg.model,
                Task::Clv,
                binned,
                &data.rows.fit,
                &data.clv,
                Some((&r.val.x, &r.val.clv)),
            )
        })
    };
    let fit_poisson = || -> Result<Option<PoissonGbdt>> {
        if !cfg.model.clv_poisson {
            return Ok(None);
        }
        Ok(Some(progress.step("train_clv_poisson", "training the CLV candidate (Poisson GBDT)", || {
            PoissonGbdt::fit_binned(
                &cfg.model,
                binned,
                &data.rows.fit,
                &data.clv,
                Some((&r.val.x, &r.val.clv)),
            )
        })?))
    };
    let (churn, (clv, poisson)) =
        progress.step("train_main", "training the main models side by side", || {
            Ok::<_, Error>(rayon::join(fit_churn, || rayon::join(fit_clv, fit_poisson)))
        })?;
    let (churn, clv, poisson) = (churn?, clv?, poisson?);
    // Timed alone: prediction throughput (the benchmark compares it with LightGBM's).
    progress.step("predict_holdout", "predicting the holdout (churn)", || {
        Ok::<_, Error>(churn.predict(&r.hold.x))
    })?;
    let trees =
        Trees { churn: churn.n_trees(), clv: clv.n_trees(), poisson: poisson.as_ref().map(|p| p.n_trees()) };
    let mut oot = progress.step(
        "out_of_time",
        &format!(
            "purged models at up to {} snapshots (candidate choice, calibration)",
            cfg.decision.calibration_snapshots
        ),
        || oot::out_of_time(cfg, plan, data, binned, trees),
    )?;
    let (logistic, penalties) =
        progress.step("train_logistic", "training the logistic regression candidate", || {
            choose::logistic(&cfg.model.logistic_l2, oot.as_mut(), data, &r.val)
        })?;
    // Candidates, chosen on out-of-time predictions (on validation when there is too little
    // history for them); the holdout is only reported.
    let parts = choose::Parts { churn: &churn, logistic: &logistic, clv: &clv, poisson: poisson.as_ref() };
    let (mut candidates, churn_mix, clv_mix) =
        choose::candidates(parts, &r.val, &r.hold, oot.as_ref().map(|o| (o, data)));
    candidates.logistic_l2 = penalties;
    Ok(Fitted {
        churn: ChurnModel { mix: churn_mix, gbdt: churn, logistic: Some(logistic), explain: None },
        clv: ClvModel { mix: clv_mix, gbdt: clv, poisson },
        candidates,
        oot,
    })
}

/// The shipped model's predictions on one role.
struct RolePreds {
    raw: Vec<f64>,
    calibrated: Vec<f64>,
    clv: Vec<f64>,
}

impl RolePreds {
    /// These predictions with the labels of their rows, as the decision reads them.
    fn rows<'a>(&'a self, labels: &'a RoleSet) -> decision::Rows<'a> {
        decision::Rows { raw: &self.raw, calibrated: &self.calibrated, clv: &self.clv, churn: &labels.churn }
    }

    fn of<'a>(&'a self, rows: &'a [usize]) -> RolePredictions<'a> {
        RolePredictions { rows, calibrated: &self.calibrated, raw: &self.raw, clv: &self.clv }
    }
}

/// The decision layer: the calibrator, the contact threshold and the risk bands.
struct Decided {
    calibrator: Calibrator,
    calibration: CalibrationReport,
    decision: DecisionReport,
    artifact: DecisionArtifact,
    val: RolePreds,
    hold: RolePreds,
    /// Churn contributions on the holdout (for the mean |contribution| per feature).
    contributions_hold: Vec<f64>,
    /// Whether they are exact SHAP values.
    contributions_shap: bool,
}

/// The pooled effect of contacting at the latest date of the monitoring history (under
/// `output.dir`) that has one.
fn measured_effect(cfg: &Config) -> Result<Option<(NaiveDate, crate::monitor::PooledEffect)>> {
    let history = crate::sink::History::new(std::path::Path::new(&cfg.output.dir));
    let Some(df) = history.read()? else { return Ok(None) };
    let Some(as_of) = crate::monitor::MonitorReport::latest_pooled_date(&df)? else { return Ok(None) };
    Ok(crate::monitor::MonitorReport::from_history(&df, as_of)?.pooled.map(|p| (as_of, p)))
}

/// Calibrate on out-of-time predictions, choose the threshold on validation, and report
/// both on the holdout. Every churn probability from here on is calibrated.
fn decide(
    cfg: &Config,
    plan: &SnapshotPlan,
    data: &Dataset,
    r: &Roles,
    f: &Fitted,
    progress: &Progress,
) -> Result<Decided> {
    let raw_val = f.churn.predict(&r.val.x);
    let raw_hold = f.churn.predict(&r.hold.x);
    let (contributions_hold, contributions_shap) = f.churn.explain(&r.hold.x);
    let pooled = measured_effect(cfg)?;
    let measured = pooled.as_ref().map(|(as_of, p)| crate::experiment::Measured {
        as_of: *as_of,
        runs: p.runs,
        effect: &p.effect,
        by_band: &p.by_band,
    });
    let (resolved, save_rate) = crate::experiment::resolve_save_rate(&cfg.decision, measured);
    let d = &resolved;
    let (calibrator, choice) =
        progress.step("calibrate", "calibrating probabilities on the out-of-time predictions", || {
            Ok::<_, Error>(choose::calibrator(
                f.oot.as_ref(),
                f.churn.mix,
                data,
                (&raw_val, &r.val.churn),
                plan,
                (d.calibration_folds, cfg.model.seed),
            ))
        })?;
    let val =
        RolePreds { calibrated: calibrator.apply_all(&raw_val), raw: raw_val, clv: f.clv.predict(&r.val.x) };
    let hold = RolePreds {
        calibrated: calibrator.apply_all(&raw_hold),
        raw: raw_hold,
        clv: f.clv.predict(&r.hold.x),
    };
    let calibration = decision::calibration_report(calibrator.method(), choice, &hold.rows(&r.hold));
    let (decision, artifact) = decision::decide(d, save_rate, &val.rows(&r.val), &hold.rows(&r.hold));
    Ok(Decided {
        calibrator,
        calibration,
        decision,
        artifact,
        val,
        hold,
        contributions_hold,
        contributions_shap,
    })
}

type BaselineResults = (BTreeMap<String, BaselineEval>, Vec<BaselinePredictions>);

/// The comparison models on (a sample of) the fit rows, evaluated on validation and holdout.
fn fit_baselines(cfg: &Config, data: &Dataset, r: &Roles, progress: &Progress) -> Result<BaselineResults> {
    let b = &cfg.baselines;
    let seed = cfg.model.seed;
    let eval = [&r.val.x, &r.hold.x];
    let (xb, yb) = baselines::sample(&data.x, &data.rows.fit, &data.churn, b.max_rows, seed);
    let (xb_clv, vb) = baselines::sample(&data.x, &data.rows.fit, &data.clv, b.max_rows, seed);
    // The four are independent and mostly single-threaded: fitted side by side.
    let ((logistic, tree), (forest_churn, forest_clv)) = progress.step(
        "baselines",
        "baselines: logistic regression, decision tree, random forests",
        || {
            Ok::<_, Error>(rayon::join(
                || {
                    rayon::join(
                        || baselines::logistic_regression(b, &xb, &yb, &eval),
                        || baselines::decision_tree(b, &xb, &yb, &eval),
                    )
                },
                || {
                    rayon::join(
                        || baselines::random_forest(b, seed, &xb, &yb, &eval),
                        || baselines::random_forest(b, seed, &xb_clv, &vb, &eval),
                    )
                },
            ))
        },
    )?;
    let mut churn_b = vec![logistic?];
    // A comparison model that fails is left out of the comparison, said on stderr.
    match tree {
        Ok(p) => churn_b.push(p),
        Err(e) => log::warn!("the decision tree baseline is left out: {e}"),
    }
    churn_b.push(forest_churn?);
    let mut clv_b = vec![forest_clv?];
    clv_b.extend(baselines::last_period_revenue(&format!("amount_{}d", cfg.snapshots.horizon_days), &eval));
    // BG/NBD (fitted before each snapshot) as a model of its own.
    churn_b.extend(baselines::from_feature(baselines::BGNBD_BASELINE, "bgnbd_p_no_purchase", &eval));
    clv_b.extend(baselines::from_feature(baselines::BGNBD_BASELINE, "bgnbd_expected_revenue", &eval));
    let (mut evals, mut preds): BaselineResults = Default::default();
    for p in churn_b {
        evals.entry(p.name.clone()).or_default().churn = Some(ChurnEval {
            validation: metrics::churn_metrics(&r.val.churn, &p.predictions[0]),
            holdout: metrics::churn_metrics(&r.hold.churn, &p.predictions[1]),
        });
        preds.push(BaselinePredictions { name: p.name, task: "churn", holdout: p.predictions[1].clone() });
    }
    for p in clv_b {
        evals.entry(p.name.clone()).or_default().clv = Some(ClvEval {
            validation: metrics::clv_metrics(&r.val.clv, &p.predictions[0]),
            holdout: metrics::clv_metrics(&r.hold.clv, &p.predictions[1]),
        });
        preds.push(BaselinePredictions { name: p.name, task: "clv", holdout: p.predictions[1].clone() });
    }
    Ok((evals, preds))
}

/// What a training run computed, for [`describe`].
struct Trained<'a> {
    inp: &'a Inputs,
    data: &'a Dataset,
    r: &'a Roles,
    f: &'a Fitted,
    d: &'a Decided,
    /// The training sample's share of customers and the rows before it, when one was taken.
    sample: Option<(f64, usize)>,
    deployed: Deployment,
}

/// `model.json` and `metrics.json` of the run.
fn describe(
    cfg: &Config,
    t: &Trained,
    baselines: BTreeMap<String, BaselineEval>,
    probabilistic: Option<Probabilistic>,
    progress: &Progress,
) -> Result<(ModelInfo, TrainMetrics)> {
    let (inp, data, r, f, d) = (t.inp, t.data, t.r, t.f, t.d);
    let names = &inp.names;
    let settings = serde_json::to_value(TrainingSettings::of(cfg, inp.cutoff))
        .map_err(|source| Error::Json { context: "recording the training settings".into(), source })?;
    let data_print = DataFingerprint {
        path: cfg.input.transactions.source_name(),
        rows: inp.fingerprint.rows,
        xxh3: inp.fingerprint.hex(),
    };
    let model_hash = xxhash_rust::xxh3::xxh3_64(format!("{}|{settings}", data_print.xxh3).as_bytes());
    let now = Utc::now();
    // The same data and settings trained twice in one second (a run re-started right after
    // one killed past writing its model) would name the same directory: the next free name.
    let stem = format!("{}-{:08x}", now.format("%Y%m%dT%H%M%SZ"), model_hash as u32);
    let models_dir = cfg.models_dir();
    let model_id = std::iter::once(stem.clone())
        .chain((2..).map(|k| format!("{stem}-{k}")))
        .find(|id| !models_dir.join(id).exists())
        .unwrap_or(stem);
    let importance = |imp: Vec<f64>| -> BTreeMap<String, f64> { names.iter().cloned().zip(imp).collect() };
    let (snapshots, mut notes) = record::snapshot_stats(&inp.plan, data);
    if let Some((fraction, rows)) = t.sample {
        notes.push(record::training_sample_note(fraction, rows, data.frame.height(), cfg.model.max_rows));
    }
    notes.extend(record::sample_notes(cfg, data.rows.fit.len(), f.oot.as_ref().map_or(&[], |o| &o.sampled)));
    let mean_abs = mean_abs_columns(&d.contributions_hold, names.len());
    let metrics = TrainMetrics {
        model_id: model_id.clone(),
        holdout_snapshot: inp.plan.holdout,
        validation_snapshot: inp.plan.validation,
        n_holdout: data.rows.holdout.len(),
        n_validation: data.rows.validation.len(),
        n_fit: data.rows.fit.len(),
        churn: ChurnEval {
            holdout: metrics::churn_metrics(&r.hold.churn, &d.hold.calibrated),
            validation: metrics::churn_metrics(&r.val.churn, &d.val.calibrated),
        },
        clv: ClvEval {
            holdout: metrics::clv_metrics(&r.hold.clv, &d.hold.clv),
            validation: metrics::clv_metrics(&r.val.clv, &d.val.clv),
        },
        baselines,
        candidates: f.candidates.clone(),
        gbdt: GbdtInfo {
            engine: Engine::ENGINE.into(),
            churn_trees: f.churn.gbdt.n_trees(),
            clv_trees: f.clv.n_trees(),
            clv_gbdt_trees: f.clv.gbdt.n_trees(),
            clv_poisson_trees: f.clv.poisson.as_ref().map(|p| p.n_trees()),
            churn_importance: importance(f.churn.gbdt.importance_gain(names.len())),
            clv_importance: importance(f.clv.importance_gain(names.len())),
            churn_mean_abs_contribution: importance(mean_abs.clone()),
            churn_contributions_shap: d.contributions_shap,
            churn_dependence: model::Dependence::top(&r.hold.x, &d.contributions_hold, &mean_abs),
        },
        calibration: d.calibration.clone(),
        decision: d.decision.clone(),
        snapshots,
        deployed: t.deployed.clone(),
        notes,
        uplift: None,
        survival: None,
    };
    let horizon = chrono::Duration::days(i64::from(cfg.snapshots.horizon_days));
    let info = ModelInfo {
        format_version: model::FORMAT_VERSION,
        model_id,
        checksums: BTreeMap::new(),
        created_at: now.naive_utc(),
        timings_s: progress.timings(),
        fidelis_version: env!("CARGO_PKG_VERSION").into(),
        engine: Engine::ENGINE.into(),
        features: names.clone(),
        feature_spec: inp.spec.clone(),
        settings,
        data: data_print,
        validation: inp.summary.clone(),
        training_window: (inp.first.date(), inp.plan.holdout + horizon),
        snapshots: inp.plan.clone(),
        libraries: model::library_versions(),
        probabilistic,
        signals: inp.signal_spec.clone(),
        churn_model: f.churn.mix,
        bgnbd_explainer: f.churn.explain,
        clv_model: f.clv.mix,
        uplift: None,
        survival: false,
    };
    Ok((info, metrics))
}
