"""Uplift models and their metrics on any table of features, treatment flag and outcome.

The learners and metrics ``fidelis train`` uses on the experiment's runs, for campaigns
fidelis did not run::

    from fidelis import uplift
    m = uplift.UpliftModel.fit(features, treatment, churned, learner="t_learner")
    u = m.predict(features_next_week)          # estimated reduction in churn probability
    uplift.qini_auc_score(retained, u, treatment)
    uplift.uplift_at_k(retained, u, treatment, strategy="overall", k=0.3)

``features`` is any frame with ``__arrow_c_stream__`` (pyarrow, polars) or a pandas
DataFrame, every column numeric. The metrics take ``y_true`` as the outcome the treatment
should raise (1 = good: for churn, retained) and equal scikit-uplift's
(``sklift.metrics.qini_curve``, ``qini_auc_score``, ``uplift_at_k``) on the same arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _capsule, _native

__all__ = ["UpliftModel", "qini_curve", "qini_auc_score", "uplift_at_k"]


def _floats(v: Any) -> list[Any]:
    return [float(x) for x in (v.tolist() if hasattr(v, "tolist") else v)]


def _flags(v: Any) -> list[Any]:
    return [bool(x) for x in (v.tolist() if hasattr(v, "tolist") else v)]


def qini_curve(y_true: Sequence[Any], uplift: Sequence[Any], treatment: Sequence[Any]) -> tuple[Any, ...]:
    """Points of the Qini curve: customers targeted (highest uplift first), Qini values.

    >>> x, q = qini_curve([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.1], [1, 0, 0, 1])
    >>> list(x), list(q)
    ([0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 1.0, 0.5, 0.0])
    """
    return _native.qini_curve(_floats(y_true), _floats(uplift), _flags(treatment))


def qini_auc_score(y_true: Sequence[Any], uplift: Sequence[Any], treatment: Sequence[Any]) -> float:
    """The Qini coefficient: area between the Qini curve and random targeting over the same
    area of the perfect ranking (1 perfect, 0 random, below 0 worse than random).

    >>> retained = [1, 0, 1, 0, 1, 0]
    >>> treated = [1, 1, 0, 1, 0, 0]
    >>> round(qini_auc_score(retained, [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], treated), 4)
    -0.0769
    """
    return _native.qini_coefficient(_floats(y_true), _floats(uplift), _flags(treatment))


def uplift_at_k(
    y_true: Sequence[Any], uplift: Sequence[Any], treatment: Sequence[Any], strategy: str = "overall", k: float = 0.3
) -> float:
    """Success rate of the treated minus that of the controls among the top ``k`` (a fraction)
    by uplift: overall (``strategy="overall"``) or per group (``"by_group"``).

    >>> uplift_at_k([1, 0, 1, 0, 1, 0], [0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [1, 1, 0, 1, 0, 0], k=0.5)
    -0.5
    """
    return _native.uplift_at_k(_floats(y_true), _floats(uplift), _flags(treatment), float(k), strategy)


class UpliftModel:
    """An uplift learner on fidelis's GBDT: ``t_learner`` (a churn model per group),
    ``transformed_outcome`` (one regressor of the transformed outcome) or ``x_learner`` (the
    T-learner's models impute each customer's effect, one effect model per group).

    A campaign where contacting helps customers with a high ``x`` and does nothing at
    ``x = 0``:

    >>> import random
    >>> import pyarrow as pa
    >>> rng = random.Random(1)
    >>> x = [rng.random() for _ in range(2000)]
    >>> treated = [rng.random() < 0.5 for _ in x]
    >>> churned = [rng.random() < 0.5 - (0.3 * v if t else 0.0) for v, t in zip(x, treated)]
    >>> m = UpliftModel.fit(pa.table({"x": x}), treated, churned, iterations=50)
    >>> low, high = m.predict(pa.table({"x": [0.1, 0.9]}))
    >>> high > 0.1 > low
    True
    >>> m.learner, m.feature_names
    ('T-learner', ['x'])
    """

    def __init__(self, native: Any):
        self._native = native

    @classmethod
    def fit(
        cls,
        features: Any,
        treatment: Sequence[Any],
        churned: Sequence[Any],
        learner: str = "t_learner",
        iterations: int = 150,
        learning_rate: float = 0.05,
        max_depth: int = 3,
        min_leaf_weight: float = 20.0,
        seed: int = 42,
    ) -> UpliftModel:
        """Fit on ``features`` with each row's treatment flag and outcome (1 = churned)."""
        native = _native.UpliftLearner.fit(
            _capsule(features),
            _flags(treatment),
            _floats(churned),
            learner,
            int(iterations),
            float(learning_rate),
            int(max_depth),
            float(min_leaf_weight),
            int(seed),
        )
        return cls(native)

    def predict(self, features: Any) -> list[Any]:
        """The estimated reduction in churn probability if treated, per row (columns by name)."""
        return list(self._native.predict(_capsule(features)))

    @property
    def learner(self) -> str:
        return str(self._native.learner)

    @property
    def feature_names(self) -> list[str]:
        return list(self._native.feature_names)

    def to_json(self) -> str:
        return str(self._native.to_json())

    @classmethod
    def from_json(cls, text: str) -> UpliftModel:
        return cls(_native.UpliftLearner.from_json(text))
