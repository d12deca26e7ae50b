//! The `fidelis` command line. A thin edge: parse arguments, call one job of the library,
//! print its outcome to stdout, and map errors to exit codes (0 ok, 1 internal error, 2 bad
//! input or config, 3 alert, 4 locked, 5 sink failed, 6 failed after the scores, 7 delivery
//! failed).

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::{Parser, Subcommand};

use fidelis::generate::{self, GenerateOptions};
use fidelis::progress::Progress;
use fidelis::{jobs, Config};

/// `println!` that does not panic when stdout is closed (`fidelis backtest | head`): what
/// cannot be written is dropped and the run's exit code stands.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "fidelis",
    version,
    about = "Churn and customer-lifetime-value models from transaction logs",
    long_about = "fidelis reads a transaction log, builds point-in-time correct features at \
                  chronological snapshot dates, and trains gradient-boosted churn and CLV models \
                  evaluated on a later holdout.\n\n\
                  Quick start:\n  \
                  fidelis generate --customers 50000 --out data/generated\n  \
                  fidelis validate --config fidelis.toml\n  \
                  fidelis train --config fidelis.toml\n  \
                  fidelis score --config fidelis.toml\n\n\
                  Exit codes: 0 ok, 1 internal error, 2 bad input, configuration or model, \
                  3 monitoring alert (with --fail-on-alert), 4 another run holds the output \
                  lock, 5 an output could not be written (a sink rolled back), 6 the scores were \
                  written but monitoring or the report then failed, 7 the run is written but \
                  an alert or CRM batch could not be delivered (a rerun sends what is missing).\n\
                  Progress goes to stderr (only on a terminal); results go to stdout.\n\
                  Set RUST_LOG=info for step timings in logs."
)]
struct Cli {
    /// No progress output on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a realistic synthetic transaction log (Parquet) for demos and benchmarks.
    Generate {
        /// Number of customers.
        #[arg(long, default_value_t = 50_000)]
        customers: usize,
        /// Random seed: the same seed gives byte-identical data.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output directory; the file is <OUT>/transactions.parquet.
        #[arg(long, default_value = "data/generated")]
        out: PathBuf,
        /// First day of the simulated period (YYYY-MM-DD).
        #[arg(long, default_value = "2023-01-01")]
        start: NaiveDate,
        /// Length of the simulated period in days.
        #[arg(long, default_value_t = 730)]
        days: i32,
        /// Share of rows made invalid on purpose (missing ids, timestamps, amounts).
        #[arg(long, default_value_t = 0.0002)]
        messy_share: f64,
        /// Behaviour change: from this date a share of the customers buy less (for
        /// monitoring demos and tests).
        #[arg(long)]
        shift_date: Option<NaiveDate>,
        /// Share of the customers the change affects.
        #[arg(long, default_value_t = 0.3, requires = "shift_date")]
        shift_share: f64,
        /// Their purchase rate is multiplied by this from the shift date.
        #[arg(long, default_value_t = 0.1, requires = "shift_date")]
        shift_rate: f64,
        /// `rate`: the share of the customers buy at shift-rate times their rate from the
        /// shift date. `acquisition`: the share are a new channel's customers, who join after
        /// the shift date and buy at shift-rate times the usual rate (the base's mix changes,
        /// each kind of customer behaves as before).
        #[arg(long, value_enum, default_value_t = ShiftKindArg::Rate, requires = "shift_date")]
        shift_kind: ShiftKindArg,
        /// `retail`: a purchase log (transactions.parquet). `saas`: subscriptions, also with
        /// product events, a customer table and the subscription table (events.parquet,
        /// customers.parquet, subscriptions.parquet).
        #[arg(long, value_enum, default_value_t = Kind::Retail)]
        kind: Kind,
        /// With --kind saas: annual contracts paid up front beside monthly ones, cancellation
        /// notices ahead of the end of the term, expansions beside downgrades, and the true
        /// weekly hazard in hazard.parquet.
        #[arg(long)]
        contracts: bool,
        /// A campaign that followed fidelis: the output directory of weekly runs scored on
        /// these customers (same options and seed). Each customer in a run's experiment is
        /// contacted at its first run unless it is a control; writes the realized data
        /// (transactions.parquet; with --kind saas also events and customers) and
        /// truth.parquet (both potential outcomes per customer).
        #[arg(long)]
        campaign: Option<PathBuf>,
        /// The outcome window of truth.parquet, in days (the model's horizon).
        #[arg(long, default_value_t = 90, requires = "campaign")]
        horizon_days: i32,
        /// How customers respond to a contact: `mixed` (persuadables, sleeping dogs, lost
        /// causes, sure things), `none` (no effect), `harmful` (annoys, wins nobody back).
        #[arg(long, value_enum, default_value_t = CampaignResponse::Mixed, requires = "campaign")]
        campaign_response: CampaignResponse,
    },
    /// Read and validate the transaction log; print what was kept and dropped, by reason.
    Validate {
        /// Configuration file.
        #[arg(long, short, default_value = "fidelis.toml")]
        config: PathBuf,
        /// Print the summary as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Build features, train the churn and CLV models and baselines, evaluate on the
    /// holdout, and write models/<model_id>/ (models/latest points at it).
    Train {
        /// Configuration file.
        #[arg(long, short, default_value = "fidelis.toml")]
        config: PathBuf,
        /// Also write the training matrix (features, labels, each row's role: fit,
        /// validation, holdout) to this Parquet file.
        #[arg(long)]
        export_features: Option<PathBuf>,
        /// Use only the transactions before this date (YYYY-MM-DD), as if the data ended
        /// there (a shortened history, or what a model trained then would have been).
        #[arg(long)]
        until: Option<NaiveDate>,
        /// With [mlflow] registered_model: move the alias (e.g. champion) to the new version
        /// whatever its holdout ROC AUC (by default it moves only when the new version's is at
        /// least the aliased version's).
        #[arg(long)]
        promote: bool,
    },
    /// Rolling-origin evaluation: the whole training run repeated at the last ORIGINS
    /// snapshots whose labels are complete, each with only what was known then; the shipped
    /// models' holdout metrics per origin with their mean and spread, beside fidelis's own
    /// BG/NBD and logistic references. Writes <reports_dir>/rolling_origins.{json,md}; the
    /// models directory is not touched.
    Evaluate {
        /// Configuration file.
        #[arg(long, short, default_value = "fidelis.toml")]
        config: PathBuf,
        /// Number of origins (the protocol's holdout, then one step earlier each).
        #[arg(long, default_value_t = 3)]
        origins: usize,
        /// Use only the transactions before this date, as `train --until`.
        #[arg(long)]
        until: Option<NaiveDate>,
    },
    /// Score every customer eligible at AS_OF with a trained model and write the configured
    /// sinks: <output>/scores/run=DATE/ and <output>/top_risk/run=DATE/ (Parquet), SQLite,
    /// PostgreSQL.
    /// A rerun for the same date replaces that date's rows.
    Score(BatchArgs),
    /// The scheduled job (cron, systemd timer, Airflow): `score` then `monitor` at the same
    /// date, under one lock. Exit codes: 0 ok, 2 bad input/config/model, 3 an alert with
    /// --fail-on-alert, 4 another run holds the output lock, 5 an output could not be
    /// written, 6 the scores were written but monitoring or the report failed, 7 the run is
    /// written but an alert or CRM batch was not delivered.
    Weekly {
        #[command(flatten)]
        batch: BatchArgs,
        /// Exit with code 3 when monitoring raises an alert (to page someone).
        #[arg(long)]
        fail_on_alert: bool,
    },
    /// Drift of the features and scores at AS_OF against the model's reference, realized
    /// performance of past runs whose outcome window has closed, retrain advice; appended to
    /// <output>/monitoring/metrics_history.parquet and the SQL table model_monitoring.
    Monitor {
        #[command(flatten)]
        batch: BatchArgs,
        /// Exit with code 3 when there is an alert.
        #[arg(long)]
        fail_on_alert: bool,
    },
    /// Regenerate reports: the evaluation of a model (reports/<model_id>/evaluation.html,
    /// .md, .json) and, with --weekly, the weekly report of a scoring run
    /// (reports/weekly/<as_of>.html, .md, .json).
    Report {
        /// Configuration file.
        #[arg(long, short, default_value = "fidelis.toml")]
        config: PathBuf,
        /// Model id; default: the one models/latest names.
        #[arg(long)]
        model: Option<String>,
        /// Also regenerate the weekly report of the latest scoring run, from its stored
        /// scores and monitoring history (nothing is monitored or written but the report).
        #[arg(long)]
        weekly: bool,
        /// The scoring run to report on (with --weekly); default: the latest.
        #[arg(long, requires = "weekly")]
        as_of: Option<NaiveDate>,
    },
    /// Replay the weekly job over history with one model trained on the data before --from,
    /// and fill a monitoring history: how AUC and drift would have evolved.
    Backtest {
        /// Configuration file.
        #[arg(long, short, default_value = "fidelis.toml")]
        config: PathBuf,
        /// First replayed date; the model is trained on the transactions before it.
        #[arg(long)]
        from: NaiveDate,
        /// Last replayed date; default: the last date whose outcome window the data covers.
        #[arg(long)]
        to: Option<NaiveDate>,
        /// Days between replayed runs.
        #[arg(long, default_value_t = 7)]
        every: i64,
        /// Output directory; default <output.dir>/backtest.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CampaignResponse {
    Mixed,
    None,
    Harmful,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Kind {
    Retail,
    Saas,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ShiftKindArg {
    Rate,
    Acquisition,
}

#[derive(clap::Args)]
struct BatchArgs {
    /// Configuration file (input and output; features come from the model's own config).
    #[arg(long, short, default_value = "fidelis.toml")]
    config: PathBuf,
    /// Score as of this date (YYYY-MM-DD); default: the day after the last transaction.
    #[arg(long)]
    as_of: Option<NaiveDate>,
    /// Model id under the models directory; default: the one models/latest names.
    #[arg(long)]
    model: Option<String>,
    /// Deliver nothing: print the alerts and CRM batches `[notify]` and `[crm]` would send
    /// (the scores and reports are written as usual; the delivery log is not touched).
    #[arg(long)]
    dry_run: bool,
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// Run `job` with the configuration's `s3://` roots mirrored locally (`jobs::remote`): pulled
/// before, published after the job succeeded, or after it failed with its scores written
/// (exit 6). A failed publish is exit 5.
fn with_remote<T>(cfg: Config, job: impl FnOnce(&Config) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let (local, mirror) = jobs::remote::Mirror::open(&cfg)?;
    let result = job(&local);
    let scores_written = match &result {
        Ok(_) => true,
        Err(e) => matches!(e.downcast_ref::<fidelis::Error>(), Some(fidelis::Error::AfterScores { .. })),
    };
    if scores_written {
        let published = mirror.publish()?;
        if published.uploaded + published.deleted > 0 {
            log::info!(
                "s3: {} files published, {} deleted, markers {:?}",
                published.uploaded,
                published.deleted,
                published.markers
            );
        }
    }
    result
}

/// Exit code of a monitoring result: 3 with alerts when asked to fail on them.
fn alert_exit(alerts: bool, fail_on_alert: bool) -> ExitCode {
    if alerts && fail_on_alert {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}

/// The exit code of `weekly` (and what stdout says when two apply): 3 for an alert with
/// `--fail-on-alert` takes precedence over 7 for a failed delivery. The alert is the more
/// urgent news, and a scheduler that alerts on 3 carries it when the channels could not.
fn weekly_exit(alert: bool, delivery_failed: bool) -> (u8, Option<&'static str>) {
    match (alert, delivery_failed) {
        (true, true) => (
            3,
            Some(
                "exit 3: monitoring raised an alert (--fail-on-alert); delivery also failed (exit 7 \
                 without the alert): rerun the same as_of to send what is missing",
            ),
        ),
        (true, false) => (3, None),
        (false, true) => (7, None),
        (false, false) => (0, None),
    }
}

/// Whether an alert or a CRM batch could not be delivered (exit 7; the scores are written and
/// a rerun of the same as_of sends only what is missing).
fn delivery_failed(outcome: &jobs::score::BatchOutcome) -> bool {
    outcome.delivery.as_ref().is_some_and(|d| d.failed())
}

/// A failed `score` or `weekly`: tell the rules listening to `run_failed` (not when another
/// run holds the lock: that run is alive), then pass the error on.
fn failed_run(cfg: &Config, args: &BatchArgs, command: &str, e: fidelis::Error) -> fidelis::Error {
    if !matches!(e, fidelis::Error::Locked { .. }) {
        let as_of = args.as_of.unwrap_or_else(|| chrono::Utc::now().date_naive());
        if let Some(d) = jobs::notify::run_failed(cfg, as_of, command, &e.to_string(), args.dry_run) {
            out!("{d}");
        }
    }
    e
}

impl BatchArgs {
    fn options(&self) -> jobs::BatchOptions {
        jobs::BatchOptions { as_of: self.as_of, model: self.model.clone(), dry_run: self.dry_run }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let progress = Progress::new(cli.quiet);
    match cli.command {
        Command::Generate {
            customers,
            seed,
            out,
            start,
            days,
            messy_share,
            shift_date,
            shift_share,
            shift_rate,
            shift_kind,
            kind,
            contracts,
            campaign,
            horizon_days,
            campaign_response,
        } => {
            let shift = shift_date.map(|d| generate::Shift {
                day: (d - start).num_days() as i32,
                share: shift_share,
                rate_factor: shift_rate,
                kind: match shift_kind {
                    ShiftKindArg::Rate => generate::ShiftKind::Rate,
                    ShiftKindArg::Acquisition => generate::ShiftKind::Acquisition,
                },
            });
            let opts = GenerateOptions { customers, seed, start, days, messy_share, shift, contracts };
            let kind = match kind {
                Kind::Retail => jobs::generate::Kind::Retail,
                Kind::Saas => jobs::generate::Kind::Saas,
            };
            match campaign {
                Some(output) => {
                    out!(
                        "{}",
                        jobs::generate::run_campaign(
                            &opts,
                            kind,
                            &output,
                            horizon_days,
                            match campaign_response {
                                CampaignResponse::Mixed => generate::Response::Mixed,
                                CampaignResponse::None => generate::Response::Nil,
                                CampaignResponse::Harmful => generate::Response::Harmful,
                            },
                            &out,
                            &progress,
                        )?
                    )
                }
                None => out!("{}", jobs::generate::run(&opts, kind, &out, &progress)?),
            }
        }
        Command::Validate { config, json } => {
            let outcome = jobs::validate::run(&load_config(&config)?, &progress)?;
            if json {
                out!("{}", outcome.to_json()?);
            } else {
                out!("{outcome}");
            }
        }
        Command::Train { config, export_features, until, promote } => {
            let opts = jobs::train::TrainOptions { cutoff: until, export_features, promote };
            let outcome =
                with_remote(load_config(&config)?, |cfg| Ok(jobs::train::run(cfg, &opts, &progress)?))?;
            out!("{outcome}");
        }
        Command::Evaluate { config, origins, until } => {
            let name = config.display().to_string();
            let outcome = with_remote(load_config(&config)?, |cfg| {
                Ok(jobs::evaluate::run(cfg, &name, origins, until, &progress)?)
            })?;
            out!("{outcome}");
        }
        Command::Score(args) => {
            let outcome = with_remote(load_config(&args.config)?, |cfg| {
                Ok(jobs::score::run(cfg, &args.options(), &progress)
                    .map_err(|e| failed_run(cfg, &args, "score", e))?)
            })?;
            out!("{outcome}");
            if delivery_failed(&outcome) {
                return Ok(ExitCode::from(7));
            }
        }
        Command::Weekly { batch, fail_on_alert } => {
            let outcome = with_remote(load_config(&batch.config)?, |cfg| {
                Ok(jobs::score::weekly(cfg, &batch.options(), &progress)
                    .map_err(|e| failed_run(cfg, &batch, "weekly", e))?)
            })?;
            out!("{outcome}");
            let (code, note) =
                weekly_exit(outcome.monitor.has_alert() && fail_on_alert, delivery_failed(&outcome.batch));
            if let Some(note) = note {
                out!("{note}");
            }
            return Ok(ExitCode::from(code));
        }
        Command::Monitor { batch, fail_on_alert } => {
            let report = with_remote(load_config(&batch.config)?, |cfg| {
                Ok(jobs::monitor::run(cfg, &batch.options(), &progress)?)
            })?;
            out!("{report}");
            return Ok(alert_exit(report.has_alert(), fail_on_alert));
        }
        Command::Report { config, model, weekly, as_of } => {
            let weekly = weekly.then_some(as_of);
            let outcome = with_remote(load_config(&config)?, |cfg| {
                Ok(jobs::report::run(cfg, model.as_deref(), weekly, &progress)?)
            })?;
            out!("{outcome}");
        }
        Command::Backtest { config, from, to, every, out } => {
            let opts = jobs::backtest::BacktestOptions { from, to, every_days: every, out };
            out!("{}", jobs::backtest::run(&load_config(&config)?, &opts, &progress)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if cli.quiet { "error" } else { "warn" };
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level));
    // HTTP, SMTP and TLS clients log requests (URLs, which hold webhook secrets) at debug
    // level: never below warn, whatever RUST_LOG says.
    for module in ["ureq", "ureq_proto", "lettre", "rustls"] {
        logger.filter_module(module, log::LevelFilter::Warn);
    }
    logger.format_target(false).init();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            // Library errors already carry their cause in the message.
            match err.downcast_ref::<fidelis::Error>() {
                Some(e) => {
                    if let fidelis::Error::AfterScores { done, .. } = e {
                        // What was written stays written: say so where results go.
                        out!("{done}");
                        out!("the scores above are written; the rest of the run failed (exit 6)");
                    }
                    eprintln!("error: {e}");
                    ExitCode::from(e.exit_code())
                }
                None => {
                    eprintln!("error: {err:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::weekly_exit;

    #[test]
    fn an_alert_exit_is_not_hidden_by_a_failed_delivery_and_both_are_said() {
        assert_eq!(weekly_exit(false, false), (0, None));
        assert_eq!(weekly_exit(false, true), (7, None));
        assert_eq!(weekly_exit(true, false), (3, None));
        let (code, note) = weekly_exit(true, true);
        assert_eq!(code, 3);
        assert!(note.is_some_and(|n| n.contains("exit 3") && n.contains("exit 7")));
    }
}
