//! Loading a model directory for scoring and monitoring, whatever format it was written in.
//!
//! Format 1 (before `format_version` existed) stored the whole configuration in `model.json`;
//! its feature settings are read from there (keys missing in it take today's defaults, keys
//! unknown today are ignored), so a config key renamed or removed later never makes a model
//! unreadable. A `format_version` newer than [`FORMAT_VERSION`] is refused.
//!
//! A model directory edited by hand or damaged is refused (exit 2, naming the file and what is
//! wrong), never loaded to panic or to score differently: every file is checked against the
//! SHA-256 that `model.json` records for it, and every part is checked for structure (see
//! [`check`]) so that even an edit whose checksum was rewritten cannot mis-score silently.

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
use crate::train::gbdt::Task;
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
    /// The uplift model, when one shipped with this model.
    pub uplift: Option<crate::train::uplift::UpliftModel>,
    /// The survival model, when one shipped with this model.
    pub survival: Option<crate::train::survival::SurvivalModel>,
}

fn artifact_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Artifact { path: path.to_path_buf(), message: message.into() }
}

/// A file of the model directory, checked against the checksum `model.json` records for it
/// (models written before checksums record none: their files are read as they are).
fn read_checked(dir: &Path, info: &ModelInfo, name: &str) -> Result<Vec<u8>> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|e| artifact_error(&path, format!("cannot read: {e}")))?;
    if info.checksums.is_empty() {
        return Ok(bytes);
    }
    match info.checksums.get(name) {
        Some(want) => {
            let got = super::sha256_hex(&bytes);
            if &got != want {
                return Err(artifact_error(
                    &path,
                    format!(
                        "changed after training: its SHA-256 is {} but model.json records {}; restore \
                         the file or retrain the model",
                        &got[..16],
                        &want[..want.len().min(16)]
                    ),
                ));
            }
            Ok(bytes)
        }
        None => Err(artifact_error(&path, "not among the files model.json records a checksum for")),
    }
}

fn json_checked<T: serde::de::DeserializeOwned>(dir: &Path, info: &ModelInfo, name: &str) -> Result<T> {
    let path = dir.join(name);
    let bytes = read_checked(dir, info, name)?;
    serde_json::from_slice(&bytes).map_err(|e| artifact_error(&path, format!("invalid: {e}")))
}

/// Load `models_dir/<id>` (or the model `latest` names), checked (see the module docs).
pub fn load(models_dir: &Path, id: Option<&str>) -> Result<LoadedModel> {
    let dir = store::resolve(models_dir, id)?;
    let info = read_info(&dir)?;
    let engine = |name: &str| -> Result<Engine> {
        let p = dir.join(name);
        let bytes = read_checked(&dir, &info, name)?;
        let text = String::from_utf8(bytes).map_err(|_| artifact_error(&p, "not UTF-8 text"))?;
        Engine::from_json(&text).map_err(|e| artifact_error(&p, e.to_string()))
    };
    // Models trained before a candidate existed have no file for it (and a mix that does
    // not use it); a model whose mix uses it must have it.
    let logistic: Option<Logistic> = optional_part(
        &dir,
        &info,
        file::LOGISTIC,
        info.churn_model.uses_logistic(),
        &format!("the churn model is '{}'", info.churn_model.name()),
    )?;
    let poisson: Option<PoissonGbdt> = optional_part(
        &dir,
        &info,
        file::CLV_POISSON,
        info.clv_model.uses_poisson(),
        &format!("the CLV model is '{}'", info.clv_model.name()),
    )?;
    let uplift = match info.uplift {
        None => None,
        Some(learner) => {
            let p = dir.join(file::UPLIFT);
            let bytes = read_checked(&dir, &info, file::UPLIFT)?;
            let text = String::from_utf8(bytes).map_err(|_| artifact_error(&p, "not UTF-8 text"))?;
            let m = crate::train::uplift::UpliftModel::from_json(&text)
                .map_err(|e| artifact_error(&p, e.to_string()))?;
            if m.learner != learner {
                return Err(artifact_error(
                    &p,
                    format!("a {}, but model.json says {}", m.learner.name(), learner.name()),
                ));
            }
            Some(m)
        }
    };
    let survival = if info.survival {
        let p = dir.join(file::SURVIVAL);
        let bytes = read_checked(&dir, &info, file::SURVIVAL)?;
        let text = String::from_utf8(bytes).map_err(|_| artifact_error(&p, "not UTF-8 text"))?;
        Some(
            crate::train::survival::SurvivalModel::from_json(&text)
                .map_err(|e| artifact_error(&p, e.to_string()))?,
        )
    } else {
        None
    };
    let model = LoadedModel {
        uplift,
        survival,
        churn: ChurnModel {
            mix: info.churn_model,
            gbdt: engine(file::CHURN_GBDT)?,
            logistic,
            explain: info.bgnbd_explainer,
        },
        clv: ClvModel { mix: info.clv_model, gbdt: engine(file::CLV_GBDT)?, poisson },
        calibrator: json_checked(&dir, &info, file::CALIBRATION)?,
        decision: json_checked(&dir, &info, file::DECISION)?,
        info,
        dir,
    };
    check(&model)?;
    Ok(model)
}

/// The structure of a loaded model's parts, against each other and against `model.json`:
/// each GBDT of its task and reading only features the model has; the logistic part with one
/// finite coefficient per feature, in the model's feature order; a calibrator that is a
/// monotone map into [0, 1]; a threshold in [0, 1] (or none only when no threshold had a
/// positive net value on validation); risk bands that cover [0, 1] in order.
pub fn check(m: &LoadedModel) -> Result<()> {
    // A feature list that does not match the model's settings is refused where the features
    // are built, with what the inputs need ([`LoadedModel::feature_names`],
    // [`LoadedModel::check_inputs`]); the checks against the list wait for a list that holds.
    if m.feature_names().is_ok() {
        check_parts(m)?;
    }
    m.calibrator.check().map_or(Ok(()), |why| Err(artifact_error(&m.dir.join(file::CALIBRATION), why)))?;
    check_decision(m)
}

/// The GBDTs and the logistic part against the model's features.
fn check_parts(m: &LoadedModel) -> Result<()> {
    let n = m.info.features.len();
    let part = |name: &str, why: String| Err(artifact_error(&m.dir.join(name), why));
    for (name, gbdt, task) in
        [(file::CHURN_GBDT, &m.churn.gbdt, Task::Churn), (file::CLV_GBDT, &m.clv.gbdt, Task::Clv)]
    {
        let (has, _) = gbdt.compiled();
        if has != task {
            return part(name, format!("a {} model where the {} model belongs", has.name(), task.name()));
        }
        if let Some(f) = gbdt.max_feature().filter(|&f| f >= n) {
            return part(name, format!("a split reads feature {f}, but the model has {n} features"));
        }
    }
    if let Some(f) = m.clv.poisson.as_ref().and_then(PoissonGbdt::max_feature).filter(|&f| f >= n) {
        return part(file::CLV_POISSON, format!("a split reads feature {f}, but the model has {n} features"));
    }
    if let Some(l) = &m.churn.logistic {
        let s = &l.scaler;
        let lens = [l.coef.len(), s.mean.len(), s.std.len()];
        if l.features != m.info.features || lens.iter().any(|&k| k != n) {
            return part(
                file::LOGISTIC,
                format!(
                    "{} coefficients ({} scaler columns) for features [{}], but the model has {n} features [{}]",
                    l.coef.len(),
                    s.mean.len(),
                    l.features.join(", "),
                    m.info.features.join(", ")
                ),
            );
        }
        if (!s.lo.is_empty() && s.lo.len() != n) || (!s.hi.is_empty() && s.hi.len() != n) {
            return part(file::LOGISTIC, "the clipping ranges do not match the features".into());
        }
        let all = l.coef.iter().chain(&s.mean).chain(&s.std).chain(&s.lo).chain(&s.hi).chain([&l.intercept]);
        if all.clone().any(|v| !v.is_finite()) || s.std.iter().any(|&v| v <= 0.0) {
            return part(file::LOGISTIC, "a coefficient or scaling value is not a finite number".into());
        }
    }
    Ok(())
}

/// The threshold and the risk bands.
fn check_decision(m: &LoadedModel) -> Result<()> {
    let part = |name: &str, why: String| Err(artifact_error(&m.dir.join(name), why));
    let d = &m.decision;
    match d.threshold {
        Some(t) if !(0.0..=1.0).contains(&t) => {
            return part(file::DECISION, format!("threshold {t} is not a probability in [0, 1]"))
        }
        None if d.validation_curve.iter().any(|c| c.net_value > 0.0) => {
            return part(
                file::DECISION,
                "no threshold, but the validation curve has thresholds with a positive net value".into(),
            )
        }
        _ => {}
    }
    let bands = &d.bands.bands;
    let ordered = bands.windows(2).all(|w| w[0].upper <= w[1].upper && w[0].score_max < w[1].score_max);
    if bands.is_empty() || !ordered || bands.last().is_some_and(|b| b.upper != 1.0) {
        return part(file::DECISION, "the risk bands are not increasing bands ending at 1.0".into());
    }
    Ok(())
}

/// A candidate's file in a model directory: read when present (it holds `null` when training
/// did not fit it), an error naming it when `needed` (`why` says by what), else `None`.
fn optional_part<T: serde::de::DeserializeOwned>(
    dir: &Path,
    info: &ModelInfo,
    name: &str,
    needed: bool,
    why: &str,
) -> Result<Option<T>> {
    let path = dir.join(name);
    if path.exists() {
        let part: Option<T> = json_checked(dir, info, name)?;
        if part.is_none() && needed {
            return Err(artifact_error(&path, format!("empty (null): {why}, which needs it")));
        }
        Ok(part)
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
        let cancellation = self.info.feature_spec.churn == crate::config::ChurnRule::Cancellation;
        if (self.info.signals.needs_subscriptions() || cancellation) && signals.subscriptions.is_none() {
            return missing(
                "input.subscriptions",
                if cancellation { "churn as a cancellation" } else { "a subscription table" },
            );
        }
        Ok(())
    }

    pub fn metrics(&self) -> Result<TrainMetrics> {
        json_checked(&self.dir, &self.info, file::METRICS)
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
        json_checked(&self.dir, &self.info, file::REFERENCE)
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
        churn: crate::config::ChurnRule::Inactivity,
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
