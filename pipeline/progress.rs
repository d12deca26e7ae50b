//! Progress on stderr: a spinner with elapsed time per step, drawn only when stderr is a
//! terminal (indicatif hides itself otherwise) and never with `--quiet`. Step timings are
//! also logged at `info` level (`RUST_LOG=info`) and returned for the metrics file.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Default)]
pub struct Progress {
    quiet: bool,
    timings: Mutex<BTreeMap<String, f64>>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress { quiet, timings: Mutex::new(BTreeMap::new()) }
    }

    /// A progress reporter that never draws (tests, library use).
    pub fn hidden() -> Self {
        Progress::new(true)
    }

    fn spinner(&self, msg: &str) -> ProgressBar {
        let target = if self.quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let pb = ProgressBar::with_draw_target(None, target);
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.set_message(msg.to_string());
        pb.enable_steady_tick(Duration::from_millis(120));
        pb
    }

    /// Run one named step under a spinner; records its wall time under `key`.
    pub fn step<T, E>(&self, key: &str, msg: &str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let pb = self.spinner(msg);
        let start = Instant::now();
        let out = f();
        let secs = start.elapsed().as_secs_f64();
        pb.finish_and_clear();
        if out.is_ok() {
            log::info!("{msg}: {secs:.2}s");
            if !self.quiet && console_is_term() {
                eprintln!("  done  {msg} ({secs:.1}s)");
            }
        }
        if let Ok(mut t) = self.timings.lock() {
            *t.entry(key.to_string()).or_insert(0.0) += secs;
        }
        out
    }

    /// Wall seconds per step key so far.
    pub fn timings(&self) -> BTreeMap<String, f64> {
        self.timings.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

fn console_is_term() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}
