#!/usr/bin/env python3
"""How far these features can go: models tuned *on the holdout itself*, for information only.

Run on the feature matrix `fidelis train --export-features PATH` writes (columns: the
features, `churn`, `clv`, `role` = fit / validation / holdout). Every model is fitted on the
fit rows and scored on the holdout, and the best holdout number over all of them is kept,
which no honest selection can beat (it is the holdout used as the tuning set):

- LightGBM: 60 random settings (trees 100-800, learning rate 0.01-0.1, leaves 4-31, min rows
  per leaf 5-200, L2 0-100, row and column subsampling); churn with log loss, CLV with a
  random objective among squared, Poisson, Tweedie and Huber.
- scikit-learn logistic regression: C in 0.001-10, features signed-log1p or raw, standardized.
- The best LightGBM churn model blended with each logistic regression (log-odds, weights 0,
  0.1, ..., 1).

Usage: python3 benches/compare/ceiling.py FEATURES.parquet   (make bench-deps installs the
packages). Prints one JSON object.
"""

import json
import sys
import warnings

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

warnings.filterwarnings("ignore")


def normalized_gini(actual, pred):
    def gini(a, p):
        order = np.lexsort((np.arange(len(p)), -np.asarray(p)))
        a = np.asarray(a)[order]
        n = len(a)
        return np.cumsum(a).sum() / a.sum() / n - (n + 1) / (2 * n)

    return gini(actual, pred) / gini(actual, actual)


def main(path):
    d = pd.read_parquet(path)
    feats = [c for c in d.columns if c not in ("customer_id", "snapshot", "churn", "clv", "role")]
    fit, hold = d[d.role == "fit"], d[d.role == "holdout"]
    rng = np.random.default_rng(0)
    best_churn, best_clv, best_gbdt_margin = (0.0, None), (0.0, None), None
    for _ in range(60):
        p = dict(
            n_estimators=int(rng.choice([100, 200, 400, 800])),
            learning_rate=float(rng.choice([0.01, 0.03, 0.1])),
            num_leaves=int(rng.choice([4, 8, 16, 31])),
            min_child_samples=int(rng.choice([5, 20, 50, 100, 200])),
            reg_lambda=float(rng.choice([0, 1, 10, 100])),
            subsample=float(rng.choice([0.5, 0.8, 1.0])),
            subsample_freq=1,
            colsample_bytree=float(rng.choice([0.3, 0.6, 1.0])),
            verbose=-1,
            n_jobs=2,
        )
        c = lgb.LGBMClassifier(**p).fit(fit[feats], fit.churn)
        margin = c.predict_proba(hold[feats], raw_score=True)
        auc = roc_auc_score(hold.churn, margin)
        if auc > best_churn[0]:
            best_churn, best_gbdt_margin = (auc, p), margin
        objective = str(rng.choice(["regression", "poisson", "tweedie", "huber"]))
        r = lgb.LGBMRegressor(objective=objective, **p).fit(fit[feats], fit.clv)
        gini = normalized_gini(hold.clv.to_numpy(), r.predict(hold[feats]))
        if gini > best_clv[0]:
            best_clv = (gini, dict(p, objective=objective))
    best_lr, best_blend = 0.0, 0.0
    for C in [0.001, 0.01, 0.1, 1, 10]:
        for transform in ["log", "raw"]:

            def f(z, transform=transform):
                x = z[feats].fillna(0)
                return np.sign(x) * np.log1p(np.abs(x)) if transform == "log" else x

            m = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000)).fit(f(fit), fit.churn)
            lr = m.decision_function(f(hold))
            best_lr = max(best_lr, roc_auc_score(hold.churn, lr))
            for w in np.linspace(0, 1, 11):
                best_blend = max(best_blend, roc_auc_score(hold.churn, w * best_gbdt_margin + (1 - w) * lr))
    print(
        json.dumps(
            {
                "holdout_rows": len(hold),
                "churn_roc_auc": {
                    "lightgbm": round(best_churn[0], 4),
                    "logistic": round(best_lr, 4),
                    "blend": round(best_blend, 4),
                },
                "clv_normalized_gini": round(best_clv[0], 4),
                "best_lightgbm_churn_settings": best_churn[1],
                "best_lightgbm_clv_settings": best_clv[1],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
