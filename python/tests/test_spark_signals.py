"""The weekly batch on Spark with an event log and a customer table (the SaaS demo) equals
`fidelis weekly`: scores with the signal columns (health score and colour, usage drop, CSM
sentiment, review flag and reason, escalation), the health history behind the "health
falling" flag, and every monitoring row, over three weekly runs from shuffled inputs."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run
from test_api import plain_table
from test_spark import cli_weekly, history_rows, same_as_cli, shuffled, spark  # noqa: F401
from test_spark_train import same_model

DATES = ["2024-12-03", "2024-12-10", "2024-12-17"]


@pytest.fixture(scope="session")
def saas(tmp_path_factory):
    """3,000 generated subscriptions with events and a customer table, and a model."""
    ws = tmp_path_factory.mktemp("saas")
    run(["generate", "--kind", "saas", "--customers", "3000", "--seed", "7", "--out", "data", "-q"], ws)
    (ws / "fidelis.toml").write_text(
        '[input.transactions]\npath = "data/transactions.parquet"\n\n'
        '[input.events]\npath = "data/events.parquet"\n\n'
        '[input.customers]\npath = "data/customers.parquet"\n\n'
        "[snapshots]\neligibility_days = 31\n\n"
        "[model]\niterations = 60\nlogistic_l2 = 10.0\nclv_poisson = false\n\n"
        '[baselines]\nenabled = false\n\n[output]\ndir = "output"\nsql = []\n\n'
        '[paths]\nmodels_dir = "models"\nreports_dir = "reports"\n'
    )
    run(["train", "--config", "fidelis.toml", "-q"], ws)
    return ws


def test_weekly_with_events_and_customers_equals_the_cli(spark, saas, tmp_path):  # noqa: F811
    from fidelis import spark as fs

    cli_out = cli_weekly(saas, DATES, "cli-weekly")
    frames = {}
    for name, seed in [("transactions", 1), ("events", 2), ("customers", 3)]:
        pq.write_table(shuffled(pq.read_table(saas / f"data/{name}.parquet"), seed=seed), tmp_path / f"{name}.parquet")
        frames[name] = spark.read.parquet(str(tmp_path / f"{name}.parquet"))
    out = tmp_path / "spark-weekly"
    config = str(saas / "fidelis.toml")
    for d in DATES:
        fs.weekly(
            spark,
            frames["transactions"],
            str(saas / "models"),
            d,
            str(out),
            events=frames["events"],
            customers=frames["customers"],
            buckets=7,
            config=config,
            rank_rows=700,
        )
    cli_history = pq.read_table(cli_out / "monitoring/metrics_history.parquet")
    ours_history = spark.read.parquet(str(out / "metrics_history")).toArrow()
    for d in DATES:
        ours = spark.read.parquet(str(out / "scores")).filter(f"as_of = '{d}'").toArrow()
        cli = pq.read_table(cli_out / f"scores/run={d}/part-0.parquet")
        assert {"health_score", "health_colour", "usage_drop", "csm_sentiment", "review_flag", "escalation"} <= set(
            cli.column_names
        )
        # `run` is the dataset's partition key (the file itself has the CLI's columns).
        assert set(ours.column_names) - {"run"} == set(cli.column_names)
        same_as_cli(ours.select(cli.column_names), cli)
        expected = history_rows(cli_history, d)
        assert expected and history_rows(ours_history, d) == expected, d
    # The third run read the health history of the first two (for the "health falling" flag).
    from fidelis.spark._core import _health_history

    history = _health_history(spark, str(out), DATES[2])
    assert history is not None and history.count() > 1000
    # The signals are exercised, not all empty.
    last = pq.read_table(cli_out / f"scores/run={DATES[-1]}/part-0.parquet")
    assert len(set(last.column("health_colour").to_pylist())) >= 2
    assert any(last.column("review_flag").to_pylist())
    assert any(v is not None for v in last.column("csm_sentiment").to_pylist())


def test_a_model_trained_with_events_needs_them_on_spark(spark, saas):  # noqa: F811
    from fidelis import FidelisError, InputError
    from fidelis import spark as fs

    tx = spark.read.parquet(str(saas / "data/transactions.parquet"))
    with pytest.raises((InputError, FidelisError), match="input.events"):
        fs.score(spark, tx, str(saas / "models"), DATES[0], config=str(saas / "fidelis.toml"))


def test_spark_training_with_events_and_customers_makes_the_cli_model(spark, saas, tmp_path, monkeypatch):  # noqa: F811
    """The signal features are chosen from counts merged over buckets and computed per
    bucket: the training rows and the model equal `fidelis train`'s."""
    import shutil

    from fidelis import spark as fs

    ws = tmp_path / "ws"
    shutil.copytree(saas / "data", ws / "data")
    shutil.copy(saas / "fidelis.toml", ws / "fidelis.toml")
    run(["train", "--config", "fidelis.toml", "--export-features", "cli_features.parquet", "-q"], ws)
    cli = ws / "models" / (ws / "models/latest").read_text().strip()
    monkeypatch.chdir(ws)
    frames = {}
    for name, seed in [("transactions", 4), ("events", 5), ("customers", 6)]:
        pq.write_table(shuffled(pq.read_table(ws / f"data/{name}.parquet"), seed=seed), tmp_path / f"{name}.parquet")
        frames[name] = spark.read.parquet(str(tmp_path / f"{name}.parquet"))
    done = fs.train(
        spark,
        frames["transactions"],
        config=str(ws / "fidelis.toml"),
        buckets=7,
        events=frames["events"],
        customers=frames["customers"],
        export_features="spark_features.parquet",
    )
    a = plain_table(pq.read_table(ws / "cli_features.parquet"))
    b = plain_table(pq.read_table(ws / "spark_features.parquet"))
    assert any(n.startswith("ev_") for n in a.column_names) and any(n.startswith("plan_") for n in a.column_names)
    assert a.schema == b.schema and a.equals(b)
    same_model(Path(done.model_dir), cli)


def test_the_declared_signal_columns_are_what_the_rust_core_returns(saas):
    """With an event log and a customer table the core adds the signal columns after the
    per-customer ones: ``_native.local_columns(True, True)`` declares them as ``score_local``
    returns them (``score::SIGNAL_COLUMNS``)."""
    import fidelis
    from fidelis import _native
    from fidelis.spark._core import _table
    from test_api import declared_matches

    m = fidelis.load_model(saas / "models", config=saas / "fidelis.toml")
    tables = {n: pq.read_table(saas / f"data/{n}.parquet") for n in ["transactions", "events", "customers"]}
    out = m._native.score_local(
        tables["transactions"].__arrow_c_stream__(),
        "2024-12-17",
        False,
        tables["events"].__arrow_c_stream__(),
        tables["customers"].__arrow_c_stream__(),
    )
    declared_matches(_native.local_columns(True, True), _table(out))
