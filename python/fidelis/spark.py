"""The weekly scoring batch on Apache Spark (PySpark 4), identical to ``fidelis score``.

    from fidelis import spark as fs
    scores = fs.score(spark, transactions_df, "models/cdnow", as_of="1998-07-01")

What runs where:

- **Executors**: rows are hash-partitioned by customer id into ``buckets`` partitions and
  each partition (many customers, all of their rows) streams to the Rust core through
  ``mapInArrow`` (no sort by group, no copy of the partition in Python):
  validation, per-day activity, features, predictions, and every per-customer column of the
  scores (probability, risk score and level, playbook, CLV, expected loss, contact, reasons).
  The model is loaded once per Python worker. A customer's rows all land in one bucket, and
  nothing per-customer depends on other customers, so these columns equal the CLI's.
- **Spark itself**: everything that depends on the whole base: the risk rank (by the ranking
  key descending, ties by customer id ascending, as the CLI), the top segment of
  ``round(top_share * n)`` (the size computed by the Rust core), average ranks for the RFM
  quintiles (turned into quintiles and segments by the Rust core), and ``score_change``
  against a previous run.

Monitoring (:func:`monitor`, and :func:`weekly` = score + write + monitor) follows the same
split: drift bin counts per partition by the Rust core, summed by Spark, PSI/KS/means by the
Rust core; realized performance of a matured run from Spark's join of its scores with who was
active in its outcome window (found by the Rust core per bucket), collected to the driver
for the Rust metrics (about 40 bytes a customer of that run).

Training (:func:`train`) runs validation, the BG/NBD fit inputs and the features and labels
at every snapshot on the executors per bucket, fits the BG/NBD models and then the CLI's
training on the driver from the collected rows (a ``[model].max_rows`` customer sample when
the dataset is larger): the model ``fidelis train`` makes.

Run as a job: ``spark-submit -m fidelis.spark weekly --model ... --transactions ... --as-of
... --out ...`` (see :func:`main`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import pyarrow as pa

# Absolute, not relative: this file also runs as a script (`spark-submit .../spark.py`), where
# it has no package; the installed package is imported either way.
from fidelis import _native
from fidelis.errors import ExitCode

__all__ = [
    "score",
    "weekly",
    "monitor",
    "train",
    "write",
    "write_sql",
    "migrate",
    "dropped_line",
    "main",
    "Monitoring",
    "Weekly",
    "Trained",
]

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
    ("uplift", "double"),
    ("incremental_value", "double"),
    ("contact", "boolean"),
    ("experiment_group", "string"),
    ("top_reasons", "string"),
    ("model_id", "string"),
    ("rank_key", "double"),
    ("rfm_r_value", "double"),
    ("rfm_f_value", "double"),
    ("rfm_m_value", "double"),
    ("experiment_draw", "double"),
    ("decided", "boolean"),
]

_MODELS: dict[tuple[str | None, ...], Any] = {}


def _model(path: str, model_id: str | None, config: str | None) -> Any:
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


def _bucketed(transactions: Any, customer_col: str, buckets: int) -> Any:
    """The rows with ``__bucket`` = ``pmod(xxhash64(customer), buckets)``: all of a
    customer's rows land in one bucket."""

    return transactions.withColumn("__bucket", _bucket_of(customer_col, buckets))


def _key_of(customer_col: str) -> Any:
    """The customer id as a string: the partitioning key of every input (transactions,
    events, customer table, health history), so a customer's rows of each land together."""
    from pyspark.sql import functions as F

    return F.col(f"`{customer_col}`").cast("string")


def _per_partition(df: Any, key: Any, partitions: int, run: Any, schema: str) -> Any:
    """``run(rows)`` on every partition of ``df`` hash-partitioned by ``key`` into
    ``partitions`` (a partition holds every row of its customers, and nothing per-customer
    depends on other customers): ``rows`` streams the partition's Arrow batches (no sort, no
    copy of the partition in Python), ``run`` returns a table with the columns of
    ``schema``. Empty partitions are skipped."""
    import itertools

    def each(batches: Any) -> Any:
        it = iter(batches)
        first = next(it, None)
        if first is None:
            return
        out = run(pa.RecordBatchReader.from_batches(first.schema, itertools.chain([first], it)))
        yield from out.to_batches()

    return df.repartition(int(partitions), key).mapInArrow(each, schema)


def _bucket_of(customer_col: str, buckets: int) -> Any:
    """``pmod(xxhash64(id as a string), buckets)``: the same bucket for a customer in every
    input (transactions, events, customer table, health history)."""
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.col(f"`{customer_col}`").cast("string")), F.lit(int(buckets)))


# The signal columns (events and/or a customer table) after the per-customer columns, in the
# order `score::signal_columns` adds them: (name, Spark type, needs events, needs customers).
_SIGNALS = [
    ("health_score", "double", True, False),
    ("health_colour", "string", True, False),
    ("usage_drop", "boolean", True, False),
    ("csm_sentiment", "string", False, True),
    ("review_flag", "boolean", False, False),
    ("review_reason", "string", False, False),
    ("escalation", "string", False, False),
]

_ARROW = {"date": pa.date32(), "string": pa.string(), "double": pa.float64(), "int": pa.int32(), "boolean": pa.bool_()}


def _signal_columns(events: bool, customers: bool) -> list[Any]:
    if not (events or customers):
        return []
    return [(n, t) for n, t, e, c in _SIGNALS if (not e or events) and (not c or customers)]


def _event_facts(events: Any, args: tuple[Any, ...], customer_col: str, buckets: int) -> str:
    """The whole event log's facts (first day of each name, the product's features),
    computed per bucket by the Rust core and merged."""
    from functools import reduce

    def per_partition(rows: pa.RecordBatchReader) -> pa.Table:
        return pa.table({"facts": [_model(*args).event_facts(rows.__arrow_c_stream__())]})

    parts = _per_partition(events, _key_of(customer_col), buckets, per_partition, "facts string").collect()
    return reduce(_native.merge_event_facts, sorted(r[0] for r in parts), "{}") if parts else "{}"


class _DropCounts:
    """An accumulator parameter (PySpark's AccumulatorParam protocol) adding up the buckets'
    validation summaries: rows read and kept, dropped rows per reason, customers lost (each
    customer is in one bucket, so the sums are the whole input's)."""

    def zero(self, value: dict[str, Any]) -> dict[str, Any]:
        return {}

    def addInPlace(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 - PySpark's name
        for key in ("rows_read", "rows_valid", "customers_lost"):
            a[key] = a.get(key, 0) + b.get(key, 0)
        dropped = a.setdefault("dropped", {})
        for reason, n in b.get("dropped", {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
        return a


def _summary_counts(summary_json: str | None) -> dict[str, Any]:
    """One bucket's summary (JSON from the Rust core) as the accumulator's counts."""
    if not summary_json:
        return {}
    s = json.loads(summary_json)
    dropped: dict[str, int] = {}
    for d in s.get("dropped", []):
        key = f"{str(d['reason']).replace('_', ' ')} ({d['column']})"
        dropped[key] = dropped.get(key, 0) + int(d["count"])
    return {
        "rows_read": int(s.get("rows_read", 0)),
        "rows_valid": int(s.get("rows_valid", 0)),
        "customers_lost": int(s.get("customers_lost", 0)),
        "dropped": dropped,
    }


def dropped_line(counts: dict[str, Any]) -> str | None:
    """What validation dropped, in one line (None when nothing was)."""
    read, valid, lost = counts.get("rows_read", 0), counts.get("rows_valid", 0), counts.get("customers_lost", 0)
    if read == valid and not lost:
        return None
    reasons = ", ".join(f"{n} {k}" for k, n in sorted(counts.get("dropped", {}).items()))
    return (
        f"fidelis: {read - valid} of {read} transaction rows dropped ({reasons or 'invalid'}); "
        f"{lost} customers lost every row and are not scored"
    )


# The accumulator of the last `_local` (read once an action has run over it).
_LAST_COUNTS: list[Any] = []


def _report_dropped() -> dict[str, Any] | None:
    """Say what validation dropped in the last scoring (stderr and a DataWarning), once its
    rows have been computed; the counts, or None. Buckets a failed task retried may be
    counted twice (an accumulator in a transformation)."""
    if not _LAST_COUNTS:
        return None
    counts = dict(_LAST_COUNTS.pop().value)
    line = dropped_line(counts)
    if line:
        import warnings

        from fidelis.errors import DataWarning

        print(line, file=sys.stderr)
        warnings.warn(line, DataWarning, stacklevel=3)
    return counts


def _local(
    transactions: Any,
    args: tuple[Any, ...],
    as_of: str,
    buckets: int,
    drift: bool,
    events: Any = None,
    customers: Any = None,
    history: Any = None,
) -> Any:
    """The per-customer columns of every bucket, computed by the Rust core on the executors
    (cached: the whole-base columns and drift read it again). With ``drift``, the model's
    features follow (``feature__<name>``), for drift. With events and/or a customer table, the
    inputs are cogrouped by bucket (tagged and unioned: one group holds every input's rows of
    its customers), the events' whole-log facts are merged first, and the signal columns
    follow."""

    driver = _model(*args)
    driver.check_inputs(events is not None, customers is not None)
    tx_col, ev_col, cu_col = driver.customer_columns
    columns = list(_LOCAL) + _signal_columns(events is not None, customers is not None)
    if drift:
        columns += [(c, "double") for _, c in driver.drift_columns if c.startswith("feature__")]
    schema = ", ".join(f"`{name}` {t}" for name, t in columns)
    counts = transactions.sparkSession.sparkContext.accumulator({}, _DropCounts())
    _LAST_COUNTS[:] = [counts]
    if events is None and customers is None:

        def per_partition(rows: pa.RecordBatchReader) -> pa.Table:
            m = _model(*args)
            out = _table(m.score_local(rows.__arrow_c_stream__(), as_of, drift))
            counts.add(_summary_counts(m.take_summary()))
            return _plain_strings(out)

        return _per_partition(transactions, _key_of(tx_col), buckets, per_partition, schema).cache()

    facts = _event_facts(events, args, ev_col, buckets) if events is not None else None
    wide, kinds = _cogrouped(
        [("t", transactions, tx_col), ("e", events, ev_col), ("c", customers, cu_col), ("h", history, "customer_id")]
    )
    empty = _empty(columns)

    def per_group(rows: pa.RecordBatchReader) -> pa.Table:
        parts = _split(rows.read_all(), kinds)
        if parts["t"].num_rows == 0:
            return empty
        stream = _stream_of(parts)
        m = _model(*args)
        out = m.score_local(stream("t"), as_of, drift, stream("e"), stream("c"), facts, stream("h"))
        counts.add(_summary_counts(m.take_summary()))
        return _plain_strings(_table(out))

    return _per_partition(wide, "__key", buckets, per_group, schema).cache()


def _empty(columns: list[Any]) -> pa.Table:
    """No rows, with the Arrow types of ``(name, Spark type)`` columns."""
    return pa.schema([pa.field(n, _ARROW.get(t, pa.float64())) for n, t in columns]).empty_table()


def _cogrouped(inputs: list[Any]) -> tuple[Any, ...]:
    """Several inputs keyed by customer at once (``cogroup`` takes two): each ``(kind,
    DataFrame, customer column)`` is tagged with its kind, its columns prefixed with
    ``<kind>__``, keyed by the customer id as a string (``__key``), and the inputs unioned,
    so a partition by ``__key`` (or a group by a hash of it) holds every input's rows of its
    customers (split again by :func:`_split`). Inputs that are None are left out; returns the
    union and its kinds."""
    from pyspark.sql import functions as F

    inputs = [(k, df, c) for k, df, c in inputs if df is not None]
    tagged = [
        df.select(
            _key_of(c).alias("__key"),
            F.lit(k).alias("__kind"),
            *[F.col(f"`{name}`").alias(f"{k}__{name}") for name in df.columns],
        )
        for k, df, c in inputs
    ]
    wide = tagged[0]
    for t in tagged[1:]:
        wide = wide.unionByName(t, allowMissingColumns=True)
    return wide, [k for k, _, _ in inputs]


def _stream_of(parts: dict[str, Any]) -> Callable[[str], Any]:
    """Kind -> the Arrow C stream of a :func:`_split` group's rows of that kind (None when
    the group has none)."""

    def stream(kind: str) -> Any:
        return parts[kind].__arrow_c_stream__() if kind in parts else None

    return stream


def _split(table: pa.Table, kinds: list[Any]) -> dict[str, Any]:
    """One group of :func:`_cogrouped` as its inputs' rows: kind -> table (possibly empty)."""
    import pyarrow.compute as pc

    parts = {}
    for kind in kinds:
        prefix = f"{kind}__"
        names = [n for n in table.column_names if n.startswith(prefix)]
        rows = table.filter(pc.equal(table["__kind"], kind)).select(names)
        parts[kind] = rows.rename_columns([n[len(prefix) :] for n in names])
    return parts


def _health_history(spark: Any, out: str, as_of: str) -> Any:
    """Health scores of the two latest runs before ``as_of`` under ``out/scores``, per
    customer in both (``customer_id``, ``older``, ``newer``), as the CLI's review flags read
    them; None without two such runs."""
    from pyspark.sql import functions as F

    migrate(spark, out)
    runs = _read(spark, f"{out}/scores")
    if runs is None or "health_score" not in runs.columns:
        return None
    before = [d for d in _date_strings(runs) if d < as_of][-2:]
    if len(before) < 2:
        return None

    def of(day: str, name: str) -> Any:
        rows = runs.filter((F.col("as_of").cast("string") == day) & F.col("health_score").isNotNull())
        return rows.select("customer_id", F.col("health_score").cast("double").alias(name))

    return of(before[1], "newer").join(of(before[0], "older"), "customer_id")


# Rows per range bucket for the exact global ranks (see :func:`_range_buckets`).
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
    signals = [n for n, _, _, _ in _SIGNALS if n in local.columns]
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
    :func:`weekly` reads from its output) for the "health falling" review flag."""
    as_of = str(as_of)[:10]
    args = (str(model_dir), model_id, config)
    local = _local(transactions, args, as_of, buckets, False, events, customers, history)
    scored = _assemble(local, _model(*args), previous, rank_rows)
    _report_dropped()  # `_assemble` has counted the cached per-customer rows
    return scored


def _exists(spark: Any, path: str) -> bool:
    """Whether ``path`` exists (through the Hadoop FileSystem API: any store Spark reads)."""
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return bool(p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).exists(p))


def _read(spark: Any, path: str) -> Any:
    """The Parquet dataset at ``path``, or None when there is none (asked first: Spark logs a
    `FileNotFoundException` stack trace for a missing path before it raises)."""
    from pyspark.errors import AnalysisException

    if not _exists(spark, path):
        return None
    try:
        return spark.read.parquet(path)
    except AnalysisException as e:
        if "PATH_NOT_FOUND" in str(e) or "Path does not exist" in str(e) or "UNABLE_TO_INFER_SCHEMA" in str(e):
            return None
        raise


def _date_strings(df: Any) -> list[Any]:
    from pyspark.sql import functions as F

    return sorted(r[0] for r in df.select(F.col("as_of").cast("string")).distinct().collect())


def _previous(spark: Any, out: str, as_of: str) -> Any:
    """The scores of the latest run before ``as_of`` under ``out/scores`` (None without one)."""
    from pyspark.sql import functions as F

    migrate(spark, out)
    runs = _read(spark, f"{out}/scores")
    if runs is None:
        return None
    before = [d for d in _date_strings(runs) if d < as_of]
    return runs.filter(F.col("as_of").cast("string") == before[-1]) if before else None


def _drift_counts(local: Any, args: tuple[Any, ...]) -> str | None:
    """The drift counts of every scored customer: counted per partition by the Rust core,
    merged by Spark (``treeReduce``); None when nobody was scored."""
    driver = _model(*args)
    columns = [c for _, c in driver.drift_columns]

    def per_partition(batches: Any) -> Any:
        tables = [pa.Table.from_batches([b]).select(columns) for b in batches if b.num_rows]
        if tables:
            t = pa.concat_tables(tables)
            yield pa.RecordBatch.from_pydict({"counts": [_model(*args).drift_counts(t.__arrow_c_stream__())]})

    parts = local.select(*[f"`{c}`" for c in columns]).mapInArrow(per_partition, "counts string").rdd
    parts = parts.map(lambda row: row[0])
    if parts.isEmpty():
        return None
    merged: str = parts.treeReduce(_native.merge_counts)
    return merged


def _realized(
    spark: Any, transactions: Any, args: tuple[Any, ...], as_of: str, out: str, buckets: int, contacts: Any = None
) -> tuple[list[str], dict[str, float], list[tuple[str, str, float]]]:
    """Realized performance of the runs under ``out/scores`` whose outcome window closed by
    ``as_of`` and within the data, not yet in ``out/metrics_history`` (JSON each; the Rust
    core takes the rows in customer order, whatever order Spark collects them in), and the
    realized AUCs already recorded at other dates."""
    import datetime as dt

    from pyspark.sql import functions as F

    driver = _model(*args)
    known: dict[str, Any] = {}
    first_effects: list[Any] = []
    migrate(spark, out)
    history = _read(spark, f"{out}/metrics_history")
    if history is not None:
        rows = (
            history.filter(
                (F.col("kind") == "realized")
                & (F.col("metric") == "roc_auc")
                & (F.col("as_of").cast("string") != as_of)
            )
            .select("item", "value")
            .collect()
        )
        known = {r["item"]: r["value"] for r in rows}
        first_effects = [
            (r["item"], r["metric"], r["value"])
            for r in history.filter(
                (F.col("kind") == "effect")
                & F.col("item").contains(" first")
                & (F.col("as_of").cast("string") != as_of)
            )
            .select("item", "metric", "value")
            .collect()
        ]
    runs = _read(spark, f"{out}/scores")
    if runs is None:
        return [], known, first_effects
    horizon = dt.timedelta(days=driver.horizon_days)
    day = dt.date.fromisoformat
    candidates = [r for r in _date_strings(runs) if r not in known and day(r) + horizon <= day(as_of)]
    if not candidates:
        return [], known, first_effects
    customer_col, _ = driver.columns
    # The run at which each customer entered the experiment (first run with a group): the
    # customers the pooled effect counts, at that run.
    entered = None
    if "experiment_group" in runs.columns:
        entered = (
            runs.filter(F.col("experiment_group").isNotNull())
            .groupBy("customer_id")
            .agg(F.min(F.col("as_of").cast("string")).alias("__entered"))
        )

    def per_partition(rows: pa.RecordBatchReader) -> pa.Table:
        return _plain_strings(_table(_model(*args).activity(rows.__arrow_c_stream__(), candidates)))

    schema = "kind string, day date, customer_id string, revenue double"
    activity = _per_partition(transactions, _key_of(customer_col), buckets, per_partition, schema).cache()
    data_end = activity.filter(F.col("kind") == "data_end").agg(F.max("day")).collect()[0][0]
    out_rows = []
    # The contact log is small (a row per call): the driver validates it once per run, as the
    # CLI does, and the reached customers join the run's scores.
    log = contacts.toArrow() if contacts is not None else None
    for run in candidates:
        if data_end is None or day(run) + horizon > data_end:
            continue
        active = activity.filter((F.col("kind") == "active") & (F.col("day") == F.lit(run).cast("date")))
        active = active.select("customer_id", F.lit(True).alias("active"), "revenue")
        scores = runs.filter(F.col("as_of").cast("string") == run)
        if log is not None:
            pairs = driver.reached(run, log.__arrow_c_stream__())
            hit = spark.createDataFrame(pairs, "customer_id string, reached_channel string")
            hit = hit.withColumn("reached", F.lit(True))
            scores = scores.join(hit, "customer_id", "left").withColumn(
                "reached", F.coalesce(F.col("reached"), F.lit(False))
            )
        if entered is not None:
            scores = scores.join(entered, "customer_id", "left").withColumn(
                "first_in_experiment", F.coalesce(F.col("__entered") == F.lit(run), F.lit(False))
            )
        table = (
            scores.join(active, "customer_id", "left")
            .withColumn("active", F.coalesce(F.col("active"), F.lit(False)))
            .withColumn("revenue", F.coalesce(F.col("revenue"), F.lit(0.0)))
            .select(
                "customer_id",
                "churn_probability",
                "predicted_clv",
                "contact",
                "in_top_decile",
                "model_id",
                "active",
                "revenue",
                *[
                    c
                    for c in (
                        "experiment_group",
                        "risk_level",
                        "playbook",
                        "first_in_experiment",
                        "reached",
                        "reached_channel",
                    )
                    if c in scores.columns
                ],
            )
            .toArrow()
        )
        out_rows.append(driver.realized(run, table.__arrow_c_stream__()))
    activity.unpersist()
    return out_rows, known, first_effects


class Monitoring:
    """What monitoring at one ``as_of`` found: ``rows`` (a pyarrow Table with the rows and
    columns of ``metrics_history.parquet``), ``report`` (what ``fidelis monitor`` prints),
    ``retrain`` and ``alerts``."""

    def __init__(self, rows: pa.Table, report: str, retrain: bool, alerts: list[Any]):
        self.rows, self.report, self.retrain, self.alerts = rows, report, retrain, alerts

    def __str__(self) -> str:
        return self.report

    def __repr__(self) -> str:
        return f"Monitoring(rows={self.rows.num_rows}, retrain={self.retrain}, alerts={len(self.alerts)})"


def monitor(
    spark: Any,
    transactions: Any,
    model_dir: str,
    as_of: Any,
    out: str,
    buckets: int = 64,
    model_id: str | None = None,
    config: str | None = None,
    write: bool = True,
    events: Any = None,
    customers: Any = None,
    contacts: Any = None,
    _local_frame: Any = None,
) -> Monitoring:
    """``fidelis monitor`` on Spark: drift of the features and scores of every customer
    eligible at ``as_of`` against the model's reference (bin counts per partition by the
    Rust core, merged by Spark, PSI and KS by the Rust core: the CLI's figures), realized
    performance of the runs under ``out/scores`` whose outcome window has closed, alerts and
    retrain advice. With ``write``, the rows go to ``out/metrics_history/run=DATE/``
    (replacing that date only). ``events`` and ``customers`` as for :func:`score`;
    ``contacts``: the contact log (columns as ``[input.contacts]`` maps them), for the reach
    of each group and the effect among the reached."""
    as_of = str(as_of)[:10]
    args = (str(model_dir), model_id, config)
    driver = _model(*args)
    local = _local_frame
    if local is None:
        local = _local(transactions, args, as_of, buckets, True, events, customers)
    counts = _drift_counts(local, args)
    realized, known, first_effects = _realized(spark, transactions, args, as_of, out, buckets, contacts)
    capsule, report, retrain, alerts = driver.assess(
        as_of, [counts] if counts else [], realized, sorted(known.items()), first_effects
    )
    rows = _plain_strings(_table(capsule))
    if write:
        migrate(spark, out)
        _hive_write(spark.createDataFrame(rows), f"{out}/metrics_history")
    if _local_frame is None:
        local.unpersist()
    return Monitoring(rows, report, retrain, alerts)


class Weekly:
    """What :func:`weekly` did: ``scores`` (the Spark DataFrame written), ``scored`` (its row
    count), ``monitoring``."""

    def __init__(self, scores: Any, scored: int, monitoring: Monitoring):
        self.scores, self.scored, self.monitoring = scores, scored, monitoring

    def __str__(self) -> str:
        return f"scored {self.scored} customers\n{self.monitoring}"


def weekly(
    spark: Any,
    transactions: Any,
    model_dir: str,
    as_of: Any,
    out: str,
    events: Any = None,
    customers: Any = None,
    buckets: int = 64,
    model_id: str | None = None,
    config: str | None = None,
    rank_rows: int = RANK_ROWS,
    sql: bool = False,
    contacts: Any = None,
) -> Weekly:
    """``fidelis weekly`` on Spark: score every eligible customer (``score_change`` against the
    latest run before ``as_of`` under ``out/scores``), write ``out/scores`` and
    ``out/top_risk`` for ``as_of``, then monitor (drift from the same features, realized
    performance of matured runs) and write ``out/metrics_history``. With ``sql``, the scores
    also go to the configuration's PostgreSQL targets (:func:`write_sql`). The HTML/Markdown
    reports stay with the CLI (``fidelis report`` reads these tables)."""
    as_of = str(as_of)[:10]
    args = (str(model_dir), model_id, config)
    driver = _model(*args)
    history = _health_history(spark, out, as_of) if events is not None else None
    local = _local(transactions, args, as_of, buckets, True, events, customers, history)
    scores = _assemble(local, driver, _previous(spark, out, as_of), rank_rows)
    _report_dropped()
    write(scores, out)
    if sql:
        write_sql(scores, as_of, config)
    scored = local.count()
    monitoring = monitor(
        spark,
        transactions,
        str(model_dir),
        as_of,
        out,
        buckets=buckets,
        model_id=model_id,
        config=config,
        contacts=contacts,
        _local_frame=local,
    )
    local.unpersist()
    return Weekly(scores, scored, monitoring)


# The directory key of a run's partition: the files keep their `as_of` column (a date), the
# directories are `run=DATE`, as the CLI writes them (`sink::PARTITION_KEY`).
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


class Trained:
    """What :func:`train` wrote: ``model_id``, ``model_dir``, ``report`` (the evaluation
    report's HTML), and ``rows`` / ``sampled_rows`` (the training rows before and after the
    ``[model].max_rows`` sample; equal without one)."""

    def __init__(self, model_id: str, model_dir: str, report: str, rows: int, sampled_rows: int):
        self.model_id, self.model_dir, self.report = model_id, model_dir, report
        self.rows, self.sampled_rows = rows, sampled_rows

    def __str__(self) -> str:
        sample = f" (a sample of {self.sampled_rows} rows)" if self.sampled_rows != self.rows else ""
        return f"trained model {self.model_id} on {self.rows} rows{sample}: {self.model_dir}; report {self.report}"


def _trainer(config: str | None) -> Any:
    """The training configuration, built once per Python worker."""
    key = ("trainer", config)
    if key not in _MODELS:
        _MODELS[key] = _native.Trainer(config)
    return _MODELS[key]


def _per_bucket(bucketed: Any, config: str | None, method: str, schema: str, *args: Any) -> Any:
    """``Trainer.<method>(bucket, *args)`` on every bucket (on the executors)."""

    def run(table: pa.Table) -> pa.Table:
        out = getattr(_trainer(config), method)(table.drop(["__bucket"]).__arrow_c_stream__(), *args)
        return _plain_strings(out if isinstance(out, pa.Table) else _table(out))

    return bucketed.groupBy("__bucket").applyInArrow(run, schema)


def _signal_spec(events: Any, customers: Any, config: str | None, buckets: int) -> str | None:
    """The signal features (JSON) chosen from every bucket's counts of event names and
    customer categories; None without events and a customer table."""
    if events is None and customers is None:
        return None
    ev_col, cu_col = _trainer(config).signal_customer_columns
    wide, kinds = _cogrouped([("e", events, ev_col), ("c", customers, cu_col)])

    def counts(rows: pa.RecordBatchReader) -> pa.Table:
        parts = _split(rows.read_all(), kinds)
        stream = _stream_of(parts)
        return pa.table({"counts": [_trainer(config).signal_counts(stream("e"), stream("c"))]})

    found = _per_partition(wide, "__key", buckets, counts, "counts string").collect()
    spec: str = _trainer(config).signal_spec(sorted(r[0] for r in found))
    return spec


def _features_per_bucket(
    source: Any,
    kinds: list[Any] | None,
    config: str | None,
    method: str,
    columns: list[Any],
    models: str,
    spec: Any,
    runs: list[Any] | None = None,
) -> Any:
    """``Trainer.dataset`` / ``Trainer.at_end`` / ``Trainer.experiment`` (at ``runs``) on
    every bucket: of the bucketed transactions (``kinds`` None), or of the cogrouped
    transactions, events and customer rows."""
    schema = ", ".join(f"`{n}` {t}" for n, t in columns)
    empty = _empty(columns)
    given = (models,) if runs is None else (models, runs)

    def run(table: pa.Table) -> pa.Table:
        t = _trainer(config)
        if kinds is None:
            out = getattr(t, method)(table.drop(["__bucket"]).__arrow_c_stream__(), *given)
        else:
            parts = _split(table, kinds)
            if parts["t"].num_rows == 0:
                return empty
            stream = _stream_of(parts)
            out = getattr(t, method)(stream("t"), *given, spec, stream("e"), stream("c"))
        return _plain_strings(_table(out))

    return source.groupBy("__bucket").applyInArrow(run, schema)


def _experiment(
    scores: Any,
    trainer: Any,
    data_end: str,
    source: Any,
    kinds: list[Any] | None,
    config: str | None,
    columns: list[Any],
    end_model: str,
    signal_spec: Any,
) -> tuple[Any, ...]:
    """The uplift model's inputs for ``Trainer.train``: the runs' scores of the experiment's
    customers (None without a control group), and their features and labels at the matured
    runs when there are enough of them (else None)."""
    from pyspark.sql import functions as F

    if scores is None or "experiment_group" not in scores.columns:
        return (None, None)
    members = scores.filter(F.col("experiment_group").isNotNull()).select(
        F.col("as_of").cast("date").alias("as_of"),
        "customer_id",
        "experiment_group",
        "churn_probability",
        "expected_loss",
    )
    table = members.toArrow()
    found = trainer.experiment_runs(table.__arrow_c_stream__(), data_end)
    if found is None:
        return (None, None)
    runs, enough = found
    if not enough:
        return (table, None)
    labelled = _features_per_bucket(source, kinds, config, "experiment", columns, end_model, signal_spec, runs)
    keys = members.select("customer_id", F.col("as_of").alias("snapshot")).distinct()
    return (table, labelled.join(keys, ["customer_id", "snapshot"], "left_semi").toArrow())


def train(
    spark: Any,
    transactions: Any,
    config: str | None = None,
    buckets: int = 64,
    export_features: str | None = None,
    events: Any = None,
    customers: Any = None,
    scores: Any = None,
) -> Trained:
    """``fidelis train`` with the per-customer work on Spark: validation, the BG/NBD fit
    inputs and the features and labels at every snapshot run on the executors per bucket of
    customers (the CLI's rows for them: BG/NBD models are fitted on the driver from the same
    hash sample of customers as the CLI's); the driver collects the rows (only the
    ``[model].max_rows`` customer sample when the dataset is larger) and trains, writes the
    model directory and the evaluation report under the configuration's paths, and publishes
    ``latest``: the model ``fidelis train`` makes of the same rows and configuration.
    ``events`` and ``customers``: the event log and customer table (required when the
    configuration maps them, as ``fidelis train`` would read them); the signal features are
    chosen from counts merged over the buckets and computed per bucket.
    ``export_features``: also write the training rows with their role to this Parquet file
    on the driver (as ``fidelis train --export-features``). ``scores``: the weekly runs'
    scores (e.g. ``spark.read.parquet(out + "/scores")``): with an experiment's matured runs
    in them, the uplift model is chosen and fitted as ``fidelis train`` does from its output
    directory (the features at each run built per bucket, only the experiment's customers
    reaching the driver)."""
    from pyspark.sql import functions as F

    from .errors import InputError

    trainer = _trainer(config)
    for mapped, given, section in zip(
        trainer.signal_inputs, (events, customers), ("input.events", "input.customers"), strict=True
    ):
        if mapped and given is None:
            raise InputError(
                f"the configuration maps [{section}] (fidelis train would use it): pass it to train() "
                f"as {'events' if section == 'input.events' else 'customers'}="
            )
    customer_col = trainer.customer_column
    ev_col, cu_col = trainer.signal_customer_columns
    bucketed = _bucketed(transactions, customer_col, buckets).cache()
    try:
        # 1. Validate every bucket; merge (in bucket order) into the time range and the plan.
        def inspect(table: pa.Table) -> pa.Table:
            found = _trainer(config).inspect(table.drop(["__bucket"]).__arrow_c_stream__())
            return pa.table({"bucket": [int(table["__bucket"][0].as_py())], "found": [found]})

        found = bucketed.groupBy("__bucket").applyInArrow(inspect, "bucket long, found string").collect()
        merged, days, data_end = trainer.merge([r["found"] for r in sorted(found, key=lambda r: r["bucket"])])
        # 2. BG/NBD fit inputs at every date; the CLI's hash sample per date; fit on the driver.
        dates = days + [data_end]
        fit_schema = "day date, customer_id string, share double, x double, t_x double, t double, repeat_spend double"
        inputs = _per_bucket(bucketed, config, "fit_inputs", fit_schema, dates).cache()
        counts = {str(r[0]): r[1] for r in inputs.groupBy("day").count().collect()}
        n_of = (
            F.element_at(
                F.create_map(*[x for d, n in counts.items() for x in (F.lit(d), F.lit(n))]), F.col("day").cast("string")
            )
            if counts
            else F.lit(0)
        )
        # The sample rule of `features::in_probabilistic_sample`, applied again on the driver.
        limit = trainer.probabilistic_fit_sample
        sample = inputs.filter((n_of <= limit) | (F.col("share") < F.lit(float(limit)) / n_of))
        models = json.loads(
            trainer.fit_models(sample.toArrow().__arrow_c_stream__(), [(d, counts.get(d, 0)) for d in dates])
        )
        inputs.unpersist()
        snapshot_models = json.dumps([m for m in models if m[0] != data_end])
        end_model = json.dumps([m for m in models if m[0] == data_end])
        # 3. The signal features, chosen from counts over every bucket.
        signal_spec = _signal_spec(events, customers, config, buckets)
        # 4. Features and labels per bucket (with each bucket's events and customer rows);
        # only the training sample reaches the driver.
        # The column order of the CLI's frames: features, labels, then the signal features.
        base = [(n, "double") for n in trainer.feature_names(None)]
        signal = [(n, "double") for n in trainer.feature_names(signal_spec)[len(base) :]]
        key = [("customer_id", "string"), ("snapshot", "date")]
        data_columns = key + base + [("churn", "int"), ("clv", "double")] + signal + [("__share", "double")]
        end_columns = key + base + signal + [("__share", "double")]
        if signal_spec is None:
            source, kinds = bucketed, None
        else:
            wide, kinds = _cogrouped(
                [("t", transactions, customer_col), ("e", events, ev_col), ("c", customers, cu_col)]
            )
            source = wide.withColumn("__bucket", _bucket_of("__key", buckets))
        dataset = _features_per_bucket(source, kinds, config, "dataset", data_columns, snapshot_models, signal_spec)
        dataset = dataset.cache()
        rows = dataset.count()
        fraction = trainer.sample_fraction(rows)

        def keep(df: Any) -> Any:
            return df if fraction is None else df.filter(F.col("__share") < F.lit(fraction))

        data = keep(dataset).toArrow()
        at_end = _features_per_bucket(source, kinds, config, "at_end", end_columns, end_model, signal_spec)
        at_end = keep(at_end).toArrow()
        dataset.unpersist()
        # 5. The experiment's customers at their first selection and, with enough matured
        # runs, their features and labels at those runs (for the uplift model).
        experiment = _experiment(scores, trainer, data_end, source, kinds, config, data_columns, end_model, signal_spec)
        # 6. Train on the driver.
        model_id, model_dir, report = trainer.train(
            merged,
            data.__arrow_c_stream__(),
            at_end.__arrow_c_stream__(),
            rows,
            end_model,
            export_features,
            signal_spec,
            *[None if t is None else t.__arrow_c_stream__() for t in experiment],
        )
        return Trained(model_id, os.path.abspath(model_dir), os.path.abspath(report), rows, data.num_rows)
    finally:
        bucketed.unpersist()


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

    from .errors import OutputError

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


def main(argv: list[Any] | None = None) -> int:
    """``python -m fidelis.spark {score,monitor,weekly} --model DIR --transactions PATH|TABLE
    --as-of DATE --out DIR`` and ``train --transactions PATH|TABLE --config FILE`` (under
    ``spark-submit``). ``weekly`` and ``monitor`` exit 3 on an alert with
    ``--fail-on-alert``, as the CLI."""
    p = argparse.ArgumentParser(prog="fidelis-spark")
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in [
        ("score", "score every eligible customer and write the scores and top_risk partitions"),
        ("monitor", "drift and realized performance at as_of, written to metrics_history"),
        ("weekly", "score, write, then monitor (the weekly batch)"),
    ]:
        s = sub.add_parser(name, help=what)
        s.add_argument("--model", required=True, help="model directory, or models directory (its latest)")
        s.add_argument("--transactions", required=True, help="a Parquet path, or a table name")
        s.add_argument("--as-of", required=True)
        s.add_argument("--out", required=True, help="output root: scores/, top_risk/, metrics_history/")
        s.add_argument("--config", help="fidelis.toml: column mapping, ranking, monitoring thresholds")
        s.add_argument(
            "--buckets",
            type=int,
            default=64,
            help="partitions of the per-customer stage (each holds every row of its customers)",
        )
        s.add_argument("--events", help="the event log (a Parquet path or a table), for a model trained with it")
        s.add_argument("--customers", help="the customer table (a Parquet path or a table)")
        if name != "score":
            s.add_argument(
                "--contacts", help="the contact log (a Parquet path or a table), as [input.contacts] maps it"
            )
            s.add_argument("--fail-on-alert", action="store_true", help="exit 3 when monitoring alerts")
        if name != "monitor":
            s.add_argument("--sql", action="store_true", help="also write to the PostgreSQL targets of --config (JDBC)")
    t = sub.add_parser("train", help="train with the per-customer work on Spark (the model `fidelis train` makes)")
    t.add_argument("--transactions", required=True, help="a Parquet path, or a table name")
    t.add_argument("--config", help="fidelis.toml: column mapping, snapshots, model settings, paths")
    t.add_argument("--buckets", type=int, default=64)
    t.add_argument("--export-features", help="also write the training rows with their role (Parquet)")
    t.add_argument("--events", help="the event log (a Parquet path or a table), when the configuration maps one")
    t.add_argument("--customers", help="the customer table (a Parquet path or a table)")
    t.add_argument("--scores", help="the weekly runs' scores (a Parquet path or a table), for the uplift model")
    args = p.parse_args(argv)
    # Spark's Python workers start `spark.pyspark.python`, else $PYSPARK_PYTHON, else
    # `python3` from PATH: under cron or systemd (this interpreter by absolute path, a PATH
    # without its environment) that is a Python without fidelis. Unless the user chose one,
    # the workers run this interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    # Through the installed module, not `__main__`: the functions shipped to the executors
    # must refer to `fidelis.spark` (importable there), not to this script's globals.
    from fidelis import spark as fs

    spark = SparkSession.builder.appName(f"fidelis {args.command}").getOrCreate()

    def read(source: str | None) -> Any:
        if source is None:
            return None
        return spark.read.parquet(source) if "/" in source or source.endswith(".parquet") else spark.table(source)

    tx = read(args.transactions)
    if args.command == "train":
        done = fs.train(
            spark,
            tx,
            config=args.config,
            buckets=args.buckets,
            export_features=args.export_features,
            events=read(args.events),
            customers=read(args.customers),
            scores=read(args.scores),
        )
        print(done)
        return ExitCode.OK
    common = dict(buckets=args.buckets, config=args.config, events=read(args.events), customers=read(args.customers))
    if args.command == "score":
        previous = fs._previous(spark, args.out, args.as_of)
        history = fs._health_history(spark, args.out, args.as_of) if common["events"] is not None else None
        scores = fs.score(spark, tx, args.model, args.as_of, previous=previous, history=history, **common)
        fs.write(scores, args.out)
        if args.sql:
            for shown, (n, top, contacted) in fs.write_sql(scores, args.as_of, args.config):
                print(f"{shown}: {n} scores, {top} in the top segment, {contacted} to contact")
        print(f"scored {scores.count()} customers eligible at {args.as_of}; written to {args.out}")
        return ExitCode.OK
    contacts = read(args.contacts)
    if args.command == "monitor":
        found = fs.monitor(spark, tx, args.model, args.as_of, args.out, contacts=contacts, **common)
    else:
        week = fs.weekly(spark, tx, args.model, args.as_of, args.out, sql=args.sql, contacts=contacts, **common)
        print(f"scored {week.scored} customers eligible at {args.as_of}; written to {args.out}")
        found = week.monitoring
    print(found.report)
    return ExitCode.ALERT if args.fail_on_alert and found.alerts else ExitCode.OK


if __name__ == "__main__":
    from fidelis.spark import main as _main

    sys.exit(_main())
