//! fidelis: churn and customer-lifetime-value models from transaction logs.
//!
//! The crate is layered and data flows one way (ARCHITECTURE.md has the picture, what each
//! module owns, and the layer order the layering test checks):
//!
//! - **jobs** (top): one job per command (`train`, `score`, `weekly`, `monitor`, `backtest`,
//!   `report`, `validate`, `generate`); the only users of the output lock and of progress.
//! - **report**: the evaluation and weekly reports, from artifacts and run outputs.
//! - **score** (the scores table: ranks, RFM, reasons, signals) <- **predict** (a loaded
//!   model applied to features) <- **model** (the artifact: types, files, store, loader).
//! - stages: `monitor` (drift, realized performance), `train` (fits, out-of-time choice),
//!   `calibration`, `threshold`, `signals`, `features`, `bgnbd`, `split`, `ingest`,
//!   `activity`, `sink`, `generate`.
//! - foundations: `config`, `metrics`, `lock`, `progress`, `rng`, `files`, `format`,
//!   `math`, `schema`, `error`.

#![warn(clippy::too_many_lines)]

pub mod activity;
pub mod bgnbd;
pub mod calibration;
pub mod config;
pub mod error;
pub mod experiment;
pub mod features;
pub mod files;
pub mod format;
pub mod generate;
pub mod ingest;
pub mod jobs;
pub mod lock;
pub mod math;
pub mod metrics;
pub mod model;
pub mod monitor;
pub mod notify;
pub mod predict;
pub mod progress;
pub mod qini;
pub mod report;
pub mod rng;
pub mod s3;
pub mod schema;
pub mod score;
pub mod signals;
pub mod sink;
pub mod split;
pub mod table;
pub mod threshold;
pub mod train;

pub use config::Config;
pub use error::{Error, Result};
