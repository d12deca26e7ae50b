"""Churn as a cancellation (`[snapshots] churn = "cancellation"`, issue 31) through every
front door: `fidelis.Model.score` and the Spark job give the CLI's scores row for row, the
Spark monitor measures matured runs against the subscription table as the CLI does, Spark
training makes the CLI's model, and nobody who gave notice before the run is scored."""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import fidelis
from conftest import run
from test_api import plain_table
from test_spark import cli_weekly, history_rows, same_as_cli, shuffled, spark  # noqa: F401
from test_spark_train import same_model

# The second run is more than a horizon (90 days) after the first: it measures the first.
DATES = ["2024-08-06", "2024-11-05"]
TABLES = ["transactions", "subscriptions"]


@pytest.fixture(scope="session")
def contracts(tmp_path_factory):
    """2,000 generated subscribers with annual contracts and notices, and a model whose
    churn is a cancellation."""
    ws = tmp_path_factory.mktemp("contracts")
    run(["generate", "--kind", "saas", "--contracts", "--customers", "2000", "--seed", "11", "--out", "data", "-q"], ws)
    (ws / "fidelis.toml").write_text(
        '[input.transactions]\npath = "data/transactions.parquet"\n\n'
        '[input.subscriptions]\npath = "data/subscriptions.parquet"\n\n'
        '[snapshots]\nchurn = "cancellation"\n\n'
        "[model]\niterations = 60\nlogistic_l2 = 10.0\nclv_poisson = false\n\n"
        '[baselines]\nenabled = false\n\n[output]\ndir = "output"\nsql = []\n\n'
        '[paths]\nmodels_dir = "models"\nreports_dir = "reports"\n'
    )
    run(["train", "--config", "fidelis.toml", "-q"], ws)
    return ws


def tables(ws: Path) -> dict:
    return {n: pq.read_table(ws / f"data/{n}.parquet") for n in TABLES}


def test_the_python_api_scores_only_live_subscribers_as_the_cli_does(contracts):
    cli_out = cli_weekly(contracts, DATES[:1], "cli-score")
    cli = pq.read_table(cli_out / f"scores/run={DATES[0]}/part-0.parquet")
    m = fidelis.load_model(contracts / "models", config=contracts / "fidelis.toml")
    t = tables(contracts)
    ours = m.score(t["transactions"], as_of=DATES[0], subscriptions=t["subscriptions"])
    assert ours.num_rows == cli.num_rows > 500
    assert plain_table(ours).sort_by("customer_id").equals(plain_table(cli).sort_by("customer_id"))
    # Whoever is not live at the run, or gave notice on every live period before it, is
    # leaving or gone: never scored as active.
    as_of = datetime.date.fromisoformat(DATES[0])
    live_unnoticed, known = set(), set()
    for r in t["subscriptions"].to_pylist():
        if r["start"] < as_of:
            known.add(r["customer_id"])
            live = r["end"] is None or r["end"] >= as_of
            if live and not (r["cancelled_at"] is not None and r["cancelled_at"] < as_of):
                live_unnoticed.add(r["customer_id"])
    scored = set(ours["customer_id"].to_pylist())
    assert scored <= live_unnoticed and len(known - live_unnoticed) > 100
    # Annual subscribers months after their payment are scored, not taken for inactive.
    features = m.features(t["transactions"], as_of=DATES[0], subscriptions=t["subscriptions"])
    assert pc.sum(pc.greater(features["recency_days"], 90)).as_py() > 50
    # Time to churn: S falls with time, the restricted mean lies within the year, and the
    # renewal probability is S at the renewal day.
    s = {d: ours[f"survival_{d}d"].to_numpy() for d in (30, 60, 90, 180, 365)}
    assert (s[30] >= s[60]).all() and (s[60] >= s[90]).all() and (s[90] >= s[180]).all() and (s[180] >= s[365]).all()
    life = ours["expected_lifetime_days"].to_numpy()
    assert ((life > 0) & (life <= 365)).all() and (life >= 365 * s[365]).all()
    renewal = ours.filter(pc.less_equal(ours["days_to_renewal"], 30))
    assert renewal.num_rows > 0
    assert (renewal["renewal_probability"].to_numpy() >= renewal["survival_30d"].to_numpy() - 1e-12).all()
    report = json.loads(next((contracts / "models").glob("*/metrics.json")).read_text())["survival"]
    assert report["holdout_rows"] > 300 and 0 <= report["model"]["concordance"] <= 1
    assert report["model"]["s90_ece"] < 0.1 and report["mix"] in ("gbdt", "logistic", "blend")
    # A model whose churn is a cancellation cannot score without the table.
    with pytest.raises(fidelis.InputError, match="input.subscriptions"):
        m.score(t["transactions"], as_of=DATES[0])


def test_the_weekly_batch_on_spark_equals_the_cli_and_measures_cancellations(spark, contracts, tmp_path):  # noqa: F811
    from fidelis import spark as fs

    cli_out = cli_weekly(contracts, DATES, "cli-weekly")
    frames = {}
    for seed, name in enumerate(TABLES):
        table = shuffled(pq.read_table(contracts / f"data/{name}.parquet"), seed=seed)
        pq.write_table(table, tmp_path / f"{name}.parquet")
        frames[name] = spark.read.parquet(str(tmp_path / f"{name}.parquet"))
    out = tmp_path / "spark-weekly"
    for d in DATES:
        fs.weekly(
            spark,
            frames["transactions"],
            str(contracts / "models"),
            d,
            str(out),
            subscriptions=frames["subscriptions"],
            buckets=7,
            config=str(contracts / "fidelis.toml"),
        )
    cli_history = pq.read_table(cli_out / "monitoring/metrics_history.parquet")
    ours_history = spark.read.parquet(str(out / "metrics_history")).toArrow()
    for d in DATES:
        ours = spark.read.parquet(str(out / "scores")).filter(f"as_of = '{d}'").toArrow()
        cli = pq.read_table(cli_out / f"scores/run={d}/part-0.parquet")
        same_as_cli(ours.select(cli.column_names), cli)
        expected = history_rows(cli_history, d)
        assert expected and history_rows(ours_history, d) == expected, d
        # MRR, NRR and GRR recorded by both, to the bit (exact sums over Spark's partitions).
        assert {r[3] for r in expected if r[1] == "revenue"} >= {"mrr", "nrr", "grr", "churned"}, d
    # The first run matured at the second: its realized AUC is measured against cancellations.
    realized = [r for r in history_rows(cli_history, DATES[1]) if r[1] == "realized" and r[2] == DATES[0]]
    assert any(r[3] == "roc_auc" for r in realized), realized


def test_spark_training_with_subscriptions_makes_the_cli_model(spark, contracts, tmp_path, monkeypatch):  # noqa: F811
    from fidelis import InputError
    from fidelis import spark as fs

    ws = tmp_path / "ws"
    shutil.copytree(contracts / "data", ws / "data")
    shutil.copy(contracts / "fidelis.toml", ws / "fidelis.toml")
    run(["train", "--config", "fidelis.toml", "--export-features", "cli_features.parquet", "-q"], ws)
    cli = ws / "models" / (ws / "models/latest").read_text().strip()
    monkeypatch.chdir(ws)
    frames = {}
    for seed, name in enumerate(TABLES):
        table = shuffled(pq.read_table(ws / f"data/{name}.parquet"), seed=seed + 5)
        pq.write_table(table, tmp_path / f"{name}.parquet")
        frames[name] = spark.read.parquet(str(tmp_path / f"{name}.parquet"))
    with pytest.raises(InputError, match=r"input.subscriptions.*subscriptions="):
        fs.train(spark, frames["transactions"], config=str(ws / "fidelis.toml"), buckets=7)
    done = fs.train(
        spark,
        frames["transactions"],
        config=str(ws / "fidelis.toml"),
        buckets=7,
        subscriptions=frames["subscriptions"],
        export_features="spark_features.parquet",
    )
    a = plain_table(pq.read_table(ws / "cli_features.parquet"))
    b = plain_table(pq.read_table(ws / "spark_features.parquet"))
    assert "sub_days_to_renewal" in a.column_names
    assert a.schema == b.schema and a.equals(b)
    same_model(Path(done.model_dir), cli)
