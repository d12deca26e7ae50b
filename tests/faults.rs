//! Fault injection on the real binary: `kill -9` at every rename, link and fsync of `score`,
//! `weekly` and `train` (strace's syscall injection), and a full disk (a small tmpfs). After
//! each fault every output is in its old or its new state, readable; the next run succeeds
//! and leaves no temporary file; `models/latest` always names a model that loads.
//!
//! Needs strace (and root for the tmpfs); without them the tests say so and pass, unless
//! FIDELIS_REQUIRE_FAULTS=1 (strace) or FIDELIS_REQUIRE_TMPFS=1 (`.ci/run` sets both, the
//! latter when its machine can mount a tmpfs).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{copy_dir, model_fixture, FIXTURE_MODEL};
use polars::prelude::*;

const AS_OF: &str = "2024-12-31";
/// The syscalls a kill is injected at (`renameat2` is the partition swap, `flock` the output
/// lock: a run killed holding it must not block the next one; `linkat` is kept for writers
/// that link).
const SYSCALLS: [&str; 5] = ["rename", "renameat2", "linkat", "flock", "fsync"];

fn required() -> bool {
    std::env::var("FIDELIS_REQUIRE_FAULTS").is_ok_and(|v| v == "1")
}

fn strace() -> bool {
    let ok = Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success());
    assert!(ok || !required(), "FIDELIS_REQUIRE_FAULTS=1 but strace is not installed");
    if !ok {
        eprintln!("skipped: strace is not installed (Debian package strace; .ci/run installs it)");
    }
    ok
}

fn run(dir: &Path, args: &[&str], inject: Option<(&str, usize)>) -> Output {
    let mut cmd = match inject {
        Some((syscall, n)) => {
            let mut c = Command::new("strace");
            c.args(["-f", "-qq", "-o", "/dev/null", "-e", &format!("trace={syscall}")])
                .arg("-e")
                .arg(format!("inject={syscall}:signal=KILL:when={n}"))
                .arg(env!("CARGO_BIN_EXE_fidelis"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_fidelis")),
    };
    cmd.args(args).current_dir(dir).env_remove("RUST_LOG").env_remove("FIDELIS_PG_URL");
    cmd.output().unwrap()
}

fn killed(o: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    o.status.signal() == Some(9) || o.status.code() == Some(137)
}

/// A workspace with the fixture's model and data, Parquet + SQLite outputs, and (with
/// `run_first`) one clean weekly run at AS_OF already done.
fn base(run_first: bool) -> tempfile::TempDir {
    let ws = tempfile::tempdir().unwrap();
    for sub in ["models", "data"] {
        copy_dir(&model_fixture().join(sub), &ws.path().join(sub));
    }
    fs::write(
        ws.path().join("fidelis.toml"),
        "[input.transactions]\npath = \"data/transactions.parquet\"\n\n[model]\niterations = 40\n\n\
         [output]\ndir = \"output\"\nsql = [\"sqlite://output/fidelis.sqlite\"]\n\n\
         [paths]\nmodels_dir = \"models\"\nreports_dir = \"reports\"\n",
    )
    .unwrap();
    if run_first {
        let o = run(ws.path(), &["weekly", "--config", "fidelis.toml", "--as-of", AS_OF, "-q"], None);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    ws
}

fn rows(path: &Path) -> usize {
    ParquetReader::new(fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .finish()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .height()
}

fn sqlite_rows(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT COUNT(*) FROM churn_scores WHERE as_of = ?1", [AS_OF], |r| r.get(0)).unwrap()
}

/// Hidden leftovers of interrupted writes under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        // The lock file stays between runs; a leftover is one still held.
        if name.contains(".tmp-")
            || name.contains(".old-")
            || name.contains(".partial")
            || (name == ".fidelis.lock" && fidelis::lock::is_held(dir))
        {
            out.push(e.path());
        } else if e.path().is_dir() {
            out.extend(leftovers(&e.path()));
        }
    }
    out
}

/// The outputs of a completed run at AS_OF, checked whole: the partition's two files, the
/// SQL rows, the monitoring history.
fn check_outputs(ws: &Path, scored: usize, context: &str) {
    let scores = ws.join(format!("output/scores/run={AS_OF}/part-0.parquet"));
    let top = ws.join(format!("output/top_risk/run={AS_OF}/part-0.parquet"));
    assert_eq!(rows(&scores), scored, "{context}: the scores");
    assert!(rows(&top) > 0, "{context}: the top-risk segment");
    assert_eq!(sqlite_rows(&ws.join("output/fidelis.sqlite")) as usize, scored, "{context}: SQLite rows");
    let history = ws.join("output/monitoring/metrics_history.parquet");
    if history.exists() {
        rows(&history);
    }
}

/// Kill `command` at every call of every syscall of [`SYSCALLS`], each time from the same
/// state; check the state after the kill and after a clean rerun. Returns the cases run.
fn matrix(command: &str, run_first: bool) -> usize {
    let template = base(run_first);
    let scored = if run_first {
        rows(&template.path().join(format!("output/scores/run={AS_OF}/part-0.parquet")))
    } else {
        0
    };
    let args = ["--config", "fidelis.toml", "--as-of", AS_OF, "-q"];
    let args: Vec<&str> = std::iter::once(command).chain(args).collect();
    let mut cases = 0;
    for syscall in SYSCALLS {
        for n in 1.. {
            let ws = tempfile::tempdir().unwrap();
            copy_dir(template.path(), ws.path());
            let o = run(ws.path(), &args, Some((syscall, n)));
            if !killed(&o) {
                assert!(
                    o.status.success(),
                    "{command} {syscall}#{n}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                break;
            }
            cases += 1;
            let context = format!("{command} killed at {syscall} #{n}");
            // The previous run (when there was one) is still whole and readable.
            if run_first {
                check_outputs(ws.path(), scored, &context);
            }
            let again = run(ws.path(), &args, None);
            assert!(again.status.success(), "{context}, rerun: {}", String::from_utf8_lossy(&again.stderr));
            let part = ws.path().join(format!("output/scores/run={AS_OF}/part-0.parquet"));
            check_outputs(ws.path(), rows(&part), &format!("{context}, after the rerun"));
            let left = leftovers(&ws.path().join("output"));
            assert!(left.is_empty(), "{context}: the rerun left {left:?}");
        }
    }
    cases
}

#[test]
fn weekly_killed_at_any_rename_link_or_fsync_leaves_old_or_new_outputs() {
    if !strace() {
        return;
    }
    let cases = matrix("weekly", true);
    eprintln!("weekly fault matrix: {cases} kills");
    assert!(cases >= 10, "{cases}");
}

#[test]
fn score_killed_at_any_point_of_a_first_or_a_repeated_run_recovers() {
    if !strace() {
        return;
    }
    let cases = matrix("score", true) + matrix("score", false);
    eprintln!("score fault matrix: {cases} kills");
    assert!(cases >= 10, "{cases}");
}

#[test]
fn train_killed_at_any_point_leaves_latest_naming_a_loadable_model() {
    if !strace() {
        return;
    }
    let template = base(false);
    let mut cases = 0;
    for syscall in SYSCALLS {
        for n in 1.. {
            let ws = tempfile::tempdir().unwrap();
            copy_dir(template.path(), ws.path());
            let o = run(ws.path(), &["train", "--config", "fidelis.toml", "-q"], Some((syscall, n)));
            if !killed(&o) {
                assert!(o.status.success(), "train {syscall}#{n}: {}", String::from_utf8_lossy(&o.stderr));
                break;
            }
            cases += 1;
            let models = ws.path().join("models");
            let m = fidelis::model::load(&models, None)
                .unwrap_or_else(|e| panic!("train killed at {syscall} #{n}: latest does not load: {e}"));
            // Killed before `latest` moved: the old model; after: the new, complete one.
            assert!(m.info.model_id == FIXTURE_MODEL || m.metrics().is_ok());
            for e in fs::read_dir(&models).unwrap().flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                assert!(
                    name.starts_with('.') || name == "latest" || e.path().join("model.json").is_file(),
                    "train killed at {syscall} #{n}: a visible half model {name}"
                );
            }
            let again = run(ws.path(), &["train", "--config", "fidelis.toml", "-q"], None);
            assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
            fidelis::model::load(&models, None).unwrap().metrics().unwrap();
            assert!(leftovers(&models).is_empty(), "{:?}", leftovers(&models));
        }
    }
    eprintln!("train fault matrix: {cases} kills");
    assert!(cases >= 10, "{cases}");
}

/// A tmpfs mounted at a directory, unmounted when dropped (also when a test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mount a tmpfs of `kb` KiB at `dir`; `None` when this machine does not allow it.
    fn mount(dir: &Path, kb: usize) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kb}k"), "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_full_disk_fails_with_exit_5_and_keeps_the_previous_run_and_model() {
    let ws = base(true);
    let out = ws.path().join("output");
    let probe = ws.path().join("probe");
    if Tmpfs::mount(&probe, 64).is_none() {
        let need = std::env::var("FIDELIS_REQUIRE_TMPFS").is_ok_and(|v| v == "1");
        assert!(!need, "FIDELIS_REQUIRE_TMPFS=1 but a tmpfs cannot be mounted here");
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    }
    let scored = rows(&out.join(format!("scores/run={AS_OF}/part-0.parquet")));
    let saved = ws.path().join("saved");
    copy_dir(&out, &saved);
    let used: u64 = walk_size(&saved);
    let mut seen_full = 0;
    // Output on a disk with room for the previous run and a little more, growing.
    for extra_kb in [48, 96, 160, 320, 640] {
        let kb = (used / 1024) as usize + extra_kb;
        fs::remove_dir_all(&out).unwrap();
        let _disk = Tmpfs::mount(&out, kb).unwrap();
        copy_dir(&saved, &out);
        let o = run(ws.path(), &["weekly", "--config", "fidelis.toml", "--as-of", AS_OF, "-q"], None);
        let code = o.status.code();
        let text = String::from_utf8_lossy(&o.stderr).to_string();
        if code != Some(0) {
            seen_full += 1;
            assert!(code == Some(5) || code == Some(6), "disk of {kb} KiB: exit {code:?}: {text}");
            assert!(text.contains("No space left") || text.contains("disk is full"), "{text}");
            check_outputs(ws.path(), scored, &format!("disk of {kb} KiB"));
        }
    }
    assert!(seen_full > 0, "no size was small enough to fill the disk");
    // Training onto a full disk: exit 5, latest unchanged.
    let models = ws.path().join("models");
    let kept = ws.path().join("models_saved");
    copy_dir(&models, &kept);
    fs::remove_dir_all(&models).unwrap();
    let _disk = Tmpfs::mount(&models, (walk_size(&kept) / 1024) as usize + 200).unwrap();
    copy_dir(&kept, &models);
    let o = run(ws.path(), &["train", "--config", "fidelis.toml", "-q"], None);
    assert_eq!(o.status.code(), Some(5), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fidelis::model::load(&models, None).unwrap().info.model_id, FIXTURE_MODEL);
    assert!(leftovers(&models).is_empty(), "{:?}", leftovers(&models));
}

fn walk_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        // tmpfs holds whole 4 KiB pages.
        .map(|e| {
            if e.path().is_dir() {
                walk_size(&e.path()) + 4096
            } else {
                e.metadata().unwrap().len().div_ceil(4096) * 4096
            }
        })
        .sum()
}

#[test]
fn every_file_is_synced_before_it_is_renamed_into_place() {
    // Fault 10: metrics_history.parquet and notifications.parquet were renamed into place
    // without an fsync of the file first (after a power loss: an empty history, and every
    // later weekly failing). Trace a weekly run: each temporary file renamed over a real name
    // was fsynced (or fdatasynced) after it was written.
    if !strace() {
        return;
    }
    let ws = base(false);
    let trace = ws.path().join("trace.log");
    let o = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat,fsync,fdatasync,close,rename,renameat2", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_fidelis"))
        .args(["weekly", "--config", "fidelis.toml", "--as-of", AS_OF, "-q"])
        .current_dir(ws.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = fs::read_to_string(&trace).unwrap();
    // (pid, fd) -> path of the open file; paths synced.
    let mut open: std::collections::HashMap<(String, String), String> = Default::default();
    let mut synced: std::collections::HashSet<String> = Default::default();
    let mut checked = 0;
    for line in text.lines() {
        let Some((pid, call)) = line.split_once(char::is_whitespace) else { continue };
        let call = call.trim_start();
        let quoted = |s: &str| s.split('"').nth(1).map(str::to_string);
        if call.starts_with("openat(") {
            if let (Some(path), Some(fd)) = (quoted(call), call.rsplit("= ").next()) {
                open.insert((pid.to_string(), fd.trim().to_string()), path);
            }
        } else if call.starts_with("fsync(") || call.starts_with("fdatasync(") {
            let fd = call.split(['(', ')']).nth(1).unwrap_or_default().to_string();
            if let Some(path) = open.get(&(pid.to_string(), fd)) {
                synced.insert(path.clone());
            }
        } else if call.starts_with("rename(") {
            let parts: Vec<&str> = call.split('"').collect();
            let (from, to) = (parts[1], parts[3]);
            let is_file =
                [".parquet", ".json", ".svg", ".html", ".md", ".csv"].iter().any(|e| to.ends_with(e));
            if from.contains(".tmp-") && is_file {
                assert!(synced.contains(from), "{to} was renamed into place from {from} without an fsync");
                checked += 1;
            }
        }
    }
    let history = fidelis::sink::history::HISTORY_FILE;
    assert!(checked >= 5 && text.contains(history), "{checked} renames checked:\n{text}");
}
