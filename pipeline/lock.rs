//! The output lock: one run at a time writes an output directory.
//!
//! `<output.dir>/.fidelis.lock` is locked with `flock(LOCK_EX)` for the length of a run. The
//! kernel releases the lock when the process ends, however it ends (a SIGKILL, an OOM kill, a
//! container or pod that is restarted under another hostname): there is no stale lock to
//! detect, and exit 4 always means a live process holds it. The file stays in place between
//! runs (removing a locked file would let a second run lock a new file of the same name); while
//! a run holds it, it names the owner (pid, host, start time) for the message of the run that is
//! refused, and it is emptied when the run ends.
//!
//! **Shared filesystems.** On a local filesystem the lock is exact. On NFS (v4, or v3 with the
//! lock manager running) Linux maps `flock` onto NFS byte-range locks, which the server keeps
//! per client lease: a client that dies loses its locks when its lease expires (90 s by
//! default). Filesystems without lock support (some FUSE mounts, object-store mounts) make
//! `flock` fail: the run stops with exit 5 naming the file rather than run unlocked; point
//! `output.dir` at a local or NFS directory there.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub const LOCK_FILE: &str = ".fidelis.lock";

#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    file: File,
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(true)` when taken, `Ok(false)` when another process
/// holds it.
fn try_lock(f: &File) -> std::io::Result<bool> {
    // SAFETY: a valid open file descriptor; flock reads nothing else.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

/// Whether a live process holds the lock of `dir` (tests and tools).
pub fn is_held(dir: &Path) -> bool {
    let path = dir.join(LOCK_FILE);
    if !path.exists() {
        return false;
    }
    open(&path).and_then(|f| try_lock(&f)).map(|taken| !taken).unwrap_or(false)
}

/// The lock delivery holds (`<output.dir>/.fidelis.delivery.lock`): a run delivers after it
/// has released the output lock, so the next run can start writing while this one waits on a
/// slow receiver, and two deliveries never read the delivery log at once.
pub const DELIVERY_LOCK_FILE: &str = ".fidelis.delivery.lock";

impl RunLock {
    /// Take the lock on `dir` (created if missing); exit 4 when a live run holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        Self::take(dir, LOCK_FILE, std::time::Duration::ZERO)
    }

    /// Take the delivery lock of `dir`, waiting at most `wait` for another delivery to end.
    pub fn acquire_delivery(dir: &Path, wait: std::time::Duration) -> Result<RunLock> {
        Self::take(dir, DELIVERY_LOCK_FILE, wait)
    }

    fn take(dir: &Path, name: &str, wait: std::time::Duration) -> Result<RunLock> {
        std::fs::create_dir_all(dir).map_err(|e| Error::output(dir, e))?;
        let path = dir.join(name);
        let mut file = open(&path).map_err(|e| Error::output(&path, e))?;
        let until = std::time::Instant::now() + wait;
        let mut taken = try_lock(&file);
        while matches!(taken, Ok(false)) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(50));
            taken = try_lock(&file);
        }
        match taken {
            Ok(true) => {}
            Ok(false) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let field =
                    |k: &str| owner.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("?").to_string();
                return Err(Error::Locked {
                    path,
                    message: format!(
                        "another fidelis run (pid {} on {}, started {}) is writing this output; it \
                         holds the lock until it ends (the kernel releases it if the process dies)",
                        field("pid="),
                        field("host="),
                        field("started=")
                    ),
                });
            }
            Err(e) => {
                return Err(Error::output(&path, std::io::Error::new(e.kind(), format!("cannot lock: {e}"))))
            }
        }
        let content = format!(
            "pid={}\nhost={}\nstarted={}\n",
            std::process::id(),
            host(),
            chrono::Utc::now().to_rfc3339()
        );
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(content.as_bytes()))
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            log::warn!("could not write the owner into {}: {e}", path.display());
        }
        Ok(RunLock { path, file })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // Emptied (the owner is gone), then unlocked by closing the file.
        if let Err(e) = self.file.set_len(0) {
            log::warn!("could not empty the lock {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_is_refused_while_the_first_lives_and_admitted_after() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        assert!(is_held(dir.path()));
        let err = RunLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.exit_code(), 4);
        assert!(err.to_string().contains(&format!("pid {}", std::process::id())), "{err}");
        drop(lock);
        assert!(!is_held(dir.path()), "released on drop");
        assert_eq!(std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(), "", "emptied");
        drop(RunLock::acquire(dir.path()).unwrap());
    }

    #[test]
    fn a_lock_file_left_by_a_dead_process_of_any_host_never_blocks() {
        // A pod restarted under another hostname, a process killed before it could clean up,
        // an empty or damaged file: none is held by a live process, so none blocks.
        let dir = tempfile::tempdir().unwrap();
        for content in [
            "pid=1\nhost=fidelis-weekly-28911-abcde\nstarted=2024-01-01T00:00:00Z\n".to_string(),
            format!("pid={}\nhost={}\nstarted=x\n", std::process::id(), host()),
            String::new(),
            "garbage\n".into(),
        ] {
            std::fs::write(dir.path().join(LOCK_FILE), &content).unwrap();
            let lock = RunLock::acquire(dir.path()).unwrap();
            let written = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
            assert!(written.contains(&format!("pid={}", std::process::id())), "{written}");
            drop(lock);
        }
    }

    #[test]
    fn a_killed_holder_releases_the_lock() {
        // A child process takes the lock with flock and is killed: the kernel releases it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        // -o: the lock stays with `flock` itself, not with the `sleep` it starts.
        let mut child = std::process::Command::new("flock")
            .arg("-o")
            .arg(&path)
            .args(["sleep", "20"])
            .spawn()
            .expect("flock(1) from util-linux");
        let clock = std::time::Instant::now();
        while !is_held(dir.path()) {
            assert!(clock.elapsed().as_secs() < 10, "the child never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(RunLock::acquire(dir.path()).unwrap_err().exit_code(), 4);
        child.kill().unwrap();
        child.wait().unwrap();
        // flock(1) forks before it closes the descriptor in the child it turns into `sleep`:
        // killed at that instant, the lock lives until the child's copy is closed, a moment
        // later. Released within a second, never held for the 20 s of the child.
        let clock = std::time::Instant::now();
        let lock = loop {
            match RunLock::acquire(dir.path()) {
                Ok(lock) => break lock,
                Err(e) => assert!(clock.elapsed().as_secs() < 1, "still held after the holder died: {e}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        drop(lock);
    }

    #[test]
    fn a_lock_that_cannot_be_opened_is_an_output_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(LOCK_FILE)).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err();
        assert_eq!(err.exit_code(), 5, "{err}");
    }
}
