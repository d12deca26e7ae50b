//! `fidelis._native`: the Rust core of the `fidelis` Python package (python/fidelis wraps it).
//!
//! Data crosses the boundary through the Arrow C stream interface: a frame comes in as the
//! `arrow_array_stream` capsule of any object with `__arrow_c_stream__` (pyarrow, polars,
//! pandas through pyarrow) and is imported without a copy of its buffers; results go out as a
//! capsule of the same kind that pyarrow reads (`RecordBatchReader.from_stream`). Errors become
//! the exceptions of `fidelis.errors`, carrying the CLI's message and exit code.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;
use polars_arrow::array::{Array, StructArray};
use polars_arrow::datatypes::{ArrowDataType, Field as ArrowField};
use polars_arrow::ffi::{export_iterator, ArrowArrayStream, ArrowArrayStreamReader};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use fidelis::config::Config;
use fidelis::error::Error;
use fidelis::jobs;
use fidelis::model::{self, LoadedModel};
use fidelis::progress::Progress;
use fidelis::signals::SignalData;

mod distributed;
mod uplift;

const STREAM: &std::ffi::CStr = c"arrow_array_stream";

/// A library error as the matching `fidelis.errors` exception (message and exit code).
pub(crate) fn py_err(e: Error) -> PyErr {
    Python::attach(|py| {
        let class = match e.exit_code() {
            2 => "InputError",
            4 => "LockedError",
            5 => "OutputError",
            6 => "ScoresWrittenError",
            _ => "FidelisError",
        };
        let made = py
            .import("fidelis.errors")
            .and_then(|m| m.getattr(class))
            .and_then(|c| c.call1((e.to_string(), e.exit_code())));
        match made {
            Ok(value) => PyErr::from_value(value),
            Err(import_failed) => import_failed,
        }
    })
}

pub(crate) fn polars_err(context: &str) -> impl Fn(PolarsError) -> PyErr + '_ {
    move |e| py_err(Error::Polars { context: context.to_string(), source: e })
}

/// A frame from an Arrow C stream capsule (the buffers are shared, not copied).
pub(crate) fn import_frame(capsule: &Bound<'_, PyAny>, what: &str) -> PyResult<DataFrame> {
    import_stream(capsule, what, false)
}

/// [`import_frame`], where a stream without batches is an empty frame of its schema.
pub(crate) fn import_frame_or_empty(capsule: &Bound<'_, PyAny>, what: &str) -> PyResult<DataFrame> {
    import_stream(capsule, what, true)
}

fn import_stream(capsule: &Bound<'_, PyAny>, what: &str, allow_empty: bool) -> PyResult<DataFrame> {
    let capsule = capsule.cast::<PyCapsule>().map_err(|_| {
        PyValueError::new_err(format!("{what}: expected an Arrow C stream capsule (__arrow_c_stream__())"))
    })?;
    let ptr = capsule
        .pointer_checked(Some(STREAM))
        .map_err(|_| PyValueError::new_err(format!("{what}: the capsule is not an arrow_array_stream")))?;
    // SAFETY: an `arrow_array_stream` capsule points at an ArrowArrayStream (the C stream
    // interface). Its content is moved out and an empty (released) stream left behind, as the
    // interface prescribes for a consumer.
    let stream =
        unsafe { std::ptr::replace(ptr.as_ptr() as *mut ArrowArrayStream, ArrowArrayStream::empty()) };
    let context = format!("reading {what}");
    // SAFETY: the stream was produced by the capsule's owner and is now ours.
    let mut reader =
        unsafe { ArrowArrayStreamReader::try_new(Box::new(stream)) }.map_err(polars_err(&context))?;
    let mut frames: Vec<DataFrame> = Vec::new();
    // SAFETY: the reader owns the stream.
    while let Some(array) = unsafe { reader.next() } {
        let array = array.map_err(polars_err(&context))?;
        let batch = array
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| PyValueError::new_err(format!("{what}: expected a stream of record batches")))?
            .clone();
        // A duplicated column name is the caller's input, named as such (exit 2).
        let mut seen = std::collections::HashSet::new();
        if let Some(f) = batch.fields().iter().find(|f| !seen.insert(f.name.as_str())) {
            return Err(py_err(Error::InputFile {
                path: what.into(),
                message: format!(
                    "the column {:?} appears more than once; give every column its own name",
                    f.name.as_str()
                ),
            }));
        }
        frames.push(DataFrame::try_from(batch).map_err(polars_err(&context))?);
    }
    let mut frames = frames.into_iter();
    let Some(mut df) = frames.next() else {
        if allow_empty {
            // No batches: an empty frame of the stream's schema.
            let ArrowDataType::Struct(fields) = reader.field().dtype() else {
                return Err(PyValueError::new_err(format!("{what}: expected a stream of record batches")));
            };
            let schema: polars_arrow::datatypes::ArrowSchema =
                fields.iter().map(|f| (f.name.clone(), f.clone())).collect();
            return Ok(DataFrame::empty_with_schema(&Schema::from_arrow_schema(&schema)));
        }
        return Err(py_err(Error::Data(format!("{what} has no rows"))));
    };
    for f in frames {
        df.vstack_mut_owned(f).map_err(polars_err(&context))?;
    }
    Ok(df)
}

/// A frame as an Arrow C stream capsule, one record batch per chunk (strings as large
/// UTF-8, which every Arrow reader takes).
pub(crate) fn export_frame(py: Python<'_>, mut df: DataFrame) -> PyResult<Bound<'_, PyCapsule>> {
    df.align_chunks();
    let compat = CompatLevel::oldest();
    let fields: Vec<ArrowField> = df.columns().iter().map(|c| c.field().to_arrow(compat)).collect();
    let dtype = ArrowDataType::Struct(fields);
    let batches: Vec<PolarsResult<Box<dyn Array>>> = df
        .iter_chunks(compat, false)
        .map(|b| {
            let len = b.len();
            Ok(StructArray::new(dtype.clone(), len, b.into_arrays(), None).boxed())
        })
        .collect();
    let stream = export_iterator(Box::new(batches.into_iter()), ArrowField::new("".into(), dtype, false));
    PyCapsule::new(py, stream, Some(STREAM.to_owned()))
}

/// The column of `score_local(drift=True)` holding a feature.
fn feature_column(name: &str) -> String {
    format!("feature__{name}")
}

/// The column of `score_local(drift=True)` a drift item is read from: a feature's column, or
/// the score's own.
fn drift_column(name: &str, kind: &str) -> String {
    if kind == "feature" {
        feature_column(name)
    } else {
        name.to_string()
    }
}

pub(crate) fn parse_date(s: &str) -> PyResult<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| py_err(Error::Data(format!("as_of {s:?}: expected a date YYYY-MM-DD"))))
}

pub(crate) fn config_of(path: Option<&str>) -> PyResult<Config> {
    match path {
        Some(p) => Config::load(Path::new(p)).map_err(py_err),
        None => Ok(Config::default()),
    }
}

/// `(models_dir, id)` of a model given as a model directory, a models directory (its
/// `latest`), or a models directory and an id.
fn locate(path: &str, id: Option<&str>) -> (PathBuf, Option<String>) {
    let p = PathBuf::from(path);
    if id.is_none() && p.join(model::file::MODEL).is_file() {
        let name = p.file_name().map(|n| n.to_string_lossy().to_string());
        return (p.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf), name);
    }
    (p, id.map(str::to_string))
}

/// A bucket's rows of the optional inputs, read with `cfg`'s mapping (a bucket may have none
/// of them: then empty).
pub(crate) fn bucket_signals(
    cfg: &Config,
    events: Option<&Bound<'_, PyAny>>,
    customers: Option<&Bound<'_, PyAny>>,
    subscriptions: Option<&Bound<'_, PyAny>>,
) -> PyResult<SignalData> {
    let events = match events {
        Some(e) => {
            let df = import_frame_or_empty(e, "events")?;
            Some(if df.height() == 0 {
                fidelis::activity::Events::default()
            } else {
                fidelis::activity::events_from_frame(df, &cfg.input.events, "events").map_err(py_err)?
            })
        }
        None => None,
    };
    let customers = match customers {
        Some(c) => {
            let df = import_frame_or_empty(c, "customers")?;
            Some(if df.height() == 0 {
                fidelis::activity::Customers::default()
            } else {
                fidelis::activity::customers_from_frame(df, &cfg.input.customers, "customers")
                    .map_err(py_err)?
            })
        }
        None => None,
    };
    let subscriptions = match subscriptions {
        Some(c) => {
            let df = import_frame_or_empty(c, "subscriptions")?;
            Some(if df.height() == 0 {
                fidelis::activity::Subscriptions::default()
            } else {
                fidelis::activity::subscriptions::subscriptions_from_frame(
                    df,
                    &cfg.input.subscriptions,
                    "subscriptions",
                )
                .map_err(py_err)?
            })
        }
        None => None,
    };
    Ok(SignalData { events, customers, subscriptions })
}

/// A trained model and the configuration that maps input columns and ranks scores.
/// A table's metadata as key-value pairs (the Arrow schema's metadata on the Python side).
type Metadata = Vec<(&'static str, &'static str)>;

#[pyclass(name = "NativeModel", module = "fidelis._native", frozen)]
struct NativeModel {
    model: LoadedModel,
    cfg: Config,
    /// The validation summary of the last `score_local` (JSON), for the Spark job's count of
    /// what validation dropped (`take_summary`).
    last_summary: std::sync::Mutex<Option<String>>,
}

impl NativeModel {
    /// The optional inputs as the library reads them, from Arrow capsules.
    fn signals(
        &self,
        events: Option<&Bound<'_, PyAny>>,
        customers: Option<&Bound<'_, PyAny>>,
        subscriptions: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<SignalData> {
        let events = match events {
            Some(e) => Some(
                fidelis::activity::events_from_frame(
                    import_frame(e, "events")?,
                    &self.cfg.input.events,
                    "events",
                )
                .map_err(py_err)?,
            ),
            None => None,
        };
        let customers = match customers {
            Some(c) => Some(
                fidelis::activity::customers_from_frame(
                    import_frame(c, "customers")?,
                    &self.cfg.input.customers,
                    "customers",
                )
                .map_err(py_err)?,
            ),
            None => None,
        };
        let subscriptions = match subscriptions {
            Some(c) => Some(
                fidelis::activity::subscriptions::subscriptions_from_frame(
                    import_frame(c, "subscriptions")?,
                    &self.cfg.input.subscriptions,
                    "subscriptions",
                )
                .map_err(py_err)?,
            ),
            None => None,
        };
        Ok(SignalData { events, customers, subscriptions })
    }

    /// The inputs of a whole-frame call: transactions, the optional inputs, and `as_of`
    /// (default: the day after the last transaction).
    fn inputs(
        &self,
        transactions: &Bound<'_, PyAny>,
        as_of: Option<&str>,
        events: Option<&Bound<'_, PyAny>>,
        customers: Option<&Bound<'_, PyAny>>,
        subscriptions: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<(fidelis::ingest::Transactions, SignalData, NaiveDate)> {
        let tx = self.transactions(transactions)?;
        let signals = self.signals(events, customers, subscriptions)?;
        let as_of = match as_of {
            Some(d) => parse_date(d)?,
            None => tx.data_end().map_err(py_err)?,
        };
        Ok((tx, signals, as_of))
    }

    /// [`Self::transactions`] and their validation summary ([`summary_json`]).
    fn transactions_with_summary(
        &self,
        tx: &Bound<'_, PyAny>,
    ) -> PyResult<(fidelis::ingest::Transactions, String)> {
        let raw = import_frame(tx, "transactions")?;
        let n_raw = raw_customers(&raw, &self.cfg.input.transactions.customer_id);
        let tx = fidelis::ingest::transactions_from_frame(raw, &self.cfg.input.transactions, "transactions")
            .map_err(py_err)?;
        let summary = summary_json(n_raw, &tx)?;
        Ok((tx, summary))
    }

    fn transactions(&self, tx: &Bound<'_, PyAny>) -> PyResult<fidelis::ingest::Transactions> {
        fidelis::ingest::transactions_from_frame(
            import_frame(tx, "transactions")?,
            &self.cfg.input.transactions,
            "transactions",
        )
        .map_err(py_err)
    }
}

/// The validation summary of a frame of transactions as JSON, with `customers_lost`: the
/// customers of `raw` (distinct non-empty ids) none of whose rows was kept.
fn summary_json(raw_customers: usize, tx: &fidelis::ingest::Transactions) -> PyResult<String> {
    let mut v = serde_json::to_value(&tx.summary).map_err(|e| PyValueError::new_err(e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("customers_lost".into(), raw_customers.saturating_sub(tx.summary.customers).into());
    }
    Ok(v.to_string())
}

/// Distinct non-empty customer ids of a raw frame (as text, trimmed).
fn raw_customers(raw: &DataFrame, column: &str) -> usize {
    let Ok(c) = raw.column(column).and_then(|c| c.cast(&DataType::String)) else { return 0 };
    let Ok(ids) = c.str() else { return 0 };
    ids.iter()
        .flatten()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect::<std::collections::HashSet<_>>()
        .len()
}

/// One band's stats of the control group as Spark aggregates them: band, controls,
/// treated, smallest treatment draw, largest control draw.
type BandStatsRow = (String, usize, usize, Option<f64>, Option<f64>);
/// One row of `Model.activity`: kind, day, customer, revenue.
type ActivityRow = (&'static str, i32, Option<String>, Option<f64>);

#[pymethods]
impl NativeModel {
    #[getter]
    fn model_id(&self) -> String {
        self.model.info.model_id.clone()
    }

    #[getter]
    fn model_dir(&self) -> String {
        self.model.dir.display().to_string()
    }

    /// `model.json`, `metrics.json` and `decision.json` as one JSON object.
    fn info_json(&self) -> PyResult<String> {
        let read = |name: &str| -> PyResult<serde_json::Value> {
            let path = self.model.dir.join(name);
            fidelis::files::read_json(&path).map_err(py_err)
        };
        let info = serde_json::json!({
            "model": read(model::file::MODEL)?,
            "metrics": read(model::file::METRICS)?,
            "decision": read(model::file::DECISION)?,
        });
        Ok(info.to_string())
    }

    /// The scores table of every customer eligible at `as_of` (default: the day after the
    /// last transaction), exactly as `fidelis score` writes it for a first run, and the
    /// validation summary of the transactions (JSON: rows read, kept, dropped by reason with
    /// examples, `customers_lost`).
    #[pyo3(signature = (transactions, as_of=None, events=None, customers=None, subscriptions=None))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        transactions: &Bound<'py, PyAny>,
        as_of: Option<&str>,
        events: Option<&Bound<'py, PyAny>>,
        customers: Option<&Bound<'py, PyAny>>,
        subscriptions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyCapsule>, String)> {
        let (tx, summary) = self.transactions_with_summary(transactions)?;
        let signals = self.signals(events, customers, subscriptions)?;
        let as_of = match as_of {
            Some(d) => parse_date(d)?,
            None => tx.data_end().map_err(py_err)?,
        };
        let run = py
            .detach(|| {
                jobs::score::score_frame(
                    &self.cfg,
                    &self.model,
                    &tx.frame,
                    &signals,
                    as_of,
                    None,
                    &Default::default(),
                )
            })
            .map_err(py_err)?;
        Ok((export_frame(py, run.scores)?, summary))
    }

    /// The per-customer part of the scores (`score::local_scores`: every column that no other
    /// customer changes, and the ranking key and RFM values the whole-base columns are made
    /// of) of the customers in `transactions`: what a Spark executor computes for a bucket.
    /// With `drift`, the model's features follow as the columns of [`Self::drift_columns`].
    ///
    /// With an event log and a customer table, `events` and `customers` are the bucket's rows
    /// of them (possibly none), `facts` the whole log's merged [`event_facts`] (JSON), and
    /// `history` the bucket's health scores of the two previous runs (`customer_id`, `older`,
    /// `newer`): the signal columns (health, usage drop, sentiment, review flag, escalation)
    /// follow the scores, as `fidelis score` writes them.
    #[pyo3(signature = (transactions, as_of, drift=false, events=None, customers=None, facts=None, history=None, subscriptions=None))]
    #[allow(clippy::too_many_arguments)]
    fn score_local<'py>(
        &self,
        py: Python<'py>,
        transactions: &Bound<'py, PyAny>,
        as_of: &str,
        drift: bool,
        events: Option<&Bound<'py, PyAny>>,
        customers: Option<&Bound<'py, PyAny>>,
        facts: Option<&str>,
        history: Option<&Bound<'py, PyAny>>,
        subscriptions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let (tx, summary) = self.transactions_with_summary(transactions)?;
        if let Ok(mut last) = self.last_summary.lock() {
            *last = Some(summary);
        }
        let as_of = parse_date(as_of)?;
        let mut signals = bucket_signals(&self.cfg, events, customers, subscriptions)?;
        if let (Some(e), Some(f)) = (signals.events.as_mut(), facts) {
            e.global = Some(serde_json::from_str(f).map_err(|e| PyValueError::new_err(e.to_string()))?);
        }
        let history = match history {
            Some(h) => health_history(import_frame_or_empty(h, "health history")?)?,
            None => Default::default(),
        };
        let local = py
            .detach(|| -> fidelis::error::Result<DataFrame> {
                let daily = fidelis::features::daily_activity(&tx.frame)?;
                let preds = fidelis::predict::predict_at(
                    &self.model,
                    &daily,
                    &signals,
                    as_of,
                    self.cfg.output.reasons,
                )?;
                let mut local = fidelis::score::local_scores(&self.cfg, &self.model, &preds, &signals)?;
                fidelis::score::add_signal_columns(&mut local, &self.cfg, &signals, &preds, &history)?;
                if drift {
                    for (c, name) in preds.x.names.iter().enumerate() {
                        let column = Column::new(feature_column(name).into(), preds.x.column(c).to_vec());
                        local.with_column(column).map_err(|source| Error::Polars {
                            context: "adding the feature columns".into(),
                            source,
                        })?;
                    }
                }
                Ok(local)
            })
            .map_err(py_err)?;
        export_frame(py, local)
    }

    /// The control group's per-band balance (`experiment::flips`) from the whole base's stats
    /// per band of the decided customers: `(band, control, treatment, smallest treatment
    /// draw, largest control draw)` in, `(band, draw, new group)` out (the customer of that
    /// band and draw changes group; an empty list without a control group).
    fn experiment_flips(&self, stats: Vec<BandStatsRow>) -> Vec<(String, f64, &'static str)> {
        let stats: Vec<(&str, fidelis::experiment::BandStats)> = stats
            .iter()
            .map(|(b, c, t, min_t, max_c)| {
                let s = fidelis::experiment::BandStats {
                    control: *c,
                    treatment: *t,
                    min_treatment_draw: *min_t,
                    max_control_draw: *max_c,
                };
                (b.as_str(), s)
            })
            .collect();
        fidelis::experiment::flips(&self.cfg.experiment, stats)
            .into_iter()
            .map(|(b, d, g)| (b.to_string(), d, g.as_str()))
            .collect()
    }

    /// The groups that are contacted (`experiment::Group::contacted`).
    #[getter]
    fn contacted_groups(&self) -> Vec<&'static str> {
        use fidelis::experiment::Group;
        [Group::Treatment, Group::Control, Group::Exempt]
            .into_iter()
            .filter(|&g| Group::contacted(Some(g)))
            .map(Group::as_str)
            .collect()
    }

    /// The validation summary of the last `score_local` call (JSON, as `score` returns it),
    /// once: the Spark job adds them up over the buckets.
    fn take_summary(&self) -> Option<String> {
        self.last_summary.lock().ok().and_then(|mut s| s.take())
    }

    /// The facts of one bucket's events that health depends on beyond each customer's rows
    /// (`activity::EventFacts`, JSON): merged over buckets by [`merge_event_facts`] and handed
    /// back to every bucket's `score_local`.
    fn event_facts(&self, py: Python<'_>, events: &Bound<'_, PyAny>) -> PyResult<String> {
        let df = import_frame_or_empty(events, "events")?;
        let valued = [self.cfg.health.events.feature_used.as_str()];
        let facts = if df.height() == 0 {
            fidelis::activity::EventFacts::default()
        } else {
            let e = py
                .detach(|| fidelis::activity::events_from_frame(df, &self.cfg.input.events, "events"))
                .map_err(py_err)?;
            e.facts(&valued)
        };
        serde_json::to_string(&facts).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Refuse inputs the model cannot score from (as `fidelis score`: a model trained with
    /// events or a customer table needs them).
    #[pyo3(signature = (events, customers, subscriptions=false))]
    fn check_inputs(&self, events: bool, customers: bool, subscriptions: bool) -> PyResult<()> {
        let signals = SignalData {
            events: events.then(fidelis::activity::Events::default),
            customers: customers.then(fidelis::activity::Customers::default),
            subscriptions: subscriptions.then(fidelis::activity::Subscriptions::default),
        };
        self.model.check_inputs(&signals).map_err(py_err)
    }

    /// The customer id columns of the transactions, the events and the customer table (the
    /// configuration's mapping).
    #[getter]
    fn customer_columns(&self) -> (String, String, String, String) {
        let i = &self.cfg.input;
        (
            i.transactions.customer_id.clone(),
            i.events.customer_id.clone(),
            i.customers.customer_id.clone(),
            i.subscriptions.customer_id.clone(),
        )
    }

    /// Whether the model's churn is a cancellation (its scoring and outcomes need the
    /// subscription table).
    #[getter]
    fn churn_is_cancellation(&self) -> bool {
        self.model.info.feature_spec.churn == fidelis::config::ChurnRule::Cancellation
    }

    /// Whether the model has a survival model (its scores gain the survival columns).
    #[getter]
    fn has_survival(&self) -> bool {
        self.model.survival.is_some()
    }

    /// The drift items of the model's reference and the column of `score_local(drift=True)`
    /// each is read from.
    #[getter]
    fn drift_columns(&self) -> PyResult<Vec<(String, String)>> {
        let reference = self.model.reference().map_err(py_err)?;
        Ok(reference.items.iter().map(|r| (r.name.clone(), drift_column(&r.name, &r.kind))).collect())
    }

    /// The drift counts (`monitor::DriftCounts`, JSON) of the customers of one batch of
    /// `score_local(drift=True)` rows: what one part contributes to [`Self::assess`].
    fn drift_counts(&self, py: Python<'_>, batch: &Bound<'_, PyAny>) -> PyResult<String> {
        let df = import_frame(batch, "drift batch")?;
        let reference = self.model.reference().map_err(py_err)?;
        let mut values: Vec<(String, Vec<f64>)> = Vec::new();
        for r in &reference.items {
            let name = drift_column(&r.name, &r.kind);
            let c = df.column(&name).map_err(polars_err(&name))?;
            let c = c.cast(&DataType::Float64).map_err(polars_err(&name))?;
            let v = c.f64().map_err(polars_err(&name))?.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
            values.push((r.name.clone(), v));
        }
        let counts = py.detach(|| {
            let current = values.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
            fidelis::monitor::counts(&reference, &current)
        });
        serde_json::to_string(&counts).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Who was active when, for realized performance: for each run date in `runs`, one row
    /// (`kind` "active", `day` = the run, `customer_id`, `revenue` there) per customer of
    /// `transactions` that did not churn over the run's outcome window (`[run, run + horizon)`:
    /// a transaction there; under churn = cancellation, no notice and no end there, from the
    /// bucket's `subscriptions`), and (`kind` "churned") per customer that churned with
    /// revenue or a subscription there; and one row (`kind` "data_end", `day` = the day after
    /// the last transaction).
    #[pyo3(signature = (transactions, runs, subscriptions=None))]
    fn activity<'py>(
        &self,
        py: Python<'py>,
        transactions: &Bound<'py, PyAny>,
        runs: Vec<String>,
        subscriptions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let tx = self.transactions(transactions)?;
        let signals = bucket_signals(&self.cfg, None, None, subscriptions)?;
        let subscriptions = signals.churn_subscriptions(&self.model.info.feature_spec);
        let runs = runs.iter().map(|r| parse_date(r)).collect::<PyResult<Vec<_>>>()?;
        let horizon = chrono::Duration::days(i64::from(self.model.info.feature_spec.horizon_days));
        let end = tx.data_end().map_err(py_err)?;
        let rows = py
            .detach(|| -> fidelis::error::Result<Vec<ActivityRow>> {
                let daily = fidelis::features::daily_activity(&tx.frame)?;
                let mut rows = vec![("data_end", fidelis::schema::epoch_day(end), None, None)];
                for run in runs {
                    let mut outcomes: Vec<(String, fidelis::monitor::CustomerOutcome)> =
                        fidelis::monitor::outcomes_between(&daily, subscriptions, run, run + horizon)
                            .into_iter()
                            .collect();
                    outcomes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    let day = fidelis::schema::epoch_day(run);
                    rows.extend(outcomes.into_iter().map(|(id, o)| {
                        (if o.churned { "churned" } else { "active" }, day, Some(id), Some(o.revenue))
                    }));
                }
                Ok(rows)
            })
            .map_err(py_err)?;
        let day = Column::new("day".into(), rows.iter().map(|r| r.1).collect::<Vec<_>>())
            .cast(&DataType::Date)
            .map_err(polars_err("day"))?;
        let out = DataFrame::new_infer_height(vec![
            Column::new("kind".into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()),
            day,
            Column::new(
                fidelis::schema::CUSTOMER.into(),
                rows.iter().map(|r| r.2.as_deref()).collect::<Vec<_>>(),
            ),
            Column::new("revenue".into(), rows.iter().map(|r| r.3).collect::<Vec<_>>()),
        ])
        .map_err(polars_err("activity"))?;
        export_frame(py, out)
    }

    /// The customers the contact log (a table with the columns the configuration's
    /// `[input.contacts]` maps, validated as the CLI validates it) shows reached in the
    /// `window_days` after `run`, sorted, each with the channel of its first reached contact
    /// there (None when the log names no channel).
    fn reached(
        &self,
        py: Python<'_>,
        run: &str,
        contacts: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<(String, Option<String>)>> {
        let run = parse_date(run)?;
        let df = import_frame(contacts, "contacts")?;
        let input = &self.cfg.input.contacts;
        let log = py
            .detach(|| fidelis::activity::contacts_from_frame(df, input, "the contact log"))
            .map_err(py_err)?;
        let end = run + chrono::Duration::days(input.window_days);
        let mut ids: Vec<(String, Option<String>)> = log
            .reached
            .keys()
            .filter_map(|id| Some((id.clone(), log.first_reached(id, run, end)?.map(str::to_string))))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Realized performance (`monitor::Realized`, JSON) of the run at `run` from its scores
    /// table in `risk_rank` order with a boolean `active` column (did not churn over the
    /// outcome window: [`Self::activity`]) and `revenue` (there), with the decision settings
    /// of the model that scored it.
    fn realized(&self, py: Python<'_>, run: &str, scores: &Bound<'_, PyAny>) -> PyResult<String> {
        let run = parse_date(run)?;
        let scores = import_frame(scores, "run scores")?;
        let flags = scores.column("active").map_err(polars_err("active"))?;
        let flags = flags.bool().map_err(polars_err("active"))?;
        let ids = scores.column(fidelis::schema::CUSTOMER).map_err(polars_err("customer_id"))?;
        let ids = ids.str().map_err(polars_err("customer_id"))?;
        let revenue = scores.column("revenue").map_err(polars_err("revenue"))?;
        let revenue = revenue.cast(&DataType::Float64).map_err(polars_err("revenue"))?;
        let revenue = revenue.f64().map_err(polars_err("revenue"))?;
        let outcomes: fidelis::monitor::Outcomes = ids
            .iter()
            .zip(flags.iter())
            .zip(revenue.iter())
            .filter_map(|((id, a), r)| {
                let outcome = fidelis::monitor::CustomerOutcome {
                    churned: !a.unwrap_or(false),
                    revenue: r.unwrap_or(0.0),
                };
                id.map(|id| (id.to_string(), outcome))
            })
            .collect();
        let models_dir = self.model.dir.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let realized = py
            .detach(|| {
                let decision = jobs::monitor::run_decision(&models_dir, &scores, &self.model)?;
                fidelis::monitor::realized(run, &scores, &outcomes, &decision)
            })
            .map_err(py_err)?;
        serde_json::to_string(&realized).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The recurring-revenue parts (`RevenueParts`, JSON) at `as_of` of the customers of one
    /// batch of the subscription table (every row of each of its customers in the batch):
    /// merged with [`merge_revenue_parts`] over disjoint batches, the MRR, NRR and GRR the CLI
    /// records, exactly.
    fn revenue_parts(&self, py: Python<'_>, as_of: &str, batch: &Bound<'_, PyAny>) -> PyResult<String> {
        let t = fidelis::schema::epoch_day(parse_date(as_of)?);
        let df = import_frame(batch, "subscriptions")?;
        let cfg = &self.cfg.input.subscriptions;
        let parts = py
            .detach(|| {
                fidelis::activity::subscriptions::subscriptions_from_frame(df, cfg, "subscriptions")
                    .map(|s| s.revenue_parts(t))
            })
            .map_err(py_err)?;
        serde_json::to_string(&parts).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The estimate counts (`monitor::EstimateCounts`, JSON) of one batch of a run's scores
    /// (`churn_probability`, `predicted_clv`, `contact`), with the decision settings of the
    /// model that scored it: what one part contributes to the run's estimated performance.
    fn estimate_counts(&self, py: Python<'_>, batch: &Bound<'_, PyAny>) -> PyResult<String> {
        let df = import_frame(batch, "scores batch")?;
        let models_dir = self.model.dir.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let counts = py
            .detach(|| {
                let decision = jobs::monitor::run_decision(&models_dir, &df, &self.model)?;
                fidelis::monitor::EstimateCounts::of_scores(&df, &decision)
            })
            .map_err(py_err)?;
        serde_json::to_string(&counts).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Monitoring at `as_of` from the drift counts of every part of the scored customers, the
    /// runs realized now (JSON of [`Self::realized`]), the realized AUCs already recorded
    /// (`(run, auc)`), the history's rows of the runs' effects among new customers
    /// (`(item, metric, value)` of kind `effect`, items `<run> first[ band=...]`), the merged
    /// estimate counts of the run scored at `as_of` (JSON of [`Self::estimate_counts`], None
    /// when none was), the history's rows of kind `estimated` recorded at other dates
    /// (`(item, metric, value)`) and the merged revenue parts of the subscription table (JSON of
    /// [`Self::revenue_parts`], None without one): the history rows (as `metrics_history.parquet`), the printed
    /// report, whether to retrain, the alerts.
    #[pyo3(signature = (as_of, counts, realized, auc_history, first_effects=Vec::new(), estimate=None, estimates=Vec::new(), revenue=None))]
    #[allow(clippy::too_many_arguments)]
    fn assess<'py>(
        &self,
        py: Python<'py>,
        as_of: &str,
        counts: Vec<String>,
        realized: Vec<String>,
        auc_history: Vec<(String, f64)>,
        first_effects: Vec<(String, String, f64)>,
        estimate: Option<String>,
        estimates: Vec<(String, String, f64)>,
        revenue: Option<String>,
    ) -> PyResult<(Bound<'py, PyCapsule>, String, bool, Vec<String>)> {
        let as_of = parse_date(as_of)?;
        let json = |e: serde_json::Error| PyValueError::new_err(e.to_string());
        let parts: Vec<Vec<fidelis::monitor::DriftCounts>> =
            counts.iter().map(|c| serde_json::from_str(c)).collect::<Result<_, _>>().map_err(json)?;
        let realized: Vec<fidelis::monitor::Realized> =
            realized.iter().map(|r| serde_json::from_str(r)).collect::<Result<_, _>>().map_err(json)?;
        let auc_history = auc_history
            .iter()
            .map(|(d, v)| Ok((parse_date(d)?, *v)))
            .collect::<PyResult<std::collections::BTreeMap<_, _>>>()?;
        let reference = self.model.reference().map_err(py_err)?;
        let drift = fidelis::monitor::drift_of_parts(&reference, &parts, &self.cfg.monitor);
        let first_effects = fidelis::experiment::first_effects(
            first_effects.iter().map(|(i, m, v)| (i.as_str(), m.as_str(), *v)),
        );
        let counts: Option<fidelis::monitor::EstimateCounts> =
            estimate.map(|e| serde_json::from_str(&e)).transpose().map_err(json)?;
        let estimates = fidelis::monitor::estimate::by_run(
            estimates.iter().map(|(i, m, v)| (i.as_str(), m.as_str(), *v)),
        );
        let revenue: Option<fidelis::activity::subscriptions::RevenueParts> =
            revenue.map(|r| serde_json::from_str(&r)).transpose().map_err(json)?;
        let revenue = revenue.map(|r| r.finish());
        let observed =
            jobs::monitor::Observations { drift, counts, realized, auc_history, first_effects, revenue };
        let report =
            jobs::monitor::assess(&self.cfg, &self.model, as_of, observed, estimates).map_err(py_err)?;
        let rows = report.history_frame().map_err(py_err)?;
        Ok((export_frame(py, rows)?, report.to_string(), report.retrain, report.alerts.clone()))
    }

    /// The outcome window of the model's labels, in days (a run's realized performance is
    /// known this long after it).
    #[getter]
    fn horizon_days(&self) -> i32 {
        self.model.info.feature_spec.horizon_days
    }

    /// `output.top_share` of the configuration.
    #[getter]
    fn top_share(&self) -> f64 {
        self.cfg.output.top_share
    }

    /// The transaction columns the configuration maps: customer id, timestamp.
    #[getter]
    fn columns(&self) -> (String, String) {
        let t = &self.cfg.input.transactions;
        (t.customer_id.clone(), t.timestamp.clone())
    }

    /// The model's features of every customer eligible at `as_of`: `customer_id` and one
    /// column per feature, in model order.
    #[pyo3(signature = (transactions, as_of=None, events=None, customers=None, subscriptions=None))]
    fn features<'py>(
        &self,
        py: Python<'py>,
        transactions: &Bound<'py, PyAny>,
        as_of: Option<&str>,
        events: Option<&Bound<'py, PyAny>>,
        customers: Option<&Bound<'py, PyAny>>,
        subscriptions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let (tx, signals, as_of) = self.inputs(transactions, as_of, events, customers, subscriptions)?;
        let frame = py
            .detach(|| -> fidelis::error::Result<DataFrame> {
                let daily = fidelis::features::daily_activity(&tx.frame)?;
                let (customers, x) = fidelis::predict::features_at(&self.model, &daily, &signals, as_of)?;
                let mut cols = vec![Column::new(fidelis::schema::CUSTOMER.into(), customers)];
                for (c, name) in x.names.iter().enumerate() {
                    cols.push(Column::new(name.as_str().into(), x.column(c).to_vec()));
                }
                DataFrame::new_infer_height(cols)
                    .map_err(|source| Error::Polars { context: "assembling features".into(), source })
            })
            .map_err(py_err)?;
        export_frame(py, frame)
    }

    /// Why every customer eligible at `as_of` got its score: `customer_id`, each feature's
    /// contribution, `expected_value`, and the table's metadata. `target` "churn": the churn
    /// reasons (`predict::explain_at`), `method` "shap" (exact) or "path"; "clv": the CLV
    /// model's SHAP values (`predict::explain_clv_at`), `method` "shap" and `scale` "revenue"
    /// or "log_revenue".
    #[pyo3(signature = (transactions, as_of=None, events=None, customers=None, target="churn", subscriptions=None))]
    #[allow(clippy::too_many_arguments)]
    fn explain<'py>(
        &self,
        py: Python<'py>,
        transactions: &Bound<'py, PyAny>,
        as_of: Option<&str>,
        events: Option<&Bound<'py, PyAny>>,
        customers: Option<&Bound<'py, PyAny>>,
        target: &str,
        subscriptions: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyCapsule>, Metadata)> {
        if target != "churn" && target != "clv" {
            return Err(PyValueError::new_err(format!("target must be 'churn' or 'clv', got {target:?}")));
        }
        let (tx, signals, as_of) = self.inputs(transactions, as_of, events, customers, subscriptions)?;
        let (frame, metadata) = py
            .detach(|| -> fidelis::error::Result<(DataFrame, Vec<(&'static str, &'static str)>)> {
                let daily = fidelis::features::daily_activity(&tx.frame)?;
                if target == "clv" {
                    let (frame, scale) =
                        fidelis::predict::explain_clv_at(&self.model, &daily, &signals, as_of)?;
                    return Ok((frame, vec![("method", "shap"), ("scale", scale.as_str())]));
                }
                let (frame, exact) = fidelis::predict::explain_at(&self.model, &daily, &signals, as_of)?;
                Ok((frame, vec![("method", if exact { "shap" } else { "path" })]))
            })
            .map_err(py_err)?;
        Ok((export_frame(py, frame)?, metadata))
    }
}

/// TreeSHAP values of one stored GBDT (the text of a model directory's `churn.json` or
/// `clv.json`) for a table of its features (columns in model order, every one numeric): one
/// column per feature and `expected_value`, in the GBDT's margin units.
#[pyfunction]
fn tree_shap<'py>(
    py: Python<'py>,
    model_json: &str,
    features: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyCapsule>> {
    use fidelis::train::gbdt::{AnyGbdt, Gbdt};
    let gbdt = AnyGbdt::from_json(model_json).map_err(py_err)?;
    let df = import_frame(features, "features")?;
    let names: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    let x = fidelis::features::FeatureMatrix::from_frame(&df, &names).map_err(py_err)?;
    let values = gbdt.shap(&x, None).ok_or_else(|| {
        PyValueError::new_err(
            "the model's trees do not record their covers (trained before fidelis stored them)",
        )
    })?;
    let frame = fidelis::predict::contributions_frame(Vec::new(), &names, &values).map_err(py_err)?;
    export_frame(py, frame)
}

/// Load a model: a model directory, or a models directory (`latest`, or `model_id`);
/// `config` maps input columns and sets ranking (default: every default).
#[pyfunction]
#[pyo3(signature = (path, model_id=None, config=None))]
fn load_model(path: &str, model_id: Option<&str>, config: Option<&str>) -> PyResult<NativeModel> {
    let (dir, id) = locate(path, model_id);
    let model = model::load(&dir, id.as_deref()).map_err(py_err)?;
    Ok(NativeModel { model, cfg: config_of(config)?, last_summary: Default::default() })
}

/// `fidelis validate --json` of a config file: the transaction summary as JSON.
#[pyfunction]
fn validate(py: Python<'_>, config: &str) -> PyResult<String> {
    let cfg = config_of(Some(config))?;
    let outcome = py.detach(|| jobs::validate::run(&cfg, &Progress::hidden())).map_err(py_err)?;
    serde_json::to_string(&outcome).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// `fidelis train` of a config file; the new model's id.
#[pyfunction]
fn train(py: Python<'_>, config: &str) -> PyResult<String> {
    let cfg = config_of(Some(config))?;
    let opts = jobs::train::TrainOptions::default();
    let outcome = py.detach(|| jobs::train::run(&cfg, &opts, &Progress::hidden())).map_err(py_err)?;
    Ok(outcome.model_id)
}

/// Two buckets' event facts (JSON of `NativeModel.event_facts`) merged into one.
#[pyfunction]
fn merge_event_facts(a: &str, b: &str) -> PyResult<String> {
    let json = |e: serde_json::Error| PyValueError::new_err(e.to_string());
    let mut a: fidelis::activity::EventFacts = serde_json::from_str(a).map_err(json)?;
    let b: fidelis::activity::EventFacts = serde_json::from_str(b).map_err(json)?;
    a.merge(&b);
    serde_json::to_string(&a).map_err(json)
}

/// Health scores of the two previous runs per customer, from `customer_id`, `older`, `newer`.
fn health_history(df: DataFrame) -> PyResult<std::collections::HashMap<String, [f64; 2]>> {
    let mut out = std::collections::HashMap::new();
    if df.height() == 0 {
        return Ok(out);
    }
    let ctx = "health history";
    let ids = df
        .column("customer_id")
        .map_err(polars_err(ctx))?
        .cast(&DataType::String)
        .map_err(polars_err(ctx))?;
    let f = |name: &str| -> PyResult<Float64Chunked> {
        let c =
            df.column(name).map_err(polars_err(ctx))?.cast(&DataType::Float64).map_err(polars_err(ctx))?;
        Ok(c.f64().map_err(polars_err(ctx))?.clone())
    };
    let (older, newer) = (f("older")?, f("newer")?);
    for ((id, a), b) in ids.str().map_err(polars_err(ctx))?.iter().zip(older.iter()).zip(newer.iter()) {
        if let (Some(id), Some(a), Some(b)) = (id, a, b) {
            out.insert(id.to_string(), [a, b]);
        }
    }
    Ok(out)
}

/// Two sets of drift counts (JSON of `NativeModel.drift_counts`) merged into one: the counts
/// of both parts of the customers together (`DriftCounts::merge`, item by item).
#[pyfunction]
fn merge_counts(a: &str, b: &str) -> PyResult<String> {
    let json = |e: serde_json::Error| PyValueError::new_err(e.to_string());
    let mut a: Vec<fidelis::monitor::DriftCounts> = serde_json::from_str(a).map_err(json)?;
    let b: Vec<fidelis::monitor::DriftCounts> = serde_json::from_str(b).map_err(json)?;
    if a.len() != b.len() || a.iter().zip(&b).any(|(x, y)| x.item != y.item) {
        return Err(PyValueError::new_err("drift counts of different items cannot be merged"));
    }
    a.iter_mut().zip(&b).for_each(|(x, y)| x.merge(y));
    serde_json::to_string(&a).map_err(json)
}

/// Two sets of estimate counts (JSON of `NativeModel.estimate_counts`) merged into one
/// (`EstimateCounts::merge`).
#[pyfunction]
fn merge_estimate_counts(a: &str, b: &str) -> PyResult<String> {
    let json = |e: serde_json::Error| PyValueError::new_err(e.to_string());
    let mut a: fidelis::monitor::EstimateCounts = serde_json::from_str(a).map_err(json)?;
    a.merge(&serde_json::from_str(b).map_err(json)?);
    serde_json::to_string(&a).map_err(json)
}

/// Two sets of revenue parts (JSON of `NativeModel.revenue_parts`) merged into one
/// (`RevenueParts::merge`: exact sums, any order).
#[pyfunction]
fn merge_revenue_parts(a: &str, b: &str) -> PyResult<String> {
    let json = |e: serde_json::Error| PyValueError::new_err(e.to_string());
    let mut a: fidelis::activity::subscriptions::RevenueParts = serde_json::from_str(a).map_err(json)?;
    a.merge(&serde_json::from_str(b).map_err(json)?);
    serde_json::to_string(&a).map_err(json)
}

/// The size of the top-risk segment of `n` scored customers (`score::top_size`).
#[pyfunction]
fn top_size(top_share: f64, n: usize) -> u32 {
    fidelis::score::top_size(top_share, n)
}

/// The scores table's columns, in order.
#[pyfunction]
fn score_columns() -> Vec<&'static str> {
    fidelis::score::SCORE_COLUMNS.to_vec()
}

/// The per-customer columns `score_local` returns (`score::LOCAL_COLUMNS`, then the signal
/// columns an event log and/or a customer table add, then the subscription columns), as
/// `(name, Spark SQL type)`.
#[pyfunction]
#[pyo3(signature = (events=false, customers=false, subscriptions=false, survival=false))]
fn local_columns(
    events: bool,
    customers: bool,
    subscriptions: bool,
    survival: bool,
) -> Vec<(&'static str, &'static str)> {
    let signals = fidelis::score::signal_schema(events, customers, subscriptions, survival);
    fidelis::score::LOCAL_COLUMNS.iter().chain(&signals).map(|&(n, t)| (n, t.name())).collect()
}

/// RFM quintiles and segment from average ranks: a frame with `r_rank`, `f_rank`, `m_rank`
/// (average ranks among `n` scored customers) in, `rfm_r`, `rfm_f`, `rfm_m`, `rfm_segment`
/// out (`score::quintile_of`, `score::rfm_segment`).
#[pyfunction]
fn rfm_from_ranks<'py>(
    py: Python<'py>,
    ranks: &Bound<'py, PyAny>,
    n: usize,
) -> PyResult<Bound<'py, PyCapsule>> {
    let df = import_frame(ranks, "ranks")?;
    let q = |name: &str| -> PyResult<Vec<i32>> {
        let c =
            df.column(name).map_err(polars_err(name))?.cast(&DataType::Float64).map_err(polars_err(name))?;
        let c = c.f64().map_err(polars_err(name))?;
        Ok(c.iter().map(|r| fidelis::score::quintile_of(r.unwrap_or(f64::NAN), n)).collect())
    };
    let (r, f, m) = (q("r_rank")?, q("f_rank")?, q("m_rank")?);
    let segment: Vec<&str> = r.iter().zip(&f).map(|(&a, &b)| fidelis::score::rfm_segment(a, b)).collect();
    let out = DataFrame::new_infer_height(vec![
        Column::new("rfm_r".into(), r),
        Column::new("rfm_f".into(), f),
        Column::new("rfm_m".into(), m),
        Column::new("rfm_segment".into(), segment),
    ])
    .map_err(polars_err("rfm"))?;
    export_frame(py, out)
}

/// The PostgreSQL targets of a configuration's sinks (`[output].sql`, then `FIDELIS_PG_URL`),
/// in that order.
fn pg_targets(cfg: &Config) -> PyResult<Vec<fidelis::config::targets::SqlTarget>> {
    let all = fidelis::sink::Sinks::resolve(&cfg.output).map_err(py_err)?.sql;
    Ok(all.into_iter().filter(|t| matches!(t, fidelis::config::targets::SqlTarget::Postgres(_))).collect())
}

fn pg_target(cfg: &Config, index: usize) -> PyResult<fidelis::config::targets::SqlTarget> {
    pg_targets(cfg)?
        .into_iter()
        .nth(index)
        .ok_or_else(|| PyValueError::new_err(format!("no PostgreSQL target number {index}")))
}

/// The PostgreSQL targets of a configuration for Spark's JDBC writer: `(URL without the
/// password, jdbc:postgresql URL, user, password, schema)` each. The password goes to the
/// JDBC properties only (Spark redacts them); never print it.
#[pyfunction]
#[pyo3(signature = (config=None))]
#[allow(clippy::type_complexity)]
fn jdbc_targets(
    config: Option<&str>,
) -> PyResult<Vec<(String, String, Option<String>, Option<String>, String)>> {
    let cfg = config_of(config)?;
    let schema = cfg.output.sql_tables().schema;
    Ok(pg_targets(&cfg)?
        .into_iter()
        .filter_map(|t| match &t {
            fidelis::config::targets::SqlTarget::Postgres(u) => Some((
                t.display(),
                format!("jdbc:postgresql://{}:{}/{}", u.host, u.port, u.dbname.clone().unwrap_or_default()),
                u.user.clone(),
                u.password().map(str::to_string),
                schema.clone(),
            )),
            fidelis::config::targets::SqlTarget::Sqlite(_) => None,
        })
        .collect())
}

/// Create the empty stage table `stage` for a run's scores (`template`: a frame with the
/// scores' columns and types) in PostgreSQL target number `target`.
#[pyfunction]
#[pyo3(signature = (target, stage, template, config=None))]
fn create_stage(
    py: Python<'_>,
    target: usize,
    stage: &str,
    template: &Bound<'_, PyAny>,
    config: Option<&str>,
) -> PyResult<()> {
    let cfg = config_of(config)?;
    let t = pg_target(&cfg, target)?;
    let template = import_frame_or_empty(template, "template")?;
    py.detach(|| fidelis::sink::sql::create_stage(&t, &cfg.output.sql_tables(), stage, &template))
        .map_err(py_err)
}

/// Publish the run Spark loaded into `stage` (`sink::sql::publish_staged`: one transaction
/// replaces the rows of `as_of`, records the run, drops the stage): `(scored, top size,
/// contacted)`.
#[pyfunction]
#[pyo3(signature = (target, stage, template, as_of, started, config=None))]
fn publish_staged(
    py: Python<'_>,
    target: usize,
    stage: &str,
    template: &Bound<'_, PyAny>,
    as_of: &str,
    started: &str,
    config: Option<&str>,
) -> PyResult<(i64, i64, i64)> {
    let cfg = config_of(config)?;
    let t = pg_target(&cfg, target)?;
    let template = import_frame_or_empty(template, "template")?;
    let as_of = parse_date(as_of)?;
    let started = chrono::DateTime::parse_from_rfc3339(started)
        .map_err(|e| PyValueError::new_err(format!("started {started:?}: {e}")))?
        .with_timezone(&chrono::Utc);
    let r = py
        .detach(|| {
            fidelis::sink::sql::publish_staged(&t, &cfg.output.sql_tables(), stage, &template, as_of, started)
        })
        .map_err(py_err)?;
    Ok((r.scored, r.top_size, r.contacted))
}

/// Drop the stage table `stage` if it exists (after its load failed).
#[pyfunction]
#[pyo3(signature = (target, stage, config=None))]
fn drop_stage(py: Python<'_>, target: usize, stage: &str, config: Option<&str>) -> PyResult<()> {
    let cfg = config_of(config)?;
    let t = pg_target(&cfg, target)?;
    py.detach(|| fidelis::sink::sql::drop_stage(&t, &cfg.output.sql_tables(), stage)).map_err(py_err)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(top_size, m)?)?;
    m.add_function(wrap_pyfunction!(score_columns, m)?)?;
    m.add_function(wrap_pyfunction!(local_columns, m)?)?;
    m.add_function(wrap_pyfunction!(tree_shap, m)?)?;
    m.add_function(wrap_pyfunction!(rfm_from_ranks, m)?)?;
    m.add_function(wrap_pyfunction!(merge_counts, m)?)?;
    m.add_function(wrap_pyfunction!(merge_estimate_counts, m)?)?;
    m.add_function(wrap_pyfunction!(merge_revenue_parts, m)?)?;
    m.add_function(wrap_pyfunction!(merge_event_facts, m)?)?;
    m.add_function(wrap_pyfunction!(jdbc_targets, m)?)?;
    m.add_function(wrap_pyfunction!(create_stage, m)?)?;
    m.add_function(wrap_pyfunction!(publish_staged, m)?)?;
    m.add_function(wrap_pyfunction!(drop_stage, m)?)?;
    m.add_class::<NativeModel>()?;
    m.add_class::<distributed::Trainer>()?;
    m.add_class::<uplift::UpliftLearner>()?;
    m.add_function(wrap_pyfunction!(uplift::qini_curve, m)?)?;
    m.add_function(wrap_pyfunction!(uplift::qini_coefficient, m)?)?;
    m.add_function(wrap_pyfunction!(uplift::uplift_at_k, m)?)?;
    m.add_function(wrap_pyfunction!(load_model, m)?)?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
