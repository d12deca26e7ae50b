"""A weekly run's performance estimated from its calibrated probabilities (CBPE) equals
NannyML's on the same probabilities: its estimator functions to well under 0.001 (fidelis
counts customers on a grid of 16,384 probability cells), and its CBPE class, fitted on the
model's holdout with its labels and given the same probabilities (its calibrator left out:
fidelis's are calibrated already), within 0.005 of the ROC AUC.

NannyML runs in a subprocess: importing it makes FLAML start a Spark session, which this
process's Spark tests must not share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from conftest import run

NANNYML = r"""
import json, sys
sys.modules["pyspark"] = None  # FLAML (a NannyML dependency) starts Spark when it can import it
import pandas as pd
import nannyml as nml
from nannyml.performance_estimation.confidence_based.metrics import (
    estimate_precision, estimate_recall, estimate_roc_auc,
)
run = pd.read_parquet(sys.argv[1])
ref = pd.read_parquet(sys.argv[2])
p, contact = run["p"].to_numpy(), run["contact"].astype(int).to_numpy()
out = {
    "roc_auc": float(estimate_roc_auc(p, p)),
    "precision": float(estimate_precision(contact, p)),
    "recall": float(estimate_recall(contact, p)),
}
class Same(nml.calibration.Calibrator):
    # the probabilities as they are: fidelis calibrated them already
    def fit(self, y_pred_proba, y_true):
        pass
    def calibrate(self, y_pred_proba):
        return y_pred_proba
cbpe = nml.CBPE(
    y_pred_proba="p", y_pred="contact", y_true="churn", problem_type="classification_binary",
    metrics=["roc_auc", "precision", "recall"], chunk_number=1, calibrator=Same(),
)
cbpe.fit(ref)
est = cbpe.estimate(run).to_df()
for m in ("roc_auc", "precision", "recall"):
    out["cbpe_" + m] = float(est[(m, "value")].iloc[0])
print(json.dumps(out))
"""


def test_the_estimated_performance_equals_nannyml_cbpe(demo: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    for name in ("data", "models"):
        (ws / name).symlink_to(demo / name)
    (ws / "fidelis.toml").write_text((demo / "fidelis.toml").read_text())
    as_of = "2024-10-01"
    run(["weekly", "--config", "fidelis.toml", "--as-of", as_of, "--dry-run", "-q"], ws)
    scores = pq.read_table(ws / f"output/scores/run={as_of}/part-0.parquet")
    history = pq.read_table(ws / "output/monitoring/metrics_history.parquet").to_pylist()
    ours = {r["metric"]: r["value"] for r in history if r["kind"] == "estimated" and r["item"] == as_of}
    pq.write_table(
        pa.table({"p": scores.column("churn_probability"), "contact": scores.column("contact")}),
        tmp_path / "run.parquet",
    )
    # The reference NannyML's CBPE is fitted on: the model's holdout, calibrated probabilities
    # and labels, contacts by the model's threshold.
    model = ws / "models" / (ws / "models/latest").read_text().strip()
    threshold = json.loads((model / "decision.json").read_text())["threshold"]
    pred = pq.read_table(model / "predictions.parquet").to_pylist()
    hold = [r for r in pred if r["role"] == "holdout"]
    pq.write_table(
        pa.table(
            {
                "p": [r["churn_probability"] for r in hold],
                "contact": [threshold is not None and r["churn_probability"] >= threshold for r in hold],
                "churn": [r["churn"] for r in hold],
            }
        ),
        tmp_path / "reference.parquet",
    )
    out = subprocess.run(
        [sys.executable, "-c", NANNYML, str(tmp_path / "run.parquet"), str(tmp_path / "reference.parquet")],
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    # The run's contacts are the treated (the control group is held out), as the realized
    # figures count them: NannyML gets the same flags.
    assert 0 < sum(scores.column("contact").to_pylist()) < scores.num_rows
    assert abs(ours["roc_auc"] - theirs["roc_auc"]) < 1e-3, (ours["roc_auc"], theirs)
    assert abs(ours["precision"] - theirs["precision"]) < 1e-9, (ours["precision"], theirs)
    assert abs(ours["recall"] - theirs["recall"]) < 1e-9, (ours["recall"], theirs)
    assert abs(ours["roc_auc"] - theirs["cbpe_roc_auc"]) < 0.005, (ours["roc_auc"], theirs)
    assert ours["roc_auc_low"] < ours["roc_auc"] < ours["roc_auc_high"]
