//! Model directories on disk: `models/<model_id>/` (the files of [`super::file`]) and
//! `models/latest`, a text file holding the current model id.
//!
//! A model directory is written under a temporary name and renamed into place, so a crash
//! never leaves a half-written model; `latest` is replaced atomically, and only after the
//! model it will name has been read back whole (the train job does that).

use std::fs;
use std::path::{Path, PathBuf};

use super::file;
use crate::error::{Error, Result};
use crate::files::write_atomic;

pub const LATEST: &str = "latest";

/// Create `models_dir/<model_id>/` from `files` (name, contents) atomically.
pub fn write_model_dir(models_dir: &Path, model_id: &str, files: &[(&str, Vec<u8>)]) -> Result<PathBuf> {
    fs::create_dir_all(models_dir).map_err(|e| Error::output(models_dir, e))?;
    let final_dir = models_dir.join(model_id);
    if final_dir.exists() {
        return Err(Error::Artifact { path: final_dir, message: "already exists".into() });
    }
    let tmp = models_dir.join(format!(".{model_id}.partial-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| Error::output(&tmp, e))?;
    }
    let written = write_files(&tmp, files).and_then(|()| {
        fs::rename(&tmp, &final_dir).map_err(|e| Error::output(&final_dir, e))?;
        sync_dir(models_dir);
        Ok(())
    });
    if let Err(e) = written {
        // A full disk or a failed rename leaves nothing behind.
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    Ok(final_dir)
}

/// Write `files` into `dir`, each synced to disk, then the directory itself.
fn write_files(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
    for (name, bytes) in files {
        let p = dir.join(name);
        fs::File::create(&p)
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(bytes)?;
                f.sync_all()
            })
            .map_err(|e| Error::output(&p, e))?;
    }
    sync_dir(dir);
    Ok(())
}

/// Make a directory's entries durable; best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
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
    let latest = models_dir.join(LATEST);
    if id.is_empty() {
        return Err(Error::Artifact {
            path: latest,
            message: "is empty (a write interrupted on a filesystem that lost it?): put a model id in \
                      it (the directories under models/) or run `fidelis train`"
                .into(),
        });
    }
    if id.contains(['/', '\\', '\0']) || id.starts_with('.') || id.chars().any(char::is_control) {
        let path = if model_id.is_some() { models_dir.to_path_buf() } else { latest };
        return Err(Error::Artifact {
            path,
            message: format!("{:?} is not a model id (a directory name under {})", id, models_dir.display()),
        });
    }
    let dir = models_dir.join(&id);
    if !dir.join(file::MODEL).is_file() {
        let message = match (dir.is_dir(), model_id.is_none()) {
            (true, _) => "no model.json: not a fidelis model directory".to_string(),
            (false, true) => format!(
                "{} names model {id:?}, which is not in {}; train a model or point {LATEST} at one",
                models_dir.join(LATEST).display(),
                models_dir.display()
            ),
            (false, false) => format!("no model {id:?} in {}", models_dir.display()),
        };
        return Err(Error::Artifact { path: dir, message });
    }
    Ok(dir)
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

    #[test]
    fn an_empty_or_odd_latest_says_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("models");
        write_model_dir(&m, "a1", &[("model.json", b"{}".to_vec())]).unwrap();
        fs::write(m.join(LATEST), "\n").unwrap();
        let err = resolve(&m, None).unwrap_err().to_string();
        assert!(err.contains("latest") && err.contains("is empty"), "{err}");
        assert!(!err.contains("no model.json"), "{err}");
        fs::write(m.join(LATEST), "../../etc\n").unwrap();
        let err = resolve(&m, None).unwrap_err().to_string();
        assert!(err.contains("is not a model id"), "{err}");
    }
}
