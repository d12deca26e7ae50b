//! `fidelis.toml`: every number a user might change, with its default.
//!
//! `fidelis.example.toml` at the repository root documents every key; a test checks that it
//! parses to exactly these defaults, so the documentation cannot drift from the code.
//!
//! Path values may use `${VAR}` or `${VAR:-default}` (environment variables, expanded when
//! the config is loaded). Relative paths are resolved against the working directory, like
//! `make` and `dbt` do: run fidelis from the project root (cron: `cd /srv/fidelis && ...`).

pub mod notify;
pub mod targets;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use notify::{
    ChannelConfig, ChannelKind, CrmConfig, CrmInclude, EventKind, NotifyConfig, RuleConfig, StartTls,
};
use targets::SqlTarget;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub input: InputConfig,
    pub snapshots: SnapshotConfig,
    pub features: FeatureConfig,
    pub model: GbdtConfig,
    pub baselines: BaselineConfig,
    pub decision: DecisionConfig,
    pub experiment: ExperimentConfig,
    pub uplift: UpliftConfig,
    pub output: OutputConfig,
    pub monitor: MonitorConfig,
    pub report: ReportConfig,
    pub health: HealthConfig,
    pub escalation: EscalationConfig,
    pub notify: NotifyConfig,
    pub crm: CrmConfig,
    pub paths: PathsConfig,
    pub mlflow: MlflowConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Inputs read by a query (`sql` + `query`): rows fetched per round trip (the rows held
    /// as driver rows at once; the table itself is kept as columns, like a file's).
    pub sql_batch_rows: usize,
    pub transactions: TransactionsInput,
    /// Optional product / activity events (empty path = none).
    pub events: EventsInput,
    /// Optional customer table (empty path = none).
    pub customers: CustomersInput,
    /// Optional contact log: what was actually done with the contact lists (empty path = none).
    pub contacts: ContactsInput,
    /// Optional subscription table: contracts, their terms, MRR and cancellation notices
    /// (empty path = none).
    pub subscriptions: SubscriptionsInput,
}

/// The subscription table: one row per subscription period (a contract term, or a stretch of
/// a running subscription at one MRR; a customer's successive rows show renewals, expansions
/// and contractions; rows may overlap, e.g. two products). Every column but the id and
/// `start` is optional (empty name = absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionsInput {
    pub path: String,
    #[serde(serialize_with = "serialize_redacted")]
    pub sql: String,
    pub query: String,
    pub format: FileFormat,
    pub has_header: bool,
    pub delimiter: String,
    pub customer_id: String,
    /// The first day of the period.
    pub start: String,
    /// The day after its last day (empty cell: running on). A fixed term's end is known from
    /// its start; a running subscription's only once notice was given.
    pub end: String,
    /// `monthly`, `quarterly`, `semiannual`, `annual` (or `yearly`), or a number of months.
    pub billing_period: String,
    /// Monthly recurring revenue of the period (an annual contract's: its yearly price / 12).
    pub mrr: String,
    /// The day the customer gave notice of cancelling (or of not renewing) at the end of the
    /// period; known from that day, not from the end.
    pub cancelled_at: String,
    /// The status as exported (informational only: it says how things stand at the export, so
    /// nothing is learnt from it).
    pub status: String,
}

impl Default for SubscriptionsInput {
    fn default() -> Self {
        SubscriptionsInput {
            path: String::new(),
            sql: String::new(),
            query: String::new(),
            format: FileFormat::Auto,
            has_header: true,
            delimiter: ",".into(),
            customer_id: "customer_id".into(),
            start: "start".into(),
            end: "end".into(),
            billing_period: "billing_period".into(),
            mrr: "mrr".into(),
            cancelled_at: "cancelled_at".into(),
            status: "status".into(),
        }
    }
}

impl Default for InputConfig {
    fn default() -> Self {
        InputConfig {
            sql_batch_rows: 50_000,
            transactions: TransactionsInput::default(),
            events: EventsInput::default(),
            customers: CustomersInput::default(),
            contacts: ContactsInput::default(),
            subscriptions: SubscriptionsInput::default(),
        }
    }
}

/// `sql` as recorded (model.json): the URL without its password.
fn serialize_redacted<S: serde::Serializer>(url: &str, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&targets::redact(url))
}

/// What an input is read from: a query on a PostgreSQL server when `sql` is set, else the
/// file at `path`.
pub trait InputSource {
    fn path(&self) -> &str;
    fn sql(&self) -> &str;
    fn query(&self) -> &str;
    /// How a file is read: its format, whether it has a header, the CSV separator.
    fn file_options(&self) -> (FileFormat, bool, &str);

    /// Whether the input is given at all (an optional input without a path or a query is absent).
    fn is_given(&self) -> bool {
        !self.path().is_empty() || !self.sql().is_empty()
    }

    /// The source as messages, the validation summary and `model.json` name it: the file's
    /// path, or the query on the URL without its password.
    fn source_name(&self) -> String {
        if self.sql().is_empty() {
            self.path().to_string()
        } else {
            let query = self.query().split_whitespace().collect::<Vec<_>>().join(" ");
            format!("{} query {query:?}", targets::redact(self.sql()))
        }
    }
}

macro_rules! input_source {
    ($($t:ty),*) => {$(
        impl InputSource for $t {
            fn path(&self) -> &str {
                &self.path
            }
            fn sql(&self) -> &str {
                &self.sql
            }
            fn query(&self) -> &str {
                &self.query
            }
            fn file_options(&self) -> (FileFormat, bool, &str) {
                (self.format, self.has_header, &self.delimiter)
            }
        }
    )*};
}
input_source!(TransactionsInput, EventsInput, CustomersInput, SubscriptionsInput);

/// The contact log: one row per contact attempt (customer id, time, whether it reached the
/// customer; optionally the channel or playbook). A run's customer counts as reached when a
/// reached contact falls in the `window_days` after the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContactsInput {
    pub path: String,
    pub format: FileFormat,
    pub has_header: bool,
    pub delimiter: String,
    pub customer_id: String,
    pub timestamp: String,
    pub timestamp_format: String,
    /// yes/no, true/false or 1/0.
    pub reached: String,
    /// Optional: the column naming the channel or playbook of each contact (phone, email,
    /// ...); empty = the log has none. With it, the monitoring compares the treated reached
    /// by each channel with the control group.
    pub channel: String,
    /// Days after a run in which a reached contact counts for it.
    pub window_days: i64,
    pub max_invalid_share: f64,
}

impl Default for ContactsInput {
    fn default() -> Self {
        ContactsInput {
            path: String::new(),
            format: FileFormat::Auto,
            has_header: true,
            delimiter: ",".into(),
            customer_id: "customer_id".into(),
            timestamp: "ts".into(),
            timestamp_format: String::new(),
            reached: "reached".into(),
            channel: String::new(),
            window_days: 14,
            max_invalid_share: 0.05,
        }
    }
}

/// Activity events: one row per event. Validated like transactions: rows without a customer,
/// a parsable time or an event name are counted by reason, and too many of them is an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsInput {
    pub path: String,
    /// Read the input from PostgreSQL instead of a file: the server's URL
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`; use `${VAR}` for the password, which is
    /// never recorded or printed) and `query`, whose result columns are mapped like a file's.
    #[serde(serialize_with = "serialize_redacted")]
    pub sql: String,
    /// The query that returns the rows (one statement, read in a read-only transaction).
    pub query: String,
    pub format: FileFormat,
    pub has_header: bool,
    pub delimiter: String,
    pub customer_id: String,
    pub timestamp: String,
    pub timestamp_format: String,
    /// Column with the event name (login, ticket_critical, nps, ...).
    pub event: String,
    /// Optional numeric value (an NPS score, a feature id); empty = none.
    pub value: String,
    pub max_invalid_share: f64,
}

impl Default for EventsInput {
    fn default() -> Self {
        EventsInput {
            path: String::new(),
            sql: String::new(),
            query: String::new(),
            format: FileFormat::Auto,
            has_header: true,
            delimiter: ",".into(),
            customer_id: "customer_id".into(),
            timestamp: "ts".into(),
            timestamp_format: String::new(),
            event: "event".into(),
            value: "value".into(),
            max_invalid_share: 0.05,
        }
    }
}

/// The customer table: one row per customer. Every column but the id is optional (empty
/// name = absent). Values are taken as they are today, except the CSM sentiment, which is
/// used only from its date on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomersInput {
    pub path: String,
    /// Read the input from PostgreSQL instead of a file: the server's URL
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`; use `${VAR}` for the password, which is
    /// never recorded or printed) and `query`, whose result columns are mapped like a file's.
    #[serde(serialize_with = "serialize_redacted")]
    pub sql: String,
    /// The query that returns the rows (one statement, read in a read-only transaction).
    pub query: String,
    pub format: FileFormat,
    pub has_header: bool,
    pub delimiter: String,
    pub customer_id: String,
    pub signup_date: String,
    pub plan: String,
    pub segment: String,
    pub mrr: String,
    pub arr: String,
    pub csm: String,
    /// green / yellow / red (any case).
    pub csm_sentiment: String,
    pub csm_sentiment_date: String,
    /// Further columns to learn from, as they are today: numeric columns (integer or float
    /// in the file) as numbers, any other as categories (one-hot on the training data's
    /// most frequent, the rest an explicit `other`).
    pub attributes: Vec<String>,
}

impl Default for CustomersInput {
    fn default() -> Self {
        CustomersInput {
            path: String::new(),
            sql: String::new(),
            query: String::new(),
            format: FileFormat::Auto,
            has_header: true,
            delimiter: ",".into(),
            customer_id: "customer_id".into(),
            signup_date: "signup_date".into(),
            plan: "plan".into(),
            segment: "segment".into(),
            mrr: "mrr".into(),
            arr: "arr".into(),
            csm: "csm".into(),
            csm_sentiment: "csm_sentiment".into(),
            csm_sentiment_date: "csm_sentiment_date".into(),
            attributes: Vec::new(),
        }
    }
}

/// Input file format. `auto` decides by file extension (`.csv`, `.tsv`, `.parquet`, `.pq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Auto,
    Csv,
    Parquet,
    /// Text columns separated by runs of spaces or tabs (e.g. the CDNOW files).
    Whitespace,
}

/// Where the transaction log is and how its columns map onto the data contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionsInput {
    pub path: String,
    /// Read the input from PostgreSQL instead of a file: the server's URL
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`; use `${VAR}` for the password, which is
    /// never recorded or printed) and `query`, whose result columns are mapped like a file's.
    #[serde(serialize_with = "serialize_redacted")]
    pub sql: String,
    /// The query that returns the rows (one statement, read in a read-only transaction).
    pub query: String,
    pub format: FileFormat,
    /// CSV / whitespace files: does the first line hold column names?
    pub has_header: bool,
    /// CSV field separator (one character).
    pub delimiter: String,
    /// Column holding the customer id.
    pub customer_id: String,
    /// Column holding the transaction date or datetime.
    pub timestamp: String,
    /// strftime format of `timestamp` when it is text (e.g. `%Y%m%d`); empty = ISO 8601
    /// (`2024-01-31`, `2024-01-31 12:00:00`, `2024-01-31T12:00:00`).
    pub timestamp_format: String,
    /// Column holding the transaction amount; leave empty and set `quantity` and
    /// `unit_price` to use their product instead.
    pub amount: String,
    pub quantity: String,
    pub unit_price: String,
    /// Optional order id: line items with the same (customer, order) become one transaction.
    pub order_id: String,
    /// Column names for a headerless file, in order (empty = use the header or column_1..).
    pub column_names: Vec<String>,
    /// Fail when more than this share of rows is invalid (rows are never dropped silently:
    /// the validation summary counts them by reason).
    pub max_invalid_share: f64,
    /// Rows timed more than this many days after the file was last modified are invalid
    /// (`timestamp in the future`): no log holds events from after it was written.
    pub max_future_days: i64,
    /// Drop exact duplicate rows (every mapped column equal), keeping one; they are counted
    /// either way. Unset: drop, except with an `order_id` (identical lines of one order are
    /// usually separate items when no product column is mapped).
    pub drop_duplicates: Option<bool>,
}

impl Default for TransactionsInput {
    fn default() -> Self {
        TransactionsInput {
            path: "data/generated/transactions.parquet".into(),
            sql: String::new(),
            query: String::new(),
            format: FileFormat::Auto,
            has_header: true,
            delimiter: ",".into(),
            customer_id: "customer_id".into(),
            timestamp: "ts".into(),
            timestamp_format: String::new(),
            amount: "amount".into(),
            quantity: String::new(),
            unit_price: String::new(),
            order_id: String::new(),
            column_names: Vec::new(),
            max_invalid_share: 0.05,
            max_future_days: 1,
            drop_duplicates: None,
        }
    }
}

/// The chronological snapshot protocol (see `split`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Days between snapshots: t_k = origin + step_days * k.
    pub step_days: i32,
    /// Label horizon: churn = no transaction in [t, t + horizon_days).
    pub horizon_days: i32,
    /// First training snapshot is at least this many days after the origin.
    pub min_history_days: i32,
    /// Eligible at t: at least one transaction in [t - eligibility_days, t).
    pub eligibility_days: i32,
    /// Grid origin (YYYY-MM-DD); empty = the date of the first transaction.
    pub origin: String,
    /// Days between the snapshots the models are fitted on; 0 = the evaluation grid's
    /// (`step_days`) with fit windows allowed to overlap the validation window (the original
    /// protocol). With a value > 0, fit snapshots are `first allowed + k * fit_step_days`
    /// whose label windows end by the validation snapshot (no overlap at all).
    pub fit_step_days: i32,
    /// What churn is: no transaction in the horizon, or a cancellation (needs
    /// `[input.subscriptions]`).
    pub churn: ChurnRule,
}

/// What churn is (`[snapshots] churn`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChurnRule {
    /// Eligible at t: a transaction in `[t - eligibility_days, t)`; churn: no transaction in
    /// `[t, t + horizon_days)`.
    #[default]
    Inactivity,
    /// Eligible at t: a live subscription without notice given before t (and a transaction
    /// before t); churn: notice given, or the subscription ending unrenewed, in
    /// `[t, t + horizon_days)`.
    Cancellation,
}

impl ChurnRule {
    pub fn as_str(self) -> &'static str {
        match self {
            ChurnRule::Inactivity => "inactivity",
            ChurnRule::Cancellation => "cancellation",
        }
    }
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            step_days: 28,
            horizon_days: 90,
            min_history_days: 90,
            eligibility_days: 90,
            origin: String::new(),
            fit_step_days: 0,
            churn: ChurnRule::Inactivity,
        }
    }
}

/// Feature windows (days before the snapshot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeatureConfig {
    /// Count, amount sum, mean amount and active days over [t - w, t) for each w.
    pub windows: Vec<i32>,
    /// Trend ratio = count in [t - d, t) / (count in [t - 2d, t - d) + 1).
    pub trend_days: i32,
    /// Spend ratio = sum over the short window / (sum over the long window * short/long).
    pub spend_short_days: i32,
    pub spend_long_days: i32,
    /// BG/NBD + Gamma-Gamma outputs as features (fitted on the data before each snapshot).
    pub bgnbd: bool,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            windows: vec![30, 90, 365],
            trend_days: 45,
            spend_short_days: 30,
            spend_long_days: 90,
            bgnbd: true,
        }
    }
}

/// Gradient-boosted trees, used for both the churn classifier and the CLV regressor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GbdtConfig {
    /// Upper bound on trees; early stopping on the validation snapshot picks the number.
    pub iterations: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
    /// Minimum hessian sum in a leaf (for log loss about p(1-p) per row).
    pub min_leaf_weight: f64,
    pub l2: f64,
    /// Histogram bins per feature (at most 65535; up to 256, one byte per value: the default
    /// 256 means 255 bins for values and one for missing ones).
    pub nbins: u16,
    /// Stop when the validation metric has not improved for this many trees.
    pub early_stopping_rounds: usize,
    /// What counts as an improvement there: lowering the validation loss by more than this
    /// share of all the trees before gained on it (0 = any decrease); the trees up to the
    /// lowest validation loss are kept. The last trees of a slow learning rate each gain next
    /// to nothing on validation and nothing on later snapshots; 0.001 stops there (a
    /// fraction of the trees, with holdout numbers close to running to the cap: the
    /// measurement is in docs/models.md, "Why the rules are what they are").
    pub early_stopping_tolerance: f64,
    /// Row subsample per tree, in (0, 1].
    pub subsample: f64,
    /// Column subsample per tree, in (0, 1].
    pub colsample_bytree: f64,
    pub seed: u64,
    /// L2 penalty of the logistic regression candidate (summed log loss units): one value, or
    /// a grid the penalty is chosen from on the same out-of-time predictions as the candidates.
    #[serde(deserialize_with = "one_or_many")]
    pub logistic_l2: Vec<f64>,
    /// Fit the Poisson-loss CLV GBDT candidate (off saves its fits: about 40% of `train` at
    /// 100k customers).
    pub clv_poisson: bool,
    /// With churn as a cancellation: the time-to-cancellation model's fits (tree count,
    /// purged models, evaluated, shipped) learn from a deterministic sample of customers of
    /// about this many snapshot rows (each becomes up to 12 person-period rows; 0 = never).
    pub survival_max_rows: usize,
    /// After choosing and evaluating, refit the shipped models (same settings and tree counts,
    /// the chosen logistic penalty) on every snapshot whose labels are complete, validation
    /// and holdout included, and deploy that: the model `score` uses learns the most recent
    /// behaviour there is. The holdout numbers stay those of the evaluated model.
    pub refit: bool,
    /// Training rows (customers x snapshots, every role) above which training keeps a
    /// deterministic sample of customers (by a hash of the id, every snapshot of each) of
    /// about this many rows, and says so in the report; 0 = never sample. What bounds the
    /// memory of the machine that fits (fidelis.spark collects only the sample to the driver).
    pub max_rows: usize,
}

impl Default for GbdtConfig {
    fn default() -> Self {
        GbdtConfig {
            iterations: 1000,
            learning_rate: 0.03,
            max_depth: 4,
            min_leaf_weight: 5.0,
            l2: 1.0,
            nbins: 256,
            early_stopping_rounds: 50,
            early_stopping_tolerance: 0.001,
            subsample: 1.0,
            colsample_bytree: 1.0,
            seed: 42,
            logistic_l2: vec![1.0, 10.0, 100.0, 1000.0],
            clv_poisson: true,
            survival_max_rows: 100_000,
            refit: true,
            max_rows: 10_000_000,
        }
    }
}

/// A number or a list of numbers, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(f64),
        Many(Vec<f64>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(v) => vec![v],
        OneOrMany::Many(v) => v,
    })
}

/// Reference models trained on the same split, for comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    pub enabled: bool,
    pub logistic_max_iterations: u64,
    pub decision_tree_max_depth: usize,
    pub random_forest_trees: usize,
    pub random_forest_max_depth: u16,
    pub random_forest_min_samples_leaf: usize,
    /// Rows each baseline is fitted on at most (a seeded sample of the fit snapshots), to
    /// bound their time on large bases; the GBDT always sees every row.
    pub max_rows: usize,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            enabled: true,
            logistic_max_iterations: 200,
            decision_tree_max_depth: 6,
            random_forest_trees: 100,
            random_forest_max_depth: 10,
            random_forest_min_samples_leaf: 20,
            max_rows: 20_000,
        }
    }
}

/// How the value of a correctly contacted churner is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ValuePolicy {
    /// Every saved churner is worth `tp_value`.
    #[default]
    Flat,
    /// A saved churner is worth its predicted CLV x `save_rate`.
    Clv,
}

/// The share of contacted churners a contact saves: assumed (a number in `[0, 1]`) or
/// measured by the control group (`"measured"`; see `experiment::resolve_save_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "SaveRateText", into = "SaveRateText")]
pub enum SaveRate {
    Assumed(f64),
    Measured,
}

impl SaveRate {
    /// The assumed rate (1 for `Measured`: what is assumed until something is measured).
    pub fn assumed(self) -> f64 {
        match self {
            SaveRate::Assumed(v) => v,
            SaveRate::Measured => 1.0,
        }
    }
}

/// How `save_rate` is written: a number or a word.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum SaveRateText {
    Number(f64),
    Word(String),
}

impl TryFrom<SaveRateText> for SaveRate {
    type Error = String;
    fn try_from(t: SaveRateText) -> std::result::Result<SaveRate, String> {
        match t {
            SaveRateText::Number(v) => Ok(SaveRate::Assumed(v)),
            SaveRateText::Word(w) if w == "measured" => Ok(SaveRate::Measured),
            SaveRateText::Word(w) => Err(format!("expected a number in (0, 1] or \"measured\", got {w:?}")),
        }
    }
}

impl From<SaveRate> for SaveRateText {
    fn from(s: SaveRate) -> SaveRateText {
        match s {
            SaveRate::Assumed(v) => SaveRateText::Number(v),
            SaveRate::Measured => SaveRateText::Word("measured".into()),
        }
    }
}

/// The retention decision: who to contact, and the 0-100 risk score's bands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionConfig {
    /// Revenue saved by contacting a customer who would have churned (flat policy).
    pub tp_value: f64,
    /// Cost of contacting a customer who would have stayed anyway.
    pub fp_cost: f64,
    /// Cost charged on every contact, churner or not.
    pub contact_cost: f64,
    /// Yearly rate the subscription CLV discounts future months at (churn as a cancellation).
    pub annual_discount_rate: f64,
    /// Share of contacted churners a contact saves: a number in (0, 1] (assumed) or
    /// `"measured"` (the control group's pooled effect; see `experiment::resolve_save_rate`).
    /// A saved churner is worth `tp_value x save_rate` (flat) or `CLV x save_rate` (clv).
    pub save_rate: SaveRate,
    /// With an assumed `save_rate`, `train` uses the measured one all the same once the
    /// measured save rate's 95% interval is narrower than this (0 = never).
    pub measured_save_rate_width: f64,
    pub value: ValuePolicy,
    /// Training snapshots (the last ones, validation included) whose out-of-time predictions
    /// the calibrator is fitted on; 1 = the validation snapshot only.
    pub calibration_snapshots: usize,
    /// Cross-validation folds used to choose the calibrator when it has one snapshot only.
    pub calibration_folds: usize,
    /// Training rows above which a purged model (one per calibration snapshot) is fitted on
    /// a deterministic sample of customers (by a hash of the id, every snapshot of each) of
    /// about this many rows; 0 = never. Purged models only choose between candidates and fit
    /// the calibrator; past a few hundred thousand rows their comparison barely moves while
    /// their cost grows with the base.
    pub purged_max_rows: usize,
    /// Fewer purged snapshots (not below two) when the latest ones already predict this
    /// many rows: on a large base one snapshot's comparison has little variance left and
    /// every snapshot costs a set of models; 0 = always `calibration_snapshots`.
    pub purged_min_rows: usize,
    /// Risk bands, lowest first; each covers churn probabilities below its
    /// `upper_probability` (the last must be 1.0) and an equal share of the 0-100 score.
    pub bands: Vec<BandConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandConfig {
    pub name: String,
    pub upper_probability: f64,
    pub playbook: String,
    /// This band's save rate, in place of `decision.save_rate` (a trained model's decision
    /// holds the measured one of each band here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save_rate: Option<f64>,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        let band = |name: &str, upper: f64, playbook: &str| BandConfig {
            name: name.into(),
            upper_probability: upper,
            playbook: playbook.into(),
            save_rate: None,
        };
        DecisionConfig {
            tp_value: 65.0,
            fp_cost: 3.0,
            contact_cost: 0.0,
            annual_discount_rate: 0.1,
            save_rate: SaveRate::Assumed(1.0),
            measured_save_rate_width: 0.1,
            value: ValuePolicy::Flat,
            calibration_snapshots: 3,
            calibration_folds: 5,
            purged_max_rows: 200_000,
            purged_min_rows: 100_000,
            bands: vec![
                band("low", 0.10, "passive monitoring"),
                band("moderate", 0.30, "21-day re-engagement sequence"),
                band("high", 0.60, "14-day active intervention, CSM call within 24 h"),
                band("critical", 0.85, "7-day rescue, contact within 4 h"),
                band("imminent", 1.0, "3-day exit prevention and positive offboarding"),
            ],
        }
    }
}

/// The control group among the customers the decision contacts (see `experiment`): held out
/// by a keyed hash of the experiment's name and the customer id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// The hash key: every weekly run of one name keeps each customer's group; a new name
    /// draws new groups (a new experiment).
    pub name: String,
    /// Share of the customers the decision contacts who are held out (not contacted) to
    /// measure the effect of contacting; 0 = no control group.
    pub control_share: f64,
    /// Share of the customers below the threshold who are contacted anyway, so that the
    /// effect is also measured where the risk rule would never call; 0 = none.
    pub explore_share: f64,
    /// Accounts whose ARR (the customer table's `arr`, or 12 x `mrr`) is above this are never
    /// held out: always contacted, group `exempt`, left out of the effect; unset = no limit.
    pub never_hold_out_above_arr: Option<f64>,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            name: "retention".into(),
            control_share: 0.1,
            explore_share: 0.0,
            never_hold_out_above_arr: None,
        }
    }
}

/// The uplift model `train` fits from the experiment's matured runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpliftConfig {
    /// Fit once this many matured runs with a control group exist (the latest one is held
    /// out to choose the learner and to judge it against the risk rankings); 0 = never.
    pub min_runs: usize,
    /// Trees per model (fixed: no rows are left over to stop early on).
    pub iterations: usize,
    pub learning_rate: f64,
    pub max_depth: usize,
    /// Minimum hessian sum in a leaf.
    pub min_leaf_weight: f64,
    /// Customers whose estimated uplift is below this (a contact expected to raise their
    /// churn probability by more than its absolute value) are never contacted.
    pub never_contact_below: f64,
    /// The best learner ships only if its Qini is above both risk rankings' on at least this
    /// share of bootstrap resamples of the held-out run.
    pub ship_confidence: f64,
}

impl Default for UpliftConfig {
    fn default() -> Self {
        UpliftConfig {
            min_runs: 3,
            iterations: 150,
            learning_rate: 0.05,
            max_depth: 3,
            min_leaf_weight: 20.0,
            never_contact_below: -0.05,
            ship_confidence: 0.9,
        }
    }
}

/// What orders the customers of a scoring run (risk_rank, the top-10% segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RankBy {
    /// Calibrated churn probability.
    #[default]
    Probability,
    /// Churn probability x predicted CLV.
    ExpectedLoss,
    /// Uplift x predicted CLV - contact cost, what a call is worth (expected loss until the
    /// model has an uplift model).
    IncrementalValue,
}

/// How the scores' `top_reasons` explain each churn score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reasons {
    /// Exact SHAP values (TreeSHAP for the GBDT): consistent, add up to the log-odds.
    #[default]
    Shap,
    /// Path attributions (Saabas): cheaper, split-order dependent; what reasons were before
    /// SHAP (and still are for models trained before fidelis stored its trees' covers).
    Path,
    /// No reasons (`top_reasons` empty).
    None,
}

/// Scoring output: which sinks a run writes and how the top-risk segment is chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Root of the outputs: `<dir>/scores/run=YYYY-MM-DD/part-0.parquet`,
    /// `<dir>/top_risk/run=YYYY-MM-DD/part-0.parquet`, and the lock file `<dir>/.fidelis.lock`
    /// held while a run writes.
    pub dir: String,
    /// Write the Parquet partitions.
    pub parquet: bool,
    /// SQL sinks: `sqlite://PATH` and/or `postgres://USER:PASSWORD@HOST:PORT/DB`. Entries may
    /// use `${VAR}`; an entry that expands to "" is skipped. A non-empty `FIDELIS_PG_URL`
    /// environment variable adds a PostgreSQL sink (keeps the password out of the file).
    pub sql: Vec<String>,
    /// PostgreSQL schema of the tables (created when missing).
    pub pg_schema: String,
    pub tables: TableNames,
    pub rank_by: RankBy,
    /// Share of scored customers in the top-risk segment (round(share x n) customers).
    pub top_share: f64,
    /// How `top_reasons` explain each churn score.
    pub reasons: Reasons,
    /// Set by `backtest`: ignore `FIDELIS_PG_URL` (not a config key).
    #[serde(skip)]
    pub no_env_sinks: bool,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            dir: "output".into(),
            parquet: true,
            sql: vec!["sqlite://output/fidelis.sqlite".into()],
            pg_schema: "public".into(),
            tables: TableNames::default(),
            rank_by: RankBy::Probability,
            top_share: 0.1,
            reasons: Reasons::Shap,
            no_env_sinks: false,
        }
    }
}

/// SQL table names (plain identifiers: letters, digits, `_`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableNames {
    pub scores: String,
    pub top_risk: String,
    pub runs: String,
    /// Monitoring history: one row per as_of x metric x item.
    pub monitoring: String,
    /// The delivery log of alerts and CRM pushes.
    pub notifications: String,
    /// The measured effect of contacting per monitor date, run and stratum.
    pub campaign_effect: String,
}

impl Default for TableNames {
    fn default() -> Self {
        let t = targets::Tables::default();
        TableNames {
            scores: t.scores,
            top_risk: t.top_risk,
            runs: t.runs,
            monitoring: t.monitoring,
            notifications: t.notifications,
            campaign_effect: t.campaign_effect,
        }
    }
}

/// Monitoring: drift thresholds, the realized-AUC alert, retrain advice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// PSI at or above this is `warn`.
    pub psi_warn: f64,
    /// PSI above this is `alert`.
    pub psi_alert: f64,
    /// Alert when a run's realized ROC AUC is more than this below the holdout AUC.
    pub auc_drop_alert: f64,
    /// Alert when a run's ROC AUC estimated from its calibrated probabilities (before its
    /// labels mature) is more than this below the holdout's, estimated the same way.
    pub estimated_auc_drop_alert: f64,
    /// Advise retraining when the model's data ends more than this many days before as_of.
    pub max_model_age_days: i64,
}

/// The health score (0-100) from events: five weighted components, each the mean of its
/// inputs normalized to [0, 1]; components without any of their events in the log are
/// dropped and the weights renormalized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Recency of the last login, active days in 30, logins per week.
    pub usage: f64,
    /// Share of the product's features used in 90 days, onboarding completed.
    pub adoption: f64,
    /// Last NPS, email open rate over 90 days.
    pub engagement: f64,
    /// Payment failures and downgrades over 90 days.
    pub financial: f64,
    /// Critical tickets and escalations over 90 days.
    pub sentiment: f64,
    /// `usage_drop`: activity down this share or more in each of the last two 30-day windows.
    pub usage_drop_share: f64,
    /// Event names the components read.
    pub events: HealthEvents,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            usage: 35.0,
            adoption: 25.0,
            engagement: 20.0,
            financial: 10.0,
            sentiment: 10.0,
            usage_drop_share: 0.3,
            events: HealthEvents::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthEvents {
    pub login: String,
    /// Its value is the feature id.
    pub feature_used: String,
    pub onboarding: String,
    /// Its value is the score (0-10).
    pub nps: String,
    pub email_sent: String,
    pub email_opened: String,
    pub payment_failed: String,
    pub downgrade: String,
    pub ticket_critical: String,
    pub escalation: String,
}

impl Default for HealthEvents {
    fn default() -> Self {
        HealthEvents {
            login: "login".into(),
            feature_used: "feature_used".into(),
            onboarding: "onboarding_completed".into(),
            nps: "nps".into(),
            email_sent: "email_sent".into(),
            email_opened: "email_opened".into(),
            payment_failed: "payment_failed".into(),
            downgrade: "downgrade".into(),
            ticket_critical: "ticket_critical".into(),
            escalation: "escalation".into(),
        }
    }
}

/// Escalation rules, checked in order; the first that fires is written to `escalation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationConfig {
    pub rules: Vec<EscalationRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationRule {
    /// Fires when ARR (the `arr` column, else 12 x `mrr`) is above this ...
    pub min_arr: f64,
    /// ... and the customer's risk level is this one.
    pub level: String,
    pub action: String,
    /// ... and, when set, the next renewal is at most this many days away (a customer without
    /// a known renewal never fires such a rule): renewal-driven escalations.
    #[serde(default)]
    pub max_days_to_renewal: Option<i32>,
    /// Email addresses told of a new escalation by the email channels of a `[[notify.rules]]`
    /// entry listening to `escalation` (besides the account's CSM and the channel's `to`).
    #[serde(default)]
    pub recipients: Vec<String>,
}

impl EscalationConfig {
    /// The first rule that fires for a customer of `arr` in risk `level` whose next renewal
    /// is `days_to_renewal` away (none without ARR).
    pub fn rule_for(
        &self,
        level: &str,
        arr: Option<f64>,
        days_to_renewal: Option<i32>,
    ) -> Option<&EscalationRule> {
        let arr = arr?;
        self.rules.iter().find(|r| {
            r.level == level
                && arr > r.min_arr
                && r.max_days_to_renewal.is_none_or(|m| days_to_renewal.is_some_and(|d| d <= m))
        })
    }
}

impl Default for EscalationConfig {
    fn default() -> Self {
        let rule = |min_arr: f64, level: &str, action: &str| EscalationRule {
            min_arr,
            level: level.into(),
            action: action.into(),
            max_days_to_renewal: None,
            recipients: Vec::new(),
        };
        EscalationConfig {
            rules: vec![
                rule(10_000.0, "critical", "manager immediately"),
                rule(50_000.0, "high", "manager within 4 h"),
                rule(100_000.0, "moderate", "notify manager within 24 h"),
            ],
        }
    }
}

/// Reports (`reports_dir` is under `[paths]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportConfig {
    /// Gross margin on revenue for the weekly report's simple LTV (1.0 = LTV in revenue).
    pub gross_margin: f64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig { gross_margin: 1.0 }
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            psi_warn: 0.1,
            psi_alert: 0.25,
            auc_drop_alert: 0.05,
            estimated_auc_drop_alert: 0.05,
            max_model_age_days: 35,
        }
    }
}

impl OutputConfig {
    /// The SQL sinks of a run: `sql` (expanded, empty entries skipped) plus `FIDELIS_PG_URL`.
    pub fn sql_targets(&self) -> Result<Vec<SqlTarget>> {
        let mut targets = Vec::new();
        for url in self.sql.iter().filter(|u| !u.is_empty()) {
            // Checked when the config was validated.
            targets.push(SqlTarget::parse(url).map_err(|m| Error::config("(config)", "output.sql", m))?);
        }
        if let Ok(url) = std::env::var("FIDELIS_PG_URL") {
            if !self.no_env_sinks && !url.is_empty() && !self.sql.contains(&url) {
                let t =
                    SqlTarget::parse(&url).map_err(|m| Error::config("environment", "FIDELIS_PG_URL", m))?;
                if !matches!(t, SqlTarget::Postgres(_)) {
                    return Err(Error::config("environment", "FIDELIS_PG_URL", "must be a postgres:// URL"));
                }
                targets.push(t);
            }
        }
        Ok(targets)
    }

    pub fn sql_tables(&self) -> targets::Tables {
        targets::Tables {
            scores: self.tables.scores.clone(),
            top_risk: self.tables.top_risk.clone(),
            runs: self.tables.runs.clone(),
            monitoring: self.tables.monitoring.clone(),
            notifications: self.tables.notifications.clone(),
            campaign_effect: self.tables.campaign_effect.clone(),
            schema: self.pg_schema.clone(),
        }
    }
}

/// Logging each `fidelis train` run to an MLflow tracking server and registering its model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlflowConfig {
    /// The tracking server (`http://host:5000`; empty = no MLflow). Credentials come from the
    /// environment as MLflow's own clients take them: `MLFLOW_TRACKING_TOKEN`, or
    /// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD`.
    pub tracking_uri: String,
    /// The experiment the runs go to (created when missing).
    pub experiment: String,
    /// Register each trained model as a version of this registered model (empty = log the
    /// run only).
    pub registered_model: String,
    /// The alias that names the model to deploy: moved to the new version when its holdout
    /// ROC AUC is at least the aliased version's (or with `fidelis train --promote`); empty =
    /// no alias.
    pub alias: String,
    /// Seconds before a request to the server is given up.
    pub timeout_seconds: u64,
}

impl Default for MlflowConfig {
    fn default() -> Self {
        MlflowConfig {
            tracking_uri: String::new(),
            experiment: "fidelis".into(),
            registered_model: String::new(),
            alias: "champion".into(),
            timeout_seconds: 60,
        }
    }
}

fn check_mlflow(m: &MlflowConfig) -> Checked {
    if m.tracking_uri.is_empty() {
        return Ok(());
    }
    if !(m.tracking_uri.starts_with("http://") || m.tracking_uri.starts_with("https://")) {
        return bad(
            "mlflow.tracking_uri",
            format!(
                "expected the tracking server's http:// or https:// URL, got {:?}",
                targets::redact(&m.tracking_uri)
            ),
        );
    }
    if m.experiment.trim().is_empty() {
        return bad("mlflow.experiment", "must name the experiment".into());
    }
    if m.timeout_seconds == 0 {
        return bad("mlflow.timeout_seconds", "must be positive".into());
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Trained model artifacts: `<models_dir>/<model_id>/` and `<models_dir>/latest`.
    pub models_dir: String,
    /// Generated evaluation and weekly reports.
    pub reports_dir: String,
    /// Where the local mirrors of `s3://` output and report roots live between runs (empty =
    /// `$XDG_CACHE_HOME/fidelis/s3`, else `~/.cache/fidelis/s3`).
    pub s3_cache_dir: String,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            models_dir: "models".into(),
            reports_dir: "reports".into(),
            s3_cache_dir: String::new(),
        }
    }
}

impl Config {
    /// Read, parse, expand `${VAR}` in paths, and validate a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config(&shown, "(file)", format!("cannot read the config file: {e}")))?;
        Config::from_toml(&text, &shown)
    }

    /// Parse and validate TOML text; `origin` names the source in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let key = toml_error_key(text, &e);
            Error::config(origin, key, msg)
        })?;
        cfg.input.transactions.path = expand_env(&cfg.input.transactions.path)
            .map_err(|m| Error::config(origin, "input.transactions.path", m))?;
        cfg.input.events.path =
            expand_env(&cfg.input.events.path).map_err(|m| Error::config(origin, "input.events.path", m))?;
        cfg.input.customers.path = expand_env(&cfg.input.customers.path)
            .map_err(|m| Error::config(origin, "input.customers.path", m))?;
        cfg.input.contacts.path = expand_env(&cfg.input.contacts.path)
            .map_err(|m| Error::config(origin, "input.contacts.path", m))?;
        cfg.input.subscriptions.path = expand_env(&cfg.input.subscriptions.path)
            .map_err(|m| Error::config(origin, "input.subscriptions.path", m))?;
        for (section, sql) in [
            ("transactions", &mut cfg.input.transactions.sql),
            ("events", &mut cfg.input.events.sql),
            ("customers", &mut cfg.input.customers.sql),
            ("subscriptions", &mut cfg.input.subscriptions.sql),
        ] {
            *sql = expand_env(sql).map_err(|m| Error::config(origin, format!("input.{section}.sql"), m))?;
        }
        cfg.output.dir = expand_env(&cfg.output.dir).map_err(|m| Error::config(origin, "output.dir", m))?;
        cfg.mlflow.tracking_uri = expand_env(&cfg.mlflow.tracking_uri)
            .map_err(|m| Error::config(origin, "mlflow.tracking_uri", m))?;
        for (i, url) in cfg.output.sql.iter_mut().enumerate() {
            *url = expand_env(url).map_err(|m| Error::config(origin, format!("output.sql[{i}]"), m))?;
        }
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Check every value's range; the error names the key.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let all = || -> Checked {
            check_transactions(&self.input.transactions)?;
            check_source("input.transactions", &self.input.transactions)?;
            check_source("input.events", &self.input.events)?;
            check_source("input.customers", &self.input.customers)?;
            check_source("input.subscriptions", &self.input.subscriptions)?;
            if self.input.sql_batch_rows == 0 || self.input.sql_batch_rows > i32::MAX as usize {
                return bad(
                    "input.sql_batch_rows",
                    format!("must be in 1..={}, got {}", i32::MAX, self.input.sql_batch_rows),
                );
            }
            check_snapshots(&self.snapshots)?;
            if self.snapshots.churn == ChurnRule::Cancellation && !self.input.subscriptions.is_given() {
                return bad(
                    "snapshots.churn",
                    "\"cancellation\" needs the subscription table: set [input.subscriptions] path (or sql \
                     and query)"
                        .to_string(),
                );
            }
            check_features(&self.features)?;
            check_model(&self.model)?;
            check_baselines(&self.baselines)?;
            check_output(&self.output)?;
            check_monitor(&self.monitor)?;
            check_health(&self.health)?;
            check_report(&self.report)?;
            check_decision(&self.decision, &self.escalation)?;
            check_experiment(&self.experiment)?;
            check_contacts_and_uplift(&self.input.contacts, &self.uplift)?;
            let levels: Vec<String> = self.decision.bands.iter().map(|b| b.name.clone()).collect();
            notify::check_notify(&self.notify, &levels, self.output.parquet)?;
            for (i, r) in self.escalation.rules.iter().enumerate() {
                if let Some(a) = r.recipients.iter().find(|a| !a.contains('@')) {
                    return bad(
                        &format!("escalation.rules[{i}].recipients"),
                        format!("{a:?} is not an email address"),
                    );
                }
            }
            notify::check_crm(&self.crm)?;
            check_mlflow(&self.mlflow)?;
            check_paths(&self.paths)
        };
        all().map_err(|(key, message)| Error::config(origin, key, message))
    }

    pub fn models_dir(&self) -> PathBuf {
        PathBuf::from(&self.paths.models_dir)
    }

    pub fn reports_dir(&self) -> PathBuf {
        PathBuf::from(&self.paths.reports_dir)
    }
}

/// Best-effort name of the key a TOML error points at: the key on the offending line.
/// A failed check: the key and what is wrong with its value.
type Checked = std::result::Result<(), (String, String)>;

fn bad(key: &str, message: String) -> Checked {
    Err((key.to_string(), message))
}

/// An input read by a query needs both `sql` (a PostgreSQL URL) and `query`.
fn check_source(section: &str, input: &impl InputSource) -> Checked {
    match (input.sql().is_empty(), input.query().trim().is_empty()) {
        (true, true) => Ok(()),
        (true, false) => bad(
            &format!("{section}.query"),
            "needs `sql`, the PostgreSQL server's URL (postgres://USER@HOST:PORT/DB)".into(),
        ),
        (false, true) => {
            bad(&format!("{section}.sql"), "needs `query`, the SELECT that returns the rows".into())
        }
        (false, false) => match targets::SqlTarget::parse(input.sql()) {
            Ok(targets::SqlTarget::Postgres(_)) => Ok(()),
            Ok(targets::SqlTarget::Sqlite(_)) => bad(
                &format!("{section}.sql"),
                "inputs are read from PostgreSQL (postgres://...); for a SQLite table, export it to a file"
                    .into(),
            ),
            Err(m) => bad(&format!("{section}.sql"), m),
        },
    }
}

fn check_transactions(t: &TransactionsInput) -> Checked {
    if t.path.trim().is_empty() && t.sql.is_empty() {
        return bad(
            "input.transactions.path",
            "must name the transaction file (or set `sql` and `query` to read it from PostgreSQL)".into(),
        );
    }
    if t.customer_id.is_empty() {
        return bad("input.transactions.customer_id", "must name a column".into());
    }
    if t.timestamp.is_empty() {
        return bad("input.transactions.timestamp", "must name a column".into());
    }
    let has_product = !t.quantity.is_empty() || !t.unit_price.is_empty();
    if t.amount.is_empty() && !(!t.quantity.is_empty() && !t.unit_price.is_empty()) {
        return bad("input.transactions.amount", "set `amount`, or both `quantity` and `unit_price`".into());
    }
    if !t.amount.is_empty() && has_product {
        return bad(
            "input.transactions.amount",
            "set either `amount` or `quantity` + `unit_price`, not both".into(),
        );
    }
    if t.delimiter.len() != 1 {
        return bad(
            "input.transactions.delimiter",
            format!("must be one ASCII character, got {:?}", t.delimiter),
        );
    }
    if t.max_future_days < 0 {
        return bad("input.transactions.max_future_days", format!("must be >= 0, got {}", t.max_future_days));
    }
    if !(0.0..=1.0).contains(&t.max_invalid_share) {
        return bad(
            "input.transactions.max_invalid_share",
            format!("must be in [0, 1], got {}", t.max_invalid_share),
        );
    }
    Ok(())
}

fn check_snapshots(s: &SnapshotConfig) -> Checked {
    for (key, v) in [
        ("snapshots.step_days", s.step_days),
        ("snapshots.horizon_days", s.horizon_days),
        ("snapshots.eligibility_days", s.eligibility_days),
    ] {
        if v <= 0 {
            return bad(key, format!("must be a positive number of days, got {v}"));
        }
    }
    if s.min_history_days < 0 {
        return bad("snapshots.min_history_days", format!("must be >= 0, got {}", s.min_history_days));
    }
    if s.fit_step_days < 0 {
        return bad(
            "snapshots.fit_step_days",
            format!("must be >= 0 (0 = step_days), got {}", s.fit_step_days),
        );
    }
    if !s.origin.is_empty() && chrono::NaiveDate::parse_from_str(&s.origin, "%Y-%m-%d").is_err() {
        return bad("snapshots.origin", format!("expected YYYY-MM-DD, got {:?}", s.origin));
    }
    Ok(())
}

fn check_features(f: &FeatureConfig) -> Checked {
    if f.windows.is_empty() || f.windows.iter().any(|&w| w <= 0) {
        return bad("features.windows", format!("must be positive day counts, got {:?}", f.windows));
    }
    let mut sorted = f.windows.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != f.windows.len() {
        return bad("features.windows", format!("must not repeat a window, got {:?}", f.windows));
    }
    for (key, v) in [
        ("features.trend_days", f.trend_days),
        ("features.spend_short_days", f.spend_short_days),
        ("features.spend_long_days", f.spend_long_days),
    ] {
        if v <= 0 {
            return bad(key, format!("must be a positive number of days, got {v}"));
        }
    }
    if f.spend_short_days >= f.spend_long_days {
        return bad(
            "features.spend_short_days",
            format!("must be shorter than spend_long_days ({})", f.spend_long_days),
        );
    }
    Ok(())
}

fn check_model(m: &GbdtConfig) -> Checked {
    if m.iterations == 0 {
        return bad("model.iterations", "must be at least 1".into());
    }
    if !(m.learning_rate > 0.0 && m.learning_rate <= 1.0) {
        return bad("model.learning_rate", format!("must be in (0, 1], got {}", m.learning_rate));
    }
    if !(0.0..1.0).contains(&m.early_stopping_tolerance) {
        return bad(
            "model.early_stopping_tolerance",
            format!("must be in [0, 1), got {}", m.early_stopping_tolerance),
        );
    }
    if m.max_depth == 0 {
        return bad("model.max_depth", "must be at least 1".into());
    }
    if m.min_leaf_weight.is_nan() || m.min_leaf_weight < 0.0 {
        return bad("model.min_leaf_weight", format!("must be >= 0, got {}", m.min_leaf_weight));
    }
    if m.l2.is_nan() || m.l2 < 0.0 {
        return bad("model.l2", format!("must be >= 0, got {}", m.l2));
    }
    if m.logistic_l2.is_empty() {
        return bad("model.logistic_l2", "needs at least one value".into());
    }
    if let Some(v) = m.logistic_l2.iter().find(|v| !(**v > 0.0 && v.is_finite())) {
        return bad("model.logistic_l2", format!("every value must be > 0, got {v}"));
    }
    if m.nbins < 2 {
        return bad("model.nbins", format!("must be at least 2, got {}", m.nbins));
    }
    if m.max_rows != 0 && m.max_rows < 1000 {
        return bad("model.max_rows", format!("must be 0 (no sample) or at least 1000, got {}", m.max_rows));
    }
    for (key, v) in [("model.subsample", m.subsample), ("model.colsample_bytree", m.colsample_bytree)] {
        if !(v > 0.0 && v <= 1.0) {
            return bad(key, format!("must be in (0, 1], got {v}"));
        }
    }
    Ok(())
}

fn check_baselines(b: &BaselineConfig) -> Checked {
    if b.random_forest_trees == 0 {
        return bad("baselines.random_forest_trees", "must be at least 1".into());
    }
    if b.decision_tree_max_depth == 0 {
        return bad("baselines.decision_tree_max_depth", "must be at least 1".into());
    }
    if b.max_rows < 100 {
        return bad("baselines.max_rows", "must be at least 100".into());
    }
    Ok(())
}

fn check_output(o: &OutputConfig) -> Checked {
    if !(o.top_share > 0.0 && o.top_share <= 1.0) {
        return bad("output.top_share", format!("must be in (0, 1], got {}", o.top_share));
    }
    if o.dir.trim().is_empty() {
        return bad("output.dir", "must name a directory".into());
    }
    for (i, url) in o.sql.iter().enumerate() {
        if !url.is_empty() {
            if let Err(m) = targets::SqlTarget::parse(url) {
                return bad(&format!("output.sql[{i}]"), m);
            }
        }
    }
    for (key, name) in [
        ("output.pg_schema", &o.pg_schema),
        ("output.tables.scores", &o.tables.scores),
        ("output.tables.top_risk", &o.tables.top_risk),
        ("output.tables.runs", &o.tables.runs),
        ("output.tables.monitoring", &o.tables.monitoring),
        ("output.tables.notifications", &o.tables.notifications),
        ("output.tables.campaign_effect", &o.tables.campaign_effect),
    ] {
        if !targets::valid_identifier(name) {
            return bad(
                key,
                format!("{name:?} is not a plain SQL identifier (a letter or _, then letters, digits or _)"),
            );
        }
    }
    let t = &o.tables;
    if [&t.scores, &t.top_risk, &t.runs, &t.monitoring, &t.notifications, &t.campaign_effect]
        .iter()
        .collect::<std::collections::HashSet<_>>()
        .len()
        < 6
    {
        return bad("output.tables", "the six table names must differ".into());
    }
    Ok(())
}

fn check_monitor(m: &MonitorConfig) -> Checked {
    if !(m.psi_warn > 0.0 && m.psi_warn.is_finite()) {
        return bad("monitor.psi_warn", format!("must be positive, got {}", m.psi_warn));
    }
    if !(m.psi_alert >= m.psi_warn && m.psi_alert.is_finite()) {
        return bad(
            "monitor.psi_alert",
            format!("must be at least monitor.psi_warn ({}), got {}", m.psi_warn, m.psi_alert),
        );
    }
    if !(m.auc_drop_alert > 0.0 && m.auc_drop_alert < 1.0) {
        return bad("monitor.auc_drop_alert", format!("must be in (0, 1), got {}", m.auc_drop_alert));
    }
    if !(m.estimated_auc_drop_alert > 0.0 && m.estimated_auc_drop_alert < 1.0) {
        return bad(
            "monitor.estimated_auc_drop_alert",
            format!("must be in (0, 1), got {}", m.estimated_auc_drop_alert),
        );
    }
    if m.max_model_age_days < 1 {
        return bad(
            "monitor.max_model_age_days",
            format!("must be at least 1, got {}", m.max_model_age_days),
        );
    }
    Ok(())
}

fn check_health(h: &HealthConfig) -> Checked {
    for (key, v) in [
        ("health.usage", h.usage),
        ("health.adoption", h.adoption),
        ("health.engagement", h.engagement),
        ("health.financial", h.financial),
        ("health.sentiment", h.sentiment),
    ] {
        if !(v >= 0.0 && v.is_finite()) {
            return bad(key, format!("must be a weight >= 0, got {v}"));
        }
    }
    if h.usage + h.adoption + h.engagement + h.financial + h.sentiment <= 0.0 {
        return bad("health", "at least one component weight must be positive".into());
    }
    if !(h.usage_drop_share > 0.0 && h.usage_drop_share < 1.0) {
        return bad("health.usage_drop_share", format!("must be in (0, 1), got {}", h.usage_drop_share));
    }
    Ok(())
}

fn check_paths(p: &PathsConfig) -> Checked {
    for (key, v) in [("paths.models_dir", &p.models_dir), ("paths.reports_dir", &p.reports_dir)] {
        if v.trim().is_empty() {
            return bad(key, "must name a directory (it may not be empty)".into());
        }
    }
    if p.models_dir.starts_with("s3://") {
        return bad(
            "paths.models_dir",
            "models are kept on a local or shared file system; to keep them in a registry, use [mlflow]"
                .into(),
        );
    }
    Ok(())
}

fn check_report(r: &ReportConfig) -> Checked {
    let g = r.gross_margin;
    if !(g > 0.0 && g <= 1.0) {
        return bad("report.gross_margin", format!("must be in (0, 1], got {g}"));
    }
    Ok(())
}

fn check_contacts_and_uplift(c: &ContactsInput, u: &UpliftConfig) -> Checked {
    if c.window_days < 1 {
        return bad("input.contacts.window_days", format!("must be at least 1, got {}", c.window_days));
    }
    if !(0.0..=1.0).contains(&c.max_invalid_share) {
        return bad(
            "input.contacts.max_invalid_share",
            format!("must be in [0, 1], got {}", c.max_invalid_share),
        );
    }
    if !(0.0..=1.0).contains(&u.ship_confidence) {
        return bad("uplift.ship_confidence", format!("must be in [0, 1], got {}", u.ship_confidence));
    }
    if !(u.learning_rate > 0.0 && u.learning_rate <= 1.0) || u.iterations == 0 || u.max_depth == 0 {
        return bad(
            "uplift",
            format!(
                "iterations and max_depth must be at least 1 and learning_rate in (0, 1], got {}, {} and {}",
                u.iterations, u.max_depth, u.learning_rate
            ),
        );
    }
    if !(-1.0..=0.0).contains(&u.never_contact_below) {
        return bad(
            "uplift.never_contact_below",
            format!("must be in [-1, 0], got {}", u.never_contact_below),
        );
    }
    Ok(())
}

fn check_experiment(e: &ExperimentConfig) -> Checked {
    if e.name.trim().is_empty() {
        return bad("experiment.name", "must not be empty (it keys every customer's group)".to_string());
    }
    for (key, v) in
        [("experiment.control_share", e.control_share), ("experiment.explore_share", e.explore_share)]
    {
        if !(0.0..0.5).contains(&v) {
            return bad(key, format!("must be in [0, 0.5), got {v}"));
        }
    }
    if e.control_share + e.explore_share >= 1.0 {
        return bad("experiment.explore_share", "control_share + explore_share must be below 1".to_string());
    }
    if let Some(a) = e.never_hold_out_above_arr {
        if !a.is_finite() || a < 0.0 {
            return bad(
                "experiment.never_hold_out_above_arr",
                format!("must be a non-negative amount, got {a}"),
            );
        }
    }
    Ok(())
}

fn check_decision(d: &DecisionConfig, escalation: &EscalationConfig) -> Checked {
    if !(0.0..=1.0).contains(&d.annual_discount_rate) {
        return bad(
            "decision.annual_discount_rate",
            format!("must be a yearly rate in [0, 1], got {}", d.annual_discount_rate),
        );
    }
    for (key, v) in [
        ("decision.tp_value", d.tp_value),
        ("decision.fp_cost", d.fp_cost),
        ("decision.contact_cost", d.contact_cost),
    ] {
        if !v.is_finite() || v < 0.0 {
            return bad(key, format!("must be a non-negative amount, got {v}"));
        }
    }
    if let SaveRate::Assumed(v) = d.save_rate {
        if !(v > 0.0 && v <= 1.0) {
            return bad("decision.save_rate", format!("must be in (0, 1] or \"measured\", got {v}"));
        }
    }
    if !(d.measured_save_rate_width.is_finite() && d.measured_save_rate_width >= 0.0) {
        return bad(
            "decision.measured_save_rate_width",
            format!("must be 0 (never) or a positive width, got {}", d.measured_save_rate_width),
        );
    }
    for (i, b) in d.bands.iter().enumerate() {
        if let Some(v) = b.save_rate.filter(|v| !(0.0..=1.0).contains(v)) {
            return bad(&format!("decision.bands[{i}].save_rate"), format!("must be in [0, 1], got {v}"));
        }
    }
    if d.calibration_snapshots < 1 {
        return bad(
            "decision.calibration_snapshots",
            format!("must be at least 1, got {}", d.calibration_snapshots),
        );
    }
    if d.calibration_folds < 2 {
        return bad("decision.calibration_folds", format!("must be at least 2, got {}", d.calibration_folds));
    }
    if d.bands.is_empty() {
        return bad("decision.bands", "needs at least one band".into());
    }
    let mut previous = 0.0;
    for (i, b) in d.bands.iter().enumerate() {
        let key = format!("decision.bands[{i}]");
        if b.name.trim().is_empty() {
            return bad(&format!("{key}.name"), "must not be empty".into());
        }
        if d.bands[..i].iter().any(|o| o.name == b.name) {
            return bad(&format!("{key}.name"), format!("band name {:?} is used twice", b.name));
        }
        if !(b.upper_probability > previous && b.upper_probability <= 1.0) {
            return bad(
                &format!("{key}.upper_probability"),
                format!(
                    "band edges must increase strictly within (0, 1]: got {} after {previous}",
                    b.upper_probability
                ),
            );
        }
        previous = b.upper_probability;
    }
    if previous != 1.0 {
        return bad(
            &format!("decision.bands[{}].upper_probability", d.bands.len() - 1),
            format!("the last band must end at 1.0, got {previous}"),
        );
    }
    let levels: Vec<&str> = d.bands.iter().map(|b| b.name.as_str()).collect();
    for (i, r) in escalation.rules.iter().enumerate() {
        if !levels.contains(&r.level.as_str()) {
            return bad(
                &format!("escalation.rules[{i}].level"),
                format!("{:?} is not a risk level (decision.bands: {})", r.level, levels.join(", ")),
            );
        }
    }
    Ok(())
}

fn toml_error_key(text: &str, err: &toml::de::Error) -> String {
    let Some(span) = err.span() else {
        return "(file)".into();
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = text[line_start..line_end].trim();
    let line_no = text[..start].matches('\n').count() + 1;
    let key = line.split('=').next().unwrap_or("").trim();
    if key.is_empty() || line.starts_with('[') {
        format!("line {line_no}")
    } else {
        format!("{key} (line {line_no})")
    }
}

/// Expand `${VAR}` and `${VAR:-default}` with environment variables.
pub fn expand_env(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed `${{` in {s:?}"));
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => out.push_str(&v),
            _ => match default {
                Some(d) => out.push_str(d),
                None => return Err(format!("environment variable {name} is not set (used in {s:?})")),
            },
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults() {
        let cfg = Config::from_toml("", "test").unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn example_file_documents_exactly_the_defaults() {
        let cfg =
            Config::from_toml(include_str!("../../fidelis.example.toml"), "fidelis.example.toml").unwrap();
        assert_eq!(cfg, Config::default());
        // And it names every key: serializing the defaults yields no key the example lacks.
        let example = include_str!("../../fidelis.example.toml");
        let defaults = toml::to_string(&Config::default()).unwrap();
        for line in defaults.lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(example.contains(&format!("\n{key} = ")), "fidelis.example.toml lacks `{key}`");
            }
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[model]\nlearning_rat = 0.1\n", "f.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("f.toml") && msg.contains("learning_rat"), "{msg}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn out_of_range_value_names_the_key() {
        for bad in ["1.0", "-0.1"] {
            let toml = format!("[model]\nearly_stopping_tolerance = {bad}\n");
            let err = Config::from_toml(&toml, "f.toml").unwrap_err();
            assert!(err.to_string().contains("model.early_stopping_tolerance"), "{err}");
        }
        let err = Config::from_toml("[model]\nlearning_rate = 0.0\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("model.learning_rate"), "{err}");
        let err = Config::from_toml("[features]\nwindows = [30, 30]\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("features.windows"), "{err}");
        let err = Config::from_toml("[snapshots]\nhorizon_days = -1\n", "f.toml").unwrap_err();
        assert!(err.to_string().contains("snapshots.horizon_days"), "{err}");
    }

    #[test]
    fn bad_decision_config_names_the_key() {
        let cases = [
            ("[decision]\nfp_cost = -3\n", "decision.fp_cost"),
            ("[decision]\ntp_value = -1\n", "decision.tp_value"),
            ("[decision]\ncontact_cost = -0.5\n", "decision.contact_cost"),
            ("[decision]\nsave_rate = 0\n", "decision.save_rate"),
            ("[decision]\nsave_rate = 1.5\n", "decision.save_rate"),
            ("[decision]\nvalue = \"margin\"\n", "value"),
            (
                "[[decision.bands]]\nname = \"a\"\nupper_probability = 0.5\nplaybook = \"x\"\n\
                 [[decision.bands]]\nname = \"b\"\nupper_probability = 0.4\nplaybook = \"y\"\n",
                "decision.bands[1].upper_probability",
            ),
            (
                "[[decision.bands]]\nname = \"a\"\nupper_probability = 0.5\nplaybook = \"x\"\n",
                "decision.bands[0].upper_probability",
            ),
            (
                "[[decision.bands]]\nname = \"a\"\nupper_probability = 0.5\nplaybook = \"x\"\n\
                 [[decision.bands]]\nname = \"a\"\nupper_probability = 1.0\nplaybook = \"y\"\n",
                "decision.bands[1].name",
            ),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(text, "f.toml").unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn logistic_penalty_is_one_value_or_a_grid() {
        let one = Config::from_toml("[model]\nlogistic_l2 = 100\n", "f.toml").unwrap();
        assert_eq!(one.model.logistic_l2, vec![100.0]);
        let grid = Config::from_toml("[model]\nlogistic_l2 = [0.5, 50]\n", "f.toml").unwrap();
        assert_eq!(grid.model.logistic_l2, vec![0.5, 50.0]);
        for bad in ["[]", "0", "[1, -2]"] {
            let err = Config::from_toml(&format!("[model]\nlogistic_l2 = {bad}\n"), "f.toml").unwrap_err();
            assert!(err.to_string().contains("model.logistic_l2"), "{bad}: {err}");
        }
    }

    #[test]
    fn env_expansion() {
        std::env::set_var("FIDELIS_TEST_DIR_X", "/data");
        assert_eq!(expand_env("${FIDELIS_TEST_DIR_X}/a.csv").unwrap(), "/data/a.csv");
        assert_eq!(expand_env("${FIDELIS_TEST_UNSET_Y:-../d}/a.csv").unwrap(), "../d/a.csv");
        assert!(expand_env("${FIDELIS_TEST_UNSET_Y}/a.csv").is_err());
        assert!(expand_env("${OPEN").is_err());
        assert_eq!(expand_env("plain").unwrap(), "plain");
    }
}
