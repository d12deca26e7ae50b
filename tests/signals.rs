//! Beyond purchases: event and customer inputs, the health score, review flags and
//! escalations, and what event features add on subscription data.

mod common;

use std::fs;
use std::path::Path;

use chrono::NaiveDate;
use common::{fidelis, stderr, stdout};
use fidelis::activity::{load_customers, load_events, Events, Sentiment};
use fidelis::config::{CustomersInput, EscalationConfig, EventsInput, HealthConfig};
use fidelis::signals::{self, Health, SignalData, SignalSpec};
use polars::prelude::*;
use serde_json::Value;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn events(dir: &Path, rows: &[(&str, &str, &str, &str)]) -> Events {
    let mut text = String::from("customer_id,ts,event,value\n");
    for (c, t, e, v) in rows {
        text.push_str(&format!("{c},{t},{e},{v}\n"));
    }
    let path = dir.join("events.csv");
    fs::write(&path, text).unwrap();
    load_events(&EventsInput { path: path.display().to_string(), ..EventsInput::default() }, 1000).unwrap()
}

#[test]
fn health_components_by_hand_and_renormalized() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = HealthConfig::default();
    let t = d("2024-07-01");
    // Only logins in the log: usage is the only component, its weight renormalized to 1.
    let logins = [
        ("A", "2024-06-26", "login", ""),
        ("A", "2024-06-20", "login", ""),
        ("A", "2024-06-10", "login", ""),
        ("A", "2024-06-05", "login", ""),
    ];
    let e = events(dir.path(), &logins);
    assert_eq!(signals::health_components(&cfg, &e, t), vec![("usage", 35.0)]);
    // Last login 5 days ago: 1 - 5/30; 4 active days of 20; 4 logins in 28 days = 1/week of 5.
    let usage: f64 = ((1.0 - 5.0 / 30.0) + 4.0 / 20.0 + (4.0 / 4.0) / 5.0) / 3.0;
    let h = signals::health(&cfg, &e, "A", t, 0);
    assert_eq!(h, Health { score: (100.0 * usage).round(), colour: "yellow" });
    // Events after the date do not count.
    let mut later = logins.to_vec();
    later.push(("A", "2024-07-01", "login", ""));
    assert_eq!(signals::health(&cfg, &events(dir.path(), &later), "A", t, 0), h);

    // Add an NPS score and a payment failure: engagement (NPS only: no emails in the log) and
    // financial (failures only: no downgrades in the log) join in.
    let mut rows = logins.to_vec();
    rows.push(("A", "2024-06-15", "nps", "8"));
    rows.push(("A", "2024-06-01", "payment_failed", ""));
    rows.push(("B", "2023-01-01", "ticket", "")); // B: no login, no NPS, nothing in 90 days
    let e = events(dir.path(), &rows);
    let names: Vec<&str> = signals::health_components(&cfg, &e, t).iter().map(|c| c.0).collect();
    assert_eq!(names, vec!["usage", "engagement", "financial"]);
    let usage: f64 = ((1.0 - 5.0 / 30.0) + 6.0 / 20.0 + 0.2) / 3.0;
    let want: f64 = (35.0 * usage + 20.0 * 0.8 + 10.0 * (1.0 - 1.0 / 3.0)) / 65.0;
    assert_eq!(signals::health(&cfg, &e, "A", t, 0).score, (100.0 * want).round());
    // B: usage 0 (never logged in), engagement unknown for B (dropped), financial 1.
    let b = signals::health(&cfg, &e, "B", t, 0);
    assert_eq!(b, Health { score: (100.0 * 10.0 / 45.0_f64).round(), colour: "red" });
    assert_eq!(
        (signals::colour(40.0), signals::colour(70.0), signals::colour(70.5)),
        ("yellow", "yellow", "green")
    );
}

#[test]
fn review_flags_fire_exactly_on_the_accounts_built_for_them() {
    let green = Health { score: 80.0, colour: "green" };
    let yellow = Health { score: 60.0, colour: "yellow" };
    // Model high/critical/imminent while health is green.
    let r = signals::review_reasons("imminent", Some(&green), None, &[]);
    assert_eq!(r, vec!["model risk imminent but health green (80)"]);
    assert!(signals::review_reasons("moderate", Some(&green), None, &[]).is_empty());
    assert!(signals::review_reasons("high", Some(&yellow), None, &[]).is_empty());
    // The CSM says yellow or red while the model says low.
    let r = signals::review_reasons("low", Some(&yellow), Some(Sentiment::Red), &[]);
    assert_eq!(r, vec!["CSM says red but the model says low"]);
    assert!(signals::review_reasons("low", Some(&yellow), Some(Sentiment::Green), &[]).is_empty());
    assert!(signals::review_reasons("moderate", None, Some(Sentiment::Yellow), &[]).is_empty());
    // Health falling three runs in a row while still green.
    let r = signals::review_reasons("low", Some(&green), None, &[90.0, 85.0]);
    assert_eq!(r, vec!["health falling three runs in a row (90 -> 85 -> 80) while green"]);
    assert!(signals::review_reasons("low", Some(&green), None, &[85.0, 90.0]).is_empty());
    assert!(
        signals::review_reasons("low", Some(&green), None, &[90.0, 80.0]).is_empty(),
        "not strictly falling"
    );
    assert!(signals::review_reasons("low", Some(&yellow), None, &[90.0, 70.0]).is_empty(), "no longer green");

    let rules = EscalationConfig::default();
    let esc = |level: &str, arr: Option<f64>| signals::escalation(&rules, level, arr, None);
    assert_eq!(
        esc("critical", Some(12_000.0)).as_deref(),
        Some("ARR 12,000 > 10,000 in critical: manager immediately")
    );
    assert_eq!(esc("critical", Some(10_000.0)), None, "strictly above");
    assert_eq!(esc("high", Some(40_000.0)), None);
    assert_eq!(
        esc("high", Some(60_000.0)).as_deref(),
        Some("ARR 60,000 > 50,000 in high: manager within 4 h")
    );
    assert_eq!(
        esc("moderate", Some(150_000.0)).as_deref(),
        Some("ARR 150,000 > 100,000 in moderate: notify manager within 24 h")
    );
    assert_eq!(esc("imminent", Some(1e6)), None);
    assert_eq!(esc("critical", None), None);

    // A renewal-driven rule first: it fires only within its window, and never without a
    // known renewal; outside it the next rule applies.
    let mut rules = EscalationConfig::default();
    rules.rules.insert(
        0,
        fidelis::config::EscalationRule {
            min_arr: 5_000.0,
            level: "critical".into(),
            action: "CSM call before the renewal".into(),
            max_days_to_renewal: Some(90),
            recipients: Vec::new(),
        },
    );
    let esc = |arr: f64, days: Option<i32>| signals::escalation(&rules, "critical", Some(arr), days);
    assert_eq!(
        esc(12_000.0, Some(45)).as_deref(),
        Some("ARR 12,000 > 5,000 in critical, renewal in 45 days (<= 90): CSM call before the renewal")
    );
    assert_eq!(esc(12_000.0, Some(90)).as_deref().map(|s| s.ends_with("before the renewal")), Some(true));
    assert_eq!(
        esc(12_000.0, Some(91)).as_deref(),
        Some("ARR 12,000 > 10,000 in critical: manager immediately"),
        "outside the window the next rule fires"
    );
    assert_eq!(esc(8_000.0, None), None, "no known renewal, and under the next rule's ARR");
    assert_eq!(esc(8_000.0, Some(30)).as_deref().map(|s| s.contains("renewal in 30 days")), Some(true));
}

#[test]
fn event_features_ignore_everything_from_t_on() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        ("A", "2024-03-01", "login", ""),
        ("A", "2024-05-20", "login", ""),
        ("A", "2024-06-25", "nps", "7"),
        ("A", "2024-06-30", "ticket", ""),
        ("B", "2024-04-01", "login", ""),
    ];
    let t = d("2024-07-01");
    let frame = || {
        DataFrame::new_infer_height(vec![
            Column::new("customer_id".into(), ["A", "B"]),
            Column::new("snapshot".into(), [fidelis::schema::epoch_day(t); 2]).cast(&DataType::Date).unwrap(),
        ])
        .unwrap()
    };
    let spec_of = |e: Events| {
        let data = SignalData { events: Some(e), ..Default::default() };
        let spec = SignalSpec::from_data(&data, &HealthConfig::default());
        (spec, data)
    };
    let (spec, data) = spec_of(events(dir.path(), &base));
    let mut before = frame();
    signals::append(&mut before, &spec, &data).unwrap();
    assert_eq!(before.column("nps_last").unwrap().f64().unwrap().get(0), Some(7.0));
    assert_eq!(before.column("ev_ticket_days_since").unwrap().f64().unwrap().get(0), Some(1.0));
    assert_eq!(before.column("ev_login_90d").unwrap().f64().unwrap().get(0), Some(1.0));
    // Events at or after t (and another NPS) change nothing before t.
    let mut more = base.to_vec();
    more.extend([
        ("A", "2024-07-01", "nps", "1"),
        ("A", "2024-07-02", "login", ""),
        ("B", "2024-07-01", "ticket", ""),
    ]);
    let (_, data) = spec_of(events(dir.path(), &more));
    let mut after = frame();
    signals::append(&mut after, &spec, &data).unwrap();
    assert!(before.equals_missing(&after), "{before}\n{after}");
}

#[test]
fn bad_event_and_customer_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ev.csv");
    fs::write(&p, "customer_id,ts,event,value\nA,2024-01-01,login,\nA,2024-01-02,,\nB,nonsense,login,\nB,2024-01-03,nps,high\n").unwrap();
    let err = load_events(&EventsInput { path: p.display().to_string(), ..EventsInput::default() }, 1000)
        .unwrap_err();
    let m = err.to_string();
    for want in [
        "ev.csv",
        "missing event name in column `event`",
        "row 2",
        "unparsable timestamp",
        "row 3",
        "value is not a number",
        "row 4",
    ] {
        assert!(m.contains(want), "{want} missing from: {m}");
    }
    assert_eq!(err.exit_code(), 2);
    let p = dir.path().join("cust.csv");
    fs::write(&p, "customer_id,plan,csm_sentiment\nA,pro,green\nB,basic,purple\n").unwrap();
    let err =
        load_customers(&CustomersInput { path: p.display().to_string(), ..CustomersInput::default() }, 1000)
            .unwrap_err();
    assert!(
        err.to_string().contains("column `csm_sentiment`, row 2: \"purple\": expected green, yellow or red"),
        "{err}"
    );
    fs::write(&p, "customer_id,plan\nA,pro\nA,basic\n").unwrap();
    let err =
        load_customers(&CustomersInput { path: p.display().to_string(), ..CustomersInput::default() }, 1000)
            .unwrap_err();
    assert!(err.to_string().contains("row 2: customer \"A\" already on row 1"), "{err}");
    fs::write(&p, "id,plan\nA,pro\n").unwrap();
    let err =
        load_customers(&CustomersInput { path: p.display().to_string(), ..CustomersInput::default() }, 1000)
            .unwrap_err();
    assert!(err.to_string().contains("[input.customers].customer_id"), "{err}");
}

/// Customer attributes: categories one-hot on the training table's most frequent values with
/// an explicit `other` (rare, and first seen at scoring), numbers as they are, missing = 0 in
/// every category column and NaN for a number; counts of parts of the table merge into the
/// spec of the whole; a model's attribute must be configured and stay numeric.
#[test]
fn customer_attributes_become_features() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cust.csv");
    // 12 incomes seen once plus "mid" three times: the 10 most frequent (ties by name) get a
    // column; "z..." values fall into `other`.
    let mut text = String::from("customer_id,income,size\n");
    for (i, c) in ["A", "B", "C"].iter().enumerate() {
        text.push_str(&format!("{c},mid,{}\n", i + 1));
    }
    for i in 0..12 {
        text.push_str(&format!("K{i:02},inc{i:02},2.5\n"));
    }
    text.push_str("M,,\n");
    fs::write(&p, &text).unwrap();
    let input = CustomersInput {
        path: p.display().to_string(),
        attributes: vec!["income".into(), "size".into()],
        ..CustomersInput::default()
    };
    let table = load_customers(&input, 1000).unwrap();
    let kinds: Vec<(&str, bool)> = table.attributes.iter().map(|c| (c.name.as_str(), c.numeric)).collect();
    assert_eq!(kinds, [("income", false), ("size", true)]);
    let data = SignalData { customers: Some(table.clone()), ..Default::default() };
    let spec = SignalSpec::from_data(&data, &HealthConfig::default());
    let cats: Vec<String> =
        ["inc00", "inc01", "inc02", "inc03", "inc04", "inc05", "inc06", "inc07", "inc08", "mid"]
            .map(String::from)
            .to_vec();
    assert_eq!(spec.attributes[0].categories.as_ref(), Some(&cats));
    assert_eq!(spec.attributes[1].categories, None);
    let names = spec.names();
    assert_eq!(names.len(), 10 + 1 + 1);
    assert!(
        names.contains(&"attr_income_mid".to_string()) && names.contains(&"attr_income_other".to_string())
    );
    assert_eq!(names.last().unwrap(), "attr_size");
    assert!(spec.needs_customers());

    // The counts of two halves of the table give the same spec as the whole.
    let half = |keep: fn(&str) -> bool| {
        let mut t = table.clone();
        t.rows.retain(|k, _| keep(k));
        signals::SignalCounts::of(&SignalData { customers: Some(t), ..Default::default() })
    };
    let mut merged = half(|k| k < "K05");
    merged.merge(&half(|k| k >= "K05"));
    assert_eq!(SignalSpec::from_counts(&merged, &HealthConfig::default()), spec);

    let t = d("2024-07-01");
    let ids = ["A", "K11", "M", "NOBODY"];
    let frame = || {
        DataFrame::new_infer_height(vec![
            Column::new("customer_id".into(), ids),
            Column::new("snapshot".into(), [fidelis::schema::epoch_day(t); 4]).cast(&DataType::Date).unwrap(),
        ])
        .unwrap()
    };
    let mut f = frame();
    signals::append(&mut f, &spec, &data).unwrap();
    let col =
        |n: &str| -> Vec<f64> { f.column(n).unwrap().f64().unwrap().iter().map(|v| v.unwrap()).collect() };
    assert_eq!(col("attr_income_mid"), [1.0, 0.0, 0.0, 0.0]);
    // K11's income (rare in training) is `other`; M has none; NOBODY is not in the table.
    assert_eq!(col("attr_income_other"), [0.0, 1.0, 0.0, 0.0]);
    let size = col("attr_size");
    assert_eq!(&size[..2], [1.0, 2.5]);
    assert!(size[2].is_nan() && size[3].is_nan(), "{size:?}");

    // Scoring with a table where A's income is new: `other`, not an error.
    fs::write(&p, text.replace("A,mid,1", "A,brand new,1")).unwrap();
    let data2 = SignalData { customers: Some(load_customers(&input, 1000).unwrap()), ..Default::default() };
    let mut f = frame();
    signals::append(&mut f, &spec, &data2).unwrap();
    assert_eq!(f.column("attr_income_other").unwrap().f64().unwrap().get(0), Some(1.0));
    // The size column read as text (a stray word): refused, naming file and column.
    fs::write(&p, text.replace("A,mid,1", "A,mid,one")).unwrap();
    let data3 = SignalData { customers: Some(load_customers(&input, 1000).unwrap()), ..Default::default() };
    let err = signals::append(&mut frame(), &spec, &data3).unwrap_err().to_string();
    assert!(
        err.contains("cust.csv") && err.contains("column `size`, row 1: \"one\" is not a number"),
        "{err}"
    );
    // An attribute the model needs but the configuration does not list.
    let fewer = CustomersInput { attributes: vec!["income".into()], ..input.clone() };
    fs::write(&p, &text).unwrap();
    let data4 = SignalData { customers: Some(load_customers(&fewer, 1000).unwrap()), ..Default::default() };
    let err = signals::append(&mut frame(), &spec, &data4).unwrap_err().to_string();
    assert!(err.contains("input.customers.attributes") && err.contains("`size`"), "{err}");
    // An attribute that is not in the file.
    let wrong = CustomersInput { attributes: vec!["incme".into()], ..input };
    let err = load_customers(&wrong, 1000).unwrap_err().to_string();
    assert!(err.contains("cust.csv") && err.contains("no column `incme`") && err.contains("income"), "{err}");
}

/// On the SaaS generator churn follows usage, tickets and payment failures: the event
/// features must lift the holdout AUC well above transactions alone (monthly payments).
#[test]
fn event_features_raise_saas_churn_auc_and_the_weekly_run_flags_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let out = fidelis(args, dir.path());
        assert!(out.status.success(), "fidelis {args:?}: {}", stderr(&out));
        out
    };
    ok(&["generate", "--kind", "saas", "--customers", "4000", "--seed", "7", "--out", "gen", "-q"]);
    let base =
        "[input.transactions]\npath = \"gen/transactions.parquet\"\n[snapshots]\neligibility_days = 31\n\
                [baselines]\nenabled = false\n";
    fs::write(
        dir.path().join("tx.toml"),
        format!("{base}[paths]\nmodels_dir = \"m_tx\"\nreports_dir = \"r_tx\"\n"),
    )
    .unwrap();
    fs::write(
        dir.path().join("all.toml"),
        format!(
            "{base}[input.events]\npath = \"gen/events.parquet\"\n[input.customers]\npath = \"gen/customers.parquet\"\n\
             [paths]\nmodels_dir = \"m_all\"\nreports_dir = \"r_all\"\n"
        ),
    )
    .unwrap();
    ok(&["train", "--config", "tx.toml", "-q"]);
    ok(&["train", "--config", "all.toml", "-q"]);
    let auc = |m: &str| -> f64 {
        let id = fs::read_to_string(dir.path().join(m).join("latest")).unwrap();
        let v: Value = serde_json::from_str(
            &fs::read_to_string(dir.path().join(m).join(id.trim()).join("metrics.json")).unwrap(),
        )
        .unwrap();
        v["churn"]["holdout"]["roc_auc"].as_f64().unwrap()
    };
    let (without, with) = (auc("m_tx"), auc("m_all"));
    eprintln!("SaaS holdout churn AUC: transactions only {without:.4}, with events and customers {with:.4}");
    assert!(with > without + 0.15, "events: {with} vs transactions only: {without}");

    // The weekly run writes health, flags and escalations, and the report lists them first.
    let out = ok(&["weekly", "--config", "all.toml", "-q"]);
    assert!(stdout(&out).contains("weekly report"));
    let scores_file = walk(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().contains("/scores/run=") && p.ends_with("part-0.parquet"))
        .expect("a scores partition");
    let scores = fidelis::sink::read_parquet(&scores_file).unwrap();
    for c in [
        "health_score",
        "health_colour",
        "usage_drop",
        "csm_sentiment",
        "review_flag",
        "review_reason",
        "escalation",
    ] {
        assert!(scores.column(c).is_ok(), "scores lack {c}");
    }
    let flags = scores.column("review_flag").unwrap().bool().unwrap().sum().unwrap_or(0);
    let reasons = scores.column("review_reason").unwrap().str().unwrap().iter().flatten().count();
    assert!(flags > 0 && flags as usize == reasons, "{flags} flags, {reasons} reasons");
    let weekly = fs::read_dir(dir.path().join("r_all/weekly")).unwrap().flatten().map(|e| e.path());
    let page = weekly.into_iter().find(|p| p.extension().is_some_and(|x| x == "html")).unwrap();
    let html = fs::read_to_string(page).unwrap();
    let review = html.find("Accounts to review").expect("review section");
    assert!(review < html.find("Customers per risk level").unwrap(), "flagged accounts come first");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

mod property {
    use super::*;
    use proptest::prelude::*;

    const IDS: [&str; 3] = ["A", "B", "C"];
    const NAMES: [&str; 4] = ["login", "nps", "ticket", "payment_failed"];

    fn write(dir: &Path, name: &str, rows: &[(usize, NaiveDate, usize, u8)]) -> Events {
        let mut text = String::from("customer_id,ts,event,value\n");
        for (c, day, e, v) in rows {
            text.push_str(&format!("{},{} 12:00:00,{},{}\n", IDS[*c], day, NAMES[*e], v));
        }
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        load_events(&EventsInput { path: path.display().to_string(), ..EventsInput::default() }, 1000)
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Adding any events at or after t never changes an event feature at t.
        #[test]
        fn event_features_never_see_t_or_later(
            before in proptest::collection::vec((0usize..3, 1i64..200, 0usize..4, 0u8..11), 1..40),
            later in proptest::collection::vec((0usize..3, 0i64..60, 0usize..4, 0u8..11), 1..20),
        ) {
            let t = d("2024-07-01");
            let dir = tempfile::tempdir().unwrap();
            let past: Vec<_> = before.iter().map(|&(c, k, e, v)| (c, t - chrono::Duration::days(k), e, v)).collect();
            let mut all = past.clone();
            all.extend(later.iter().map(|&(c, k, e, v)| (c, t + chrono::Duration::days(k), e, v)));
            let (a, b) = (write(dir.path(), "a.csv", &past), write(dir.path(), "b.csv", &all));
            let union = SignalData { events: Some(b.clone()), ..Default::default() };
            let spec = SignalSpec::from_data(&union, &HealthConfig::default());
            let frame = || DataFrame::new_infer_height(vec![
                Column::new("customer_id".into(), IDS),
                Column::new("snapshot".into(), [fidelis::schema::epoch_day(t); 3]).cast(&DataType::Date).unwrap(),
            ]).unwrap();
            let (mut x, mut y) = (frame(), frame());
            signals::append(&mut x, &spec, &SignalData { events: Some(a.clone()), ..Default::default() }).unwrap();
            signals::append(&mut y, &spec, &union).unwrap();
            prop_assert!(x.equals_missing(&y), "{}\n{}", x, y);
            // The health score at t is blind to them too.
            let cfg = HealthConfig::default();
            for id in IDS {
                let (ha, hb) = (signals::health(&cfg, &a, id, t, 10), signals::health(&cfg, &b, id, t, 10));
                prop_assert_eq!(ha, hb);
            }
        }
    }
}

/// The generated subscription table reads through `[input.subscriptions]`: `fidelis validate`
/// counts its rows and customers; a bad cell stops it naming the column and row (exit 2).
#[test]
fn the_subscription_table_validates_and_names_a_bad_cell() {
    let dir = tempfile::tempdir().unwrap();
    let out = fidelis(
        &[
            "generate",
            "--kind",
            "saas",
            "--contracts",
            "--customers",
            "500",
            "--seed",
            "5",
            "--out",
            "gen",
            "-q",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = "[input.transactions]\npath = \"gen/transactions.parquet\"\n[input.subscriptions]\npath = \"gen/subs.csv\"\n";
    fs::write(dir.path().join("v.toml"), cfg).unwrap();
    let subs = ParquetReader::new(fs::File::open(dir.path().join("gen/subscriptions.parquet")).unwrap())
        .finish()
        .unwrap();
    let rows = subs.height();
    let mut csv = subs.clone();
    CsvWriter::new(fs::File::create(dir.path().join("gen/subs.csv")).unwrap()).finish(&mut csv).unwrap();
    let out = fidelis(&["validate", "--config", "v.toml"], dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains(&format!("subscriptions: gen/subs.csv: {rows} rows, 500 customers, columns end, billing_period, mrr, cancelled_at")),
        "{text}"
    );
    // Revenue at the end of the data: GRR never above 100%, NRR at least GRR.
    let line =
        text.lines().find(|l| l.contains("at the end of the data: MRR")).unwrap_or_else(|| panic!("{text}"));
    let twelve = line.split("last 12 months NRR").nth(1).unwrap();
    let pct = |v: &str| -> f64 { v.split('%').next().unwrap().trim().parse().unwrap() };
    let (nrr, grr) = (pct(twelve), pct(twelve.rsplit("GRR").next().unwrap()));
    assert!(grr > 0.0 && grr <= 100.0 && nrr >= grr, "{line}");
    // Row 3's notice moved before its start.
    let mut lines: Vec<String> =
        fs::read_to_string(dir.path().join("gen/subs.csv")).unwrap().lines().map(String::from).collect();
    let mut cells: Vec<String> = lines[3].split(',').map(String::from).collect();
    cells[5] = "2000-01-01".into();
    lines[3] = cells.join(",");
    fs::write(dir.path().join("gen/subs.csv"), lines.join("\n")).unwrap();
    let out = fidelis(&["validate", "--config", "v.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("gen/subs.csv: column `cancelled_at`, row 3: 2000-01-01 is before the start"),
        "{}",
        stderr(&out)
    );
}
