//! Training where the transactions are partitioned (fidelis.spark.train): the pieces an
//! executor runs on one bucket of customers, and the driver's fit on the rows they built.
//!
//! The flow (every step but the last on the executors, per bucket):
//! 1. `inspect`: validate the bucket; its validation summary and fingerprint, merged on the
//!    driver (`merge`) into the plan's time range;
//! 2. `fit_inputs`: every customer's BG/NBD summary before each snapshot date and the end of
//!    the data; Spark counts them per date and keeps the hash sample the CLI keeps
//!    (`in_probabilistic_sample`), `fit_models` fits on the driver in customer order;
//! 3. `dataset` and `at_end`: features and labels with those models (the CLI's rows for
//!    these customers), with each row's `__share` so Spark keeps only the training sample;
//! 4. `train` (driver): the CLI's training from there on (`jobs::train::run_prepared`).

use chrono::NaiveDate;
use polars::prelude::*;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use serde::{Deserialize, Serialize};

use fidelis::bgnbd::{Probabilistic, Rfm};
use fidelis::config::{Config, InputSource};
use fidelis::error::Error;
use fidelis::features::{self, FeatureSpec, FitInput};
use fidelis::ingest::{self, Fingerprint, ValidationSummary};
use fidelis::jobs;
use fidelis::progress::Progress;
use fidelis::schema::CUSTOMER;

use fidelis::activity::Subscriptions;
use fidelis::signals::{SignalCounts, SignalSpec};

use crate::{config_of, export_frame, import_frame, parse_date, polars_err, py_err};

/// What one bucket's validation found (JSON between executors and the driver).
#[derive(Serialize, Deserialize)]
struct Inspected {
    summary: ValidationSummary,
    fingerprint: Fingerprint,
}

/// The BG/NBD models of each date (JSON from `fit_models` to `dataset` and `at_end`).
type Models = Vec<(NaiveDate, Option<Probabilistic>)>;

fn json_err(e: serde_json::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

const SHARE: &str = "__share";

/// The training configuration, on the driver and on every executor.
#[pyclass(name = "Trainer", module = "fidelis._native", frozen)]
pub struct Trainer {
    cfg: Config,
}

impl Trainer {
    fn daily(&self, tx: &Bound<'_, PyAny>) -> PyResult<features::Daily> {
        let tx = ingest::transactions_from_frame(
            import_frame(tx, "transactions")?,
            &self.cfg.input.transactions,
            "transactions",
        )
        .map_err(py_err)?;
        features::daily_activity(&tx.frame).map_err(py_err)
    }

    fn spec(&self) -> FeatureSpec {
        FeatureSpec::from_config(&self.cfg)
    }

    /// `build`'s frame of one bucket with the signal features of `signal_spec` (from the
    /// bucket's events and customer rows) appended and `__share`, as a capsule.
    #[allow(clippy::too_many_arguments)]
    fn bucket_features<'py>(
        &self,
        py: Python<'py>,
        transactions: &Bound<'py, PyAny>,
        signal_spec: Option<&str>,
        events: Option<&Bound<'py, PyAny>>,
        customers: Option<&Bound<'py, PyAny>>,
        subscriptions: Option<&Bound<'py, PyAny>>,
        build: impl FnOnce(&features::Daily, Option<&Subscriptions>) -> fidelis::error::Result<DataFrame> + Send,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let daily = self.daily(transactions)?;
        let signals = crate::bucket_signals(&self.cfg, events, customers, subscriptions)?;
        let spec = self.signal_spec_of(signal_spec)?;
        let df = py
            .detach(|| -> fidelis::error::Result<DataFrame> {
                let mut df = build(&daily, signals.subscriptions.as_ref())?;
                fidelis::signals::append(&mut df, &spec, &signals)?;
                Ok(df)
            })
            .map_err(py_err)?;
        export_frame(py, with_share(df)?)
    }

    /// [`jobs::uplift::Selected::of_frame`] of the runs' scores.
    fn selected(
        &self,
        py: Python<'_>,
        scores: &Bound<'_, PyAny>,
        data_end: &str,
    ) -> PyResult<Option<jobs::uplift::Selected>> {
        let scores = import_frame(scores, "the runs' scores")?;
        let data_end = parse_date(data_end)?;
        let (horizon, needed) = (self.cfg.snapshots.horizon_days, self.cfg.uplift.min_runs);
        py.detach(|| jobs::uplift::Selected::of_frame(&scores, horizon, data_end, needed)).map_err(py_err)
    }

    fn signal_spec_of(&self, json: Option<&str>) -> PyResult<SignalSpec> {
        json.map_or(Ok(SignalSpec::default()), |s| serde_json::from_str(s).map_err(json_err))
    }
}

/// Each row's `__share` (`rng::customer_share` of its customer), for the training sample.
fn with_share(mut df: DataFrame) -> PyResult<DataFrame> {
    let ids = df.column(CUSTOMER).map_err(polars_err("share"))?.str().map_err(polars_err("share"))?;
    let share: Vec<f64> = ids.iter().map(|id| fidelis::rng::customer_share(id.unwrap_or_default())).collect();
    df.with_column(Column::new(SHARE.into(), share)).map_err(polars_err("share"))?;
    Ok(df)
}

fn dates(days: &[String]) -> PyResult<Vec<NaiveDate>> {
    days.iter().map(|d| parse_date(d)).collect()
}

#[pymethods]
impl Trainer {
    #[new]
    #[pyo3(signature = (config=None))]
    fn new(config: Option<&str>) -> PyResult<Trainer> {
        Ok(Trainer { cfg: config_of(config)? })
    }

    /// The transactions' customer id column (the configuration's mapping).
    #[getter]
    fn customer_column(&self) -> String {
        self.cfg.input.transactions.customer_id.clone()
    }

    /// Customers a BG/NBD fit takes at most before it samples (`features::PROBABILISTIC_FIT_SAMPLE`).
    #[getter]
    fn probabilistic_fit_sample(&self) -> usize {
        features::PROBABILISTIC_FIT_SAMPLE
    }

    /// Whether the configuration maps an event log and a customer table (`[input.events]`,
    /// `[input.customers]` with a path): `fidelis train` would use them.
    #[getter]
    fn signal_inputs(&self) -> (bool, bool, bool) {
        let i = &self.cfg.input;
        (i.events.is_given(), i.customers.is_given(), i.subscriptions.is_given())
    }

    /// Whether the training rows carry the survival label (`features::CANCEL_PERIOD`, after
    /// `clv`): churn is a cancellation.
    #[getter]
    fn survival_label(&self) -> bool {
        self.cfg.snapshots.churn == fidelis::config::ChurnRule::Cancellation
    }

    /// The customer id columns of the event log, the customer table and the subscription table.
    #[getter]
    fn signal_customer_columns(&self) -> (String, String, String) {
        let i = &self.cfg.input;
        (i.events.customer_id.clone(), i.customers.customer_id.clone(), i.subscriptions.customer_id.clone())
    }

    /// What one bucket's events, customer rows and subscription rows count toward the choice
    /// of the signal features (`signals::SignalCounts`, JSON).
    #[pyo3(signature = (events=None, customers=None, subscriptions=None))]
    fn signal_counts(
        &self,
        events: Option<&Bound<'_, PyAny>>,
        customers: Option<&Bound<'_, PyAny>>,
        subscriptions: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<String> {
        let data = crate::bucket_signals(&self.cfg, events, customers, subscriptions)?;
        serde_json::to_string(&SignalCounts::of(&data)).map_err(json_err)
    }

    /// The signal features (`signals::SignalSpec`, JSON) chosen from every bucket's counts.
    fn signal_spec(&self, parts: Vec<String>) -> PyResult<String> {
        let mut all = SignalCounts::default();
        for p in parts {
            all.merge(&serde_json::from_str(&p).map_err(json_err)?);
        }
        serde_json::to_string(&SignalSpec::from_counts(&all, &self.cfg.health)).map_err(json_err)
    }

    /// The feature names of the models this configuration trains, in model order (with the
    /// signal features of `signal_spec`, JSON, when given).
    #[pyo3(signature = (signal_spec=None))]
    fn feature_names(&self, signal_spec: Option<&str>) -> PyResult<Vec<String>> {
        let mut names = self.spec().names();
        if let Some(s) = signal_spec {
            names.extend(serde_json::from_str::<SignalSpec>(s).map_err(json_err)?.names());
        }
        Ok(names)
    }

    /// Validate one bucket of transactions: its summary and fingerprint (JSON).
    fn inspect(&self, py: Python<'_>, transactions: &Bound<'_, PyAny>) -> PyResult<String> {
        let raw = import_frame(transactions, "transactions")?;
        let found = py
            .detach(|| -> fidelis::error::Result<Inspected> {
                let tx = ingest::transactions_from_frame(raw, &self.cfg.input.transactions, "transactions")?;
                Ok(Inspected { fingerprint: tx.fingerprint()?, summary: tx.summary })
            })
            .map_err(py_err)?;
        serde_json::to_string(&found).map_err(json_err)
    }

    /// The buckets' `inspect` results merged (in the order given) and the snapshot plan of
    /// the whole: `(merged JSON, snapshot dates, end of the data)`.
    fn merge(&self, parts: Vec<String>) -> PyResult<(String, Vec<String>, String)> {
        let parts: Vec<Inspected> =
            parts.iter().map(|p| serde_json::from_str(p)).collect::<Result<_, _>>().map_err(json_err)?;
        let summaries: Vec<ValidationSummary> = parts.iter().map(|p| p.summary.clone()).collect();
        let summary = ingest::merge_summaries(&summaries)
            .ok_or_else(|| py_err(Error::Data("no transactions to train on".into())))?;
        let fingerprint = parts.iter().fold(Fingerprint::default(), |a, p| a.merge(p.fingerprint));
        let (first, last) = match (summary.first_ts, summary.last_ts) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(py_err(Error::Data("no valid transactions".into()))),
        };
        let (plan, data_end) = jobs::train::plan(&self.cfg, first, last).map_err(py_err)?;
        let merged = serde_json::to_string(&Inspected { summary, fingerprint }).map_err(json_err)?;
        let days = plan.all().iter().map(|d| d.to_string()).collect();
        Ok((merged, days, data_end.to_string()))
    }

    /// Every customer of the bucket with history before each of `dates`: `day`,
    /// `customer_id`, `share`, and the BG/NBD fit input (`x`, `t_x`, `t`, `repeat_spend`).
    fn fit_inputs<'py>(
        &self,
        py: Python<'py>,
        transactions: &Bound<'py, PyAny>,
        dates_: Vec<String>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let daily = self.daily(transactions)?;
        let dates = dates(&dates_)?;
        let (mut day, mut id, mut share) = (Vec::new(), Vec::new(), Vec::new());
        let (mut x, mut t_x, mut t, mut spend) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for d in dates {
            for (c, f) in features::probabilistic_inputs(&daily, d) {
                day.push(fidelis::schema::epoch_day(d));
                id.push(daily.customers[c].as_str());
                share.push(fidelis::rng::customer_share(&daily.customers[c]));
                x.push(f.rfm.x);
                t_x.push(f.rfm.t_x);
                t.push(f.rfm.t);
                spend.push(f.repeat_spend);
            }
        }
        let ctx = "fit inputs";
        let df = DataFrame::new_infer_height(vec![
            Column::new("day".into(), day).cast(&DataType::Date).map_err(polars_err(ctx))?,
            Column::new(CUSTOMER.into(), id),
            Column::new("share".into(), share),
            Column::new("x".into(), x),
            Column::new("t_x".into(), t_x),
            Column::new("t".into(), t),
            Column::new("repeat_spend".into(), spend),
        ])
        .map_err(polars_err(ctx))?;
        export_frame(py, df)
    }

    /// The BG/NBD models of each date, fitted on the driver from the `fit_inputs` rows of the
    /// sample (any order; those outside the sample are left out here too) and `counts`, the
    /// number of customers with history at each date: JSON for `dataset` and `at_end`.
    fn fit_models(
        &self,
        py: Python<'_>,
        rows: &Bound<'_, PyAny>,
        counts: Vec<(String, usize)>,
    ) -> PyResult<String> {
        let df = import_frame(rows, "fit inputs")?;
        let ctx = "fit inputs";
        let f64s = |name: &str| -> PyResult<Vec<f64>> {
            let c = df.column(name).map_err(polars_err(ctx))?;
            Ok(c.f64().map_err(polars_err(ctx))?.into_no_null_iter().collect())
        };
        let day_col =
            df.column("day").map_err(polars_err(ctx))?.cast(&DataType::Int32).map_err(polars_err(ctx))?;
        let days: Vec<i32> = day_col.i32().map_err(polars_err(ctx))?.into_no_null_iter().collect();
        let id_col =
            df.column(CUSTOMER).map_err(polars_err(ctx))?.cast(&DataType::String).map_err(polars_err(ctx))?;
        let ids: Vec<&str> =
            id_col.str().map_err(polars_err(ctx))?.iter().map(|v| v.unwrap_or_default()).collect();
        let (share, x, t_x, t, spend) =
            (f64s("share")?, f64s("x")?, f64s("t_x")?, f64s("t")?, f64s("repeat_spend")?);
        let mut order: Vec<usize> = (0..days.len()).collect();
        order.sort_by(|&a, &b| (days[a], ids[a]).cmp(&(days[b], ids[b])));
        let mut models: Models = Vec::new();
        for (date, n) in counts {
            let d = parse_date(&date)?;
            let td = fidelis::schema::epoch_day(d);
            if n == 0 {
                models.push((d, None));
                continue;
            }
            let sample: Vec<FitInput> = order
                .iter()
                .filter(|&&i| days[i] == td && features::in_probabilistic_sample(share[i], n))
                .map(|&i| FitInput { rfm: Rfm { x: x[i], t_x: t_x[i], t: t[i] }, repeat_spend: spend[i] })
                .collect();
            models.push((d, Some(py.detach(|| features::fit_probabilistic_on(&sample)))));
        }
        serde_json::to_string(&models).map_err(json_err)
    }

    /// Features and labels of the bucket's customers at every snapshot of `models` (the
    /// CLI's rows for them), with `__share`; with `signal_spec` (JSON), the signal features
    /// from the bucket's `events` and `customers` rows follow.
    #[pyo3(signature = (transactions, models, signal_spec=None, events=None, customers=None, subscriptions=None))]
    #[allow(clippy::too_many_arguments)]
    fn dataset<'py>(
        &self,
        py: Python<'py>,
        transactions: &Bound<'py, PyAny>,
        models: &str,
        signal_spec: Option<&str>,
        events: Option<&Bound<'py, PyAny>>,
        customers: Option<&Bound<'py, PyAny>>,
        subscriptions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let models: Models = serde_json::from_str(models).map_err(json_err)?;
        self.bucket_features(
            py,
            transactions,
            signal_spec,
            events,
            customers,
            subscriptions,
            |daily, subs| features::dataset_with(daily, &self.spec(), &models, subs),
        )
    }

    /// Features of the bucket's customers eligible at the end of the data (`models`: its one
    /// date and model), with `__share` (and the signal features, as [`Self::dataset`]).
    #[pyo3(signature = (transactions, models, signal_spec=None, events=None, customers=None, subscriptions=None))]
    #[allow(clippy::too_many_arguments)]
    fn at_end<'py>(
        &self,
        py: Python<'py>,
        transactions: &Bound<'py, PyAny>,
        models: &str,
        signal_spec: Option<&str>,
        events: Option<&Bound<'py, PyAny>>,
        customers: Option<&Bound<'py, PyAny>>,
        subscriptions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let models: Models = serde_json::from_str(models).map_err(json_err)?;
        let [(end, model)] = models.as_slice() else {
            return Err(PyValueError::new_err("at_end takes the model of one date"));
        };
        self.bucket_features(
            py,
            transactions,
            signal_spec,
            events,
            customers,
            subscriptions,
            |daily, subs| features::features_with(daily, &self.spec(), &[*end], model.as_ref(), subs),
        )
    }

    /// Features and labels of the bucket's customers at the experiment's runs `runs` with the
    /// end-of-data model (`models`: its one date and model), with `__share` (and the signal
    /// features, as [`Self::dataset`]): the uplift model's rows before they are matched to the
    /// experiment's customers.
    #[pyo3(signature = (transactions, models, runs, signal_spec=None, events=None, customers=None, subscriptions=None))]
    #[allow(clippy::too_many_arguments)]
    fn experiment<'py>(
        &self,
        py: Python<'py>,
        transactions: &Bound<'py, PyAny>,
        models: &str,
        runs: Vec<String>,
        signal_spec: Option<&str>,
        events: Option<&Bound<'py, PyAny>>,
        customers: Option<&Bound<'py, PyAny>>,
        subscriptions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let models: Models = serde_json::from_str(models).map_err(json_err)?;
        let [(_, model)] = models.as_slice() else {
            return Err(PyValueError::new_err("experiment takes the end-of-data model"));
        };
        let runs = dates(&runs)?;
        self.bucket_features(
            py,
            transactions,
            signal_spec,
            events,
            customers,
            subscriptions,
            |daily, subs| features::labelled_with(daily, &self.spec(), &runs, model.as_ref(), subs),
        )
    }

    /// The experiment's matured runs from the runs' scores (a table with `as_of`, the
    /// customer id, `experiment_group`, `churn_probability`, `expected_loss`) and the day
    /// after the data (`merge`'s): `None` when no run has a control group, else the runs with
    /// both groups among their new customers and whether they are enough
    /// (`[uplift].min_runs`) to train the uplift model on.
    fn experiment_runs(
        &self,
        py: Python<'_>,
        scores: &Bound<'_, PyAny>,
        data_end: &str,
    ) -> PyResult<Option<(Vec<String>, bool)>> {
        let selected = self.selected(py, scores, data_end)?;
        Ok(selected.map(|s| (s.runs.iter().map(ToString::to_string).collect(), s.enough())))
    }

    /// The share of customers the training sample keeps when the dataset has `rows` rows
    /// (None: every row; `[model].max_rows`).
    fn sample_fraction(&self, rows: usize) -> Option<f64> {
        jobs::train::training_sample(&self.cfg, rows)
    }

    /// Train on the driver from the rows Spark built: `merged` from `merge`, the dataset
    /// and end-of-data rows (of the sample, or all), the dataset's row count before the
    /// sample, and the end-of-data model JSON. Writes the model directory and report and
    /// publishes `latest` as `fidelis train` does: `(model id, model directory, report)`.
    /// `export_features`: also write the training rows with their role there (as `fidelis
    /// train --export-features`).
    /// `experiment`: the runs' scores and the bucket rows of [`Self::experiment`] (of the
    /// experiment's customers) when the uplift model is to be fitted (see
    /// [`Self::experiment_runs`]); the scores alone when there are too few runs.
    #[pyo3(signature = (
        merged, dataset, at_end, rows, end_model, export_features=None, signal_spec=None,
        experiment_scores=None, experiment_rows=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn train(
        &self,
        py: Python<'_>,
        merged: &str,
        dataset: &Bound<'_, PyAny>,
        at_end: &Bound<'_, PyAny>,
        rows: usize,
        end_model: &str,
        export_features: Option<&str>,
        signal_spec: Option<&str>,
        experiment_scores: Option<&Bound<'_, PyAny>>,
        experiment_rows: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(String, String, String)> {
        let signal_spec = self.signal_spec_of(signal_spec)?;
        let merged: Inspected = serde_json::from_str(merged).map_err(json_err)?;
        let end: Models = serde_json::from_str(end_model).map_err(json_err)?;
        let drop_share = |df: DataFrame| -> PyResult<DataFrame> {
            if df.column(SHARE).is_ok() {
                df.drop(SHARE).map_err(polars_err("share"))
            } else {
                Ok(df)
            }
        };
        let experiment = match experiment_scores {
            None => None,
            Some(scores) => {
                let [(data_end, _)] = end.as_slice() else {
                    return Err(PyValueError::new_err("train takes the end-of-data model"));
                };
                let rows = experiment_rows.map(|r| import_frame(r, "experiment rows")).transpose()?;
                self.selected(py, scores, &data_end.to_string())?.map(|s| (s, rows))
            }
        };
        let prepared = jobs::train::Prepared {
            signal_spec,
            summary: merged.summary,
            fingerprint: merged.fingerprint,
            dataset: drop_share(import_frame(dataset, "dataset")?)?,
            at_end: drop_share(import_frame(at_end, "end-of-data features")?)?,
            dataset_rows: rows,
            probabilistic: end.into_iter().next().and_then(|(_, p)| p),
            experiment,
        };
        let opts = jobs::train::TrainOptions {
            cutoff: None,
            export_features: export_features.map(Into::into),
            promote: false,
        };
        let outcome = py
            .detach(|| jobs::train::run_prepared(&self.cfg, prepared, &opts, &Progress::hidden()))
            .map_err(py_err)?;
        let report = outcome.report.map(|p| p.display().to_string()).unwrap_or_default();
        Ok((outcome.model_id, outcome.dir.display().to_string(), report))
    }
}
