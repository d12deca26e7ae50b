"""fidelis: churn and customer-lifetime-value scoring, from Python.

>>> import fidelis, pyarrow.parquet as pq
>>> m = fidelis.load_model("tests/fixtures/model_v1/models")  # a models directory: its latest
>>> tx = pq.read_table("tests/fixtures/model_v1/data/transactions.parquet")
>>> scores = m.score(tx, as_of="2024-12-31")
>>> scores.num_rows, round(m.info["metrics"]["churn"]["holdout"]["roc_auc"], 4)
(399, 0.8646)

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
    "mlflow",
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
    """A trained fidelis model (see :func:`load_model`): :meth:`score` a transaction log as
    ``fidelis score`` does, :meth:`features` for the model's inputs, :attr:`info` for what
    it was trained on, how it did on the holdout and whom it contacts."""

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
        the features, the holdout metrics, the contact threshold and risk bands.

        >>> m = fidelis.load_model("tests/fixtures/model_v1/models")
        >>> round(m.info["decision"]["threshold"], 4)  # contact at churn probability >= this
        0.0584
        >>> [b["name"] for b in m.info["decision"]["bands"]["bands"]]
        ['low', 'moderate', 'high', 'critical', 'imminent']
        """
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
        subscriptions: Any = None,
    ) -> Any:
        """The scores of every customer eligible at ``as_of`` (default: the day after the
        last transaction), as a ``pyarrow.Table`` with the columns and values of the CLI's
        scores (a first run: ``score_change`` is null).

        The transactions are validated as ``fidelis validate`` does; rows that cannot be used
        are dropped and said: a :class:`fidelis.errors.DataWarning` names how many, why, and
        how many customers lost every row. The summary (a dict: ``rows_read``, ``rows_valid``,
        ``dropped`` by reason with example rows, ``customers``, ``customers_lost``, ...) is
        ``model.last_summary`` after the call, and returned with the table when
        ``return_summary`` is true.

        ``events`` and ``customers`` (an activity log and a customer table, mapped by the
        configuration given to :func:`load_model`) add the signal columns: health score and
        colour, usage drop, CSM sentiment, review flag and reason, escalation.
        ``subscriptions`` (the subscription table, as ``[input.subscriptions]`` maps it) is
        needed by a model trained with one: its churn a cancellation (only live subscribers
        without notice are scored) or its subscription features.

        >>> import pyarrow.compute as pc
        >>> m = fidelis.load_model("tests/fixtures/model_v1/models")
        >>> tx = pq.read_table("tests/fixtures/model_v1/data/transactions.parquet")
        >>> scores, summary = m.score(tx, as_of="2024-12-31", return_summary=True)
        >>> summary["customers"], summary["customers_lost"], scores.num_rows  # in the log, lost, eligible
        (600, 0, 399)
        >>> pc.sum(scores["contact"]).as_py()  # whom the cost-weighted threshold contacts
        163
        >>> top = scores.sort_by("risk_rank").slice(0, 2)
        >>> top.select(["customer_id", "risk_score", "risk_level", "playbook"]).to_pylist()[0]
        {'customer_id': 'C0000473', 'risk_score': 91, 'risk_level': 'imminent', 'playbook': ...}
        """
        capsule, summary_json = self._native.score(
            _capsule(transactions), _date(as_of), _capsule(events), _capsule(customers), _capsule(subscriptions)
        )
        summary = json.loads(summary_json)
        self.last_summary = summary
        _warn_dropped(summary)
        table = _table(capsule)
        return (table, summary) if return_summary else table

    def features(
        self,
        transactions: Any,
        as_of: Any = None,
        events: Any = None,
        customers: Any = None,
        subscriptions: Any = None,
    ) -> Any:
        """The model's features at ``as_of``: ``customer_id`` and one column per feature, the
        values the model scores (point in time: nothing on or after ``as_of`` is used).

        >>> m = fidelis.load_model("tests/fixtures/model_v1/models")
        >>> tx = pq.read_table("tests/fixtures/model_v1/data/transactions.parquet")
        >>> f = m.features(tx, as_of="2024-12-31")
        >>> f.select(["customer_id", "recency_days", "count_life"]).to_pylist()[0]
        {'customer_id': 'C0000003', 'recency_days': 6.0, 'count_life': 28.0}
        """
        return _table(
            self._native.features(
                _capsule(transactions), _date(as_of), _capsule(events), _capsule(customers), _capsule(subscriptions)
            )
        )

    def explain(
        self,
        transactions: Any,
        as_of: Any = None,
        events: Any = None,
        customers: Any = None,
        target: str = "churn",
        subscriptions: Any = None,
    ) -> Any:
        """Why each customer eligible at ``as_of`` got their churn score: ``customer_id``, one
        column per feature with its contribution to the churn log-odds, and
        ``expected_value``; each row adds up to the customer's log-odds before calibration.
        The contributions are exact SHAP values (TreeSHAP for the GBDT, as ``shap``'s
        ``TreeExplainer`` computes them; the logistic regression's and the BG/NBD's exactly;
        a blend's weighted sum) and the table's schema metadata says ``method: shap``;
        models trained before fidelis stored their trees' covers explain with path
        attributions (``method: path``). The scores' ``top_reasons`` are each row's three
        largest positive contributions.

        ``target="clv"``: the same for the predicted CLV, exact SHAP values on the scale the
        schema metadata's ``scale`` names: ``revenue`` (the squared-loss GBDT; the BG/NBD +
        Gamma-Gamma revenue, a feature of the model, is its own contribution; a blend gets
        half of each), or ``log_revenue`` (the Poisson GBDT, whose rows add up to the log of
        the predicted CLV). A model whose CLV is the Poisson GBDT blended with the BG/NBD has
        no one scale and raises :class:`fidelis.errors.InputError`.

        >>> m = fidelis.load_model("tests/fixtures/model_v1/models")
        >>> tx = pq.read_table("tests/fixtures/model_v1/data/transactions.parquet")
        >>> why = m.explain(tx, as_of="2024-12-31")
        >>> why.num_rows, why.column_names[-1], why.schema.metadata[b"method"]  # an old model
        (399, 'expected_value', b'path')
        """
        capsule, metadata = self._native.explain(
            _capsule(transactions), _date(as_of), _capsule(events), _capsule(customers), target, _capsule(subscriptions)
        )
        return _table(capsule).replace_schema_metadata(dict(metadata))

    def __repr__(self) -> str:
        return f"fidelis.Model({self.model_id!r}, dir={self.model_dir!r})"


def load_model(path: str, model_id: str | None = None, config: str | None = None) -> Model:
    """Load a model: a model directory (``models/<id>``), or a models directory (the model its
    ``latest`` names, or ``model_id``), or a model logged to MLflow (``models:/churn@champion``,
    ``models:/churn/3``, ``runs:/RUN_ID/model``: downloaded from the tracking server that
    ``MLFLOW_TRACKING_URI`` names, see :mod:`fidelis.mlflow`). ``config`` (a fidelis.toml) maps
    the input columns and sets ranking; by default every default.

    >>> fidelis.load_model("tests/fixtures/model_v1/models")
    fidelis.Model('20261129T143704Z-3c140140', dir='tests/fixtures/model_v1/models/20261129T143704Z-3c140140')
    >>> fidelis.load_model("models/none")
    Traceback (most recent call last):
    ...
    fidelis.errors.InputError: ...
    """
    path = str(path)
    if path.startswith(mlflow.URI_SCHEMES):
        path = mlflow.download(path)
    return Model(_native.load_model(path, model_id, None if config is None else str(config)))


def validate(config: str) -> dict[str, Any]:
    """``fidelis validate`` of a configuration file: what was read, kept and dropped, per
    input (the CLI's JSON summary as a dict), e.g.
    ``fidelis.validate("fidelis.toml")["transactions"]["dropped"]``; raises
    :class:`fidelis.errors.InputError` naming the file, column and row when an input cannot
    be used."""
    found: dict[str, Any] = json.loads(_native.validate(str(config)))
    return found


def train(config: str) -> str:
    """``fidelis train`` of a configuration file (writes the model and its report, moves
    ``latest``); the new model's id."""
    return _native.train(str(config))


from . import mlflow, uplift  # noqa: E402 - the submodules use the helpers above
