"""``monitor``: drift counts per partition merged by Spark, realized performance of matured
runs, the effect of contacting, alerts and advice by the Rust core."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from fidelis import _native
from fidelis.errors import InputError
from fidelis.spark._core import (
    _cogrouped,
    _date_strings,
    _empty,
    _key_of,
    _local,
    _model,
    _per_partition,
    _plain_strings,
    _read,
    _split,
    _stream_of,
    _table,
)
from fidelis.spark._write import _hive_write, migrate


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


def _estimate_counts(scores: Any, args: tuple[Any, ...]) -> str | None:
    """The estimate counts of a run's scores (``churn_probability``, ``predicted_clv``,
    ``contact``, ``model_id``): counted per partition by the Rust core, merged by Spark
    (``treeReduce``), exactly the CLI's; None when the run has no rows."""
    columns = ["churn_probability", "predicted_clv", "contact", "model_id"]

    def per_partition(batches: Any) -> Any:
        tables = [pa.Table.from_batches([b]).select(columns) for b in batches if b.num_rows]
        if tables:
            t = pa.concat_tables(tables)
            yield pa.RecordBatch.from_pydict({"counts": [_model(*args).estimate_counts(t.__arrow_c_stream__())]})

    parts = scores.select(*columns).mapInArrow(per_partition, "counts string").rdd.map(lambda row: row[0])
    if parts.isEmpty():
        return None
    merged: str = parts.treeReduce(_native.merge_estimate_counts)
    return merged


def _revenue_parts(subscriptions: Any, args: tuple[Any, ...], as_of: str, buckets: int) -> str | None:
    """The recurring-revenue parts at ``as_of`` of the subscription table: every customer's rows
    in one partition (hash of the customer column), summed there by the Rust core, merged by
    Spark (``treeReduce``; exact integer sums, so the CLI's figures whatever the partitioning);
    None for an empty table."""
    driver = _model(*args)
    su_col = driver.customer_columns[3]

    def per_partition(batches: Any) -> Any:
        tables = [pa.Table.from_batches([b]) for b in batches if b.num_rows]
        if tables:
            t = pa.concat_tables(tables)
            yield pa.RecordBatch.from_pydict({"parts": [_model(*args).revenue_parts(as_of, t.__arrow_c_stream__())]})

    parts = subscriptions.repartition(buckets, su_col).mapInArrow(per_partition, "parts string").rdd
    parts = parts.map(lambda row: row[0])
    if parts.isEmpty():
        return None
    merged: str = parts.treeReduce(_native.merge_revenue_parts)
    return merged


def _realized(
    spark: Any,
    transactions: Any,
    args: tuple[Any, ...],
    as_of: str,
    out: str,
    buckets: int,
    contacts: Any = None,
    subscriptions: Any = None,
) -> tuple[list[str], dict[str, float], list[tuple[str, str, float]], list[tuple[str, str, float]]]:
    """Realized performance of the runs under ``out/scores`` whose outcome window closed by
    ``as_of`` and within the data, not yet in ``out/metrics_history`` (JSON each; the Rust
    core takes the rows in customer order, whatever order Spark collects them in), and the
    realized AUCs already recorded at other dates, the history's rows of the runs' effects among
    their new customers and of what each earlier run estimated when it was scored (kind
    ``estimated``), both ``(item, metric, value)``."""
    import datetime as dt

    from pyspark.sql import functions as F

    driver = _model(*args)
    known: dict[str, Any] = {}
    first_effects: list[Any] = []
    estimates: list[Any] = []
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
        earlier = history.filter((F.col("kind") == "estimated") & (F.col("as_of").cast("string") != as_of))
        estimates = [(r["item"], r["metric"], r["value"]) for r in earlier.select("item", "metric", "value").collect()]
    runs = _read(spark, f"{out}/scores")
    if runs is None:
        return [], known, first_effects, estimates
    horizon = dt.timedelta(days=driver.horizon_days)
    day = dt.date.fromisoformat
    candidates = [r for r in _date_strings(runs) if r not in known and day(r) + horizon <= day(as_of)]
    if not candidates:
        return [], known, first_effects, estimates
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

    schema = "kind string, day date, customer_id string, revenue double"
    if driver.churn_is_cancellation:
        # Churn is a cancellation: each bucket's outcomes need its subscription rows.
        if subscriptions is None:
            raise InputError(f"model {driver.model_id} defines churn as a cancellation: pass subscriptions=")
        su_col = driver.customer_columns[3]
        wide, kinds = _cogrouped([("t", transactions, customer_col), ("s", subscriptions, su_col)])
        empty = _empty([("kind", "string"), ("day", "date"), ("customer_id", "string"), ("revenue", "double")])

        def per_group(rows: pa.RecordBatchReader) -> pa.Table:
            parts = _split(rows.read_all(), kinds)
            if parts["t"].num_rows == 0:
                return empty
            stream = _stream_of(parts)
            found = _model(*args).activity(stream("t"), candidates, subscriptions=stream("s"))
            return _plain_strings(_table(found))

        activity = _per_partition(wide, "__key", buckets, per_group, schema).cache()
    else:

        def per_partition(rows: pa.RecordBatchReader) -> pa.Table:
            return _plain_strings(_table(_model(*args).activity(rows.__arrow_c_stream__(), candidates)))

        activity = _per_partition(transactions, _key_of(customer_col), buckets, per_partition, schema).cache()
    data_end = activity.filter(F.col("kind") == "data_end").agg(F.max("day")).collect()[0][0]
    out_rows = []
    # The contact log is small (a row per call): the driver validates it once per run, as the
    # CLI does, and the reached customers join the run's scores.
    log = contacts.toArrow() if contacts is not None else None
    for run in candidates:
        if data_end is None or day(run) + horizon > data_end:
            continue
        # "active": did not churn over the window; "churned" (churn as a cancellation): with revenue.
        active = activity.filter(F.col("kind").isin("active", "churned") & (F.col("day") == F.lit(run).cast("date")))
        active = active.select("customer_id", (F.col("kind") == "active").alias("active"), "revenue")
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
    return out_rows, known, first_effects, estimates


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
    subscriptions: Any = None,
    _local_frame: Any = None,
) -> Monitoring:
    """``fidelis monitor`` on Spark: drift of the features and scores of every customer
    eligible at ``as_of`` against the model's reference (bin counts per partition by the
    Rust core, merged by Spark, PSI and KS by the Rust core: the CLI's figures), realized
    performance of the runs under ``out/scores`` whose outcome window has closed, alerts and
    retrain advice. With ``write``, the rows go to ``out/metrics_history/run=DATE/``
    (replacing that date only). ``events``, ``customers`` and ``subscriptions`` as for
    :func:`score` (under churn = cancellation the outcomes of matured runs follow the
    subscription table);
    ``contacts``: the contact log (columns as ``[input.contacts]`` maps them), for the reach
    of each group and the effect among the reached. The run under ``out/scores`` at ``as_of``
    (if any) gets its performance estimated from its calibrated probabilities."""
    as_of = str(as_of)[:10]
    args = (str(model_dir), model_id, config)
    driver = _model(*args)
    local = _local_frame
    if local is None:
        local = _local(transactions, args, as_of, buckets, True, events, customers, None, subscriptions)
    counts = _drift_counts(local, args)
    from pyspark.sql import functions as F

    scores = None
    runs = _read(spark, f"{out}/scores")
    if runs is not None and as_of in _date_strings(runs):
        scores = runs.filter(F.col("as_of").cast("string") == as_of)
    estimate = _estimate_counts(scores, args) if scores is not None else None
    realized, known, first_effects, estimates = _realized(
        spark, transactions, args, as_of, out, buckets, contacts, subscriptions
    )
    revenue = _revenue_parts(subscriptions, args, as_of, buckets) if subscriptions is not None else None
    capsule, report, retrain, alerts = driver.assess(
        as_of,
        [counts] if counts else [],
        realized,
        sorted(known.items()),
        first_effects,
        estimate,
        estimates,
        revenue,
    )
    rows = _plain_strings(_table(capsule))
    if write:
        migrate(spark, out)
        _hive_write(spark.createDataFrame(rows), f"{out}/metrics_history")
    if _local_frame is None:
        local.unpersist()
    return Monitoring(rows, report, retrain, alerts)
