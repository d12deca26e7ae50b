#!/usr/bin/env python3
"""The comparison half of `make bench`: the same work done by LightGBM and DuckDB.

- LightGBM trains the churn model on the feature matrix fidelis exported (rows with role
  "fit", early stopping off, the number of trees fidelis's model ended with, same learning
  rate, depth, leaves = 2^depth, min hessian per leaf, L2, 256 bins, 2 threads, OpenMP passive
  wait), then predicts the holdout rows. Wall times and the holdout ROC AUC.
- DuckDB computes the 90-day feature aggregation of fidelis (windows 30/90/365, lifetime
  stats, recency, tenure, trend, gaps, spend ratio, refunds, eligibility) at one date as one
  SQL query over the same Parquet transactions, 2 threads.

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
    a = ap.parse_args()

    df = pd.read_parquet(a.features)
    drop = {"customer_id", "snapshot", "churn", "clv", "role"}
    cols = [c for c in df.columns if c not in drop]
    fit, hold = df[df.role == "fit"], df[df.role == "holdout"]
    x_fit, y_fit = fit[cols].to_numpy(np.float64), fit["churn"].to_numpy(np.float64)
    x_hold, y_hold = hold[cols].to_numpy(np.float64), hold["churn"].to_numpy(np.float64)
    params = dict(
        objective="binary", learning_rate=a.learning_rate, max_depth=a.max_depth,
        num_leaves=2 ** a.max_depth, min_sum_hessian_in_leaf=a.min_leaf_weight, min_data_in_leaf=1,
        lambda_l2=a.l2, max_bin=256, num_threads=a.threads, verbose=-1, deterministic=True, seed=42,
    )
    t0 = time.perf_counter()
    booster = lgb.train(params, lgb.Dataset(x_fit, y_fit), num_boost_round=a.trees)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = booster.predict(x_hold, num_threads=a.threads)
    predict_s = time.perf_counter() - t0

    con = duckdb.connect()
    con.execute(f"SET threads = {a.threads}")
    sql = FEATURES_SQL.format(path=a.transactions, t=a.as_of, windows=windows_sql(a.as_of))
    t0 = time.perf_counter()
    n = len(con.execute(sql).fetchall())
    duck_s = time.perf_counter() - t0

    print(json.dumps({
        "lightgbm": {"version": lgb.__version__, "rows": len(fit), "features": len(cols), "trees": a.trees,
                     "train_s": train_s, "predict_s": predict_s, "predict_rows": len(hold),
                     "auc": auc(y_hold, p)},
        "duckdb": {"version": duckdb.__version__, "features_s": duck_s, "customers": n, "as_of": a.as_of},
    }))


if __name__ == "__main__":
    main()
