//! A trained model into MLflow (`[mlflow]`), through the tracking server's REST API: a run in
//! the experiment with the training settings as parameters, the holdout and validation
//! metrics, the data fingerprint as tags, and as artifacts the model directory packaged as an
//! MLflow `pyfunc` model (`model/MLmodel`, `model/fidelis_model/...`: loaded by
//! `fidelis.mlflow`, so `mlflow.pyfunc.load_model` scores a pandas frame) and the evaluation
//! report (`evaluation/`); then, with `registered_model`, a model version (tags: model id,
//! data fingerprint, holdout ROC AUC) and the alias moved to it when its holdout ROC AUC is at
//! least the aliased version's (or when told to).
//!
//! Artifacts go up through the server (`mlflow server`'s proxied artifact store, its
//! default: `PUT /api/2.0/mlflow-artifacts/artifacts/...`). Credentials come from the
//! environment (`MLFLOW_TRACKING_TOKEN`, or `MLFLOW_TRACKING_USERNAME` + `_PASSWORD`) and are
//! never shown. Any failure is an [`Error::Sink`] naming the server (exit 5); the run, when
//! one was created, is marked FAILED.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::MlflowConfig;
use crate::error::{Error, Result};

/// The model directory's files read here (`model::file` names them; that layer is above).
const MODEL_JSON: &str = "model.json";
const METRICS_JSON: &str = "metrics.json";
const DECISION_JSON: &str = "decision.json";

/// The data directory inside the logged pyfunc model.
pub const MODEL_DATA_DIR: &str = "fidelis_model";
/// The metric the alias compares (and the version tag that records it).
pub const CHAMPION_METRIC: &str = "churn.holdout.roc_auc";

/// What was logged.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    pub tracking_uri: String,
    pub experiment_id: String,
    pub run_id: String,
    /// The registered model's name and the new version.
    pub version: Option<(String, String)>,
    pub alias: Option<AliasMove>,
}

/// What became of the alias.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasMove {
    pub alias: String,
    /// The version it named before and that version's holdout ROC AUC (when recorded).
    pub before: Option<(String, Option<f64>)>,
    pub moved: bool,
    /// Why it moved or stayed.
    pub reason: String,
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MLflow: run {} in experiment {} at {}",
            self.run_id, self.experiment_id, self.tracking_uri
        )?;
        if let Some((name, version)) = &self.version {
            write!(f, "; registered {name} version {version}")?;
        }
        if let Some(a) = &self.alias {
            let verb = if a.moved { "moved to it" } else { "kept" };
            write!(f, "; alias {} {verb} ({})", a.alias, a.reason)?;
        }
        Ok(())
    }
}

struct Client {
    agent: ureq::Agent,
    base: String,
    auth: Option<String>,
}

/// The server's answer: `error_code` and `message` of an MLflow error, or the status.
struct Failure {
    code: String,
    message: String,
}

type Answer = std::result::Result<Value, Failure>;

impl Client {
    fn new(cfg: &MlflowConfig) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(cfg.timeout_seconds)))
            .http_status_as_error(false)
            .user_agent(concat!("fidelis/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let auth = match (env("MLFLOW_TRACKING_TOKEN"), env("MLFLOW_TRACKING_USERNAME")) {
            (Some(token), _) => Some(format!("Bearer {token}")),
            (None, Some(user)) => {
                let pass = env("MLFLOW_TRACKING_PASSWORD").unwrap_or_default();
                Some(format!("Basic {}", base64(format!("{user}:{pass}").as_bytes())))
            }
            _ => None,
        };
        Client { agent, base: cfg.tracking_uri.trim_end_matches('/').to_string(), auth }
    }

    fn answer(resp: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut resp = resp.map_err(|e| Failure { code: "CONNECTION".into(), message: e.to_string() })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let code = body["error_code"].as_str().map_or(format!("HTTP {status}"), str::to_string);
        let mut message =
            body["message"].as_str().map_or_else(|| text.chars().take(300).collect(), str::to_string);
        if message.is_empty() {
            message = format!("HTTP {status}");
        }
        Err(Failure { code, message })
    }

    fn with_auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.auth {
            Some(a) => req.header("Authorization", a),
            None => req,
        }
    }

    fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Answer {
        let mut req = self.with_auth(self.agent.get(format!("{}/api/2.0/mlflow/{endpoint}", self.base)));
        for (k, v) in query {
            req = req.query(k, v);
        }
        Self::answer(req.call())
    }

    fn post(&self, endpoint: &str, body: &Value) -> Answer {
        let req = self.with_auth(self.agent.post(format!("{}/api/2.0/mlflow/{endpoint}", self.base)));
        Self::answer(req.header("Content-Type", "application/json").send(body.to_string().as_bytes()))
    }

    fn put_artifact(&self, root: &str, path: &str, bytes: &[u8]) -> Answer {
        let url = format!("{}/api/2.0/mlflow-artifacts/artifacts/{root}/{path}", self.base);
        let req = self.with_auth(self.agent.put(url)).header("Content-Type", "application/octet-stream");
        Self::answer(req.send(bytes))
    }
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every leaf of `v` as `prefix.key.key` -> text (strings as they are, anything else as JSON).
fn flatten(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(x, &key, out);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        Value::Null => {}
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// The numbers a run records as metrics: the row counts, the churn and CLV models' holdout
/// and validation metrics, the contact threshold.
fn metrics(metrics: &Value, decision: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for k in ["n_fit", "n_validation", "n_holdout"] {
        if let Some(v) = metrics[k].as_f64() {
            out.push((k.to_string(), v));
        }
    }
    for model in ["churn", "clv"] {
        for part in ["holdout", "validation"] {
            if let Some(m) = metrics[model][part].as_object() {
                for (k, v) in m {
                    if let Some(v) = v.as_f64().filter(|v| v.is_finite()) {
                        out.push((format!("{model}.{part}.{k}"), v));
                    }
                }
            }
        }
    }
    if let Some(t) = decision["threshold"].as_f64() {
        out.push(("decision.threshold".into(), t));
    }
    out
}

/// MLflow's `MLmodel` file for the model directory as a `pyfunc` model loaded by
/// `fidelis.mlflow`: input signature (the transaction log's contract columns), the `as_of`
/// parameter.
fn mlmodel(run_id: &str, model_id: &str, artifact_path: &str) -> String {
    let inputs = json!([
        {"type": "string", "name": "customer_id", "required": true},
        {"type": "datetime", "name": "ts", "required": true},
        {"type": "double", "name": "amount", "required": true},
    ]);
    let params = json!([{"name": "as_of", "type": "string", "default": "", "shape": null}]);
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f");
    let uuid = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(format!("{run_id}/{model_id}").as_bytes()));
    format!(
        "artifact_path: {artifact_path}\n\
         flavors:\n  \
           fidelis:\n    \
             model_id: {model_id}\n    \
             fidelis_version: {version}\n    \
             data: {MODEL_DATA_DIR}\n  \
           python_function:\n    \
             data: {MODEL_DATA_DIR}\n    \
             loader_module: fidelis.mlflow\n\
         model_uuid: {uuid}\n\
         run_id: {run_id}\n\
         signature:\n  \
           inputs: '{inputs}'\n  \
           outputs: null\n  \
           params: '{params}'\n\
         utc_time_created: '{now}'\n",
        version = env!("CARGO_PKG_VERSION"),
    )
}

/// The model directory's records a run logs, read once.
struct ModelFiles<'a> {
    dir: &'a Path,
    info: Value,
    metrics: Value,
    decision: Value,
}

impl<'a> ModelFiles<'a> {
    fn read(dir: &'a Path) -> Result<Self> {
        Ok(ModelFiles {
            dir,
            info: crate::files::read_json(&dir.join(MODEL_JSON))?,
            metrics: crate::files::read_json(&dir.join(METRICS_JSON))?,
            decision: crate::files::read_json(&dir.join(DECISION_JSON)).unwrap_or(Value::Null),
        })
    }
}

/// Log the model in `model_dir` (and its evaluation report in `report_dir`, when written) as
/// a run; register it and move the alias as `cfg` says (`promote`: move the alias whatever
/// the metrics).
pub fn log_training(
    cfg: &MlflowConfig,
    model_dir: &Path,
    report_dir: Option<&Path>,
    promote: bool,
) -> Result<Logged> {
    let client = Client::new(cfg);
    let sink = format!("mlflow {}", crate::config::targets::redact(&cfg.tracking_uri));
    let fail = |what: &str, f: Failure| Error::Sink {
        sink: sink.clone(),
        message: format!("{what}: {} ({})", f.message, f.code),
    };
    let model = ModelFiles::read(model_dir)?;
    let info = &model.info;
    let model_id = info["model_id"].as_str().unwrap_or_default().to_string();

    let experiment_id = match client.get("experiments/get-by-name", &[("experiment_name", &cfg.experiment)]) {
        Ok(v) => v["experiment"]["experiment_id"].as_str().unwrap_or_default().to_string(),
        Err(f) if f.code == "RESOURCE_DOES_NOT_EXIST" => client
            .post("experiments/create", &json!({"name": cfg.experiment}))
            .map_err(|f| fail("creating the experiment", f))?["experiment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        Err(f) => return Err(fail(&format!("finding the experiment {:?}", cfg.experiment), f)),
    };
    let tags = [
        ("mlflow.source.name", "fidelis train".to_string()),
        ("mlflow.source.type", "JOB".to_string()),
        ("fidelis.model_id", model_id.clone()),
        ("fidelis.data_fingerprint", info["data"]["xxh3"].as_str().unwrap_or_default().to_string()),
        ("fidelis.data_rows", info["data"]["rows"].to_string()),
        ("fidelis.version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    let tag_list: Vec<Value> = tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
    let run = client
        .post(
            "runs/create",
            &json!({
                "experiment_id": experiment_id,
                "run_name": model_id,
                "start_time": chrono::Utc::now().timestamp_millis(),
                "tags": tag_list,
            }),
        )
        .map_err(|f| fail("creating the run", f))?;
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap_or_default().to_string();
    let artifact_uri = run["run"]["info"]["artifact_uri"].as_str().unwrap_or_default().to_string();
    let logged = log_run(&client, &run_id, &artifact_uri, &model, report_dir);
    let status = if logged.is_ok() { "FINISHED" } else { "FAILED" };
    let ended = client.post(
        "runs/update",
        &json!({"run_id": run_id, "status": status, "end_time": chrono::Utc::now().timestamp_millis()}),
    );
    logged.map_err(|(what, f)| fail(&what, f))?;
    ended.map_err(|f| fail("finishing the run", f))?;

    let mut out = Logged {
        tracking_uri: crate::config::targets::redact(&cfg.tracking_uri),
        experiment_id,
        run_id: run_id.clone(),
        version: None,
        alias: None,
    };
    if cfg.registered_model.is_empty() {
        return Ok(out);
    }
    let (version, alias) = register(&client, cfg, &fail, &model, (&run_id, &artifact_uri), promote)?;
    out.version = Some(version);
    out.alias = alias;
    Ok(out)
}

type Fail<'a> = dyn Fn(&str, Failure) -> Error + 'a;

/// A version of `cfg.registered_model` from the run (its artifact URI's `model/`), the
/// registered model created when missing; the alias moved when the version is at least as good
/// as the aliased one's, or `promote`. The version's name and number, and what became of the
/// alias.
fn register(
    client: &Client,
    cfg: &MlflowConfig,
    fail: &Fail<'_>,
    model: &ModelFiles<'_>,
    (run_id, artifact_uri): (&str, &str),
    promote: bool,
) -> Result<((String, String), Option<AliasMove>)> {
    let info = &model.info;
    let model_id = info["model_id"].as_str().unwrap_or_default();
    let name = cfg.registered_model.as_str();
    if let Err(f) = client.get("registered-models/get", &[("name", name)]) {
        if f.code != "RESOURCE_DOES_NOT_EXIST" {
            return Err(fail(&format!("finding the registered model {name:?}"), f));
        }
        if let Err(f) = client.post("registered-models/create", &json!({"name": name})) {
            // Created meanwhile by another run: fine.
            if f.code != "RESOURCE_ALREADY_EXISTS" {
                return Err(fail(&format!("creating the registered model {name:?}"), f));
            }
        }
    }
    let auc = model.metrics["churn"]["holdout"]["roc_auc"].as_f64();
    let version_tags = json!([
        {"key": "fidelis.model_id", "value": model_id},
        {"key": "fidelis.data_fingerprint", "value": info["data"]["xxh3"].as_str().unwrap_or_default()},
        {"key": CHAMPION_METRIC, "value": auc.map_or(String::new(), |a| a.to_string())},
    ]);
    let created = client
        .post(
            "model-versions/create",
            &json!({"name": name, "source": format!("{artifact_uri}/model"), "run_id": run_id, "tags": version_tags}),
        )
        .map_err(|f| fail(&format!("registering a version of {name:?}"), f))?;
    let version = created["model_version"]["version"].as_str().unwrap_or_default().to_string();
    let registered = (name.to_string(), version.clone());
    if cfg.alias.is_empty() {
        return Ok((registered, None));
    }
    let before = match client.get("registered-models/alias", &[("name", name), ("alias", &cfg.alias)]) {
        Ok(v) => {
            let mv = &v["model_version"];
            let champion_auc = mv["tags"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["key"] == CHAMPION_METRIC))
                .and_then(|t| t["value"].as_str())
                .and_then(|s| s.parse::<f64>().ok());
            let champion_auc = match champion_auc {
                Some(a) => Some(a),
                None => run_metric(client, mv["run_id"].as_str().unwrap_or_default()),
            };
            Some((mv["version"].as_str().unwrap_or_default().to_string(), champion_auc))
        }
        Err(f) if f.code == "RESOURCE_DOES_NOT_EXIST" || f.code == "INVALID_PARAMETER_VALUE" => None,
        Err(f) => return Err(fail(&format!("reading the alias {:?}", cfg.alias), f)),
    };
    let show = |a: Option<f64>| a.map_or("unknown".to_string(), |a| format!("{a:.4}"));
    let (moved, reason) = match (&before, auc) {
        _ if promote => (true, "--promote".to_string()),
        (None, _) => (true, "no version had it".to_string()),
        (Some((v, Some(champion))), Some(new)) if new >= *champion => {
            (true, format!("holdout ROC AUC {} >= {} of version {v}", show(Some(new)), show(Some(*champion))))
        }
        (Some((v, champion)), new) => (
            false,
            format!(
                "holdout ROC AUC {} below version {v}'s {} or not comparable; --promote moves it",
                show(new),
                show(*champion)
            ),
        ),
    };
    if moved {
        client
            .post("registered-models/alias", &json!({"name": name, "alias": cfg.alias, "version": version}))
            .map_err(|f| fail(&format!("setting the alias {:?}", cfg.alias), f))?;
    }
    Ok((registered, Some(AliasMove { alias: cfg.alias.clone(), before, moved, reason })))
}

/// The champion metric a run logged (a version registered by another tool).
fn run_metric(client: &Client, run_id: &str) -> Option<f64> {
    let run = client.get("runs/get", &[("run_id", run_id)]).ok()?;
    run["run"]["data"]["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["key"] == CHAMPION_METRIC)
        .and_then(|m| m["value"].as_f64())
}

/// The part of the run's artifact URI the server's artifact API takes: `mlflow-artifacts:/P`
/// or `mlflow-artifacts://host:port/P` -> `P`; `None` for any other store.
fn proxied_root(artifact_uri: &str) -> Option<&str> {
    let rest = artifact_uri.strip_prefix("mlflow-artifacts:")?;
    Some(match rest.strip_prefix("//") {
        Some(authority_path) => authority_path.split_once('/').map_or("", |x| x.1),
        None => rest.trim_start_matches('/'),
    })
}

/// Parameters, metrics and artifacts of the run; on failure what failed and the answer.
fn log_run(
    client: &Client,
    run_id: &str,
    artifact_uri: &str,
    model: &ModelFiles<'_>,
    report_dir: Option<&Path>,
) -> std::result::Result<(), (String, Failure)> {
    let local =
        |what: &str, e: Error| (what.to_string(), Failure { code: "LOCAL".into(), message: e.to_string() });
    let mut params = Vec::new();
    flatten(&model.info["settings"], "", &mut params);
    for chunk in params.chunks(100) {
        // MLflow keeps parameter values up to 6,000 characters.
        let list: Vec<Value> = chunk
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v.chars().take(6000).collect::<String>()}))
            .collect();
        client
            .post("runs/log-batch", &json!({"run_id": run_id, "params": list}))
            .map_err(|f| ("logging the parameters".to_string(), f))?;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let list: Vec<Value> = metrics(&model.metrics, &model.decision)
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v, "timestamp": now, "step": 0}))
        .collect();
    client
        .post("runs/log-batch", &json!({"run_id": run_id, "metrics": list}))
        .map_err(|f| ("logging the metrics".to_string(), f))?;

    let root = proxied_root(artifact_uri).ok_or_else(|| {
        let message = format!(
            "the run's artifact store is {artifact_uri:?}: fidelis uploads through the tracking server's \
             proxied artifact store (`mlflow server` serving artifacts, its default)"
        );
        ("uploading the model".to_string(), Failure { code: "ARTIFACT_STORE".into(), message })
    })?;
    let upload = |path: &str, bytes: &[u8]| {
        client.put_artifact(root, path, bytes).map_err(|f| (format!("uploading {path}"), f))
    };
    // Every file of `dir` under `prefix`.
    let upload_dir = |dir: &Path, prefix: &str| {
        let files = crate::files::relative_files(dir).map_err(|e| local("listing the files to log", e))?;
        for rel in files {
            let p = dir.join(&rel);
            let bytes = std::fs::read(&p).map_err(|e| local("reading a file to log", Error::io(&p, e)))?;
            upload(&format!("{prefix}/{rel}"), &bytes)?;
        }
        Ok(())
    };
    upload_dir(model.dir, &format!("model/{MODEL_DATA_DIR}"))?;
    let model_id = model.info["model_id"].as_str().unwrap_or_default();
    upload("model/MLmodel", mlmodel(run_id, model_id, "model").as_bytes())?;
    upload("model/requirements.txt", format!("fidelis=={}\n", env!("CARGO_PKG_VERSION")).as_bytes())?;
    if let Some(dir) = report_dir {
        upload_dir(dir, "evaluation")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_examples() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }

    #[test]
    fn settings_flatten_to_dotted_parameters() {
        let mut out = Vec::new();
        flatten(
            &json!({"model": {"iterations": 40, "seed": null}, "features": {"windows": [30, 90]}}),
            "",
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                ("features.windows".to_string(), "[30,90]".to_string()),
                ("model.iterations".into(), "40".into())
            ]
        );
    }

    #[test]
    fn only_the_servers_proxied_store_takes_uploads() {
        assert_eq!(proxied_root("mlflow-artifacts:/1/abc/artifacts"), Some("1/abc/artifacts"));
        assert_eq!(proxied_root("mlflow-artifacts://mlflow:5000/1/abc/artifacts"), Some("1/abc/artifacts"));
        assert_eq!(proxied_root("s3://bucket/1/abc/artifacts"), None);
    }
}
