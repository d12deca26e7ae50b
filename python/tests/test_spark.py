"""The weekly batch on Spark (local[2]) equals `fidelis score` row for row: on the generated
demo data and on CDNOW, with 1, 7 and 64 buckets and the input rows shuffled, and with one
customer holding 5% of all rows at tied timestamps. Partition writes replace only their
date. Needs PySpark and a Java runtime (`.ci/run` installs both; without them these tests
skip, unless FIDELIS_REQUIRE_SPARK=1)."""

from __future__ import annotations

import datetime
import os
import random
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import fidelis
from conftest import ROOT, run
from test_api import assert_same_rows, cli_scores, plain_table

FIXTURE = ROOT / "tests/fixtures/model_v1"
PG_JAR = Path(os.environ.get("FIDELIS_PG_JDBC_JAR", "/usr/share/java/postgresql.jar"))


@pytest.fixture(scope="session")
def spark():
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        if os.environ.get("FIDELIS_REQUIRE_SPARK") == "1":
            raise
        pytest.skip("pyspark is not installed (make python SPARK=1, or .ci/run)")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        if os.environ.get("FIDELIS_REQUIRE_SPARK") == "1":
            raise AssertionError("FIDELIS_REQUIRE_SPARK=1 but no Java runtime")
        pytest.skip("no Java runtime for Spark")
    # Python workers run this interpreter (with fidelis installed), one Rust thread each.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["POLARS_MAX_THREADS"] = "1"
    builder = SparkSession.builder
    if PG_JAR.is_file():  # PostgreSQL's JDBC driver (Debian libpostgresql-jdbc-java), for write_sql
        builder = builder.config("spark.jars", str(PG_JAR))
    session = (
        builder.master("local[2]")
        .appName("fidelis-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def shuffled(table: pa.Table, seed: int) -> pa.Table:
    table = plain_table(table)
    order = list(range(table.num_rows))
    random.Random(seed).shuffle(order)
    return table.take(pa.array(order))


def spark_scores(
    spark, tx_path: Path, model_dir: Path, as_of: str, buckets: int, config=None, rank_rows=None
) -> pa.Table:
    from fidelis import spark as fs

    tx = spark.read.parquet(str(tx_path))
    ranks = {"rank_rows": rank_rows} if rank_rows else {}
    return fs.score(spark, tx, str(model_dir), as_of, buckets=buckets, config=config, **ranks).toArrow()


def same_as_cli(ours: pa.Table, cli: pa.Table) -> None:
    """Row for row: the same customers with the same values (Spark has no unsigned integers:
    the rank comes back as int32)."""
    ours = ours.sort_by("customer_id")
    cli = plain_table(cli).sort_by("customer_id")
    ours = ours.set_column(
        ours.column_names.index("risk_rank"), "risk_rank", ours.column("risk_rank").cast(pa.uint32())
    )
    ours = ours.set_column(ours.column_names.index("as_of"), "as_of", ours.column("as_of").cast(pa.date32()))
    assert_same_rows(ours, cli)


# Buckets of customers for the Rust core; rows per range of the global ranks (one range, a
# few, many).
@pytest.mark.parametrize("buckets,rank_rows", [(1, None), (7, 3000), (64, 997)])
def test_spark_scores_the_demo_data_as_the_cli_does(spark, demo, tmp_path, buckets, rank_rows):
    tx = shuffled(pq.read_table(demo / "data/transactions.parquet"), seed=buckets)
    pq.write_table(tx, tmp_path / "tx.parquet")
    ours = spark_scores(spark, tmp_path / "tx.parquet", demo / "models", "2024-10-01", buckets, rank_rows=rank_rows)
    cli = cli_scores(demo, "2024-10-01")
    assert cli.num_rows > 10_000
    same_as_cli(ours, cli)
    # The top-risk segment in the same order.
    top = ours.filter(ours.column("in_top_decile")).sort_by("risk_rank")
    cli_top = cli.filter(cli.column("in_top_decile")).sort_by("risk_rank")
    assert top.column("customer_id").to_pylist() == cli_top.column("customer_id").to_pylist()


@pytest.mark.parametrize("buckets,rank_rows", [(1, None), (7, 2500), (64, 640)])
def test_spark_scores_cdnow_as_the_cli_does(spark, cdnow, tmp_path, buckets, rank_rows):
    rows = [line.split() for line in (cdnow / "CDNOW_master.txt").read_text().splitlines() if line.strip()]
    tx = pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "date": [r[1] for r in rows],
            "number_of_cds": [r[2] for r in rows],
            "dollar_value": [r[3] for r in rows],
        }
    )
    pq.write_table(shuffled(tx, seed=buckets), tmp_path / "tx.parquet")
    ours = spark_scores(
        spark,
        tmp_path / "tx.parquet",
        cdnow / "models",
        "1998-07-01",
        buckets,
        config=str(cdnow / "fidelis.toml"),
        rank_rows=rank_rows,
    )
    same_as_cli(ours, cli_scores(cdnow, "1998-07-01"))


def test_a_customer_with_5_percent_of_the_rows_at_tied_times(spark, tmp_path):
    base = pq.read_table(FIXTURE / "data/transactions.parquet")
    n = base.num_rows // 19  # ~5% of the result
    ts = base.column("ts")[0].as_py()
    big = pa.table(
        {
            "customer_id": ["ZZ-BIG"] * n,
            "ts": pa.array(
                [ts.replace(year=2024, month=11, day=1 + i % 20) for i in range(n)], base.schema.field("ts").type
            ),
            "amount": [round(0.1 * (i % 7) + 3.3, 2) for i in range(n)],
        }
    ).cast(base.schema)
    tx = shuffled(pa.concat_tables([base, big]), seed=5)
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE / "models", ws / "models")
    (ws / "data").mkdir(parents=True)
    pq.write_table(tx, ws / "data/transactions.parquet")
    (ws / "fidelis.toml").write_text(
        '[input.transactions]\npath = "data/transactions.parquet"\n\n[output]\ndir = "output"\nsql = []\n\n'
        '[paths]\nmodels_dir = "models"\nreports_dir = "reports"\n'
    )
    ours = spark_scores(spark, ws / "data/transactions.parquet", ws / "models", "2024-12-31", 7)
    same_as_cli(ours, cli_scores(ws, "2024-12-31"))
    assert "ZZ-BIG" in ours.column("customer_id").to_pylist()


def test_writes_replace_only_their_date(spark, tmp_path):
    from fidelis import spark as fs

    tx = spark.read.parquet(str(FIXTURE / "data/transactions.parquet"))
    out = tmp_path / "out"
    for as_of in ["2024-12-17", "2024-12-31"]:
        fs.write(fs.score(spark, tx, str(FIXTURE / "models"), as_of, buckets=7), str(out))
    kept = {p: p.read_bytes() for p in (out / "scores/run=2024-12-17").glob("*.parquet")}
    assert kept
    fs.write(fs.score(spark, tx, str(FIXTURE / "models"), "2024-12-31", buckets=3), str(out))
    assert {p: p.read_bytes() for p in (out / "scores/run=2024-12-17").glob("*.parquet")} == kept
    dates = sorted(p.name for p in (out / "scores").iterdir() if p.name.startswith("run="))
    assert dates == ["run=2024-12-17", "run=2024-12-31"]
    back = spark.read.parquet(str(out / "scores")).filter("as_of = '2024-12-31'").count()
    expected = pq.read_table(FIXTURE / "expected/scores/as_of=2024-12-31/scores.parquet").num_rows
    assert back == expected
    top = spark.read.parquet(str(out / "top_risk")).filter("as_of = '2024-12-31'").count()
    assert top == fidelis._native.top_size(0.1, expected)


def test_the_job_runs_as_a_module(tmp_path):
    pytest.importorskip("pyspark")
    import subprocess

    out = tmp_path / "job"
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, RAYON_NUM_THREADS="1", POLARS_MAX_THREADS="1")
    env["PYSPARK_SUBMIT_ARGS"] = (
        "--master local[2] --conf spark.ui.enabled=false --conf spark.driver.bindAddress=127.0.0.1 "
        "--conf spark.driver.host=127.0.0.1 --conf spark.sql.session.timeZone=UTC pyspark-shell"
    )
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "fidelis.spark",
            "score",
            "--model",
            str(FIXTURE / "models"),
            "--transactions",
            str(FIXTURE / "data/transactions.parquet"),
            "--as-of",
            "2024-12-31",
            "--out",
            str(out),
            "--buckets",
            "4",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "scored 399 customers" in res.stdout
    assert list((out / "scores/run=2024-12-31").glob("*.parquet"))


def cli_weekly(ws: Path, dates: list, name: str, extra: str = "") -> Path:
    """`fidelis weekly` at each date in turn, into a fresh output directory `name` (``extra``:
    configuration appended)."""
    out = ws / name
    shutil.rmtree(out, ignore_errors=True)
    cfg = (ws / "fidelis.toml").read_text().replace('dir = "output"', f'dir = "{name}"') + extra
    (ws / f"{name}.toml").write_text(cfg)
    for d in dates:
        run(["weekly", "--config", f"{name}.toml", "--as-of", d, "-q"], ws)
    return out


def history_rows(t: pa.Table, as_of: str) -> list:
    """The monitoring rows of one date, sorted, values as bits (NaN equals NaN)."""
    import struct

    t = plain_table(t)
    rows = []
    for r in t.to_pylist():
        if str(r["as_of"])[:10] != as_of:
            continue
        bits = struct.pack("<d", r["value"]).hex()
        rows.append((r["model_id"], r["kind"], r["item"], r["metric"], bits, r["status"]))
    return sorted(rows)


def struct_value(bits: str) -> float:
    """A value of :func:`history_rows` back from its bits."""
    import struct

    return struct.unpack("<d", bytes.fromhex(bits))[0]


def test_the_weekly_batch_and_its_monitoring_equal_the_cli(spark, demo, tmp_path):
    """Four weekly runs: scores with score_change against the run before, drift, the first
    run's realized performance once its outcome window closes (then not recomputed), and the
    second's a week later, with the effect of contacting among the customers new to the
    experiment at it and pooled over both."""
    from fidelis import spark as fs

    dates = ["2024-09-01", "2024-09-08", "2024-12-01", "2024-12-08"]
    # A contact log: calls after the first run, every third customer reached, every fifth not.
    ids = sorted({c for c in pq.read_table(demo / "data/transactions.parquet").column("customer_id").to_pylist() if c})
    # Each call by phone or e-mail (a column the configuration names as the channel).
    log = [
        (c, "2024-09-03 10:00:00", "yes" if k % 3 == 0 else "no", "phone" if k % 2 else "email")
        for k, c in enumerate(ids)
        if k % 3 == 0 or k % 5 == 0
    ]
    names = ["customer_id", "ts", "reached", "via"]
    pq.write_table(pa.table({n: [r[i] for r in log] for i, n in enumerate(names)}), demo / "contacts.parquet")
    extra = '\n[input.contacts]\npath = "contacts.parquet"\nchannel = "via"\n'
    cli_out = cli_weekly(demo, dates, "cli-weekly", extra)
    pq.write_table(shuffled(pq.read_table(demo / "data/transactions.parquet"), seed=3), tmp_path / "tx.parquet")
    tx = spark.read.parquet(str(tmp_path / "tx.parquet"))
    out = tmp_path / "spark-weekly"
    found = {}
    for d in dates:
        found[d] = fs.weekly(
            spark,
            tx,
            str(demo / "models"),
            d,
            str(out),
            buckets=7,
            rank_rows=4000,
            contacts=spark.read.parquet(str(demo / "contacts.parquet")),
            config=str(demo / "cli-weekly.toml"),
        ).monitoring
    cli_history = pq.read_table(cli_out / "monitoring/metrics_history.parquet")
    ours_history = spark.read.parquet(str(out / "metrics_history")).toArrow()
    for d in dates:
        ours = spark.read.parquet(str(out / "scores")).filter(f"as_of = '{d}'").toArrow()
        cli = pq.read_table(cli_out / f"scores/run={d}/part-0.parquet")
        same_as_cli(ours.select(cli.column_names), cli)
        expected = history_rows(cli_history, d)
        assert expected and history_rows(ours_history, d) == expected, d
        assert history_rows(found[d].rows, d) == expected
    # score_change is there from the second run on.
    second = spark.read.parquet(str(out / "scores")).filter("as_of = '2024-12-01'")
    assert second.filter("score_change is not null").count() > 0
    # The first run matured at 2024-12-01 and was not recomputed at 2024-12-08, where the
    # second matured.
    realized = [r for r in history_rows(cli_history, "2024-12-01") if r[1] == "realized"]
    assert {r[2] for r in realized} == {"2024-09-01"}
    realized = [r for r in history_rows(cli_history, "2024-12-08") if r[1] == "realized"]
    assert {r[2] for r in realized} == {"2024-09-08"}
    # The second run's customers new to the experiment are fewer than all of its customers,
    # and the pooled effect adds both runs' new customers.
    effect = {(r[2], r[3]): struct_value(r[4]) for r in history_rows(cli_history, "2024-12-08") if r[1] == "effect"}
    first = effect[("2024-09-08 first", "treatment")] + effect[("2024-09-08 first", "control")]
    every = effect[("2024-09-08", "treatment")] + effect[("2024-09-08", "control")]
    assert 0 < first < every
    assert effect[("pooled", "runs")] == 2.0
    # The contact log reached about a third of the treated customers of the first run (none of
    # the second's: the calls were before it), in the CLI's history as in Spark's (above).
    first = {(r[2], r[3]): struct_value(r[4]) for r in history_rows(cli_history, "2024-12-01") if r[1] == "effect"}
    assert 0.2 < first[("2024-09-01", "reach_treatment")] < 0.45, first[("2024-09-01", "reach_treatment")]
    assert effect[("2024-09-08", "reach_treatment")] == 0.0
    # Per channel: the treated each channel reached, against the whole control group.
    for channel in ("email", "phone"):
        assert first[(f"2024-09-01 channel={channel}", "treatment")] > 0
        assert first[(f"2024-09-01 channel={channel}", "control")] == first[("2024-09-01", "control")]
    drift = [r for r in history_rows(cli_history, "2024-12-01") if r[1] == "drift" and r[3] == "psi"]
    assert len(drift) > 10
    assert "realized AUC" in found["2024-12-08"].report
    # Each run's performance estimated from its calibrated probabilities when it was scored
    # (the same rows on Spark as in the CLI, above), and beside the realized figures once the
    # run matures.
    for d in dates:
        est = {r[3]: struct_value(r[4]) for r in history_rows(cli_history, d) if r[1] == "estimated" and r[2] == d}
        assert est["roc_auc_low"] < est["roc_auc"] < est["roc_auc_high"], (d, est)
    assert "run at 2024-09-08, estimated when scored vs realized: ROC AUC" in found["2024-12-08"].report


def pg_url() -> str:
    """The test server of scripts/with_postgres.sh (make test, .ci/run)."""
    url = os.environ.get("FIDELIS_TEST_PG_URL")
    if not url or not PG_JAR.is_file():
        if os.environ.get("FIDELIS_REQUIRE_PG") == "1":
            raise AssertionError("FIDELIS_REQUIRE_PG=1 but no FIDELIS_TEST_PG_URL or no JDBC driver at " + str(PG_JAR))
        pytest.skip("no PostgreSQL test server (scripts/with_postgres.sh) or JDBC driver")
    return url


def test_spark_writes_postgresql_as_the_cli_does(spark, tmp_path):
    """Scores and top segment through JDBC equal the rows `fidelis score` writes to its own
    schema; a rerun replaces its date only; the run is recorded in scoring_runs."""
    import uuid

    from fidelis import spark as fs

    url = pg_url()
    tag = uuid.uuid4().hex[:8]
    ws = tmp_path / "ws"
    shutil.copytree(FIXTURE / "models", ws / "models")
    (ws / "data").mkdir(parents=True)
    shutil.copy(FIXTURE / "data/transactions.parquet", ws / "data/transactions.parquet")
    for name in ["cli", "spark"]:
        (ws / f"{name}.toml").write_text(
            '[input.transactions]\npath = "data/transactions.parquet"\n\n'
            f'[output]\ndir = "output_{name}"\nsql = ["{url}"]\npg_schema = "{name}_{tag}"\n\n'
            '[paths]\nmodels_dir = "models"\nreports_dir = "reports"\n'
        )
    for as_of in ["2024-12-17", "2024-12-31"]:
        run(["score", "--config", "cli.toml", "--as-of", as_of, "-q"], ws)
    tx = spark.read.parquet(str(ws / "data/transactions.parquet"))
    config = str(ws / "spark.toml")
    written, previous = {}, None
    for as_of, buckets in [("2024-12-17", 3), ("2024-12-31", 7), ("2024-12-31", 4)]:  # the last: a rerun
        scores = fs.score(spark, tx, str(ws / "models"), as_of, buckets=buckets, config=config, previous=previous)
        written[as_of] = fs.write_sql(scores, as_of, config)
        if previous is None:
            previous = scores.cache()

    _, user_host = url.split("://", 1)
    user, hostdb = user_host.split("@", 1)
    jdbc = f"jdbc:postgresql://{hostdb}"
    props = {"driver": "org.postgresql.Driver", "user": user}

    def rows(schema: str, table: str) -> pa.Table:
        t = spark.read.jdbc(jdbc, f'"{schema}"."{table}"', properties=props).toArrow()
        keys = [k for k in ["as_of", "customer_id"] if k in t.column_names]
        return t.sort_by([(k, "ascending") for k in keys])

    for table in ["churn_scores", "churn_top_risk"]:
        ours, cli = rows(f"spark_{tag}", table), rows(f"cli_{tag}", table)
        assert ours.num_rows > 0 and ours.schema == cli.schema, table
        for name in ours.column_names:
            assert ours[name].equals(cli[name]), (table, name)
    runs = {
        r: rows(f"{r}_{tag}", "scoring_runs").select(["as_of", "model_id", "scored", "top_size", "contacted", "status"])
        for r in ["spark", "cli"]
    }
    assert runs["spark"].equals(runs["cli"])
    assert runs["spark"].num_rows == 2
    n, top, _ = written["2024-12-31"][0][1]
    scores = rows(f"spark_{tag}", "churn_scores")
    assert n == scores.filter(pc.equal(scores["as_of"], pa.scalar(datetime.date(2024, 12, 31)))).num_rows
    assert top == fidelis._native.top_size(0.1, n)
    # A run that fails to publish (rows of another date) changes nothing.
    from fidelis import OutputError

    before = {t: rows(f"spark_{tag}", t) for t in ["churn_scores", "churn_top_risk", "scoring_runs"]}
    with pytest.raises(OutputError, match="not of as_of 2024-12-31"):
        fs.write_sql(previous, "2024-12-31", config)
    for t, kept in before.items():
        assert rows(f"spark_{tag}", t).equals(kept), t
    # No stage table is left behind.
    tables = spark.read.jdbc(jdbc, "information_schema.tables", properties=props).toArrow()
    names = [
        t
        for t, s in zip(tables["table_name"].to_pylist(), tables["table_schema"].to_pylist(), strict=True)
        if s == f"spark_{tag}"
    ]
    assert sorted(names) == ["churn_scores", "churn_top_risk", "scoring_runs"]


@pytest.mark.parametrize("customers", ["fixture", "demo"])
def test_no_stage_runs_on_a_single_partition(spark, demo, customers):
    """Issue 36 (item 5): the weekly run logged `WindowExec: No Partition Defined for Window
    operation! Moving all data to a single partition` 48 times (the ranks of a base smaller
    than one range were a window partitioned by a constant). No physical plan of the scores,
    of the top-risk segment as written, or of the average ranks may hold a single-partition
    exchange."""
    from pyspark.sql import functions as F

    from fidelis import spark as fs

    base = FIXTURE if customers == "fixture" else demo
    tx = spark.read.parquet(str(base / "data/transactions.parquet"))
    scores = fs.score(spark, tx, str(base / "models"), "2024-12-31", buckets=5)
    for name, df in [("scores", scores), ("top_risk", scores.filter(F.col("in_top_decile")).orderBy("risk_rank"))]:
        plan = df._jdf.queryExecution().executedPlan().toString()
        assert "SinglePartition" not in plan, f"{name}:\n{plan}"
        assert "Window" in plan or name == "top_risk", plan


def test_the_spark_job_says_what_validation_dropped(spark, tmp_path):
    """Issue 36 (item 8): the Spark job, like `m.score`, says how many rows validation dropped
    and why, and how many customers lost every row: the same counts as the Python API."""
    import fidelis
    from fidelis import spark as fs

    tx = pq.read_table(FIXTURE / "data/transactions.parquet")
    amount = tx.column("amount").to_pylist()
    for i in range(0, len(amount), 50):
        amount[i] = None
    bad = tx.set_column(tx.schema.get_field_index("amount"), "amount", pa.array(amount, tx.schema.field("amount").type))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.warns(fidelis.errors.DataWarning):
        _, summary = fidelis.load_model(FIXTURE / "models").score(bad, as_of="2024-12-31", return_summary=True)
    with pytest.warns(fidelis.errors.DataWarning) as caught:
        fs.score(
            spark, spark.read.parquet(str(tmp_path / "bad.parquet")), str(FIXTURE / "models"), "2024-12-31", buckets=5
        )
    text = str(caught[0].message)
    dropped = summary["rows_read"] - summary["rows_valid"]
    assert dropped > 0 and f"{dropped} of {summary['rows_read']} transaction rows dropped" in text, text
    assert f"{summary['customers_lost']} customers lost" in text, text
