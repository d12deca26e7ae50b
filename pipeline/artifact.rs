//! Model artifacts on disk (layout in DESIGN.md):
//!
//! ```text
//! models/<model_id>/   model.json, metrics.json, churn.json, clv.json, logistic.json,
//!                      calibration.json, decision.json, reference.json, predictions.parquet
//! models/latest        text file holding the current model_id (replaced atomically)
//! ```
//!
//! An artifact directory is written under a temporary name and renamed into place, so a
//! crash never leaves a half-written model that `latest` could point at.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const LATEST: &str = "latest";

/// Write `bytes` to `path` via a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Create `models_dir/<model_id>/` from `files` (name, contents) atomically.
pub fn write_model_dir(models_dir: &Path, model_id: &str, files: &[(&str, Vec<u8>)]) -> Result<PathBuf> {
    fs::create_dir_all(models_dir).map_err(|e| Error::io(models_dir, e))?;
    let final_dir = models_dir.join(model_id);
    if final_dir.exists() {
        return Err(Error::Artifact { path: final_dir, message: "already exists".into() });
    }
    let tmp = models_dir.join(format!(".{model_id}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    for (name, bytes) in files {
        let p = tmp.join(name);
        fs::write(&p, bytes).map_err(|e| Error::io(&p, e))?;
    }
    fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
    Ok(final_dir)
}

/// Point `models_dir/latest` at `model_id` (atomic replace).
pub fn set_latest(models_dir: &Path, model_id: &str) -> Result<()> {
    write_atomic(&models_dir.join(LATEST), format!("{model_id}\n").as_bytes())
}

/// The model directory for `model_id`, or for the id in `latest` when `None`.
pub fn resolve(models_dir: &Path, model_id: Option<&str>) -> Result<PathBuf> {
    let id = match model_id {
        Some(id) => id.to_string(),
        None => {
            let p = models_dir.join(LATEST);
            fs::read_to_string(&p)
                .map_err(|e| Error::Artifact {
                    path: p.clone(),
                    message: format!("cannot read ({e}); run `fidelis train` first"),
                })?
                .trim()
                .to_string()
        }
    };
    let dir = models_dir.join(&id);
    if !dir.join("model.json").is_file() {
        return Err(Error::Artifact {
            path: dir,
            message: "no model.json: not a fidelis model directory".into(),
        });
    }
    Ok(dir)
}

/// Read and parse a JSON file of an artifact.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path)
        .map_err(|e| Error::Artifact { path: path.to_path_buf(), message: format!("cannot read: {e}") })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Artifact { path: path.to_path_buf(), message: format!("invalid JSON: {e}") })
}

pub fn to_json_bytes<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value)
        .map_err(|source| Error::Json { context: format!("serializing {what}"), source })
}

/// Size and xxh3-64 hash of a file's bytes: identifies the exact input a model saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    pub path: String,
    pub bytes: u64,
    pub xxh3: String,
}

pub fn fingerprint_file(path: &Path) -> Result<FileFingerprint> {
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(FileFingerprint { path: path.display().to_string(), bytes, xxh3: format!("{:016x}", hasher.digest()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_dir_and_latest() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("models");
        assert!(resolve(&m, None).is_err());
        write_model_dir(&m, "a1", &[("model.json", b"{}".to_vec())]).unwrap();
        set_latest(&m, "a1").unwrap();
        assert_eq!(resolve(&m, None).unwrap(), m.join("a1"));
        assert!(write_model_dir(&m, "a1", &[]).is_err(), "never overwrites a model");
        write_model_dir(&m, "b2", &[("model.json", b"{}".to_vec())]).unwrap();
        set_latest(&m, "b2").unwrap();
        assert_eq!(resolve(&m, None).unwrap(), m.join("b2"));
        assert_eq!(resolve(&m, Some("a1")).unwrap(), m.join("a1"));
        let leftovers: Vec<_> = fs::read_dir(&m)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "no temporary files left behind");
    }
}
