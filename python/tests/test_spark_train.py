"""Training with the per-customer work on Spark (local[2]) makes the model `fidelis train`
makes: the same training rows (features and labels at every snapshot, bit for bit, from
shuffled input in 7 or 64 buckets), hence the same trees, calibration, decision, drift
reference and holdout figures; with `[model].max_rows` below the dataset, both train on the
same customer-hash sample and say so."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run
from test_api import plain_table
from test_spark import same_as_cli, shuffled, spark  # noqa: F401  (the session fixture)

# The model's files that must be byte-identical (model.json and metrics.json carry the id
# and the time of training; they are compared field by field).
SAME_BYTES = [
    "churn.json",
    "clv.json",
    "logistic.json",
    "clv_poisson.json",
    "calibration.json",
    "decision.json",
    "reference.json",
    "predictions.parquet",
]


def workspace(tmp_path: Path, demo: Path, max_rows: int, seed: int) -> Path:
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    pq.write_table(shuffled(pq.read_table(demo / "data/transactions.parquet"), seed=seed), ws / "data/tx.parquet")
    (ws / "fidelis.toml").write_text(
        '[input.transactions]\npath = "data/tx.parquet"\n\n'
        f"[model]\niterations = 60\nlogistic_l2 = 10.0\nclv_poisson = false\nmax_rows = {max_rows}\n\n"
        '[baselines]\nenabled = false\n\n[output]\ndir = "output"\nsql = []\n\n'
        '[paths]\nmodels_dir = "models"\nreports_dir = "reports"\n'
    )
    return ws


def model_dir(ws: Path) -> Path:
    return ws / "models" / (ws / "models/latest").read_text().strip()


@pytest.mark.parametrize("buckets,max_rows", [(7, 0), (64, 30_000)])
def test_spark_training_makes_the_cli_model(spark, demo, tmp_path, monkeypatch, buckets, max_rows):  # noqa: F811
    from fidelis import spark as fs

    ws = workspace(tmp_path, demo, max_rows, seed=buckets)
    run(["train", "--config", "fidelis.toml", "--export-features", "cli_features.parquet", "-q"], ws)
    cli = model_dir(ws)
    (ws / "models/latest").unlink()

    monkeypatch.chdir(ws)
    tx = spark.read.parquet(str(ws / "data/tx.parquet"))
    done = fs.train(
        spark, tx, config=str(ws / "fidelis.toml"), buckets=buckets, export_features="spark_features.parquet"
    )
    ours = Path(done.model_dir)
    assert ours != cli and model_dir(ws) == ours, "the Spark model is published as latest"
    assert Path(done.report).is_file()

    # The training rows: bit for bit, in the same order, with the same roles.
    a = plain_table(pq.read_table(ws / "cli_features.parquet"))
    b = plain_table(pq.read_table(ws / "spark_features.parquet"))
    assert a.num_rows > 1000 and a.schema == b.schema and a.equals(b)
    assert done.sampled_rows == a.num_rows

    m_cli = same_model(ours, cli)
    sample_notes = [n for n in m_cli.get("notes", []) if n.startswith("trained on a sample")]
    if max_rows:
        assert done.sampled_rows < done.rows and done.rows > max_rows
        assert len(sample_notes) == 1 and f"{done.sampled_rows} of {done.rows} rows" in sample_notes[0]
        assert "trained on a sample" in Path(done.report).read_text()
    else:
        assert done.sampled_rows == done.rows and not sample_notes


def same_model(ours: Path, cli: Path) -> dict:
    """The model files are the same bytes; model.json and metrics.json the same but for the
    id and the time of training."""
    for name in SAME_BYTES:
        assert (ours / name).read_bytes() == (cli / name).read_bytes(), name
    m_cli, m_ours = (json.loads((d / "metrics.json").read_text()) for d in (cli, ours))
    for m in (m_cli, m_ours):
        m.pop("model_id")
    assert m_ours == m_cli
    i_cli, i_ours = (json.loads((d / "model.json").read_text()) for d in (cli, ours))
    for key in ["features", "feature_spec", "settings", "data", "snapshots", "probabilistic", "training_window"]:
        assert i_ours[key] == i_cli[key], key
    # Same data and settings: the same hash in the id (the time differs).
    assert i_ours["model_id"].split("-")[1] == i_cli["model_id"].split("-")[1]
    for key in ["rows_read", "rows_valid", "transactions", "customers", "first_ts", "last_ts"]:
        assert i_ours["validation"][key] == i_cli["validation"][key], key
    return m_cli


def test_spark_training_needs_the_inputs_the_configuration_maps(spark, demo, tmp_path):  # noqa: F811
    from fidelis import InputError
    from fidelis import spark as fs

    ws = workspace(tmp_path, demo, 0, seed=1)
    with (ws / "fidelis.toml").open("a") as f:
        f.write('\n[input.events]\npath = "data/events.parquet"\n')
    tx = spark.read.parquet(str(ws / "data/tx.parquet"))
    with pytest.raises(InputError, match="input.events"):
        fs.train(spark, tx, config=str(ws / "fidelis.toml"), buckets=3)


def test_spark_training_fits_the_uplift_model_the_cli_fits(spark, tmp_path, monkeypatch):  # noqa: F811
    """A campaign of four monthly runs with a control group (`fidelis generate --campaign`),
    scored on the realized data: `fidelis train` and Spark's train (given the runs' scores)
    choose the uplift model on the same rows, so the model files, the uplift report and (when
    one ships) uplift.json are the same."""
    from fidelis import spark as fs

    ws = tmp_path / "ws"
    ws.mkdir()
    settings = (
        "[model]\niterations = 60\nlogistic_l2 = 10.0\nclv_poisson = false\n\n[baselines]\nenabled = false\n\n"
        # ship_confidence below the default so that the model ships here and the shipped
        # path (uplift.json, scores with uplift) is compared too.
        "[experiment]\ncontrol_share = 0.4\n\n[uplift]\nmin_runs = 3\niterations = 60\nship_confidence = 0.8\n\n"
        '[paths]\nmodels_dir = "models"\nreports_dir = "reports"\n'
    )
    for name, data, out in [("plain", "plain", "untreated"), ("realized", "realized", "output")]:
        (ws / f"{name}.toml").write_text(
            f'[input.transactions]\npath = "{data}/transactions.parquet"\n\n[output]\ndir = "{out}"\nsql = []\n\n'
            + settings
        )
    size = ["--customers", "8000", "--seed", "5", "-q"]
    run(["generate", "--out", "plain", *size], ws)
    run(["train", "--config", "plain.toml", "-q"], ws)
    runs = ["2024-04-02", "2024-05-07", "2024-06-04", "2024-07-02"]
    for d in runs:
        run(["score", "--config", "plain.toml", "--as-of", d, "-q"], ws)
    run(["generate", "--out", "realized", "--campaign", "untreated", *size], ws)
    for d in runs:
        run(["score", "--config", "realized.toml", "--as-of", d, "-q"], ws)
    run(["train", "--config", "realized.toml", "-q"], ws)
    cli = model_dir(ws)
    (ws / "models/latest").unlink()

    monkeypatch.chdir(ws)
    tx = spark.read.parquet(str(ws / "realized/transactions.parquet"))
    scores = spark.read.parquet(str(ws / "output/scores"))
    done = fs.train(spark, tx, config=str(ws / "realized.toml"), buckets=5, scores=scores)
    ours = Path(done.model_dir)
    m = same_model(ours, cli)
    uplift = m["uplift"]
    assert uplift is not None and len(uplift["runs"]) == 4, uplift
    print(f"uplift: {uplift['why']} ({uplift['fit_rows']} fit rows, {uplift['held_out_rows']} held out)")
    assert {r["name"] for r in uplift["rankings"]} >= {"churn probability", "expected loss"}
    assert uplift["shipped"] is not None, uplift["why"]
    assert (ours / "uplift.json").read_bytes() == (cli / "uplift.json").read_bytes()
    # Scored with the shipped uplift model: Spark's scores are the CLI's, row for row.
    (ws / "models/latest").write_text(ours.name)
    run(["score", "--config", "realized.toml", "--as-of", "2024-10-01", "-q"], ws)
    cli_scores = pq.read_table(ws / "output/scores/run=2024-10-01/part-0.parquet")
    assert cli_scores.column("uplift").null_count == 0 and cli_scores.column("incremental_value").null_count == 0
    spark_scores = fs.score(spark, tx, str(ours), "2024-10-01", buckets=5, config=str(ws / "realized.toml")).toArrow()
    # score_change needs the run before (fs.weekly reads it from its output; fs.score has none).
    same_as_cli(spark_scores.drop(["score_change"]), cli_scores.drop(["score_change"]))
    # Without the scores, Spark's train fits no uplift model (and says so in no report).
    (ws / "models/latest").unlink()
    plain = fs.train(spark, tx, config=str(ws / "realized.toml"), buckets=5)
    assert json.loads((Path(plain.model_dir) / "metrics.json").read_text()).get("uplift") is None
