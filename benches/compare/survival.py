#!/usr/bin/env python3
"""Time to churn: fidelis's discrete-time hazard GBDT against lifelines' Cox model and
scikit-survival's gradient-boosted survival model, on the same rows.

Run on a model trained with churn as a cancellation and the rows it was trained on:
`fidelis train --export-features FEATURES.parquet` writes the features, `role` (fit /
validation / holdout) and each row's follow-up as fidelis's evaluation sees it
(`survival_days`, `survival_event`: the fit and validation rows observed until the holdout
snapshot, the holdout rows until the end of the data). Cox and GBSA are fitted on the fit
and validation rows, as fidelis's evaluated model is (signed-log1p standardized features for
Cox, a 20,000-row customer sample for GBSA) and ranked by their risk on the holdout rows;
fidelis's holdout predictions are the evaluated model's restricted mean lifetime in the
model's `predictions.parquet`. Every model's concordance is Harrell's C from
`lifelines.utils.concordance_index` on the same holdout rows (and fidelis's is checked equal
to the C its `metrics.json` reports).

Usage: python3 benches/compare/survival.py FEATURES.parquet MODEL_DIR   (lifelines and
scikit-survival installed). Prints one JSON object.
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from sksurv.ensemble import GradientBoostingSurvivalAnalysis

warnings.filterwarnings("ignore")

NOT_FEATURES = {"customer_id", "snapshot", "churn", "clv", "cancel_period", "role", "survival_days", "survival_event"}


def main(features: str, model_dir: str) -> dict:
    df = pd.read_parquet(features)
    names = [c for c in df.columns if c not in NOT_FEATURES]
    # What fidelis's evaluated model learns from: every period of the fit and validation rows
    # observed by the holdout snapshot.
    fit = df[(df["role"] != "holdout") & (df["survival_days"] > 0)]
    hold = df[df["role"] == "holdout"].sort_values("customer_id")
    out: dict = {"fit_rows": len(fit), "holdout_rows": len(hold), "holdout_events": int(hold["survival_event"].sum())}

    def c_index(risk) -> float:
        return float(concordance_index(hold["survival_days"], -np.asarray(risk), hold["survival_event"]))

    # fidelis: the evaluated model's restricted mean lifetime on the holdout rows.
    preds = pd.read_parquet(Path(model_dir) / "predictions.parquet")
    preds = preds[preds["role"] == "holdout"].sort_values("customer_id")
    assert list(preds["customer_id"]) == list(hold["customer_id"]), "the holdout rows differ"
    out["fidelis"] = c_index(-preds["expected_lifetime_days"].to_numpy())
    reported = json.loads((Path(model_dir) / "metrics.json").read_text())["survival"]
    out["fidelis_reported"] = reported["model"]["concordance"]
    out["sbg_reported"] = reported["sbg"]["concordance"]

    # Cox proportional hazards (ridge penalty), on signed-log1p standardized features.
    def prep(x: pd.DataFrame) -> pd.DataFrame:
        return np.sign(x) * np.log1p(np.abs(x))

    x_fit = prep(fit[names])
    mean, std = x_fit.mean(), x_fit.std().replace(0, 1)
    keep = [c for c in names if x_fit[c].std() > 0]
    z_fit = ((x_fit - mean) / std)[keep]
    z_hold = ((prep(hold[names]) - mean) / std)[keep]
    cox = CoxPHFitter(penalizer=0.1)
    cox.fit(
        pd.concat([z_fit, fit[["survival_days", "survival_event"]]], axis=1),
        duration_col="survival_days",
        event_col="survival_event",
    )
    out["cox"] = c_index(cox.predict_partial_hazard(z_hold).to_numpy())

    # scikit-survival's gradient-boosted Cox model (trees), on a customer sample of the fit rows.
    sample = fit
    if len(fit) > 20_000:
        customers = fit["customer_id"].drop_duplicates().sample(frac=20_000 / len(fit), random_state=7)
        sample = fit[fit["customer_id"].isin(set(customers))]
    y = np.array(
        list(zip(sample["survival_event"].astype(bool), sample["survival_days"].astype(float), strict=True)),
        dtype=[("event", bool), ("time", float)],
    )
    gbsa = GradientBoostingSurvivalAnalysis(n_estimators=200, learning_rate=0.05, max_depth=3, random_state=7)
    gbsa.fit(sample[names].to_numpy(), y)
    out["gbsa"] = c_index(gbsa.predict(hold[names].to_numpy()))
    out["gbsa_fit_rows"] = len(sample)
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2]), indent=1))
