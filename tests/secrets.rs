//! Secrets never leave the environment: a database password given as `${PGPASS}` inside an
//! `output.sql` URL, or in `FIDELIS_PG_URL`, with `@ : / %` in it raw or percent-encoded, is
//! in no file fidelis writes (models, reports, outputs) and in nothing it prints or logs
//! (`RUST_LOG=debug`), through training, scoring and weekly runs (whose SQL sink fails:
//! nothing listens there) and a report.

use std::fs;
use std::path::Path;
use std::process::Command;

const PASSWORD: &str = "s3cr3t-Pa55word-XYZ";

fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    run_with(dir, args, &[])
}

fn run_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fidelis"));
    cmd.args(args)
        .current_dir(dir)
        .env("RUST_LOG", "debug")
        .env_remove("FIDELIS_PG_URL")
        .env("PGPASS", PASSWORD);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// Every file under `dir` holding `needle` (as bytes).
fn files_containing(dir: &Path, needle: &str, found: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_containing(&p, needle, found);
        } else if fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(p.display().to_string());
        }
    }
}

/// A workspace with generated data and a trained model, `output.sql = <sql>`; what the
/// commands printed.
fn trained(sql: &str) -> (tempfile::TempDir, String) {
    let ws = tempfile::tempdir().unwrap();
    let dir = ws.path();
    let (code, mut printed) =
        run(dir, &["generate", "--customers", "1500", "--seed", "9", "--out", "gen", "-q"]);
    assert_eq!(code, Some(0), "{printed}");
    fs::write(
        dir.join("fidelis.toml"),
        format!(
            "[input.transactions]\npath = \"gen/transactions.parquet\"\n\n[model]\niterations = 30\n\n\
             [output]\ndir = \"output\"\nsql = {sql}\n\n[paths]\nmodels_dir = \"models\"\nreports_dir = \"reports\"\n"
        ),
    )
    .unwrap();
    let (code, text) = run(dir, &["train", "--config", "fidelis.toml", "-q"]);
    assert_eq!(code, Some(0), "{text}");
    printed.push_str(&text);
    (ws, printed)
}

#[test]
fn a_password_from_the_environment_is_in_no_artifact_report_output_or_message() {
    let (ws, mut printed) = trained(r#"["postgres://u:${PGPASS}@127.0.0.1:1/db"]"#);
    let dir = ws.path();
    // The Parquet partition is written, then the PostgreSQL sink fails (exit 5).
    let (code, text) = run(dir, &["score", "--config", "fidelis.toml", "--as-of", "2024-12-01", "-q"]);
    assert_eq!(code, Some(5), "{text}");
    assert!(text.contains("postgres://u:***@127.0.0.1:1/db"), "the sink is named, redacted: {text}");
    printed.push_str(&text);
    let (code, text) = run(dir, &["report", "--config", "fidelis.toml"]);
    assert_eq!(code, Some(0), "{text}");
    printed.push_str(&text);
    assert!(dir.join("output/scores/as_of=2024-12-01/scores.parquet").is_file());
    let mut found = Vec::new();
    for sub in ["models", "reports", "output"] {
        files_containing(&dir.join(sub), PASSWORD, &mut found);
    }
    assert!(found.is_empty(), "the password is written in {found:?}");
    assert!(!printed.contains(PASSWORD), "the password is printed:\n{printed}");
}

#[test]
fn passwords_with_reserved_characters_in_fidelis_pg_url_never_show_in_part() {
    let (ws, _) = trained("[]");
    let dir = ws.path();
    // Raw reserved characters (the last @ ends the user info) and percent-encoded ones.
    for (url, parts) in [
        ("postgres://team:Xq@Zr/Wv:Yt-SECRET@127.0.0.1:1/db", &["Xq@Zr", "Zr/Wv", "Wv:Yt", "SECRET"][..]),
        (
            "postgres://team:Ab%40Cd%2FEf%25Gh-TOPSECRET@127.0.0.1:1/db",
            &["Ab%40Cd", "Ab@Cd", "Cd/Ef", "Ef%Gh", "TOPSECRET"][..],
        ),
    ] {
        for command in ["score", "weekly"] {
            let (code, text) = run_with(
                dir,
                &[command, "--config", "fidelis.toml", "--as-of", "2024-12-01", "-q"],
                &[("FIDELIS_PG_URL", url)],
            );
            assert_eq!(code, Some(5), "{command}: {text}");
            assert!(text.contains("postgres://team:***@127.0.0.1:1/db"), "{text}");
            for part in parts {
                assert!(!text.contains(part), "{command} shows {part:?}:\n{text}");
                let mut found = Vec::new();
                for sub in ["models", "reports", "output"] {
                    if dir.join(sub).exists() {
                        files_containing(&dir.join(sub), part, &mut found);
                    }
                }
                assert!(found.is_empty(), "{part:?} is written in {found:?}");
            }
        }
    }
}
