"""``train``: validation, BG/NBD fit inputs, features and labels (and the uplift model's rows)
per bucket on the executors; the CLI's training on the driver."""

from __future__ import annotations

import json
import os
from typing import Any

import pyarrow as pa

from fidelis.spark._core import (
    _bucket_of,
    _bucketed,
    _cogrouped,
    _empty,
    _per_partition,
    _plain_strings,
    _split,
    _stream_of,
    _table,
    _trainer,
)


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


def _per_bucket(bucketed: Any, config: str | None, method: str, schema: str, *args: Any) -> Any:
    """``Trainer.<method>(bucket, *args)`` on every bucket (on the executors)."""

    def run(table: pa.Table) -> pa.Table:
        out = getattr(_trainer(config), method)(table.drop(["__bucket"]).__arrow_c_stream__(), *args)
        return _plain_strings(out if isinstance(out, pa.Table) else _table(out))

    return bucketed.groupBy("__bucket").applyInArrow(run, schema)


def _signal_spec(events: Any, customers: Any, subscriptions: Any, config: str | None, buckets: int) -> str | None:
    """The signal features (JSON) chosen from every bucket's counts of event names and
    customer categories (and whether a subscription table was given); None without events,
    a customer table and a subscription table."""
    if events is None and customers is None and subscriptions is None:
        return None
    ev_col, cu_col, su_col = _trainer(config).signal_customer_columns
    wide, kinds = _cogrouped([("e", events, ev_col), ("c", customers, cu_col), ("s", subscriptions, su_col)])

    def counts(rows: pa.RecordBatchReader) -> pa.Table:
        parts = _split(rows.read_all(), kinds)
        stream = _stream_of(parts)
        found = _trainer(config).signal_counts(stream("e"), stream("c"), stream("s"))
        return pa.table({"counts": [found]})

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
    transactions, events, customer rows and subscription rows."""
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
            out = getattr(t, method)(stream("t"), *given, spec, stream("e"), stream("c"), stream("s"))
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
    # Read once: collected for the driver, then the keys the executors' rows are matched on.
    members = members.cache()
    try:
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
    finally:
        members.unpersist()


def train(
    spark: Any,
    transactions: Any,
    config: str | None = None,
    buckets: int = 64,
    export_features: str | None = None,
    events: Any = None,
    customers: Any = None,
    scores: Any = None,
    subscriptions: Any = None,
) -> Trained:
    """``fidelis train`` with the per-customer work on Spark: validation, the BG/NBD fit
    inputs and the features and labels at every snapshot run on the executors per bucket of
    customers (the CLI's rows for them: BG/NBD models are fitted on the driver from the same
    hash sample of customers as the CLI's); the driver collects the rows (only the
    ``[model].max_rows`` customer sample when the dataset is larger) and trains, writes the
    model directory and the evaluation report under the configuration's paths, and publishes
    ``latest``: the model ``fidelis train`` makes of the same rows and configuration.
    ``events``, ``customers`` and ``subscriptions``: the event log, customer table and
    subscription table (required when the configuration maps them, as ``fidelis train``
    would read them); the signal features are chosen from counts merged over the buckets and
    computed per bucket.
    ``export_features``: also write the training rows with their role to this Parquet file
    on the driver (as ``fidelis train --export-features``). ``scores``: the weekly runs'
    scores (e.g. ``spark.read.parquet(out + "/scores")``): with an experiment's matured runs
    in them, the uplift model is chosen and fitted as ``fidelis train`` does from its output
    directory (the features at each run built per bucket, only the experiment's customers
    reaching the driver)."""
    from pyspark.sql import functions as F

    from fidelis.errors import InputError

    trainer = _trainer(config)
    for mapped, given, name in zip(
        trainer.signal_inputs, (events, customers, subscriptions), ("events", "customers", "subscriptions"), strict=True
    ):
        if mapped and given is None:
            raise InputError(
                f"the configuration maps [input.{name}] (fidelis train would use it): pass it to train() as {name}="
            )
    customer_col = trainer.customer_column
    ev_col, cu_col, su_col = trainer.signal_customer_columns
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
        signal_spec = _signal_spec(events, customers, subscriptions, config, buckets)
        # 4. Features and labels per bucket (with each bucket's events and customer rows);
        # only the training sample reaches the driver.
        # The column order of the CLI's frames: features, labels, then the signal features.
        base = [(n, "double") for n in trainer.feature_names(None)]
        signal = [(n, "double") for n in trainer.feature_names(signal_spec)[len(base) :]]
        key = [("customer_id", "string"), ("snapshot", "date")]
        labels = [("churn", "int"), ("clv", "double")] + ([("cancel_period", "int")] if trainer.survival_label else [])
        data_columns = key + base + labels + signal + [("__share", "double")]
        end_columns = key + base + signal + [("__share", "double")]
        if signal_spec is None:
            source, kinds = bucketed, None
        else:
            wide, kinds = _cogrouped(
                [
                    ("t", transactions, customer_col),
                    ("e", events, ev_col),
                    ("c", customers, cu_col),
                    ("s", subscriptions, su_col),
                ]
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
