//! fidelis: churn and customer-lifetime-value models from transaction logs.
//!
//! Data flows one way (see DESIGN.md):
//! `ingest` -> `split` (snapshot protocol) -> `features` (point-in-time features and labels)
//! -> `train` (GBDT + baselines, `metrics`) -> `calibration` + `threshold` (the decision:
//! calibrated probabilities, cost-weighted contact threshold, risk bands) -> `artifact`
//! (versioned model directory).
//! `score` (the weekly batch: every eligible customer at `as_of`) -> `sink` (Parquet
//! partitions, SQLite, PostgreSQL), under the output `lock` -> `monitor` (drift against the
//! model's reference, realized performance of matured runs, retrain advice).
//! `report` writes the evaluation report of a model and the weekly report of a run (HTML,
//! Markdown, JSON). `activity` reads the optional events and customer table; `signals`
//! turns them into features, the health score, review flags and escalations. `bgnbd` holds
//! the BG/NBD + Gamma-Gamma models (a baseline and features).
//! `generate` makes realistic synthetic transaction logs (and SaaS data) for demos and
//! benchmarks.

pub mod activity;
pub mod bgnbd;
pub mod calibration;
pub mod config;
pub mod error;
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
pub mod predict;
pub mod progress;
pub mod report;
pub mod rng;
pub mod schema;
pub mod score;
pub mod signals;
pub mod sink;
pub mod split;
pub mod threshold;
pub mod train;

pub use config::Config;
pub use error::{Error, Result};
