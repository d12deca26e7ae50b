//! The `fidelis` command line. A thin edge: parse arguments, call the library, print results
//! to stdout, and map errors to exit codes (0 ok, 1 internal error, 2 bad input or config).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::NaiveDate;
use clap::{Parser, Subcommand};

use fidelis::generate::{self, GenerateOptions};
use fidelis::progress::Progress;
use fidelis::{ingest, score, train, Config};

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
                  4 another run holds the output lock, 5 an output sink failed (rolled back).\n\
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
    },
    /// Score every customer eligible at AS_OF with a trained model and write the configured
    /// sinks: <output>/scores/as_of=DATE/{scores,top_risk}.parquet, SQLite, PostgreSQL.
    /// A rerun for the same date replaces that date's rows.
    Score(BatchArgs),
    /// The scheduled job (cron, systemd timer, Airflow): the weekly batch of `score`; monitoring
    /// and reports join it as they are built. Exit codes: 0 ok, 2 bad input/config/model,
    /// 4 another run holds the output lock, 5 an output sink failed (rolled back).
    Weekly(BatchArgs),
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
}

fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let progress = Progress::new(cli.quiet);
    match cli.command {
        Command::Generate { customers, seed, out, start, days, messy_share } => {
            let opts = GenerateOptions { customers, seed, start, days, messy_share };
            let mut df = progress.step("generate", &format!("generating {customers} customers"), || {
                generate::generate(&opts)
            })?;
            let path = out.join("transactions.parquet");
            progress
                .step("write", "writing parquet", || fidelis::sink::write_parquet_atomic(&mut df, &path))?;
            println!("wrote {} ({} transactions, {} customers)", path.display(), df.height(), customers);
        }
        Command::Validate { config, json } => {
            let cfg = load_config(&config)?;
            let tx = progress.step("ingest", "reading and validating transactions", || {
                ingest::load_transactions(&cfg.input.transactions)
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tx.summary).context("serializing the summary")?);
            } else {
                println!("{}", tx.summary);
            }
        }
        Command::Train { config } => {
            let cfg = load_config(&config)?;
            let outcome = train::train(&cfg, &progress)?;
            print!("{}", train::summary_table(&outcome.metrics));
            println!("model {} written to {}", outcome.model_id, outcome.dir.display());
        }
        Command::Score(args) | Command::Weekly(args) => {
            let cfg = load_config(&args.config)?;
            let opts = score::BatchOptions { as_of: args.as_of, model: args.model };
            let outcome = score::run_batch(&cfg, &opts, &progress)?;
            println!("{}", outcome.summary);
            for w in &outcome.written {
                println!("written to {w}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if cli.quiet { "error" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_target(false)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Library errors already carry their cause in the message.
            match err.downcast_ref::<fidelis::Error>() {
                Some(e) => {
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
