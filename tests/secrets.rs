//! Secrets never leave the environment: a database password given as `${PGPASS}` inside an
//! `output.sql` URL, or in `FIDELIS_PG_URL`, with `@ : / %` in it raw or percent-encoded, is
//! in no file fidelis writes (models, reports, outputs) and in nothing it prints or logs
//! (`RUST_LOG=debug`), through training, scoring and weekly runs (whose SQL sink fails:
//! nothing listens there) and a report.

mod common;

use common::files_containing;
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
    assert!(dir.join("output/scores/run=2024-12-01/part-0.parquet").is_file());
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

const HOOK_PATH_SECRET: &str = "hook-path-T0KEN-s3cr3t";
const HMAC_SECRET: &str = "hmac-K3Y-s3cr3t-value";
const CRM_TOKEN_SECRET: &str = "crm-B3arer-s3cr3t-value";

#[test]
fn delivery_secrets_stay_secret_and_a_failed_delivery_exits_7_with_the_run_written() {
    use common::servers::HttpSink;
    let (ws, mut printed) = trained(r#"["sqlite://output/fidelis.sqlite"]"#);
    let dir = ws.path();
    let (hook, crm) = (HttpSink::start(), HttpSink::start());
    let mut cfg = fs::read_to_string(dir.join("fidelis.toml")).unwrap();
    cfg.push_str(
        "\n[notify]\ntimeout_s = 2.0\nretries = 1\nbackoff_s = 0.01\n\n\
         [[notify.channels]]\nname = \"ops\"\nkind = \"webhook\"\nurl_env = \"OPS_HOOK\"\nhmac_key_env = \"OPS_KEY\"\n\n\
         [[notify.rules]]\nname = \"model-health\"\nevents = [\"monitoring_alert\", \"retrain\", \"run_failed\"]\n\
         channels = [\"ops\"]\n\n\
         [crm]\nurl_env = \"CRM_URL\"\ntoken_env = \"CRM_TOKEN\"\nbatch_size = 40\ncsv = true\n",
    );
    fs::write(dir.join("fidelis.toml"), cfg).unwrap();
    let hook_url = format!("{}/{HOOK_PATH_SECRET}", hook.url);
    let crm_url = format!("{}/{HOOK_PATH_SECRET}", crm.url);
    let env = |crm_url: &str| {
        vec![
            ("OPS_HOOK", hook_url.clone()),
            ("OPS_KEY", HMAC_SECRET.to_string()),
            ("CRM_URL", crm_url.to_string()),
            ("CRM_TOKEN", CRM_TOKEN_SECRET.to_string()),
        ]
    };
    // Trace logging: the HTTP client's own request logs must not show the URLs either.
    let run_env = |args: &[&str], env: &[(&str, String)]| {
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("RUST_LOG", "trace"));
        run_with(dir, args, &env)
    };

    // Secrets missing from the environment: refused before anything is written (exit 2).
    let (code, text) = run(dir, &["weekly", "--config", "fidelis.toml", "--as-of", "2024-11-24", "-q"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("OPS_HOOK"), "the variable is named: {text}");
    assert!(!dir.join("output/scores/run=2024-11-24").exists(), "nothing written");
    printed.push_str(&text);

    // Delivered: the CRM gets the top-risk segment in batches, with the bearer token.
    let (code, text) =
        run_env(&["weekly", "--config", "fidelis.toml", "--as-of", "2024-12-01", "-q"], &env(&crm_url));
    assert_eq!(code, Some(0), "{text}");
    printed.push_str(&text);
    let batches = crm.accepted();
    assert!(!batches.is_empty(), "{text}");
    assert!(
        text.contains(&format!(
            "CRM: {} records",
            batches.iter().map(|b| b.json()["records"].as_array().unwrap().len()).sum::<usize>()
        )),
        "{text}"
    );
    assert_eq!(batches[0].header("Authorization"), Some(format!("Bearer {CRM_TOKEN_SECRET}").as_str()));
    assert!(dir.join("output/crm/as_of=2024-12-01/Churn_Risk_High.csv").is_file());

    // The CRM is down: the run is written, the push fails in bounded time, exit 7.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!("http://127.0.0.1:{closed}/{HOOK_PATH_SECRET}");
    let (code, text) =
        run_env(&["weekly", "--config", "fidelis.toml", "--as-of", "2024-12-08", "-q"], &env(&down));
    assert_eq!(code, Some(7), "{text}");
    assert!(dir.join("output/scores/run=2024-12-08/part-0.parquet").is_file(), "the scores stay");
    assert!(text.contains("failed"), "{text}");
    printed.push_str(&text);
    // The endpoint is back: the rerun pushes the missing batches.
    let n = crm.accepted().len();
    let (code, text) =
        run_env(&["weekly", "--config", "fidelis.toml", "--as-of", "2024-12-08", "-q"], &env(&crm_url));
    assert_eq!(code, Some(0), "{text}");
    assert!(crm.accepted().len() > n && text.contains(", 0 failed"), "{text}");
    printed.push_str(&text);

    // A run that fails tells the data team's webhook, signed.
    fs::rename(dir.join("gen/transactions.parquet"), dir.join("gen/moved.parquet")).unwrap();
    hook.clear();
    let (code, text) =
        run_env(&["weekly", "--config", "fidelis.toml", "--as-of", "2024-12-15", "-q"], &env(&crm_url));
    assert_eq!(code, Some(2), "{text}");
    printed.push_str(&text);
    let got = hook.accepted();
    assert_eq!(got.len(), 1, "{text}");
    let j = got[0].json();
    assert_eq!(j["run_events"][0]["event"], "run_failed");
    assert!(j["run_events"][0]["detail"].as_str().unwrap().contains("fidelis weekly"), "{j}");
    let (ts, sig) =
        (got[0].header("X-Fidelis-Timestamp").unwrap(), got[0].header("X-Fidelis-Signature").unwrap());
    assert!(fidelis::notify::http::verify(HMAC_SECRET.as_bytes(), ts, &got[0].body, sig));

    for secret in [HOOK_PATH_SECRET, HMAC_SECRET, CRM_TOKEN_SECRET] {
        let mut found = Vec::new();
        for sub in ["models", "reports", "output"] {
            files_containing(&dir.join(sub), secret, &mut found);
        }
        assert!(found.is_empty(), "{secret} is written in {found:?}");
        assert!(!printed.contains(secret), "{secret} is printed:\n{printed}");
    }
}
