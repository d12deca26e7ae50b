//! Reports: the evaluation report `train` writes and the weekly report `weekly` writes are
//! self-contained HTML (nothing fetched), every chart is well-formed SVG, the numbers printed
//! are the ones in metrics.json / the scores tables, regeneration gives the same files, and a
//! real browser (headless Chromium, when installed) renders them without errors.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{fidelis, stderr};
use fidelis::format::{f4, int, money};
use fidelis::sink::read_parquet;
use polars::prelude::*;
use serde_json::Value;

const RUNS: [&str; 2] = ["2024-09-01", "2024-09-08"];

/// 3,000 generated customers, a model, and three weekly runs: two in September (matured
/// by the end of the data) and one at the end of the data.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let ok = |args: &[&str]| {
            let out = fidelis(args, &dir);
            assert!(out.status.success(), "fidelis {args:?}: {}", stderr(&out));
        };
        ok(&["generate", "--customers", "3000", "--seed", "5", "--out", "gen", "-q"]);
        fs::write(dir.join("fidelis.toml"), "[input.transactions]\npath = \"gen/transactions.parquet\"\n")
            .unwrap();
        ok(&["train", "--config", "fidelis.toml", "-q"]);
        for d in RUNS {
            ok(&["weekly", "--config", "fidelis.toml", "--as-of", d, "-q"]);
        }
        ok(&["weekly", "--config", "fidelis.toml", "-q"]);
        dir
    })
}

fn model_id(dir: &Path) -> String {
    fs::read_to_string(dir.join("models/latest")).unwrap().trim().to_string()
}

fn last_run(dir: &Path) -> String {
    let mut runs: Vec<String> = fs::read_dir(dir.join("reports/weekly"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".html").map(str::to_string))
        .collect();
    runs.sort();
    runs.pop().unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Self-contained: no network reference, no script, no external resource; every inline SVG
/// parses as XML. Returns the number of charts.
fn check_self_contained(html: &str) -> usize {
    for bad in ["http://", "https://", "<script", "<link", "<img", "src=", "url("] {
        assert!(!html.contains(bad), "the report contains `{bad}`");
    }
    for href in html.split("href=\"").skip(1) {
        assert!(href.starts_with('#'), "a link leaves the page: {}", &href[..href.len().min(40)]);
    }
    let mut charts = 0;
    for part in html.split("<svg").skip(1) {
        let end = part.find("</svg>").expect("svg closed");
        let svg = format!("<svg{}</svg>", &part[..end]);
        roxmltree::Document::parse(&svg)
            .unwrap_or_else(|e| panic!("chart {charts} is not well-formed XML: {e}"));
        charts += 1;
    }
    charts
}

fn check_chart_files(dir: &Path) {
    let mut n = 0;
    for e in fs::read_dir(dir.join("charts")).unwrap().flatten() {
        let text = fs::read_to_string(e.path()).unwrap();
        let doc =
            roxmltree::Document::parse(&text).unwrap_or_else(|err| panic!("{}: {err}", e.path().display()));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        n += 1;
    }
    assert!(n > 0);
}

#[test]
fn evaluation_report_is_self_contained_and_prints_the_metrics() {
    let dir = fixture();
    let id = model_id(dir);
    let rdir = dir.join("reports").join(&id);
    let html = fs::read_to_string(rdir.join("evaluation.html")).unwrap();
    let charts = check_self_contained(&html);
    assert!(charts >= 10, "{charts} charts");
    check_chart_files(&rdir);
    let md = fs::read_to_string(rdir.join("evaluation.md")).unwrap();
    for line in md.lines().filter(|l| l.starts_with("![")) {
        let file = line.split("](").nth(1).unwrap().trim_end_matches(')');
        assert!(rdir.join(file).is_file(), "{line}: missing {file}");
    }

    // The numbers printed are metrics.json's.
    let m = json(&dir.join("models").join(&id).join("metrics.json"));
    let num = |v: &Value| v.as_f64().unwrap();
    let hold = &m["churn"]["holdout"];
    let expect = [
        f4(num(&hold["roc_auc"])),
        f4(num(&hold["pr_auc"])),
        f4(num(&hold["brier"])),
        f4(num(&m["clv"]["holdout"]["normalized_gini"])),
        f4(num(&m["clv"]["validation"]["normalized_gini"])),
        f4(num(&m["churn"]["validation"]["roc_auc"])),
        f4(num(&m["calibration"]["holdout_ece_before"])),
        f4(num(&m["calibration"]["holdout_ece_after"])),
        f4(num(&m["decision"]["threshold"])),
        money(num(&m["decision"]["holdout"]["net_value"])),
        money(num(&m["decision"]["holdout"]["net_all"])),
        money(num(&m["decision"]["holdout"]["net_top10"])),
        int(m["n_holdout"].as_i64().unwrap()),
    ];
    for e in &expect {
        assert!(html.contains(e.as_str()), "the HTML does not show {e}");
        assert!(md.contains(e.as_str()), "the Markdown does not show {e}");
    }
    for (name, b) in m["baselines"].as_object().unwrap() {
        if let Some(c) = b.get("churn") {
            let auc = f4(num(&c["holdout"]["roc_auc"]));
            assert!(html.contains(&format!("{name} (AUC {auc})")), "ROC legend of {name} shows {auc}");
        }
    }
    for s in m["snapshots"].as_array().unwrap() {
        assert!(html.contains(s["snapshot"].as_str().unwrap()));
    }
    // Every candidate, with the metric that chose, its standard error against the best, and its
    // validation and holdout numbers.
    let cand = &m["candidates"];
    assert!(html.contains("Candidates and the choice") && html.contains(cand["basis"].as_str().unwrap()));
    for (task, key) in [("churn", "roc_auc"), ("clv", "normalized_gini")] {
        for c in cand[task].as_array().unwrap() {
            let oot = c[&format!("out_of_time_{key}")].as_f64().map_or("-".to_string(), f4);
            let se = c["standard_error"].as_f64().map_or("-".to_string(), f4);
            let row = format!(
                "{} | {oot} | {se} | {} | {} |",
                c["name"].as_str().unwrap(),
                f4(num(&c["validation"][key])),
                f4(num(&c["holdout"][key]))
            );
            assert!(md.contains(&row), "the Markdown lacks the candidate row {row}");
        }
    }
    // The JSON beside it carries the same values (not re-rounded).
    let j = json(&rdir.join("evaluation.json"));
    assert_eq!(j["churn"]["roc_auc"], hold["roc_auc"]);
    assert_eq!(j["clv"]["normalized_gini"], m["clv"]["holdout"]["normalized_gini"]);
    // The confusion matrix adds up to the holdout and matches the decision's counts.
    let c = &j["decision"]["confusion"];
    let cell = |k: &str| c[k].as_u64().unwrap();
    assert_eq!(
        cell("true_positive") + cell("false_positive") + cell("false_negative") + cell("true_negative"),
        m["n_holdout"].as_u64().unwrap()
    );
    assert_eq!(
        cell("true_positive") + cell("false_positive"),
        m["decision"]["holdout"]["contacted"].as_u64().unwrap()
    );
    // The ROC curve of the GBDT ends at (1, 1).
    let roc = j["roc"][0]["points"].as_array().unwrap();
    assert_eq!(roc.last().unwrap(), &serde_json::json!([1.0, 1.0]));
    // Global importance by mean |SHAP| and a dependence plot of each of the three features
    // with the largest, in the report and in metrics.json (where the points come from).
    assert_eq!(m["gbdt"]["churn_contributions_shap"], true);
    let mean_abs = m["gbdt"]["churn_mean_abs_contribution"].as_object().unwrap();
    let mut top: Vec<(&String, f64)> = mean_abs.iter().map(|(k, v)| (k, num(v))).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let deps = m["gbdt"]["churn_dependence"].as_array().unwrap();
    assert_eq!(deps.len(), 3);
    for (i, (d, (name, _))) in deps.iter().zip(&top).enumerate() {
        assert_eq!(d["feature"].as_str().unwrap(), name.as_str(), "dependence plots in mean |SHAP| order");
        let points = d["points"].as_array().unwrap();
        assert!(!points.is_empty() && points.len() <= 400);
        let svg = fs::read_to_string(rdir.join(format!("charts/dependence-{}.svg", i + 1))).unwrap();
        assert!(svg.contains(&format!("SHAP dependence: {name}")), "no dependence plot of {name}");
        assert!(md.contains(&format!("({} shown): the value of {name}", points.len())), "{name}");
    }
    let svg = fs::read_to_string(rdir.join("charts/contributions.svg")).unwrap();
    assert!(svg.contains("Mean |SHAP value| to the churn log-odds"));
    assert!(md.contains("exact SHAP values by TreeSHAP"));
}

fn scores(dir: &Path, as_of: &str) -> DataFrame {
    read_parquet(&dir.join(format!("output/scores/run={as_of}/part-0.parquet"))).unwrap()
}

#[test]
fn weekly_report_shows_the_run() {
    let dir = fixture();
    let last = last_run(dir);
    let html = fs::read_to_string(dir.join(format!("reports/weekly/{last}.html"))).unwrap();
    assert!(check_self_contained(&html) >= 2);
    let j = json(&dir.join(format!("reports/weekly/{last}.json")));
    let df = scores(dir, &last);
    assert_eq!(j["scored"].as_u64().unwrap() as usize, df.height());
    // Customers per level equal the scores table's, and last week's the previous run's.
    let count = |df: &DataFrame, level: &str| {
        df.column("risk_level").unwrap().str().unwrap().iter().filter(|v| *v == Some(level)).count()
    };
    let prev = scores(dir, RUNS[1]);
    assert_eq!(j["previous_run"], RUNS[1]);
    for l in j["levels"].as_array().unwrap() {
        let name = l["level"].as_str().unwrap();
        assert_eq!(l["customers"].as_u64().unwrap() as usize, count(&df, name), "{name}");
        assert_eq!(l["previous"].as_u64().unwrap() as usize, count(&prev, name), "{name} last week");
    }
    // The riskiest customer heads the top table; the risers are exactly those up 20+ points.
    let top = read_parquet(&dir.join(format!("output/top_risk/run={last}/part-0.parquet"))).unwrap();
    let first = top.column("customer_id").unwrap().str().unwrap().get(0).unwrap().to_string();
    assert_eq!(j["top"][0]["customer_id"], first.as_str());
    assert!(html.contains(&first));
    // The contact list: the contacted customer with the highest expected loss heads it, and
    // every listed customer is one the decision contacts.
    let contacted = df.clone().lazy().filter(col("contact")).collect().unwrap();
    let loss = contacted.column("expected_loss").unwrap().f64().unwrap();
    let max_loss = loss.iter().flatten().fold(f64::MIN, f64::max);
    let worth = j["worth_saving"].as_array().unwrap();
    assert!(!worth.is_empty() && worth.iter().all(|r| r["contact"] == true), "{worth:?}");
    assert_eq!(worth[0]["expected_loss"].as_f64().unwrap(), max_loss);
    // The contact list leads (before the top-risk segment), and each list says how it is ranked.
    let lead = html.find("Contact list: most worth a call").expect("the contact list");
    assert!(lead < html.find("Top 10% risk segment").unwrap(), "the contact list comes first");
    assert!(
        html.contains("ranked by expected loss")
            && html.contains("ranked by churn probability (output.rank_by)")
    );
    let change = df.column("score_change").unwrap().cast(&DataType::Int32).unwrap();
    let risers = change.i32().unwrap().iter().filter(|c| c.is_some_and(|c| c >= 20)).count();
    assert_eq!(j["risers_total"].as_u64().unwrap() as usize, risers);
    // Segments cover every scored customer.
    let seg_total: u64 =
        j["segments"].as_array().unwrap().iter().map(|s| s["customers"].as_u64().unwrap()).sum();
    assert_eq!(seg_total as usize, df.height());
    // Realized AUC of the matured September runs, as the monitoring history holds them.
    let hist = read_parquet(&dir.join("output/monitoring/metrics_history.parquet")).unwrap();
    let aucs = hist
        .lazy()
        .filter(col("kind").eq(lit("realized")).and(col("metric").eq(lit("roc_auc"))))
        .collect()
        .unwrap();
    let mut stored: Vec<f64> = aucs.column("value").unwrap().f64().unwrap().iter().flatten().collect();
    let mut shown: Vec<f64> =
        j["auc_history"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap()).collect();
    stored.sort_by(f64::total_cmp);
    shown.sort_by(f64::total_cmp);
    assert_eq!(stored.len(), RUNS.len(), "both September runs matured");
    assert_eq!(shown, stored);
    let latest = j["auc_history"].as_array().unwrap().last().unwrap()[1].as_f64().unwrap();
    assert!(html.contains(&f4(latest)), "the latest realized AUC is printed");
    assert!(html.contains("Realized churn ROC AUC"), "the AUC chart is drawn");
    // KPIs are shares where they should be, with their formulas shown.
    let k = &j["kpis"];
    for key in ["retention_rate_90d", "churn_rate_monthly", "churn_rate_annualized", "repeat_purchase_rate"] {
        let v = k[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    assert!(html.contains("1 - (1 - monthly churn)^12"));
    assert!(!k["cohorts"].as_array().unwrap().is_empty());
}

/// Each run's performance estimated when it was scored, beside the realized figures of the
/// runs that matured: the weekly report's table and chart hold what the history recorded.
#[test]
fn weekly_report_shows_estimated_beside_realized_performance() {
    let dir = fixture();
    let last = last_run(dir);
    let j = json(&dir.join(format!("reports/weekly/{last}.json")));
    let runs = j["performance"].as_array().unwrap();
    let dates: Vec<&str> = runs.iter().map(|r| r["estimated"]["run"].as_str().unwrap()).collect();
    assert_eq!(dates, [RUNS[0], RUNS[1], last.as_str()], "every run, oldest first");
    let hist = read_parquet(&dir.join("output/monitoring/metrics_history.parquet")).unwrap();
    let value = |kind: &str, item: &str, metric: &str| {
        let df = hist
            .clone()
            .lazy()
            .filter(
                col("kind").eq(lit(kind)).and(col("item").eq(lit(item))).and(col("metric").eq(lit(metric))),
            )
            .collect()
            .unwrap();
        df.column("value").unwrap().f64().unwrap().get(0).unwrap()
    };
    for r in runs {
        let run = r["estimated"]["run"].as_str().unwrap();
        let auc = &r["estimated"]["roc_auc"];
        let (v, lo, hi) =
            (auc["value"].as_f64().unwrap(), auc["low"].as_f64().unwrap(), auc["high"].as_f64().unwrap());
        assert!(lo < v && v < hi, "{run}: {lo} {v} {hi}");
        assert_eq!(v, value("estimated", run, "roc_auc"), "{run}: the history's estimate");
        match r["realized"].as_array() {
            Some(f) => assert_eq!(f[0].as_f64().unwrap(), value("realized", run, "roc_auc"), "{run}"),
            None => assert_eq!(run, last, "only the last run has not matured"),
        }
    }
    let html = fs::read_to_string(dir.join(format!("reports/weekly/{last}.html"))).unwrap();
    assert!(html.contains("Performance before the labels"));
    assert!(html.contains("Realized AUC inside the interval estimated when the run was scored"));
    let e = &runs[2]["estimated"]["roc_auc"];
    assert!(html.contains(&f4(e["value"].as_f64().unwrap())), "this run's estimate is printed");
}

#[test]
fn report_command_regenerates_the_same_files() {
    let dir = fixture();
    let ws = tempfile::tempdir().unwrap();
    for sub in ["gen", "models", "output"] {
        copy_dir(&dir.join(sub), &ws.path().join(sub));
    }
    fs::copy(dir.join("fidelis.toml"), ws.path().join("fidelis.toml")).unwrap();
    let out = fidelis(&["report", "--config", "fidelis.toml", "--weekly", "-q"], ws.path());
    assert!(out.status.success(), "{}", stderr(&out));
    let id = model_id(dir);
    let last = last_run(dir);
    for (a, b) in [
        (format!("reports/{id}/evaluation.json"), format!("reports/{id}/evaluation.json")),
        (format!("reports/{id}/evaluation.html"), format!("reports/{id}/evaluation.html")),
        (format!("reports/weekly/{last}.html"), format!("reports/weekly/{last}.html")),
        (format!("reports/weekly/{last}.md"), format!("reports/weekly/{last}.md")),
    ] {
        let before = fs::read_to_string(dir.join(&a)).unwrap();
        let after = fs::read_to_string(ws.path().join(&b)).unwrap();
        assert!(before == after, "{a} differs after `fidelis report`");
    }
    // A date without a run is a clear error.
    let out = fidelis(
        &["report", "--config", "fidelis.toml", "--weekly", "--as-of", "2020-01-01", "-q"],
        ws.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no scoring run at 2020-01-01"), "{}", stderr(&out));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), target).unwrap();
        }
    }
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    })
}

/// Open both reports in headless Chromium: the page renders (a screenshot is taken), every
/// chart is in the rendered DOM, and the console shows no error.
#[test]
fn reports_render_in_headless_chromium() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var("FIDELIS_REQUIRE_CHROMIUM").is_err(),
            "FIDELIS_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!("skipped: no chromium on PATH (Debian package `chromium`; .ci/run installs it)");
        return;
    };
    let dir = fixture();
    let pages = [
        dir.join("reports").join(model_id(dir)).join("evaluation.html"),
        dir.join("reports/weekly").join(format!("{}.html", last_run(dir))),
    ];
    for page in pages {
        let html = fs::read_to_string(&page).unwrap();
        let charts = html.matches("<svg").count();
        let shot = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
        let url = format!("file://{}", page.canonicalize().unwrap().display());
        let base = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
        ];
        let out = Command::new(&browser)
            .args(base)
            .args(["--window-size=1100,3000", &format!("--screenshot={}", shot.path().display()), &url])
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "chromium failed on {}: {log}", page.display());
        let size = fs::metadata(shot.path()).unwrap().len();
        assert!(size > 20_000, "screenshot of {} is only {size} bytes", page.display());
        for line in log.lines() {
            assert!(!(line.contains("CONSOLE") || line.contains("Uncaught")), "browser console: {line}");
        }
        let dom = Command::new(&browser).args(base).args(["--dump-dom", &url]).output().unwrap();
        let dom = String::from_utf8_lossy(&dom.stdout);
        assert_eq!(dom.matches("<svg").count(), charts, "every chart reached the rendered DOM");
        assert!(dom.contains("</main>"));
    }
}
