#!/usr/bin/env python3
"""The comparison half of `make bench`: the same work done by LightGBM and DuckDB.

- LightGBM trains the churn model on the feature matrix fidelis exported (rows with role
  "fit", early stopping off, the number of trees fidelis's model ended with, same learning
  rate, depth, leaves = 2^depth, min hessian per leaf, L2, 256 bins, 2 threads, OpenMP passive
  wait), then predicts the holdout rows. Wall times and the holdout ROC AUC.
- DuckDB computes the 90-day feature aggregation of fidelis (windows 30/90/365, lifetime
  stats, recency, tenure, trend, gaps, spend ratio, refunds, eligibility) at one date as one
  SQL query over the same Parquet transactions, 2 threads.

- "Same fits": LightGBM doing the GBDT fits a whole `fidelis train` does, with its tree counts
  and settings (min 20 rows per leaf as fidelis): the main churn (binary), CLV (regression)
  and Poisson CLV (poisson, max delta step 0.7) models on the fit rows; at each purged
  snapshot the same three on the rows whose labels had closed (a customer sample of the same
  size past --purged-max-rows); the refit parts on every row. Total wall time, per part.

Prints one JSON object. Needs `pip install lightgbm duckdb pyarrow pandas` (make bench-deps).
"""

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import duckdb  # noqa: E402
import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def auc(y, s):
    r = pd.Series(s).rank(method="average").to_numpy()
    pos = y > 0.5
    n1, n0 = pos.sum(), (~pos).sum()
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


FEATURES_SQL = """
WITH tx AS (
  SELECT customer_id, CAST(ts AS TIMESTAMP) AS ts, amount FROM read_parquet('{path}')
  WHERE customer_id IS NOT NULL AND ts IS NOT NULL AND isfinite(amount) AND ts < DATE '{t}'
),
daily AS (
  SELECT customer_id, CAST(ts AS DATE) AS day, COUNT(*) AS n_tx, SUM(amount) AS amount,
         SUM(CASE WHEN amount < 0 THEN 1 ELSE 0 END) AS n_neg
  FROM tx GROUP BY 1, 2
),
gaps AS (
  SELECT *, datediff('day', LAG(day) OVER (PARTITION BY customer_id ORDER BY day), day) AS gap FROM daily
),
agg AS (
  SELECT customer_id,
    {windows}
    SUM(n_tx) AS count_life, SUM(amount) AS amount_life, COUNT(*) AS active_days_life,
    datediff('day', MAX(day), DATE '{t}') AS recency_days,
    datediff('day', MIN(day), DATE '{t}') AS tenure_days,
    SUM(n_tx) FILTER (WHERE day >= DATE '{t}' - 45) AS trend_recent,
    SUM(n_tx) FILTER (WHERE day >= DATE '{t}' - 90 AND day < DATE '{t}' - 45) AS trend_prior,
    SUM(amount) FILTER (WHERE day >= DATE '{t}' - 30) AS spend_short,
    SUM(amount) FILTER (WHERE day >= DATE '{t}' - 90) AS spend_long,
    SUM(n_neg) FILTER (WHERE day >= DATE '{t}' - 90) AS refunds_90d,
    AVG(gap) AS gap_mean_days, STDDEV_POP(gap) AS gap_std_days
  FROM gaps GROUP BY 1
)
SELECT *,
  CASE WHEN count_life > 0 THEN amount_life / count_life ELSE 0 END AS mean_amount_life,
  COALESCE(trend_recent, 0) / (COALESCE(trend_prior, 0) + 1) AS trend_ratio,
  CASE WHEN gap_mean_days > 0 THEN recency_days / gap_mean_days ELSE -1 END AS recency_over_gap,
  CASE WHEN spend_long > 0 THEN spend_short / (spend_long / 3) ELSE 0 END AS spend_ratio
FROM agg WHERE count_90d > 0
"""


def windows_sql(t):
    parts = []
    for w in (30, 90, 365):
        f = f"FILTER (WHERE day >= DATE '{t}' - {w})"
        parts.append(
            f"COALESCE(SUM(n_tx) {f}, 0) AS count_{w}d, COALESCE(SUM(amount) {f}, 0) AS amount_{w}d, "
            f"COUNT(*) {f} AS active_days_{w}d,"
        )
    return "\n    ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", required=True)
    ap.add_argument("--transactions", required=True)
    ap.add_argument("--as-of", required=True)
    ap.add_argument("--trees", type=int, required=True)
    ap.add_argument("--learning-rate", type=float, default=0.03)
    ap.add_argument("--max-depth", type=int, default=4)
    ap.add_argument("--min-leaf-weight", type=float, default=5.0)
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clv-trees", type=int, default=0)
    ap.add_argument("--poisson-trees", type=int, default=0)
    ap.add_argument("--purged-dates", default="", help="comma-separated snapshot dates")
    ap.add_argument("--purged-max-rows", type=int, default=200000)
    ap.add_argument("--horizon-days", type=int, default=90)
    ap.add_argument("--refit-parts", default="", help="comma-separated, as metrics.json deployed.refit_parts")
    a = ap.parse_args()

    df = pd.read_parquet(a.features)
    drop = {"customer_id", "snapshot", "churn", "clv", "role"}
    cols = [c for c in df.columns if c not in drop]
    fit, hold = df[df.role == "fit"], df[df.role == "holdout"]
    x_fit, y_fit = fit[cols].to_numpy(np.float64), fit["churn"].to_numpy(np.float64)
    x_hold, y_hold = hold[cols].to_numpy(np.float64), hold["churn"].to_numpy(np.float64)
    params = dict(
        objective="binary",
        learning_rate=a.learning_rate,
        max_depth=a.max_depth,
        num_leaves=2**a.max_depth,
        min_sum_hessian_in_leaf=a.min_leaf_weight,
        min_data_in_leaf=1,
        lambda_l2=a.l2,
        max_bin=256,
        num_threads=a.threads,
        verbose=-1,
        deterministic=True,
        seed=42,
    )
    t0 = time.perf_counter()
    booster = lgb.train(params, lgb.Dataset(x_fit, y_fit), num_boost_round=a.trees)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = booster.predict(x_hold, num_threads=a.threads)
    predict_s = time.perf_counter() - t0

    same = same_fits(a, df, cols, params) if a.clv_trees > 0 else None

    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    sql = FEATURES_SQL.format(path=a.transactions, t=a.as_of, windows=windows_sql(a.as_of))
    t0 = time.perf_counter()
    n = len(con.execute(sql).fetchall())
    duck_s = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "lightgbm": {
                    "version": lgb.__version__,
                    "rows": len(fit),
                    "features": len(cols),
                    "trees": a.trees,
                    "train_s": train_s,
                    "predict_s": predict_s,
                    "predict_rows": len(hold),
                    "auc": auc(y_hold, p),
                },
                "duckdb": {"version": duckdb.__version__, "features_s": duck_s, "customers": n, "as_of": a.as_of},
                "same_fits": same,
            }
        )
    )


def same_fits(a, df, cols, base):
    """LightGBM doing the GBDT fits of one `fidelis train` (see the module docs)."""
    params = dict(base, min_data_in_leaf=20)
    kinds = {
        "churn": ("churn", dict(objective="binary"), a.trees),
        "clv": ("clv", dict(objective="regression"), a.clv_trees),
        "poisson": ("clv", dict(objective="poisson", poisson_max_delta_step=0.7), a.poisson_trees),
    }

    def fit(rows, kind):
        label, extra, trees = kinds[kind]
        if trees <= 0:
            return 0.0
        x, y = rows[cols].to_numpy(np.float64), rows[label].to_numpy(np.float64)
        t0 = time.perf_counter()
        lgb.train(
            dict(params, **extra), lgb.Dataset(x, np.maximum(y, 0) if kind == "poisson" else y), num_boost_round=trees
        )
        return time.perf_counter() - t0

    parts = {}
    fit_rows = df[df.role == "fit"]
    for kind in kinds:
        parts[f"main_{kind}"] = fit(fit_rows, kind)
    snap = pd.to_datetime(fit_rows.snapshot)
    for d in [d for d in a.purged_dates.split(",") if d]:
        closed = fit_rows[snap + pd.Timedelta(days=a.horizon_days) <= pd.Timestamp(d)]
        if len(closed) > a.purged_max_rows:
            h = pd.util.hash_pandas_object(closed.customer_id, index=False).to_numpy()
            closed = closed[h < np.uint64(a.purged_max_rows / len(closed) * 2.0**64)]
        for kind in kinds:
            parts[f"purged_{d}_{kind}"] = fit(closed, kind)
    names = {"churn gbdt": "churn", "clv gbdt": "clv", "clv poisson gbdt": "poisson"}
    for part in [p for p in a.refit_parts.split(",") if p]:
        parts[f"refit_{names[part]}"] = fit(df, names[part])
    return {"total_s": sum(parts.values()), "parts": parts, "poisson_main_s": parts["main_poisson"]}


if __name__ == "__main__":
    main()
