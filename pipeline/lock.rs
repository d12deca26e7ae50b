//! The output lock: one run at a time writes an output directory.
//!
//! `<output.dir>/.fidelis.lock` is created exclusively (`O_EXCL`) and holds the owner's pid,
//! host and start time. A second run finds it and stops with exit code 4, naming the owner.
//! A lock whose process is gone (same host, pid no longer running: a killed run) is stale: it
//! is taken over with a warning. The lock is removed when the run ends, also on error.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const LOCK_FILE: &str = ".fidelis.lock";

#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// Is the process `pid` on this host still running? (Linux: `/proc/<pid>`; elsewhere the
/// lock is assumed live and must be removed by hand.)
fn alive(pid: u32) -> bool {
    if Path::new("/proc/self").exists() {
        Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

impl RunLock {
    /// Take the lock on `dir` (created if missing).
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let me = host();
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let content = format!(
                        "pid={}\nhost={me}\nstarted={}\n",
                        std::process::id(),
                        chrono::Utc::now().to_rfc3339()
                    );
                    f.write_all(content.as_bytes()).map_err(|e| Error::io(&path, e))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let content = std::fs::read_to_string(&path).unwrap_or_default();
                    let field = |k: &str| {
                        content
                            .lines()
                            .find_map(|l| l.strip_prefix(k).map(str::to_string))
                            .unwrap_or_default()
                    };
                    let (pid, owner_host, started) = (field("pid="), field("host="), field("started="));
                    let stale = owner_host == me && pid.parse::<u32>().is_ok_and(|p| !alive(p));
                    if stale {
                        log::warn!(
                            "removing the stale lock {} of process {pid}, which is no longer running",
                            path.display()
                        );
                        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                        continue;
                    }
                    return Err(Error::Locked {
                        path,
                        message: format!(
                            "another fidelis run (pid {pid} on {owner_host}, started {started}) is writing \
                             this output; wait for it to finish, or remove the file if that process is gone"
                        ),
                    });
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Err(Error::Locked { path, message: "could not take the lock (it keeps reappearing)".into() })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("could not remove the lock {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_is_refused_and_a_stale_lock_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.exit_code(), 4);
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists(), "released on drop");

        // A lock left by a process that no longer runs (pid beyond pid_max) is stale.
        std::fs::write(dir.path().join(LOCK_FILE), format!("pid=4294967295\nhost={}\nstarted=x\n", host()))
            .unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        drop(lock);
    }
}
