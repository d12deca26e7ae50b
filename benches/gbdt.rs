//! The GBDT engines on one feature matrix: fidelis's own histogram engine against forust-ml
//! (the engine fidelis fitted with before), same settings (the defaults of `[model]`), same
//! rows: the churn model (log loss), the CLV model (squared error) early-stopped on the
//! validation snapshot, and the Poisson CLV model (own engine only). Wall time, trees, holdout
//! AUC / normalized Gini. The matrix is the one `make bench` exports at 100,000 customers
//! (`data/bench/pipeline_100000/features.parquet`), or `FIDELIS_BENCH_FEATURES`.
//!
//! `cargo bench --bench gbdt` prints a table and writes `reports/bench/gbdt.json`.

use std::path::PathBuf;
use std::time::Instant;

use fidelis::config::GbdtConfig;
use fidelis::features::FeatureMatrix;
use fidelis::metrics::{normalized_gini, roc_auc};
use fidelis::schema::{CHURN, CLV, CUSTOMER, SNAPSHOT};
use fidelis::train::gbdt::{ForustGbdt, Gbdt, HistGbdt, Task};
use fidelis::train::hist::Binned;
use fidelis::train::poisson::PoissonGbdt;
use polars::prelude::*;
use serde_json::json;

fn column(df: &DataFrame, name: &str) -> Vec<f64> {
    df.column(name).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().into_no_null_iter().collect()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let path = PathBuf::from(
        std::env::var("FIDELIS_BENCH_FEATURES")
            .unwrap_or_else(|_| "data/bench/pipeline_100000/features.parquet".into()),
    );
    if !path.is_file() {
        eprintln!("{} missing: run `cargo bench --bench pipeline` first (it exports it)", path.display());
        return;
    }
    let df = fidelis::sink::read_parquet(&path).unwrap();
    let skip = [CUSTOMER, SNAPSHOT, CHURN, CLV, "role"];
    let names: Vec<String> =
        df.get_column_names().iter().map(|s| s.to_string()).filter(|n| !skip.contains(&n.as_str())).collect();
    let x = FeatureMatrix::from_frame(&df, &names).unwrap();
    let role: Vec<String> =
        df.column("role").unwrap().str().unwrap().iter().map(|v| v.unwrap_or("").to_string()).collect();
    let idx = |r: &str| -> Vec<usize> { (0..role.len()).filter(|&i| role[i] == r).collect() };
    let (fit, val, hold) = (idx("fit"), idx("validation"), idx("holdout"));
    let (churn, clv) = (column(&df, CHURN), column(&df, CLV));
    let pick = |v: &[f64], i: &[usize]| i.iter().map(|&k| v[k]).collect::<Vec<_>>();
    let (xf, xv, xh) = (x.select_rows(&fit), x.select_rows(&val), x.select_rows(&hold));
    // FIDELIS_BENCH_LR / FIDELIS_BENCH_SUBSAMPLE: other settings than the defaults.
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    let d = GbdtConfig::default();
    let params = GbdtConfig {
        learning_rate: env("FIDELIS_BENCH_LR").unwrap_or(d.learning_rate),
        subsample: env("FIDELIS_BENCH_SUBSAMPLE").unwrap_or(d.subsample),
        ..d
    };
    // FIDELIS_BENCH_ONLY_OWN=1: the own engine only (profiling).
    let only_own = std::env::var("FIDELIS_BENCH_ONLY_OWN").is_ok_and(|v| v == "1");
    // FIDELIS_BENCH_ONLY_SPARSE=1: only the sparse-subset fits (large matrices).
    let only_sparse = std::env::var("FIDELIS_BENCH_ONLY_SPARSE").is_ok_and(|v| v == "1");
    println!(
        "{} fit rows, {} validation, {} holdout, {} features",
        fit.len(),
        val.len(),
        hold.len(),
        names.len()
    );

    let mut results = Vec::new();
    let mut row = |engine: &str, model: &str, secs: f64, trees: usize, metric: f64| {
        println!(
            "{engine:<14} {model:<14} {secs:>8.2} s {trees:>6} trees {:>8.3} ms/tree  {metric:.4}",
            1e3 * secs / trees.max(1) as f64
        );
        results.push(
            json!({"engine": engine, "model": model, "wall_s": secs, "trees": trees, "holdout": metric}),
        );
    };
    let t = Instant::now();
    let binned = Binned::new(&x, Some(&fit), params.nbins as usize);
    let bin_s = t.elapsed().as_secs_f64();
    println!("binning every row once (cuts from the fit rows): {bin_s:.2} s");
    for (task, y, name) in [(Task::Churn, &churn, "churn"), (Task::Clv, &clv, "clv")] {
        let (yf, yv, yh) = (pick(y, &fit), pick(y, &val), pick(y, &hold));
        let metric = |p: &[f64]| if task == Task::Churn { roc_auc(&yh, p) } else { normalized_gini(&yh, p) };
        if !only_own && !only_sparse {
            let t = Instant::now();
            let m = ForustGbdt::fit(&params, task, &xf, &yf, Some((&xv, &yv))).unwrap();
            row("forust-ml", name, t.elapsed().as_secs_f64(), m.n_trees(), metric(&m.predict(&xh)));
        }
        if only_sparse {
            continue;
        }
        let t = Instant::now();
        let m = HistGbdt::fit_binned(&params, task, &binned, &fit, y, Some((&xv, &yv))).unwrap();
        row("fidelis-hist", name, t.elapsed().as_secs_f64(), m.n_trees(), metric(&m.predict(&xh)));
    }
    // A purged model's fit on a sparse sample of rows (every 1 in `k` of the fit rows, about
    // 200,000): straight from the shared bins, or from a compact copy of those rows.
    let k = (fit.len() / 200_000).max(1);
    let sparse: Vec<usize> = fit.iter().copied().step_by(k).collect();
    let fixed = GbdtConfig { iterations: 100, ..params.clone() };
    let t = Instant::now();
    let m = HistGbdt::fit_binned(&fixed, Task::Churn, &binned, &sparse, &churn, None).unwrap();
    row("fidelis-hist", "churn, 1 in k (shared)", t.elapsed().as_secs_f64(), m.n_trees(), f64::NAN);
    let t = Instant::now();
    let compact = binned.select(&sparse);
    let all: Vec<usize> = (0..sparse.len()).collect();
    let m = HistGbdt::fit_binned(&fixed, Task::Churn, &compact, &all, &pick(&churn, &sparse), None).unwrap();
    row("fidelis-hist", "churn, 1 in k (compact)", t.elapsed().as_secs_f64(), m.n_trees(), f64::NAN);
    let (yv, yh) = (pick(&clv, &val), pick(&clv, &hold));
    if only_sparse {
        return;
    }
    let t = Instant::now();
    let m = PoissonGbdt::fit_binned(&params, &binned, &fit, &clv, Some((&xv, &yv))).unwrap();
    row(
        "fidelis-hist",
        "clv poisson",
        t.elapsed().as_secs_f64(),
        m.n_trees(),
        normalized_gini(&yh, &m.predict(&xh)),
    );
    if bench {
        std::fs::create_dir_all("reports/bench").unwrap();
        let out =
            json!({"fit_rows": fit.len(), "features": names.len(), "binning_s": bin_s, "runs": results});
        std::fs::write("reports/bench/gbdt.json", serde_json::to_vec_pretty(&out).unwrap()).unwrap();
        println!("written to reports/bench/gbdt.json");
    }
}
