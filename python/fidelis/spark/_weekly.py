"""``weekly``: score, write, then monitor (the weekly batch)."""

from __future__ import annotations

from typing import Any

from fidelis.spark._core import _health_history, _local, _model, _previous, _report_dropped
from fidelis.spark._monitor import Monitoring, monitor
from fidelis.spark._score import RANK_ROWS, _assemble
from fidelis.spark._write import write, write_sql


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
    subscriptions: Any = None,
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
    local = _local(transactions, args, as_of, buckets, True, events, customers, history, subscriptions)
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
        subscriptions=subscriptions,
        _local_frame=local,
    )
    local.unpersist()
    return Weekly(scores, scored, monitoring)


# The directory key of a run's partition: the files keep their `as_of` column (a date), the
# directories are `run=DATE`, as the CLI writes them (`sink::PARTITION_KEY`).
