//! The output lock: one run at a time writes an output directory.
//!
//! `<output.dir>/.fidelis.lock` holds the owner's pid, the start time of that process (in
//! clock ticks since boot, from `/proc/<pid>/stat`), host and wall-clock start. It is written
//! whole to a temporary file and hard-linked into place, which fails when a lock exists: a
//! lock file is therefore complete or absent, never half-written. A second run finds it and
//! stops with exit code 4, naming the owner. A lock is stale, and taken over with a warning,
//! when it cannot be parsed (written by hand, or by an older fidelis that was killed between
//! creating and filling it), or when it is of this host and its process is gone or its pid now
//! belongs to another process (a different start time). The lock is removed when the run
//! ends, also on error; a failed lock write leaves no file behind.

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

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`); `None` when the process does not exist (or this is not Linux).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A lock file's fields.
struct Owner {
    pid: u32,
    host: String,
    started: String,
    ticks: Option<u64>,
}

impl Owner {
    fn parse(content: &str) -> Option<Owner> {
        let field = |k: &str| content.lines().find_map(|l| l.strip_prefix(k).map(str::to_string));
        Some(Owner {
            pid: field("pid=")?.parse().ok()?,
            host: field("host=")?,
            started: field("started=").unwrap_or_default(),
            ticks: field("pid_start=").and_then(|t| t.parse().ok()),
        })
    }

    /// Why this owner no longer holds the lock, if it does not.
    fn gone(&self, me: &str) -> Option<String> {
        if self.host != me || !Path::new("/proc/self/stat").exists() {
            return None;
        }
        match (start_ticks(self.pid), self.ticks) {
            (None, _) => Some(format!("process {} is no longer running", self.pid)),
            (Some(now), Some(then)) if now != then => {
                Some(format!("pid {} now belongs to another process", self.pid))
            }
            _ => None,
        }
    }
}

impl RunLock {
    /// Take the lock on `dir` (created if missing).
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let me = host();
        let pid = std::process::id();
        let content = format!(
            "pid={pid}\nhost={me}\nstarted={}\npid_start={}\n",
            chrono::Utc::now().to_rfc3339(),
            start_ticks(pid).map_or("unknown".into(), |t| t.to_string())
        );
        let tmp = dir.join(format!("{LOCK_FILE}.tmp-{pid}"));
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(content.as_bytes()).and_then(|()| f.sync_all()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::output(&tmp, e));
        }
        let result = Self::link(&tmp, &path, &me);
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Link the complete lock file `tmp` to `path`, taking over a stale lock once.
    fn link(tmp: &Path, path: &Path, me: &str) -> Result<RunLock> {
        for _ in 0..2 {
            match std::fs::hard_link(tmp, path) {
                Ok(()) => return Ok(RunLock { path: path.to_path_buf() }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let content = std::fs::read_to_string(path).unwrap_or_default();
                    let why = match Owner::parse(&content) {
                        None => Some("it cannot be read as a lock (empty or damaged)".to_string()),
                        Some(o) => match o.gone(me) {
                            Some(why) => Some(why),
                            None => {
                                return Err(Error::Locked {
                                    path: path.to_path_buf(),
                                    message: format!(
                                        "another fidelis run (pid {} on {}, started {}) is writing this \
                                         output; wait for it to finish, or remove the file if that process \
                                         is gone",
                                        o.pid, o.host, o.started
                                    ),
                                })
                            }
                        },
                    };
                    log::warn!("taking over the stale lock {}: {}", path.display(), why.unwrap_or_default());
                    std::fs::remove_file(path).map_err(|e| Error::output(path, e))?;
                }
                Err(e) => return Err(Error::output(path, e)),
            }
        }
        Err(Error::Locked {
            path: path.to_path_buf(),
            message: "could not take the lock (it keeps reappearing)".into(),
        })
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

    #[test]
    fn an_empty_or_damaged_lock_is_stale_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        for content in ["", "garbage\n", "pid=12\n"] {
            std::fs::write(dir.path().join(LOCK_FILE), content).unwrap();
            let lock = RunLock::acquire(dir.path()).unwrap();
            let written = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
            assert!(written.contains(&format!("pid={}", std::process::id())), "{written}");
            drop(lock);
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_lock_whose_pid_now_belongs_to_another_process_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        // Our own pid, but a start time that is not ours: the pid was reused.
        let ticks = start_ticks(std::process::id()).expect("Linux /proc");
        std::fs::write(
            dir.path().join(LOCK_FILE),
            format!("pid={}\nhost={}\nstarted=x\npid_start={}\n", std::process::id(), host(), ticks + 1),
        )
        .unwrap();
        drop(RunLock::acquire(dir.path()).unwrap());
        // With the right start time it is live.
        std::fs::write(
            dir.path().join(LOCK_FILE),
            format!("pid={}\nhost={}\nstarted=x\npid_start={ticks}\n", std::process::id(), host()),
        )
        .unwrap();
        assert_eq!(RunLock::acquire(dir.path()).unwrap_err().exit_code(), 4);
    }

    #[test]
    fn a_failed_lock_write_leaves_no_lock_behind() {
        let dir = tempfile::tempdir().unwrap();
        // The temporary lock cannot be created (a directory is in its way): an error, exit 5,
        // and no lock file that would block the next run.
        std::fs::create_dir(dir.path().join(format!("{LOCK_FILE}.tmp-{}", std::process::id()))).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.exit_code(), 5, "{err}");
        assert!(!dir.path().join(LOCK_FILE).exists());
    }
}
