"""The weekly scoring batch on Apache Spark (PySpark 4), identical to ``fidelis score``.

    from fidelis import spark as fs
    scores = fs.score(spark, transactions_df, "models/cdnow", as_of="1998-07-01")

What runs where:

- **Executors**: rows are bucketed by ``pmod(xxhash64(customer_id), buckets)`` and each
  bucket (many customers) goes to the Rust core through ``groupBy(bucket).applyInArrow``:
  validation, per-day activity, features, predictions, and every per-customer column of the
  scores (probability, risk score and level, playbook, CLV, expected loss, contact, reasons).
  The model is loaded once per Python worker. A customer's rows all land in one bucket, and
  nothing per-customer depends on other customers, so these columns equal the CLI's.
- **Spark itself**: everything that depends on the whole base: the risk rank (by the ranking
  key descending, ties by customer id ascending, as the CLI), the top segment of
  ``round(top_share * n)`` (the size computed by the Rust core), average ranks for the RFM
  quintiles (turned into quintiles and segments by the Rust core), and ``score_change``
  against a previous run.

Run as a job: ``spark-submit -m fidelis.spark score --model ... --transactions ... --as-of
... --out ...`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional

import pyarrow as pa

from . import _native

__all__ = ["score", "write", "main"]

# The per-customer columns the Rust core returns for a bucket, as Spark types.
_LOCAL = [
    ("as_of", "date"),
    ("customer_id", "string"),
    ("churn_probability", "double"),
    ("risk_score", "int"),
    ("risk_level", "string"),
    ("playbook", "string"),
    ("predicted_clv", "double"),
    ("expected_loss", "double"),
    ("contact", "boolean"),
    ("top_reasons", "string"),
    ("model_id", "string"),
    ("rank_key", "double"),
    ("rfm_r_value", "double"),
    ("rfm_f_value", "double"),
    ("rfm_m_value", "double"),
]

_MODELS: dict = {}


def _model(path: str, model_id: Optional[str], config: Optional[str]) -> Any:
    """The model, loaded once per Python worker."""
    key = (path, model_id, config)
    if key not in _MODELS:
        _MODELS[key] = _native.load_model(path, model_id, config)
    return _MODELS[key]


class _Stream:
    def __init__(self, capsule: Any):
        self._capsule = capsule

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._capsule


def _table(capsule: Any) -> pa.Table:
    return pa.RecordBatchReader.from_stream(_Stream(capsule)).read_all()


def _plain_strings(t: pa.Table) -> pa.Table:
    """Large strings as strings (what Spark's Arrow schema expects)."""
    fields = [pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type) for f in t.schema]
    return t.cast(pa.schema(fields))


def score(
    spark: Any,
    transactions: Any,
    model_dir: str,
    as_of: Any,
    events: Any = None,
    customers: Any = None,
    buckets: int = 64,
    model_id: Optional[str] = None,
    config: Optional[str] = None,
    previous: Any = None,
) -> Any:
    """The scores of every customer of ``transactions`` (a Spark DataFrame with the columns
    the configuration maps) eligible at ``as_of``, as a Spark DataFrame with the columns and
    values of ``scores.parquet``. ``previous``: the scores of the previous run (a DataFrame
    with ``customer_id`` and ``risk_score``) for ``score_change``. ``model_dir`` must be
    readable by the executors (a shared path). Events and a customer table are not supported
    on Spark yet: a model trained with them is refused."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if events is not None or customers is not None:
        raise NotImplementedError("events and a customer table are not supported on Spark yet")
    as_of = str(as_of)[:10]
    driver = _model(str(model_dir), model_id, config)
    customer_col, _ = driver.columns
    args = (str(model_dir), model_id, config)

    def per_bucket(table: pa.Table) -> pa.Table:
        m = _model(*args)
        return _plain_strings(_table(m.score_local(table.drop(["__bucket"]).__arrow_c_stream__(), as_of)))

    schema = ", ".join(f"{name} {t}" for name, t in _LOCAL)
    local = (
        transactions.withColumn("__bucket", F.pmod(F.xxhash64(F.col(customer_col)), F.lit(int(buckets))))
        .groupBy("__bucket")
        .applyInArrow(per_bucket, schema)
        .cache()
    )
    n = local.count()
    top_n = _native.top_size(driver.top_share, n)
    ranked = local.withColumn(
        "risk_rank", F.row_number().over(Window.orderBy(F.desc("rank_key"), F.asc("customer_id")))
    ).withColumn("in_top_decile", F.col("risk_rank") <= F.lit(top_n))
    # Average ranks (ties share the mean of their positions), as the CLI's quintiles use.
    for value, rank in [("rfm_r_value", "r_rank"), ("rfm_f_value", "f_rank"), ("rfm_m_value", "m_rank")]:
        ranked = ranked.withColumn(
            rank,
            F.rank().over(Window.orderBy(value)).cast("double")
            + (F.count(F.lit(1)).over(Window.partitionBy(value)) - 1) / 2.0,
        )
    from pyspark.sql.types import IntegerType, StringType, StructField, StructType

    # A new schema (StructType.add would change the DataFrame's own).
    rfm_schema = StructType(
        list(ranked.schema.fields)
        + [StructField(c, IntegerType()) for c in ("rfm_r", "rfm_f", "rfm_m")]
        + [StructField("rfm_segment", StringType())]
    )

    def with_rfm(batches):
        for b in batches:
            t = pa.Table.from_batches([b])
            ranks = t.select(["r_rank", "f_rank", "m_rank"])
            q = _plain_strings(_table(_native.rfm_from_ranks(ranks.__arrow_c_stream__(), n)))
            for name in q.column_names:
                t = t.append_column(name, q.column(name))
            yield from t.to_batches()

    scored = ranked.mapInArrow(with_rfm, rfm_schema)
    if previous is not None:
        prev = previous.select(F.col("customer_id").alias("__pid"), F.col("risk_score").alias("__prev"))
        scored = scored.join(prev, scored.customer_id == prev.__pid, "left").withColumn(
            "score_change", (F.col("risk_score") - F.col("__prev")).cast("int")
        )
    else:
        scored = scored.withColumn("score_change", F.lit(None).cast("int"))
    return scored.select(*_native.score_columns())


def write(scores: Any, out: str, top_share_rows: bool = True) -> None:
    """Write scores as Hive partitions ``out/scores/as_of=DATE/`` and the top segment as
    ``out/top_risk/as_of=DATE/`` (riskiest first), replacing only the dates written."""
    from pyspark.sql import functions as F

    spark = scores.sparkSession
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    scores.write.mode("overwrite").partitionBy("as_of").parquet(f"{out}/scores")
    if top_share_rows:
        top = scores.filter(F.col("in_top_decile")).orderBy("risk_rank")
        top.write.mode("overwrite").partitionBy("as_of").parquet(f"{out}/top_risk")


def main(argv: Optional[list] = None) -> int:
    """``python -m fidelis.spark score --model DIR --transactions PATH|TABLE --as-of DATE
    --out DIR`` (under ``spark-submit``)."""
    p = argparse.ArgumentParser(prog="python -m fidelis.spark")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="score every eligible customer and write the partitions")
    s.add_argument("--model", required=True, help="model directory, or models directory (its latest)")
    s.add_argument("--transactions", required=True, help="a Parquet path, or a table name")
    s.add_argument("--as-of", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--config", help="fidelis.toml: column mapping, ranking")
    s.add_argument("--buckets", type=int, default=64)
    args = p.parse_args(argv)
    from pyspark.sql import SparkSession

    # Through the installed module, not `__main__`: the functions shipped to the executors
    # must refer to `fidelis.spark` (importable there), not to this script's globals.
    from fidelis import spark as fs

    spark = SparkSession.builder.appName("fidelis score").getOrCreate()
    source = args.transactions
    tx = spark.read.parquet(source) if "/" in source or source.endswith(".parquet") else spark.table(source)
    scores = fs.score(spark, tx, args.model, args.as_of, buckets=args.buckets, config=args.config)
    fs.write(scores, args.out)
    print(f"scored {scores.count()} customers eligible at {args.as_of}; written to {args.out}")
    return 0


if __name__ == "__main__":
    from fidelis.spark import main as _main

    sys.exit(_main())
