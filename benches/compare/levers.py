#!/usr/bin/env python3
"""Levers the model-quality issue asked to weigh, measured on fidelis's own feature matrix.

Run on the Parquet `fidelis train --export-features PATH` writes (features, `churn`, `clv`,
`snapshot`, `role` = fit / validation / holdout). Churn only. Each lever is judged the way
fidelis chooses (out-of-time predictions of purged models at the last three fit snapshots,
or 5-fold cross-fitting by customer when no fit snapshot has an earlier one whose labels
closed before it) and, for information, on validation and holdout:

- **stacking**: non-negative weights (and an intercept) on the log-odds of the logistic
  regression, a GBDT and the BG/NBD, fitted on those same out-of-time (or out-of-fold)
  predictions; its own choice metric leaves one snapshot (fold) out of the weight fit;
- **refit on fit + validation**: the logistic regression refit on every snapshot whose
  labels close by the holdout snapshot (what a run at the holdout date would deploy);
- **tenure as a share of the observed history**: `tenure_days / (snapshot - first day of
  the data)` in place of `tenure_days` (bounded where tenure grows with the data's age).

The logistic regression is fidelis's (signed-log1p, standardized, clipped to the training
range, Newton with an L2 penalty chosen from 1, 10, 100, 1000 on the choice metric); the GBDT
is LightGBM with fidelis's defaults (learning rate 0.03, depth 4, min hessian 5, L2 1) and
its tree count early-stopped on validation, a stand-in for fidelis's own engine.

Usage: python3 benches/compare/levers.py FEATURES.parquet   (make bench-deps installs the
packages). Prints one JSON object.
"""

import hashlib
import json
import sys

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.optimize import minimize

HORIZON = pd.Timedelta(days=90)
META = ("customer_id", "snapshot", "churn", "clv", "role")


def auc(y, s):
    r = pd.Series(s).rank().to_numpy()
    n1 = y.sum()
    n0 = len(y) - n1
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def slog(v):
    return np.sign(v) * np.log1p(np.abs(v))


def logistic(x, y, l2):
    z = slog(x)
    lo, hi, m, s = z.min(0), z.max(0), z.mean(0), z.std(0)
    s[s < 1e-12] = 1.0
    a = np.c_[np.ones(len(z)), (z - m) / s]
    pen = l2 * np.diag(np.r_[0.0, np.ones(a.shape[1] - 1)])
    b = np.zeros(a.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-a @ b))
        step = np.linalg.solve((a * (p * (1 - p))[:, None]).T @ a + pen, a.T @ (p - y) + pen @ b)
        b -= step
        if np.abs(step).max() < 1e-9:
            break
    return lambda x2: np.c_[np.ones(len(x2)), (np.clip(slog(x2), lo, hi) - m) / s] @ b


PARAMS = dict(
    objective="binary",
    learning_rate=0.03,
    max_depth=4,
    num_leaves=16,
    min_sum_hessian_in_leaf=5.0,
    lambda_l2=1.0,
    verbose=-1,
    seed=42,
    num_threads=2,
    deterministic=True,
)


def gbdt(x, y, trees):
    b = lgb.train(PARAMS, lgb.Dataset(x, y), trees)
    return lambda x2: b.predict(x2, raw_score=True)


def logit(p):
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def nonneg_weights(s, y):
    def nll(w):
        z = w[0] + s @ w[1:]
        return np.sum(np.logaddexp(0, z) - y * z)

    k = s.shape[1]
    r = minimize(nll, np.r_[0.0, np.full(k, 1.0 / k)], method="L-BFGS-B", bounds=[(None, None)] + [(0.0, None)] * k)
    return r.x


def main(path):
    t = pq_read(path)
    fit, val, hold = (t[t.role == r] for r in ("fit", "validation", "holdout"))
    snaps = sorted(fit.snapshot.unique())
    first = t[t.snapshot == snaps[0]]
    origin = pd.Timestamp(snaps[0]) - pd.Timedelta(days=float(first.tenure_days.max()))
    t["tenure_share"] = t.tenure_days / (pd.to_datetime(t.snapshot) - origin).dt.days
    fit, val, hold = (t[t.role == r] for r in ("fit", "validation", "holdout"))
    base = [c for c in t.columns if c not in META and c != "tenure_share"]
    share = ["tenure_share" if c == "tenure_days" else c for c in base]

    # The choice basis: purged out-of-time groups, else 5 folds by customer.
    groups = []
    for s in snaps[-3:]:
        train = fit[pd.to_datetime(fit.snapshot) + HORIZON <= pd.Timestamp(s)]
        if len(train):
            groups.append((train.index, fit.index[fit.snapshot == s]))
    scheme = "out-of-time (purged) snapshots"
    if not groups:
        fold = np.array([int(hashlib.md5(str(c).encode()).hexdigest(), 16) % 5 for c in fit.customer_id])
        groups = [(fit.index[fold != f], fit.index[fold == f]) for f in range(5)]
        scheme = "5-fold cross-fitting by customer"

    def matrix(d, feats):
        return np.nan_to_num(d[feats].to_numpy(dtype=float))

    # GBDT tree count: early-stopped on validation, like fidelis's main model.
    b = lgb.train(
        PARAMS,
        lgb.Dataset(matrix(fit, base), fit.churn.to_numpy()),
        1000,
        valid_sets=[lgb.Dataset(matrix(val, base), val.churn.to_numpy())],
        callbacks=[lgb.early_stopping(50, verbose=False)],
    )
    trees = max(b.best_iteration, 1)

    def out_of_sample(feats, l2):
        rows = []
        for train_idx, test_idx in groups:
            tr, te = t.loc[train_idx], t.loc[test_idx]
            x, y, xt = matrix(tr, feats), tr.churn.to_numpy(), matrix(te, feats)
            rows.append(
                pd.DataFrame(
                    {
                        "y": te.churn.to_numpy(),
                        "logistic": logistic(x, y, l2)(xt),
                        "gbdt": gbdt(x, y, trees)(xt),
                        "bgnbd": logit(te.bgnbd_p_no_purchase.to_numpy()),
                    },
                    index=te.index,
                ).assign(group=len(rows))
            )
        return pd.concat(rows)

    def mean_auc(o, col):
        return float(np.mean([auc(g.y.to_numpy(), g[col].to_numpy()) for _, g in o.groupby("group")]))

    l2_grid = {l2: mean_auc(out_of_sample(base, l2), "logistic") for l2 in (1.0, 10.0, 100.0, 1000.0)}
    l2 = max(l2_grid, key=lambda k: (l2_grid[k], -list(l2_grid).index(k)))
    result = {
        "rows": {"fit": len(fit), "validation": len(val), "holdout": len(hold)},
        "scheme": scheme,
        "gbdt_trees": trees,
        "logistic_l2": l2,
        "churn_roc_auc": {},
    }

    def evaluate(name, feats, with_stack):
        o = out_of_sample(feats, l2)
        cols = ["logistic", "gbdt", "bgnbd"]
        x, y = matrix(fit, feats), fit.churn.to_numpy()
        lr, gb = logistic(x, y, l2), gbdt(x, y, trees)

        def scores(d):
            xd = matrix(d, feats)
            return np.c_[lr(xd), gb(xd), logit(d.bgnbd_p_no_purchase.to_numpy())]

        sv, sh = scores(val), scores(hold)
        row = {}
        for i, c in enumerate(cols):
            row[c] = {
                "choice": mean_auc(o, c),
                "validation": auc(val.churn.to_numpy(), sv[:, i]),
                "holdout": auc(hold.churn.to_numpy(), sh[:, i]),
            }
        if with_stack:
            s, ys = o[cols].to_numpy(), o.y.to_numpy()
            loo = []
            for gi, g in o.groupby("group"):
                w = nonneg_weights(s[o.group.to_numpy() != gi], ys[o.group.to_numpy() != gi])
                loo.append(auc(g.y.to_numpy(), g[cols].to_numpy() @ w[1:]) - auc(g.y.to_numpy(), g.logistic.to_numpy()))
            w = nonneg_weights(s, ys)
            row["stack"] = {
                "weights": dict(zip(cols, np.round(w[1:], 3).tolist(), strict=True)),
                "choice": row["logistic"]["choice"] + float(np.mean(loo)),
                "choice_minus_logistic_se": float(np.std(loo, ddof=1) / np.sqrt(len(loo))),
                "validation": auc(val.churn.to_numpy(), sv @ w[1:]),
                "holdout": auc(hold.churn.to_numpy(), sh @ w[1:]),
            }
        result["churn_roc_auc"][name] = row

    evaluate("tenure_days", base, True)
    evaluate("tenure_share", share, False)
    both = pd.concat([fit, val])
    refit = logistic(matrix(both, base), both.churn.to_numpy(), l2)
    result["logistic_refit_on_fit_and_validation_holdout"] = auc(hold.churn.to_numpy(), refit(matrix(hold, base)))
    print(json.dumps(rounded(result), indent=1))


def rounded(v):
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [rounded(x) for x in v]
    return round(v, 4) if isinstance(v, float) else v


def pq_read(path):
    t = pd.read_parquet(path)
    return t.reset_index(drop=True)


if __name__ == "__main__":
    main(sys.argv[1])
