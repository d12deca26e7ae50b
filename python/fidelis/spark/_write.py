"""Writing: the Hive-partitioned Parquet datasets, the migration of older layouts, and the
PostgreSQL publish (``write_sql``)."""

from __future__ import annotations

import sys
from typing import Any

import pyarrow as pa

from fidelis import _native

PARTITION_KEY = "run"


def _hive_write(df: Any, path: str) -> None:
    """Replace the partitions of ``df``'s dates under ``path`` (``run=DATE/``), the other
    dates untouched; ``as_of`` stays in the files. No ``.crc`` files beside them (Hadoop's
    local filesystem writes one per file, and a directory reader such as
    ``polars.read_parquet(dir)`` refuses a directory of mixed file extensions)."""
    from pyspark.sql import functions as F

    jvm = df.sparkSession.sparkContext._jvm
    conf = df.sparkSession.sparkContext._jsc.hadoopConfiguration()
    jvm.org.apache.hadoop.fs.Path(path).getFileSystem(conf).setWriteChecksum(False)

    (
        df.withColumn(PARTITION_KEY, F.col("as_of"))
        .write.mode("overwrite")
        .option("partitionOverwriteMode", "dynamic")
        .partitionBy(PARTITION_KEY)
        .parquet(path)
    )


def write(scores: Any, out: str, top_share_rows: bool = True) -> None:
    """Write scores as Hive partitions ``out/scores/run=DATE/`` and the top segment as
    ``out/top_risk/run=DATE/`` (riskiest first), replacing only the dates written; each file
    keeps its ``as_of`` column, so every reader's default call returns it as a date."""
    from pyspark.sql import functions as F

    spark = scores.sparkSession
    migrate(spark, out)
    _hive_write(scores, f"{out}/scores")
    if top_share_rows:
        _hive_write(scores.filter(F.col("in_top_decile")).orderBy("risk_rank"), f"{out}/top_risk")


def migrate(spark: Any, out: str) -> int:
    """Move partitions of the earlier layout (``as_of=DATE/`` directories, the date only in
    the path) under ``out/scores``, ``out/top_risk`` and ``out/metrics_history`` to the current
    one (``run=DATE/``, ``as_of`` in the files): read with the date from the path, written to a
    scratch directory beside them, old directories removed and the new ones moved in (through
    the Hadoop FileSystem API, so HDFS and object stores work as local paths do). Returns the
    partitions moved; nothing to do costs one listing per dataset."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    moved = 0
    for name in ["scores", "top_risk", "metrics_history"]:
        root = jvm.org.apache.hadoop.fs.Path(f"{out}/{name}")
        fs = root.getFileSystem(conf)
        if not fs.exists(root):
            continue
        old = [
            st.getPath()
            for st in fs.listStatus(root)
            if st.isDirectory() and st.getPath().getName().startswith("as_of=")
        ]
        if not old:
            continue
        scratch = f"{out}/.{name}-migrating"
        fs.delete(jvm.org.apache.hadoop.fs.Path(scratch), True)
        rows = spark.read.option("basePath", str(root.toString())).parquet(*[p.toString() for p in old])
        _hive_write(rows, scratch)
        for p in old:
            fs.delete(p, True)
        for st in fs.listStatus(jvm.org.apache.hadoop.fs.Path(scratch)):
            target = jvm.org.apache.hadoop.fs.Path(root, st.getPath().getName())
            if st.isDirectory() and st.getPath().getName().startswith(f"{PARTITION_KEY}=") and not fs.exists(target):
                fs.rename(st.getPath(), target)
                moved += 1
        fs.delete(jvm.org.apache.hadoop.fs.Path(scratch), True)
        print(f"fidelis: moved {len(old)} partitions of {out}/{name} to the run=DATE layout", file=sys.stderr)
    return moved


def _sql_template(scores: Any) -> pa.Table:
    """No rows, the scores' columns with the CLI's types (the rank is unsigned there)."""
    t = scores.limit(0).toArrow()
    i = t.column_names.index("risk_rank")
    return t.set_column(i, "risk_rank", t.column(i).cast(pa.uint32()))


def write_sql(scores: Any, as_of: Any, config: str | None = None, batchsize: int = 10_000) -> list[Any]:
    """Write the scores of ``as_of`` (and its top segment) to every PostgreSQL target of the
    configuration (``[output].sql``, then ``FIDELIS_PG_URL``; tables and schema from
    ``[output]``), as ``fidelis score`` does: Spark's JDBC writer loads the rows in parallel
    into a fresh stage table (the CLI's column types), then one transaction on the driver
    replaces the rows of ``as_of`` in the scores and top-risk tables from it, records the run
    in ``scoring_runs`` and drops the stage. A failure leaves the tables as they were. Needs
    the PostgreSQL JDBC driver on Spark's classpath (``--jars postgresql.jar`` or
    ``spark.jars.packages=org.postgresql:postgresql:42.7.4``). Returns, per target, its URL
    without the password and ``(scored, top size, contacted)``."""
    import datetime as dt
    import uuid

    from fidelis.errors import OutputError

    as_of = str(as_of)[:10]
    done = []
    template = _sql_template(scores)
    for i, (shown, jdbc, user, password, schema) in enumerate(_native.jdbc_targets(config)):
        started = dt.datetime.now(dt.timezone.utc).isoformat()
        stage = f"fidelis_stage_{as_of.replace('-', '')}_{uuid.uuid4().hex[:12]}"
        _native.create_stage(i, stage, template.__arrow_c_stream__(), config)
        props = {"driver": "org.postgresql.Driver", "batchsize": str(batchsize)}
        if user:
            props["user"] = user
        if password:
            props["password"] = password
        try:
            scores.write.jdbc(jdbc, f'"{schema}"."{stage}"', mode="append", properties=props)
        except Exception as e:  # the JDBC error, without the properties (the password)
            _native.drop_stage(i, stage, config)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise OutputError(f"sql {shown}: loading the rows of {as_of} failed: {first[:500]}") from None
        done.append((shown, _native.publish_staged(i, stage, template.__arrow_c_stream__(), as_of, started, config)))
    return done
