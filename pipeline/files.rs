//! Small file helpers every writer shares: a file is written to a temporary name in its
//! directory and renamed into place (readers see the old or the new file, never half of
//! one); JSON files are read with errors that name them.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
