"""fidelis.uplift: the Qini metrics equal scikit-uplift's on the same predictions, and the
learners, fitted on a table fidelis did not make, rank customers by the effect of treating
them."""

import json

import numpy as np
import pyarrow as pa
import pytest
from sklift import metrics as sk

from fidelis import uplift


def experiment(n: int, seed: int, treated_share: float = 0.7):
    """Customers with a known effect of treatment that is not their risk: x0 raises churn,
    x1 > 0.5 makes a contact save 30 points, x0 < 0.2 makes it cost 20."""
    r = np.random.default_rng(seed)
    x0, x1, noise = r.uniform(size=n), r.uniform(size=n), r.uniform(size=n)
    effect = np.where(x0 < 0.2, -0.2, np.where(x1 > 0.5, 0.3, 0.0))
    treated = r.uniform(size=n) < treated_share
    p = 0.2 + 0.5 * x0 - np.where(treated, effect, 0.0)
    churned = (r.uniform(size=n) < np.clip(p, 0, 1)).astype(float)
    features = pa.table({"x0": x0, "x1": x1, "noise": noise})
    return features, treated, churned, effect


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_qini_and_uplift_at_k_equal_scikit_uplift(seed):
    r = np.random.default_rng(seed)
    n = 3_000
    treated = (r.uniform(size=n) < 0.6).astype(int)
    y = (r.uniform(size=n) < 0.3 + 0.1 * treated).astype(int)
    # Rounded scores: many ties, which both must take together (the curve) or in the same
    # order (uplift@k).
    score = np.round(r.normal(size=n) + 0.3 * y * treated, 1)
    x, q = uplift.qini_curve(y, score, treated)
    sx, sq = sk.qini_curve(y, score, treated)
    assert np.allclose(x, sx) and np.allclose(q, sq, atol=1e-9)
    assert uplift.qini_auc_score(y, score, treated) == pytest.approx(sk.qini_auc_score(y, score, treated), abs=1e-12)
    for strategy in ("overall", "by_group"):
        for k in (0.1, 0.3, 0.5):
            ours = uplift.uplift_at_k(y, score, treated, strategy=strategy, k=k)
            theirs = sk.uplift_at_k(y, score, treated, strategy=strategy, k=k)
            assert ours == pytest.approx(theirs, abs=1e-12), (strategy, k)


def test_the_learners_rank_by_the_effect_on_a_table_fidelis_did_not_make():
    features, treated, churned, _ = experiment(20_000, 3)
    held, held_treated, held_churned, truth = experiment(10_000, 4)
    retained = 1 - held_churned
    oracle = uplift.qini_auc_score(retained, truth, held_treated)
    by_risk = uplift.qini_auc_score(retained, held.column("x0").to_numpy(), held_treated)
    for learner in ("t_learner", "transformed_outcome", "x_learner"):
        m = uplift.UpliftModel.fit(features, treated, churned, learner=learner)
        u = m.predict(held.select(["noise", "x1", "x0"]))  # columns found by name
        q = uplift.qini_auc_score(retained, u, held_treated)
        assert q > by_risk and q > 0.6 * oracle, (learner, q, by_risk, oracle)
        back = uplift.UpliftModel.from_json(m.to_json())
        assert back.predict(held) == u
        assert json.loads(m.to_json())["features"] == ["x0", "x1", "noise"]
    with pytest.raises(ValueError, match="learner must be"):
        uplift.UpliftModel.fit(features, treated, churned, learner="s_learner")
