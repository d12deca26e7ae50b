"""MLflow against a real local tracking server (``mlflow server``, SQLite backend, proxied
artifacts) started by this module: ``fidelis train`` with ``[mlflow]`` logs the run (settings
as parameters, holdout metrics, the model and its evaluation report) and registers a version
tagged with the data fingerprint; the alias moves only when the new version's holdout ROC AUC
is at least the champion's, or with ``--promote``; the registered model, loaded by alias with
``mlflow.pyfunc.load_model``, ``fidelis.load_model`` and the Spark score job, gives the CLI's
scores row for row; ``fidelis.mlflow.log_model`` logs a model directory from Python; the
tracking token is in nothing written; a server that cannot be reached fails the training
(exit 5) and leaves ``latest`` where it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import fixture_workspace, free_port, run

mlflow = pytest.importorskip("mlflow")

AS_OF = "2024-12-31"
TOKEN = "mlflow-T0ken-never-written"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(d / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{d}/mlflow.db",
            "--artifacts-destination",
            str(d / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        cwd=d,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"mlflow server did not start:\n{(d / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    mlflow.set_tracking_uri(url)
    yield url, d
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def workspace(tmp_path: Path, url: str, registered: str = "churn") -> Path:
    return fixture_workspace(
        tmp_path / "ws",
        "[model]\niterations = 40\n\n[baselines]\nenabled = false\n\n"
        f'[mlflow]\ntracking_uri = "{url}"\nexperiment = "fidelis-test"\nregistered_model = "{registered}"\n\n',
    )


def train(ws: Path, *flags: str):
    return run(["train", "--config", "fidelis.toml", "-q", *flags], ws, env={"MLFLOW_TRACKING_TOKEN": TOKEN})


def cli_scores(ws: Path):
    run(["score", "--config", "fidelis.toml", "--as-of", AS_OF, "-q"], ws)
    return pq.read_table(ws / f"output/scores/run={AS_OF}/part-0.parquet").to_pandas()


def same_scores(a, b) -> None:
    a = a.sort_values("customer_id").reset_index(drop=True)
    b = b.sort_values("customer_id").reset_index(drop=True)
    assert len(a) == len(b) > 0
    for col in [
        "customer_id",
        "churn_probability",
        "risk_score",
        "risk_level",
        "predicted_clv",
        "expected_loss",
        "contact",
        "risk_rank",
        "model_id",
    ]:
        assert (a[col].to_numpy() == b[col].to_numpy()).all(), col


def no_token(*dirs: Path) -> None:
    for d in dirs:
        for p in d.rglob("*"):
            if p.is_file():
                assert TOKEN.encode() not in p.read_bytes(), p


def model_json(ws: Path) -> dict:
    latest = (ws / "models/latest").read_text().strip()
    return json.loads((ws / "models" / latest / "model.json").read_text())


def test_the_cli_logs_and_registers_and_the_registered_model_scores_as_the_cli(server, tmp_path):
    url, server_dir = server
    ws = workspace(tmp_path, url)
    out = train(ws)
    assert "registered churn version 1" in out.stdout and "alias champion moved to it" in out.stdout, out.stdout
    run_id = out.stdout.split("MLflow: run ", 1)[1].split()[0]
    info = model_json(ws)
    metrics = json.loads((ws / "models" / info["model_id"] / "metrics.json").read_text())

    client = mlflow.MlflowClient(url)
    r = client.get_run(run_id)
    assert r.info.status == "FINISHED" and r.info.run_name == info["model_id"]
    assert r.data.params["model.iterations"] == "40" and r.data.params["snapshots.horizon_days"] == "90"
    assert r.data.metrics["churn.holdout.roc_auc"] == metrics["churn"]["holdout"]["roc_auc"]
    assert r.data.metrics["clv.holdout.normalized_gini"] == metrics["clv"]["holdout"]["normalized_gini"]
    assert r.data.tags["fidelis.data_fingerprint"] == info["data"]["xxh3"]
    artifacts = {a.path for a in client.list_artifacts(run_id, "model")}
    assert {"model/MLmodel", "model/fidelis_model"} <= artifacts, artifacts
    model_files = {a.path.rsplit("/", 1)[1] for a in client.list_artifacts(run_id, "model/fidelis_model")}
    assert {"model.json", "metrics.json", "churn.json", "decision.json"} <= model_files, model_files
    assert "evaluation/evaluation.html" in {a.path for a in client.list_artifacts(run_id, "evaluation")}
    v = client.get_model_version_by_alias("churn", "champion")
    assert v.version == "1" and v.run_id == run_id
    assert v.tags["fidelis.data_fingerprint"] == info["data"]["xxh3"]
    assert v.tags["fidelis.model_id"] == info["model_id"]

    expected = cli_scores(ws)
    tx = pq.read_table(ws / "data/transactions.parquet")
    pyfunc = mlflow.pyfunc.load_model("models:/churn@champion")
    same_scores(pyfunc.predict(tx.to_pandas(), params={"as_of": AS_OF}), expected)
    import fidelis

    same_scores(fidelis.load_model("models:/churn@champion").score(tx, as_of=AS_OF).to_pandas(), expected)
    no_token(ws, server_dir)
    assert TOKEN not in out.stdout + out.stderr


def test_the_alias_moves_only_to_a_version_at_least_as_good_or_when_promoted(server, tmp_path):
    url, _ = server
    ws = workspace(tmp_path, url, registered="churn_alias")
    train(ws)
    client = mlflow.MlflowClient(url)
    first = client.get_model_version_by_alias("churn_alias", "champion")
    # A champion better than anything this data gives: the next version does not take the alias.
    client.set_model_version_tag("churn_alias", first.version, "churn.holdout.roc_auc", "0.999")
    out = train(ws)
    assert "registered churn_alias version 2" in out.stdout and "alias champion kept" in out.stdout, out.stdout
    assert "below version 1's 0.9990" in out.stdout, out.stdout
    assert client.get_model_version_by_alias("churn_alias", "champion").version == first.version
    # --promote moves it whatever the metrics.
    out = train(ws, "--promote")
    assert "alias champion moved to it (--promote)" in out.stdout, out.stdout
    assert client.get_model_version_by_alias("churn_alias", "champion").version == "3"
    # A champion with a lower AUC: the new version takes the alias on its merits.
    client.set_model_version_tag("churn_alias", "3", "churn.holdout.roc_auc", "0.5")
    out = train(ws)
    assert "alias champion moved to it (holdout ROC AUC" in out.stdout and ">= 0.5000 of version 3" in out.stdout
    assert client.get_model_version_by_alias("churn_alias", "champion").version == "4"


def test_log_model_from_python_gives_a_pyfunc_model(server, tmp_path):
    url, _ = server
    ws = fixture_workspace(tmp_path / "ws")
    expected = cli_scores(ws)
    tx = pq.read_table(ws / "data/transactions.parquet").to_pandas()
    import fidelis.mlflow

    mlflow.set_experiment("fidelis-python")
    with mlflow.start_run():
        logged = fidelis.mlflow.log_model(
            str(ws / "models"), registered_model_name="churn_py", input_example=tx.head(5)
        )
    assert logged.signature.inputs.input_names() == ["customer_id", "ts", "amount"]
    same_scores(mlflow.pyfunc.load_model("models:/churn_py/1").predict(tx, params={"as_of": AS_OF}), expected)
    same_scores(mlflow.pyfunc.load_model(logged.model_uri).predict(tx, params={"as_of": AS_OF}), expected)


def test_the_spark_score_job_loads_a_registered_model(server, tmp_path):
    pytest.importorskip("pyspark")
    url, _ = server
    ws = workspace(tmp_path, url, registered="churn_spark")
    train(ws)
    expected = cli_scores(ws)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK")}
    env.update(MLFLOW_TRACKING_URI=url, SPARK_LOCAL_IP="127.0.0.1", TZ="UTC")
    out = subprocess.run(
        [sys.executable, "-m", "fidelis.spark", "score", "--model", "models:/churn_spark@champion"]
        + ["--transactions", "data/transactions.parquet", "--as-of", AS_OF, "--out", "spark_out", "--buckets", "4"],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    same_scores(pq.read_table(ws / f"spark_out/scores/run={AS_OF}").to_pandas(), expected)


def test_an_unreachable_server_fails_the_training_and_keeps_latest(tmp_path):
    ws = fixture_workspace(
        tmp_path / "ws",
        '[model]\niterations = 40\n\n[baselines]\nenabled = false\n\n[mlflow]\ntracking_uri = "http://127.0.0.1:1"\n\n',
    )
    before = (ws / "models/latest").read_text()
    out = run(["train", "--config", "fidelis.toml", "-q"], ws, check=False)
    assert out.returncode == 5, out.stdout + out.stderr
    assert "mlflow http://127.0.0.1:1" in out.stderr and "finding the experiment" in out.stderr, out.stderr
    assert (ws / "models/latest").read_text() == before
