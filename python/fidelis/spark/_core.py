"""Shared by the Spark jobs: the Rust core per partition (model and trainer once per worker,
Arrow in and out), buckets by customer, cogrouped inputs, dropped-row counts, the local
(per-customer) score columns."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from fidelis import _native
from fidelis.spark._write import migrate

_MODELS: dict[tuple[str | None, ...], Any] = {}


def _model(path: str, model_id: str | None, config: str | None) -> Any:
    """The model, loaded once per Python worker."""
    key = (path, model_id, config)
    if key not in _MODELS:
        local = path
        if not os.path.exists(path):
            # A model the driver downloaded (an MLflow URI) and shipped with SparkContext.addFile.
            from pyspark import SparkFiles

            shipped = SparkFiles.get(os.path.basename(path.rstrip("/")))
            local = shipped if os.path.exists(shipped) else path
        _MODELS[key] = _native.load_model(local, model_id, config)
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


# Spark SQL type names (as `_native.local_columns` gives them) as Arrow types.
_ARROW = {"date": pa.date32(), "string": pa.string(), "double": pa.float64(), "int": pa.int32(), "boolean": pa.bool_()}


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
    subscriptions: Any = None,
) -> Any:
    """The per-customer columns of every bucket, computed by the Rust core on the executors
    (cached: the whole-base columns and drift read it again). With ``drift``, the model's
    features follow (``feature__<name>``), for drift. With events, a customer table or a
    subscription table, the inputs are cogrouped by bucket (tagged and unioned: one group holds every input's rows of
    its customers), the events' whole-log facts are merged first, and the signal columns
    follow."""

    driver = _model(*args)
    driver.check_inputs(events is not None, customers is not None, subscriptions is not None)
    tx_col, ev_col, cu_col, su_col = driver.customer_columns
    columns: list[tuple[str, str]] = _native.local_columns(
        events is not None, customers is not None, subscriptions is not None, driver.has_survival
    )
    if drift:
        columns += [(c, "double") for _, c in driver.drift_columns if c.startswith("feature__")]
    schema = ", ".join(f"`{name}` {t}" for name, t in columns)
    counts = transactions.sparkSession.sparkContext.accumulator({}, _DropCounts())
    _LAST_COUNTS[:] = [counts]
    if events is None and customers is None and subscriptions is None:

        def per_partition(rows: pa.RecordBatchReader) -> pa.Table:
            m = _model(*args)
            out = _table(m.score_local(rows.__arrow_c_stream__(), as_of, drift))
            counts.add(_summary_counts(m.take_summary()))
            return _plain_strings(out)

        return _per_partition(transactions, _key_of(tx_col), buckets, per_partition, schema).cache()

    facts = _event_facts(events, args, ev_col, buckets) if events is not None else None
    wide, kinds = _cogrouped(
        [
            ("t", transactions, tx_col),
            ("e", events, ev_col),
            ("c", customers, cu_col),
            ("h", history, "customer_id"),
            ("s", subscriptions, su_col),
        ]
    )
    empty = _empty(columns)

    def per_group(rows: pa.RecordBatchReader) -> pa.Table:
        parts = _split(rows.read_all(), kinds)
        if parts["t"].num_rows == 0:
            return empty
        stream = _stream_of(parts)
        m = _model(*args)
        out = m.score_local(
            stream("t"), as_of, drift, stream("e"), stream("c"), facts, stream("h"), subscriptions=stream("s")
        )
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


def _trainer(config: str | None) -> Any:
    """The training configuration, built once per Python worker."""
    key = ("trainer", config)
    if key not in _MODELS:
        _MODELS[key] = _native.Trainer(config)
    return _MODELS[key]


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
