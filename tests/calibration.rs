//! Calibration on short histories (issue 32, item 3): with one year of history the candidates
//! are cross-fitted on one snapshot and the calibrator is chosen k-fold at the validation
//! snapshot. When the churn rate moves between the snapshots (60% of the customers buy three
//! times more from mid-September), a calibrator chosen there raised the holdout ECE (seeds 1
//! and 2: 0.0160 -> 0.0260, 0.0142 -> 0.0516). The calibrator must now also carry forward in
//! time (fitted on the fit rows' cross-fitted predictions, it must clearly lower the
//! validation snapshot's ECE), so calibration never makes the holdout ECE worse by more than
//! 0.005 on these logs, and a calibrator that does carry forward still ships.

mod common;

use std::fs;

use common::{fidelis, stderr};

fn train(seed: u64, shift_date: &str, share: &str, rate: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let ok = |args: &[&str]| {
        let out = fidelis(args, dir.path());
        assert!(out.status.success(), "fidelis {args:?}: {}", stderr(&out));
    };
    let seed = seed.to_string();
    ok(&[
        "generate",
        "--customers",
        "4000",
        "--seed",
        &seed,
        "--days",
        "365",
        "--start",
        "2024-01-01",
        "--shift-date",
        shift_date,
        "--shift-share",
        share,
        "--shift-rate",
        rate,
        "--out",
        "data",
        "-q",
    ]);
    fs::write(
        dir.path().join("fidelis.toml"),
        "[input.transactions]\npath = \"data/transactions.parquet\"\n\n[baselines]\nenabled = false\n",
    )
    .unwrap();
    ok(&["train", "--config", "fidelis.toml", "-q"]);
    let id = fs::read_to_string(dir.path().join("models/latest")).unwrap();
    let metrics = fs::read(dir.path().join("models").join(id.trim()).join("metrics.json")).unwrap();
    serde_json::from_slice(&metrics).unwrap()
}

#[test]
fn calibration_never_worsens_the_holdout_on_short_histories_whose_churn_rate_moves() {
    let mut shipped = 0;
    for (seed, date, share, rate) in [
        (1, "2024-09-15", "0.6", "3.0"),
        (2, "2024-09-15", "0.6", "3.0"),
        (3, "2024-09-15", "0.6", "3.0"),
        (4, "2024-09-15", "0.6", "3.0"),
        (5, "2024-09-15", "0.6", "3.0"),
        (4, "2024-08-01", "0.4", "0.4"),
    ] {
        let m = train(seed, date, share, rate);
        let c = &m["calibration"];
        assert!(c["choice"]["scheme"] == "k-fold", "seed {seed}: the short-history path: {c}");
        let ece = |k: &str| c[k].as_f64().unwrap();
        assert!(ece("holdout_ece_after") <= ece("holdout_ece_before") + 0.005, "seed {seed}: {c}");
        // Whenever a calibrator was proposed, the forward check says what it saw.
        if c["method"] != "none" {
            let forward = &c["choice"]["forward_ece"];
            let (before, after) = (forward[0].as_f64().unwrap(), forward[1].as_f64().unwrap());
            assert!(after < before, "seed {seed}: {c}");
            shipped += 1;
        }
    }
    // The check is not "never calibrate": a calibrator that carries forward still ships
    // (seed 4 of each shift: Platt, holdout ECE 0.0230 -> 0.0195 and 0.0372 -> 0.0154).
    assert!(shipped >= 2, "{shipped} calibrators shipped");
}
