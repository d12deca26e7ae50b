"""``score``: the per-customer columns by the Rust core, the whole-base columns (ranks, top
segment, RFM quintiles, score change) by Spark."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from fidelis import _native
from fidelis.spark._core import _local, _model, _plain_strings, _report_dropped, _table

RANK_ROWS = 200_000


def _range_buckets(df: Any, columns: list[Any], n: int, rank_rows: int) -> dict[str, Any]:
    """Fixed cut points per column (approximate quantiles, taken once), so that a global
    order can be split into ranges: every value goes to the range of the cut points below it
    (ties together), each range is ranked exactly on its own (a window partitioned by range,
    not one window over everything in one partition), and the ranks of the ranges before it
    are added. Exact whatever the cut points are; they only balance the ranges."""
    # At least as many ranges as the session has shuffle partitions (every core ranks a
    # range), and never one: a window partitioned by a constant is planned as a window over
    # everything in a single partition.
    parts = int(df.sparkSession.conf.get("spark.sql.shuffle.partitions", "200"))
    k = max(2, min(1024, max(-(-n // max(1, rank_rows)), min(parts, max(2, n // 1000)))))
    qs = df.approxQuantile(columns, [i / k for i in range(1, k)], 1.0 / (4 * k))
    return {c: sorted(set(q)) for c, q in zip(columns, qs, strict=True)}


def _range_of(column: str, cuts: list[Any]) -> Any:
    """The ascending range index of a value: how many cut points are below it (a balanced
    tree of comparisons, ``log2`` of the cut points deep)."""
    from pyspark.sql import functions as F

    def below(lo: int, hi: int) -> Any:
        if lo == hi:
            return F.lit(lo)
        mid = (lo + hi) // 2
        return F.when(F.col(column) <= F.lit(cuts[mid]), below(lo, mid)).otherwise(below(mid + 1, hi))

    return below(0, len(cuts))


def _offsets(df: Any, columns: list[Any], cuts: dict[str, Any], descending: set[str]) -> dict[str, Any]:
    """Per column, the number of rows in the ranges before each range (in ascending or, for
    the columns in ``descending``, descending order of the ranges), as an expression of the
    range index ``__range_<column>``: the rows per (column, range) counted in one job."""
    from pyspark.sql import functions as F

    pairs = F.array(*[F.struct(F.lit(i).alias("c"), F.col(f"__range_{c}").alias("r")) for i, c in enumerate(columns)])
    counts: dict[str, Any] = {}
    for row in df.select(F.explode(pairs).alias("p")).groupBy("p.c", "p.r").count().collect():
        counts.setdefault(columns[row[0]], {})[row[1]] = row[2]
    out = {}
    for c in columns:
        ranges = range(len(cuts[c]), -1, -1) if c in descending else range(len(cuts[c]) + 1)
        before, offsets = 0, {}
        for r in ranges:
            offsets[r] = before
            before += counts.get(c, {}).get(r, 0)
        lits = [F.lit(offsets[r]) for r in range(len(cuts[c]) + 1)]
        out[c] = F.element_at(F.array(*lits), F.col(f"__range_{c}") + 1)
    return out


def _balanced(local: Any, driver: Any) -> Any:
    """The control group balanced per risk band over the whole base (``experiment::flips``
    on the bands' counts and extreme draws, one small aggregation): ``experiment_group`` and
    ``contact`` as the CLI writes them."""
    from pyspark.sql import functions as F

    group, draw = F.col("experiment_group"), F.col("experiment_draw")
    stats = (
        local.filter(F.col("decided") & group.isin("control", "treatment"))
        .groupBy("risk_level")
        .agg(
            F.sum((group == "control").cast("long")),
            F.sum((group == "treatment").cast("long")),
            F.min(F.when(group == "treatment", draw)),
            F.max(F.when(group == "control", draw)),
        )
        .collect()
    )
    flips = driver.experiment_flips([(r[0], int(r[1]), int(r[2]), r[3], r[4]) for r in stats])
    if not flips:
        return local
    balanced = group
    for band, at, to in flips:
        moved = F.col("decided") & (F.col("risk_level") == band) & (draw == F.lit(at)) & (group != "exempt")
        balanced = F.when(moved, F.lit(to)).otherwise(balanced)
    return local.withColumn("experiment_group", balanced).withColumn(
        "contact", F.coalesce(F.col("experiment_group").isin(*driver.contacted_groups), F.lit(False))
    )


def _assemble(local: Any, driver: Any, previous: Any, rank_rows: int = RANK_ROWS) -> Any:
    """The scores table from the local columns: the whole-base columns by Spark (persisted:
    the caller writes and counts it; ``unpersist()`` it when done)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import IntegerType, StringType, StructField, StructType

    n = local.count()
    top_n = _native.top_size(driver.top_share, n)
    values = [("rfm_r_value", "r_rank"), ("rfm_f_value", "f_rank"), ("rfm_m_value", "m_rank")]
    columns = ["rank_key"] + [v for v, _ in values]
    cuts = _range_buckets(local, columns, n, rank_rows)
    ranges = _balanced(local, driver).select("*", *[_range_of(c, cuts[c]).alias(f"__range_{c}") for c in columns])
    # The offsets from the cached local columns (before any window: nothing is recomputed).
    offset = _offsets(ranges, columns, cuts, {"rank_key"})
    # Risk rank: rank key descending, ties by customer id ascending, as the CLI.
    by_rank_key = Window.partitionBy("__range_rank_key").orderBy(F.desc("rank_key"), F.asc("customer_id"))
    ranked = ranges.withColumn(
        "risk_rank", (offset["rank_key"] + F.row_number().over(by_rank_key)).cast("int")
    ).withColumn("in_top_decile", F.col("risk_rank") <= F.lit(top_n))
    # Average ranks (ties share the mean of their positions), as the CLI's quintiles use. The
    # ties are counted per (range, value): equal values share a range, and the window needs
    # no shuffle of its own (the rank's partitioning by range serves it).
    for value, rank in values:
        in_range = f"__range_{value}"
        ranked = ranked.withColumn(
            rank,
            (offset[value] + F.rank().over(Window.partitionBy(in_range).orderBy(value))).cast("double")
            + (F.count(F.lit(1)).over(Window.partitionBy(in_range, value)) - 1) / 2.0,
        )
    ranked = ranked.drop(*[f"__range_{c}" for c in columns])
    # A new schema (StructType.add would change the DataFrame's own).
    rfm_schema = StructType(
        list(ranked.schema.fields)
        + [StructField(c, IntegerType()) for c in ("rfm_r", "rfm_f", "rfm_m")]
        + [StructField("rfm_segment", StringType())]
    )

    def with_rfm(batches: Any) -> Any:
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
    per_customer = {n for n, _ in _native.local_columns()}
    every = _native.local_columns(True, True, True, True)
    signals = [n for n, _ in every if n not in per_customer and n in local.columns]
    # Persisted: the scores are written twice (all of them, then the top-risk segment) and
    # counted; without it each action would recompute every window.
    return scored.select(*_native.score_columns(), *signals).persist()


def score(
    spark: Any,
    transactions: Any,
    model_dir: str,
    as_of: Any,
    events: Any = None,
    customers: Any = None,
    buckets: int = 64,
    model_id: str | None = None,
    config: str | None = None,
    previous: Any = None,
    rank_rows: int = RANK_ROWS,
    history: Any = None,
    subscriptions: Any = None,
) -> Any:
    """The scores of every customer of ``transactions`` (a Spark DataFrame with the columns
    the configuration maps) eligible at ``as_of``, as a Spark DataFrame with the columns and
    values of ``scores.parquet``. ``previous``: the scores of the previous run (a DataFrame
    with ``customer_id`` and ``risk_score``) for ``score_change``. ``model_dir`` must be
    readable by the executors (a shared path). ``rank_rows``: rows per range of the exact
    global ranks (the ranges are ranked in parallel). ``events`` and ``customers``: the event
    log and the customer table (Spark DataFrames with the columns the configuration maps) of
    a model trained with them; the signal columns (health, usage drop, CSM sentiment, review
    flag and reason, escalation) then follow, as ``fidelis score`` writes them. ``history``:
    the health scores of the two previous runs (``customer_id``, ``older``, ``newer``; what
    :func:`weekly` reads from its output) for the "health falling" review flag.
    ``subscriptions``: the subscription table of a model trained with one (its churn a
    cancellation, or its subscription features)."""
    as_of = str(as_of)[:10]
    args = (str(model_dir), model_id, config)
    local = _local(transactions, args, as_of, buckets, False, events, customers, history, subscriptions)
    scored = _assemble(local, _model(*args), previous, rank_rows)
    _report_dropped()  # `_assemble` has counted the cached per-customer rows
    return scored
