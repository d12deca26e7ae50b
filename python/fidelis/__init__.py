"""fidelis: churn and customer-lifetime-value scoring, from Python.

    import fidelis
    m = fidelis.load_model("models/cdnow")           # a model directory, or a models
    scores = m.score(transactions, as_of="1998-07-01")  # directory (its latest model)
    m.info["metrics"]["churn"]["holdout"]["roc_auc"]

Frames go in as any object with ``__arrow_c_stream__`` (a pyarrow Table, a polars
DataFrame) or a pandas DataFrame (through pyarrow), with the columns the configuration maps
(by default ``customer_id``, ``ts``, ``amount``); results come back as ``pyarrow.Table``.
Errors are :mod:`fidelis.errors` exceptions with the CLI's message and exit code.
"""

from __future__ import annotations

import json
from typing import Any

from . import _native
from .errors import FidelisError, InputError, LockedError, OutputError, ScoresWrittenError

__all__ = [
    "uplift",
    "Model",
    "load_model",
    "validate",
    "train",
    "FidelisError",
    "InputError",
    "LockedError",
    "OutputError",
    "ScoresWrittenError",
]
__version__ = _native.__version__


class _Stream:
    """Hands a capsule made by the Rust core to pyarrow (the PyCapsule interface)."""

    def __init__(self, capsule: Any):
        self._capsule = capsule

    def __arrow_c_stream__(self, requested_schema: Any = None) -> Any:
        return self._capsule


def _capsule(frame: Any) -> Any:
    """The Arrow C stream capsule of a frame (pandas goes through pyarrow)."""
    if frame is None:
        return None
    if hasattr(frame, "__arrow_c_stream__"):
        return frame.__arrow_c_stream__()
    try:
        import pandas as pd  # noqa: F401
    except ImportError:  # pragma: no cover - no pandas, no pandas frame
        pd = None
    if pd is not None and isinstance(frame, pd.DataFrame):
        import pyarrow as pa

        return pa.Table.from_pandas(frame, preserve_index=False).__arrow_c_stream__()
    raise TypeError(
        f"expected a frame with __arrow_c_stream__ (pyarrow Table, polars DataFrame) "
        f"or a pandas DataFrame, got {type(frame).__name__}"
    )


def _table(capsule: Any) -> Any:
    import pyarrow as pa

    return pa.RecordBatchReader.from_stream(_Stream(capsule)).read_all()


def _date(as_of: Any) -> str | None:
    return None if as_of is None else str(as_of)[:10]


def _warn_dropped(summary: dict[str, Any]) -> None:
    """A DataWarning when validation dropped rows (what the CLI prints as its summary)."""
    read, valid = summary.get("rows_read", 0), summary.get("rows_valid", 0)
    lost = summary.get("customers_lost", 0)
    if read == valid and not lost:
        return
    import warnings

    from .errors import DataWarning

    reasons = ", ".join(
        f"{d['count']} {str(d['reason']).replace('_', ' ')} ({d['column']})" for d in summary.get("dropped", [])
    )
    warnings.warn(
        f"fidelis: {read - valid} of {read} transaction rows dropped ({reasons or 'invalid'}); "
        f"{lost} customers lost every row and are not scored",
        DataWarning,
        stacklevel=3,
    )


class Model:
    """A trained fidelis model (see :func:`load_model`)."""

    def __init__(self, native: Any):
        self._native = native
        self._info: dict[str, Any] | None = None
        #: The validation summary of the last :meth:`score` call.
        self.last_summary: dict[str, Any] | None = None

    @property
    def model_id(self) -> str:
        return str(self._native.model_id)

    @property
    def model_dir(self) -> str:
        return str(self._native.model_dir)

    @property
    def info(self) -> dict[str, Any]:
        """``{"model": model.json, "metrics": metrics.json, "decision": decision.json}``:
        the features, the holdout metrics, the contact threshold and risk bands."""
        if self._info is None:
            self._info = json.loads(self._native.info_json())
        return self._info

    def score(
        self,
        transactions: Any,
        as_of: Any = None,
        events: Any = None,
        customers: Any = None,
        return_summary: bool = False,
    ) -> Any:
        """The scores of every customer eligible at ``as_of`` (default: the day after the
        last transaction), as a ``pyarrow.Table`` with the columns and values of the CLI's
        scores (a first run: ``score_change`` is null).

        The transactions are validated as ``fidelis validate`` does; rows that cannot be used
        are dropped and said: a :class:`fidelis.errors.DataWarning` names how many, why, and
        how many customers lost every row. The summary (a dict: ``rows_read``, ``rows_valid``,
        ``dropped`` by reason with example rows, ``customers``, ``customers_lost``, ...) is
        ``model.last_summary`` after the call, and returned with the table when
        ``return_summary`` is true::

            scores, summary = m.score(tx, as_of="2024-12-31", return_summary=True)
            print(summary["customers_lost"])
        """
        capsule, summary_json = self._native.score(
            _capsule(transactions), _date(as_of), _capsule(events), _capsule(customers)
        )
        summary = json.loads(summary_json)
        self.last_summary = summary
        _warn_dropped(summary)
        table = _table(capsule)
        return (table, summary) if return_summary else table

    def features(self, transactions: Any, as_of: Any = None, events: Any = None, customers: Any = None) -> Any:
        """The model's features at ``as_of``: ``customer_id`` and one column per feature."""
        return _table(
            self._native.features(_capsule(transactions), _date(as_of), _capsule(events), _capsule(customers))
        )

    def __repr__(self) -> str:
        return f"fidelis.Model({self.model_id!r}, dir={self.model_dir!r})"


def load_model(path: str, model_id: str | None = None, config: str | None = None) -> Model:
    """Load a model: a model directory (``models/<id>``), or a models directory (the model its
    ``latest`` names, or ``model_id``). ``config`` (a fidelis.toml) maps the input columns and
    sets ranking; by default every default."""
    return Model(_native.load_model(str(path), model_id, None if config is None else str(config)))


def validate(config: str) -> dict[str, Any]:
    """``fidelis validate`` of a configuration file: what was read, kept and dropped."""
    found: dict[str, Any] = json.loads(_native.validate(str(config)))
    return found


def train(config: str) -> str:
    """``fidelis train`` of a configuration file (writes the model and its report, moves
    ``latest``); the new model's id."""
    return _native.train(str(config))


from . import uplift  # noqa: E402 - the submodule uses the helpers above
