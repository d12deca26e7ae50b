"""``python -m fidelis.spark`` / ``spark-submit .../fidelis/spark/__init__.py``: the command line."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fidelis.errors import ExitCode
from fidelis.mlflow import URI_SCHEMES, download
from fidelis.spark._core import _health_history, _previous


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
        s.add_argument(
            "--model",
            required=True,
            help="model directory, models directory (its latest), or MLflow URI (models:/churn@champion)",
        )
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
        s.add_argument("--subscriptions", help="the subscription table (a Parquet path or a table)")
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
    t.add_argument("--subscriptions", help="the subscription table (a Parquet path or a table)")
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

    if args.command != "train" and args.model.startswith(URI_SCHEMES):
        # A registered model: downloaded once, here, and shipped to the executors (SparkFiles).
        args.model = download(args.model)
        spark.sparkContext.addFile(args.model, recursive=True)
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
            subscriptions=read(args.subscriptions),
            scores=read(args.scores),
        )
        print(done)
        return ExitCode.OK
    common = dict(
        buckets=args.buckets,
        config=args.config,
        events=read(args.events),
        customers=read(args.customers),
        subscriptions=read(args.subscriptions),
    )
    if args.command == "score":
        previous = _previous(spark, args.out, args.as_of)
        history = _health_history(spark, args.out, args.as_of) if common["events"] is not None else None
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
