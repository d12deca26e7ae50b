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

Run as a job: ``spark-submit $(python -c "import fidelis.spark as s; print(s.__file__)") weekly
--model ... --transactions ... --as-of ... --out ...``, or ``python -m fidelis.spark weekly ...``
(see :func:`main` and docs/python-spark.md).
"""

from __future__ import annotations

import sys

# Absolute imports: this file also runs as a script (`spark-submit .../fidelis/spark/__init__.py`),
# where it has no package; the installed package is imported either way.
from fidelis.spark._cli import main
from fidelis.spark._core import dropped_line
from fidelis.spark._monitor import Monitoring, monitor
from fidelis.spark._score import score
from fidelis.spark._train import Trained, train
from fidelis.spark._weekly import Weekly, weekly
from fidelis.spark._write import migrate, write, write_sql

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

if __name__ == "__main__":
    from fidelis.spark import main as _main

    sys.exit(_main())
