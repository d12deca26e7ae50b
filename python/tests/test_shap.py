"""fidelis's exact SHAP values (TreeSHAP, pipeline/train/shap.rs) against the shap library's
TreeExplainer on the same trees: the GBDTs of a model trained on generated data, handed to
shap as its dictionary tree format (children, split feature and threshold, default direction
for missing values, leaf values, cover = training rows reaching the node)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import shap

import fidelis
from fidelis import _native, _table

LEAF = 2**64 - 1


def shap_model(gbdt: dict) -> dict:
    """A fidelis GBDT file (churn.json, clv.json) as shap's dictionary model. Both route
    ``x <= threshold`` left and a missing value to the stored default side."""
    trees = []
    for t in gbdt["trees"]:
        nodes = t["nodes"]
        leaf = [n["feature"] == LEAF for n in nodes]
        left = [-1 if is_leaf else n["left"] for n, is_leaf in zip(nodes, leaf, strict=True)]
        right = [-1 if is_leaf else n["right"] for n, is_leaf in zip(nodes, leaf, strict=True)]
        trees.append(
            {
                "children_left": np.array(left),
                "children_right": np.array(right),
                "children_default": np.array(
                    [lf if n.get("missing_left") else r for n, lf, r in zip(nodes, left, right, strict=True)]
                ),
                "features": np.array([-2 if is_leaf else n["feature"] for n, is_leaf in zip(nodes, leaf, strict=True)]),
                "thresholds": np.array(
                    [0.0 if is_leaf else n["threshold"] for n, is_leaf in zip(nodes, leaf, strict=True)]
                ),
                "values": np.array([[n["value"]] for n in nodes]),
                "node_sample_weight": np.array([float(n["cover"]) for n in nodes]),
            }
        )
    return {
        "trees": trees,
        "base_offset": gbdt["base"],
        "tree_output": "raw_value",
        "input_dtype": np.float64,
        "internal_dtype": np.float64,
    }


def test_treeshap_equals_the_shap_librarys_tree_explainer(demo):
    m = fidelis.load_model(demo / "models")
    tx = pq.read_table(demo / "data/transactions.parquet")
    features = m.features(tx, as_of="2024-12-31").drop_columns(["customer_id"])
    x = np.column_stack([features.column(c).to_numpy() for c in features.column_names])
    compared = 0
    for name in ["churn.json", "clv.json"]:
        text = (demo / "models" / m.model_id / name).read_text()
        ours = _table(_native.tree_shap(text, features.__arrow_c_stream__()))
        theirs = shap.TreeExplainer(
            shap_model(json.loads(text)), feature_perturbation="tree_path_dependent", model_output="raw"
        )
        want = theirs.shap_values(x)
        got = np.column_stack([ours.column(c).to_numpy() for c in features.column_names])
        assert got.shape == want.shape == (features.num_rows, features.num_columns)
        assert np.max(np.abs(got - want)) < 1e-6, name
        bias = ours.column("expected_value").to_numpy()
        assert np.allclose(bias, float(np.ravel(theirs.expected_value)[0]), atol=1e-6), name
        # Each row adds up to the trees' margin (shap's own prediction of the same trees).
        margin = theirs.model.predict(x)
        assert np.max(np.abs(got.sum(axis=1) + bias - np.ravel(margin))) < 1e-6, name
        compared += 1
    assert compared == 2


def test_explain_adds_up_and_names_the_top_reasons(demo):
    """``Model.explain`` gives exact SHAP values for a model trained now, one column per
    feature in model order, and the scores' ``top_reasons`` are each customer's three largest
    positive contributions, with the contribution (the Rust tests hold that the values add
    up to the log-odds of every churn mix)."""
    m = fidelis.load_model(demo / "models")
    tx = pq.read_table(demo / "data/transactions.parquet")
    why = m.explain(tx, as_of="2024-12-31")
    assert why.schema.metadata[b"method"] == b"shap"
    scores = m.score(tx, as_of="2024-12-31")
    features = m.features(tx, as_of="2024-12-31")
    names = [c for c in why.column_names if c not in ("customer_id", "expected_value")]
    assert names == features.column_names[1:]
    assert why.column("customer_id").to_pylist() == scores.column("customer_id").to_pylist()
    contributions = np.column_stack([why.column(c).to_numpy() for c in names])
    values = np.column_stack([features.column(c).to_numpy() for c in names])
    reasons = scores.column("top_reasons").to_pylist()
    for r in range(0, why.num_rows, 97):
        order = sorted(
            (i for i in range(len(names)) if contributions[r, i] > 0), key=lambda i: (-contributions[r, i], i)
        )
        parsed = [part.split("=", 1)[0] for part in reasons[r].split(", ")] if reasons[r] else []
        assert parsed == [names[i] for i in order[:3]], reasons[r]
        if order:
            top = order[0]
            assert f"({contributions[r, top]:+.2f})" in reasons[r].split(", ")[0]
            assert np.isfinite(values[r, top]) or "=missing" in reasons[r].split(", ")[0]


def test_explain_clv_adds_up_to_the_predicted_clv(demo):
    """``Model.explain(target="clv")``: exact SHAP values of the CLV model, each row adding up
    to the customer's predicted CLV (or its log for the Poisson GBDT, as the metadata's
    ``scale`` says), rows in the scores' order."""
    m = fidelis.load_model(demo / "models")
    tx = pq.read_table(demo / "data/transactions.parquet")
    mix = json.loads((Path(m.model_dir) / "model.json").read_text())["clv_model"]
    if mix == "poisson_bgnbd":
        with pytest.raises(fidelis.errors.InputError, match="no exact SHAP values"):
            m.explain(tx, as_of="2024-12-31", target="clv")
        return
    why = m.explain(tx, as_of="2024-12-31", target="clv")
    scores = m.score(tx, as_of="2024-12-31")
    assert why.schema.metadata[b"method"] == b"shap"
    assert why.column("customer_id").to_pylist() == scores.column("customer_id").to_pylist()
    names = [c for c in why.column_names if c != "customer_id"]
    total = np.sum(np.column_stack([why.column(c).to_numpy() for c in names]), axis=1)
    clv = scores.column("predicted_clv").to_numpy()
    want = np.log(clv) if why.schema.metadata[b"scale"] == b"log_revenue" else clv
    assert np.max(np.abs(total - want)) < 1e-6, (mix, np.max(np.abs(total - want)))
    with pytest.raises(ValueError, match="target must be"):
        m.explain(tx, as_of="2024-12-31", target="ltv")
