//! Loading a model directory for scoring and monitoring, whatever format it was written in.
//!
//! Format 1 (before `format_version` existed) stored the whole configuration in `model.json`;
//! its feature settings are read from there (keys missing in it take today's defaults, keys
//! unknown today are ignored), so a config key renamed or removed later never makes a model
//! unreadable. A `format_version` newer than [`FORMAT_VERSION`] is refused.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{file, store, DecisionArtifact, ModelInfo, TrainMetrics, FORMAT_VERSION};
use crate::calibration::Calibrator;
use crate::config::{FeatureConfig, SnapshotConfig};
use crate::error::{Error, Result};
use crate::features::FeatureSpec;
use crate::files::read_json;
use crate::monitor::Reference;
use crate::signals::SignalData;
use crate::train::candidates::{ChurnModel, ClvModel};
use crate::train::gbdt::Gbdt;
use crate::train::linear::Logistic;
use crate::train::poisson::PoissonGbdt;
use crate::train::Engine;

/// A trained model loaded from its directory.
pub struct LoadedModel {
    pub dir: PathBuf,
    pub info: ModelInfo,
    pub churn: ChurnModel,
    pub clv: ClvModel,
    pub calibrator: Calibrator,
    pub decision: DecisionArtifact,
}

fn artifact_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Artifact { path: path.to_path_buf(), message: message.into() }
}

/// Load `models_dir/<id>` (or the model `latest` names).
pub fn load(models_dir: &Path, id: Option<&str>) -> Result<LoadedModel> {
    let dir = store::resolve(models_dir, id)?;
    let info = read_info(&dir)?;
    let engine = |name: &str| -> Result<Engine> {
        let p = dir.join(name);
        let text =
            std::fs::read_to_string(&p).map_err(|e| artifact_error(&p, format!("cannot read: {e}")))?;
        Engine::from_json(&text).map_err(|e| artifact_error(&p, e.to_string()))
    };
    // Models trained before a candidate existed have no file for it (and a mix that does
    // not use it); a model whose mix uses it must have it.
    let logistic: Option<Logistic> = optional_part(
        &dir,
        file::LOGISTIC,
        info.churn_model.uses_logistic(),
        &format!("the churn model is '{}'", info.churn_model.name()),
    )?;
    let poisson: Option<PoissonGbdt> = optional_part(
        &dir,
        file::CLV_POISSON,
        info.clv_model.uses_poisson(),
        &format!("the CLV model is '{}'", info.clv_model.name()),
    )?;
    Ok(LoadedModel {
        churn: ChurnModel {
            mix: info.churn_model,
            gbdt: engine(file::CHURN_GBDT)?,
            logistic,
            explain: info.bgnbd_explainer,
        },
        clv: ClvModel { mix: info.clv_model, gbdt: engine(file::CLV_GBDT)?, poisson },
        calibrator: read_json(&dir.join(file::CALIBRATION))?,
        decision: read_json(&dir.join(file::DECISION))?,
        info,
        dir,
    })
}

/// A candidate's file in a model directory: read when present (it holds `null` when training
/// did not fit it), an error naming it when `needed` (`why` says by what), else `None`.
fn optional_part<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
    needed: bool,
    why: &str,
) -> Result<Option<T>> {
    let path = dir.join(name);
    if path.exists() {
        read_json(&path)
    } else if needed {
        Err(artifact_error(&path, format!("missing: {why}, which needs it")))
    } else {
        Ok(None)
    }
}

impl LoadedModel {
    /// The BG/NBD + Gamma-Gamma parameters scoring uses, when the model has those features.
    pub fn probabilistic(&self) -> Result<Option<&crate::bgnbd::Probabilistic>> {
        match (&self.info.probabilistic, self.info.feature_spec.probabilistic) {
            (_, false) => Ok(None),
            (Some(p), true) => Ok(Some(p)),
            (None, true) => Err(artifact_error(
                &self.dir.join(file::MODEL),
                "the model uses BG/NBD features but has no fitted BG/NBD parameters; retrain it",
            )),
        }
    }

    /// The model's feature names, checked against what this fidelis builds from the model's
    /// own feature settings (in order).
    pub fn feature_names(&self) -> Result<Vec<String>> {
        let mut names = self.info.feature_spec.names();
        names.extend(self.info.signals.names());
        if names != self.info.features {
            return Err(artifact_error(
                &self.dir.join(file::MODEL),
                format!(
                    "the model was trained on features [{}] but this fidelis builds [{}] from its \
                     settings; retrain the model",
                    self.info.features.join(", "),
                    names.join(", ")
                ),
            ));
        }
        Ok(names)
    }

    /// The optional inputs the model's features are built from must be configured: a model
    /// trained with events (or a customer table) scored without them would see every such
    /// feature as zero, a silently wrong answer.
    pub fn check_inputs(&self, signals: &SignalData) -> Result<()> {
        let missing = |section: &str, what: &str| {
            Err(Error::config(
                "(config)",
                section,
                format!(
                    "model {} was trained with {what}, but this configuration has no [{section}]; \
                     configure it, or score with a model trained without it",
                    self.info.model_id
                ),
            ))
        };
        if self.info.signals.needs_events() && signals.events.is_none() {
            return missing("input.events", "product events");
        }
        if self.info.signals.needs_customers() && signals.customers.is_none() {
            return missing("input.customers", "a customer table");
        }
        Ok(())
    }

    pub fn metrics(&self) -> Result<TrainMetrics> {
        read_metrics(&self.dir)
    }

    /// The drift reference (`reference.json`).
    pub fn reference(&self) -> Result<Reference> {
        let path = self.dir.join(file::REFERENCE);
        if !path.is_file() {
            return Err(artifact_error(
                &path,
                "the model has no drift reference (trained by an older fidelis); retrain it",
            ));
        }
        read_json(&path)
    }
}

/// `metrics.json` of a model directory.
pub fn read_metrics(dir: &Path) -> Result<TrainMetrics> {
    read_json(&dir.join(file::METRICS))
}

/// `decision.json` of a model directory.
pub fn read_decision(dir: &Path) -> Result<DecisionArtifact> {
    read_json(&dir.join(file::DECISION))
}

/// `model.json` of a model directory, in any format this fidelis reads.
pub fn read_info(dir: &Path) -> Result<ModelInfo> {
    let path = dir.join(file::MODEL);
    let mut value: Value = read_json(&path)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(artifact_error(&path, "expected a JSON object"));
    };
    let version = match obj.get("format_version") {
        None => 1,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| artifact_error(&path, format!("format_version {v} is not a version number")))?,
    };
    if version > FORMAT_VERSION {
        return Err(artifact_error(
            &path,
            format!(
                "model format version {version} is newer than this fidelis reads (up to \
                 {FORMAT_VERSION}); upgrade fidelis or retrain the model with this one"
            ),
        ));
    }
    if version == 1 {
        upgrade_v1(obj);
    }
    serde_json::from_value(value)
        .map_err(|e| artifact_error(&path, format!("not a model description of format {version}: {e}")))
}

/// Format 1 -> 2: the feature settings out of the stored configuration, the configuration
/// itself replaced by the settings record (without `input`, `output` and `paths`).
fn upgrade_v1(obj: &mut Map<String, Value>) {
    let config = obj.remove("config").unwrap_or(Value::Null);
    let key = |section: &str, key: &str| config.get(section).and_then(|s| s.get(key));
    let int = |section: &str, k: &str, default: i32| {
        key(section, k).and_then(Value::as_i64).and_then(|v| i32::try_from(v).ok()).unwrap_or(default)
    };
    let (f, s) = (FeatureConfig::default(), SnapshotConfig::default());
    let windows = key("features", "windows")
        .and_then(|w| serde_json::from_value::<Vec<i32>>(w.clone()).ok())
        .unwrap_or(f.windows);
    let spec = FeatureSpec {
        windows,
        trend_days: int("features", "trend_days", f.trend_days),
        spend_short_days: int("features", "spend_short_days", f.spend_short_days),
        spend_long_days: int("features", "spend_long_days", f.spend_long_days),
        eligibility_days: int("snapshots", "eligibility_days", s.eligibility_days),
        horizon_days: int("snapshots", "horizon_days", s.horizon_days),
        probabilistic: key("features", "bgnbd").and_then(Value::as_bool).unwrap_or(f.bgnbd),
    };
    obj.insert("feature_spec".into(), serde_json::to_value(spec).unwrap_or(Value::Null));
    let mut settings = Map::new();
    for section in ["snapshots", "features", "model", "baselines", "decision", "health"] {
        if let Some(v) = config.get(section) {
            settings.insert(section.into(), v.clone());
        }
    }
    obj.insert("settings".into(), Value::Object(settings));
}
