"""The outputs as users open them: the CLI's and the Spark job's scores and top-risk segment,
each opened with the default call of pandas, pyarrow, polars, DuckDB and Spark, return exactly
the rows of their table with `as_of` as a date, strings as plain strings (sortable by
pyarrow), and the two datasets never mixed."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, fixture_workspace, run
from test_spark import spark  # noqa: F401 - the session fixture

pl = pytest.importorskip("polars")
pd = pytest.importorskip("pandas")
duckdb = pytest.importorskip("duckdb")

FIXTURE = ROOT / "tests/fixtures/model_v1"
DATES = ["2024-12-17", "2024-12-31"]


def cli_output(tmp_path: Path) -> Path:
    ws = fixture_workspace(tmp_path / "cli")
    for d in DATES:
        run(["score", "--config", "fidelis.toml", "--as-of", d, "-q"], ws)
    return ws / "output"


def spark_output(spark, tmp_path: Path) -> Path:  # noqa: F811 - the fixture's value
    from fidelis import spark as fs

    tx = spark.read.parquet(str(FIXTURE / "data/transactions.parquet"))
    out = tmp_path / "spark"
    for d in DATES:
        fs.write(fs.score(spark, tx, str(FIXTURE / "models"), d, buckets=5), str(out))
    return out


def expected_rows(cli: Path, table: str) -> dict:
    """Rows per date of a dataset, from the CLI's files read one by one."""
    return {d: pq.ParquetFile(cli / table / f"run={d}/part-0.parquet").metadata.num_rows for d in DATES}


def as_dates(values) -> list:
    out = []
    for v in values:
        if hasattr(v, "date") and not isinstance(v, datetime.date) or isinstance(v, datetime.datetime):
            v = v.date()
        assert isinstance(v, datetime.date), f"as_of is {type(v).__name__}, not a date: {v!r}"
        out.append(v.isoformat())
    return out


def counts(dates: list) -> dict:
    return {d: dates.count(d) for d in sorted(set(dates))}


def check_every_reader(root: Path, want: dict, spark_session) -> None:
    for table in ["scores", "top_risk"]:
        path = root / table
        n = want[table]
        got = {}
        # pandas: the default call on the directory.
        df = pd.read_parquet(path)
        got["pandas"] = counts(as_dates(df["as_of"]))
        # pyarrow: dataset(dir) with its defaults; read_table of one file, then sort_by.
        t = ds.dataset(path).to_table()
        assert pa.types.is_date(t.schema.field("as_of").type), t.schema
        got["pyarrow.dataset"] = counts(as_dates(t.column("as_of").to_pylist()))
        files = sorted((path / f"run={DATES[-1]}").glob("*.parquet"))
        one = pa.concat_tables([pq.read_table(f) for f in files])
        assert one.schema.field("customer_id").type == pa.string(), one.schema
        assert one.sort_by("customer_id").num_rows == n[DATES[-1]]
        # polars: read_parquet of the directory, scan_parquet of the glob with hive partitions.
        got["polars.read"] = counts(as_dates(pl.read_parquet(path)["as_of"].to_list()))
        lf = pl.scan_parquet(str(path / "*/*.parquet"), hive_partitioning=True).collect()
        assert lf.schema["as_of"] == pl.Date, lf.schema
        got["polars.scan"] = counts(as_dates(lf["as_of"].to_list()))
        # DuckDB: the docs' glob with hive partitioning.
        con = duckdb.connect()
        rows = con.execute(f"SELECT as_of FROM read_parquet('{path}/*/*.parquet', hive_partitioning = true)").fetchall()
        got["duckdb"] = counts(as_dates([r[0] for r in rows]))
        # Spark: the default call on the directory.
        sdf = spark_session.read.parquet(str(path))
        assert dict(sdf.dtypes)["as_of"] == "date", sdf.dtypes
        got["spark"] = counts(as_dates([r[0] for r in sdf.select("as_of").collect()]))
        for reader, c in got.items():
            assert c == n, f"{table} by {reader}: {c}, expected {n}"


def test_every_reader_opens_the_cli_and_spark_outputs_with_its_default_call(spark, tmp_path):  # noqa: F811
    cli = cli_output(tmp_path)
    want = {t: expected_rows(cli, t) for t in ["scores", "top_risk"]}
    assert all(v > 0 for v in want["top_risk"].values()) and want["scores"] != want["top_risk"]
    check_every_reader(cli, want, spark)
    check_every_reader(spark_output(spark, tmp_path), want, spark)


def test_an_output_of_the_earlier_layout_is_moved_once(tmp_path):
    """`scores/as_of=DATE/{scores,top_risk}.parquet` (what fidelis wrote before) is moved to
    the two datasets by the next command that opens the output; its rows stay readable and
    the next run's score_change is computed against it."""
    ws = fixture_workspace(tmp_path / "ws")
    shutil.copytree(FIXTURE / "expected/scores", ws / "output/scores")
    old = pq.read_table(ws / "output/scores/as_of=2024-12-31/scores.parquet")
    run(["score", "--config", "fidelis.toml", "--as-of", "2025-01-07", "-q"], ws)
    assert not (ws / "output/scores/as_of=2024-12-31").exists()
    moved = pq.read_table(ws / "output/scores/run=2024-12-31/part-0.parquet")
    assert moved.equals(old)
    new = pl.read_parquet(ws / "output/scores/run=2025-01-07/part-0.parquet")
    assert new["score_change"].null_count() < new.height, "score_change against the moved run"
