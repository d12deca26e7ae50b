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
    fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = fs::File::create(&tmp).and_then(|mut f| {
        use std::io::Write;
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::output(&tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::output(path, e)
    })?;
    sync_parent(path);
    Ok(())
}

/// Make the entry of `path` in its directory durable (after a rename or a create); best
/// effort: a directory that cannot be opened for it is left as the kernel has it.
pub fn sync_parent(path: &Path) {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The pid a temporary name of a writer ends with (`.name.tmp-1234`, `.id.partial-1234`).
fn temp_owner(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, pid) = name.rsplit_once(".tmp-").or_else(|| name.rsplit_once(".partial-"))?;
    pid.parse().ok()
}

/// Remove what writers killed mid-write left under `dir` (recursively): temporary files and
/// directories whose process is gone. Whatever they were replacing was never touched. Only on
/// Linux (`/proc`); elsewhere nothing is removed.
pub fn remove_stale_temps(dir: &Path) -> Result<usize> {
    if !Path::new("/proc/self").exists() {
        return Ok(0);
    }
    let Ok(entries) = fs::read_dir(dir) else { return Ok(0) };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        match temp_owner(&name) {
            Some(pid) if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() => {
                log::warn!("removing {}, left by a run that was interrupted", path.display());
                let gone = if is_dir { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
                gone.map_err(|e| Error::output(&path, e))?;
                removed += 1;
            }
            None if is_dir => removed += remove_stale_temps(&path)?,
            _ => {}
        }
    }
    Ok(removed)
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

/// Every file under `dir` (recursively) as a `/`-separated path relative to it, in name
/// order; names starting with `.` (temporaries, locks, hidden state) are left out, files and
/// directories alike.
pub fn relative_files(dir: &Path) -> Result<Vec<String>> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<()> {
        let mut entries: Vec<fs::DirEntry> =
            fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let r = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            if e.path().is_dir() {
                walk(&e.path(), &r, out)?;
            } else {
                out.push(r);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_of_dead_writers_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir_all(d.join("sub")).unwrap();
        let dead = 4_000_000_000u32; // beyond any pid_max
        let mine = std::process::id();
        for name in [
            format!(".metrics_history.parquet.tmp-{dead}"),
            format!("sub/.evaluation.html.tmp-{dead}"),
            format!(".evaluation.md.tmp-{mine}"),
            "keep.parquet".to_string(),
            ".hidden-but-not-temporary".to_string(),
        ] {
            fs::write(d.join(name), b"x").unwrap();
        }
        fs::create_dir_all(d.join(format!(".abc.partial-{dead}"))).unwrap();
        write_atomic(&d.join("sub/out.json"), b"{}").unwrap();
        assert_eq!(remove_stale_temps(d).unwrap(), 3);
        let mut left: Vec<String> = Vec::new();
        for e in walk(d) {
            left.push(e.strip_prefix(d).unwrap().display().to_string());
        }
        left.sort();
        assert_eq!(
            left,
            vec![
                format!(".evaluation.md.tmp-{mine}"),
                ".hidden-but-not-temporary".into(),
                "keep.parquet".into(),
                "sub".into(),
                "sub/out.json".into()
            ]
        );
    }

    fn walk(d: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(d).unwrap().flatten() {
            out.push(e.path());
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
        out
    }
}
