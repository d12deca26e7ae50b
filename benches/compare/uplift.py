"""fidelis's uplift learners against causalml's meta-learners with LightGBM, on the same rows.

The protocol of tests/uplift.rs, at a larger size: a generated base (``--customers``, seed
``--seed``), a model, monthly runs with a 40% control group, the campaign regenerated as if
they had been acted on (``fidelis generate --campaign``, with every selected customer's true
effect), the runs scored on the realized data and a model trained there. Then, on the same
rows (the customers new to the experiment at each run, with the features that model builds at
their run, their group and their realized churn, from truth.parquet):

- fidelis.uplift's T-learner and transformed outcome, fitted on the seven earlier runs;
- causalml's BaseTClassifier and BaseXClassifier with LightGBM (in a Python that has
  causalml: ``--causalml-python``, default this one);

each judged on the run after them (2024-09-17) by the Qini coefficient (sklift's definition,
``fidelis.uplift.qini_auc_score``), beside ranking by churn probability, by the true effect
(which knows each customer's own draw) and by the expected effect (which knows its state: the
ceiling of any model). Prints a table and writes reports/bench/uplift_compare.json.

    python benches/compare/uplift.py --customers 20000 --seed 5 --causalml-python /tmp/cml/bin/python
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import fidelis
from fidelis import uplift

RUNS = ["2024-03-05", "2024-04-02", "2024-04-30", "2024-05-28", "2024-06-25", "2024-07-23", "2024-08-20"]
JUDGED = "2024-09-17"
ROOT = Path(__file__).resolve().parents[2]

CAUSALML = r"""
import sys, json
import numpy as np, pyarrow.parquet as pq
from lightgbm import LGBMClassifier, LGBMRegressor
from causalml.inference.meta import BaseTClassifier, BaseXClassifier
fit, judged, out = sys.argv[1:4]
a, b = pq.read_table(fit).to_pandas(), pq.read_table(judged).to_pandas()
cols = [c for c in a.columns if c.startswith("f__")]
params = dict(
    n_estimators=150, learning_rate=0.05, max_depth=3, num_leaves=8, min_child_samples=100, verbose=-1, random_state=42
)
res = {}
for name, m in [
    ("causalml T-learner (LightGBM)", BaseTClassifier(learner=LGBMClassifier(**params), control_name="control")),
    ("causalml X-learner (LightGBM)", BaseXClassifier(
        outcome_learner=LGBMClassifier(**params), effect_learner=LGBMRegressor(**params), control_name="control"
    )),
]:
    t = a["treated"].astype(int).values
    m.fit(X=a[cols].values, treatment=np.where(t == 1, "contact", "control"), y=a["retained"].values)
    res[name] = m.predict(X=b[cols].values).reshape(-1).tolist()
json.dump(res, open(out, "w"))
"""


def fidelis_cli(*args, cwd):
    binary = os.environ.get("FIDELIS_BIN", str(ROOT / "target/release/fidelis"))
    subprocess.run([binary, *args, "-q"], cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def config(path: Path, data: str, out: str):
    path.write_text(
        f'[input.transactions]\npath = "{data}/transactions.parquet"\n\n[experiment]\ncontrol_share = 0.4\n\n'
        f'[output]\ndir = "{out}"\nsql = []\n'
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--causalml-python", default=sys.executable)
    ap.add_argument("--workdir", default=None, help="keep the generated data here (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="the workdir holds a finished protocol: compare only")
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="fidelis-uplift-"))
    work.mkdir(parents=True, exist_ok=True)
    gen = ["generate", "--customers", str(a.customers), "--seed", str(a.seed)]
    if not a.reuse:
        protocol(work, gen)
    compare(work, a)
    return 0


def protocol(work: Path, gen: list):
    """Generate, score, act, score again, train: the data both sides learn from."""
    fidelis_cli(*gen, "--out", "plain", cwd=work)
    config(work / "plain.toml", "plain", "untreated")
    fidelis_cli("train", "--config", "plain.toml", cwd=work)
    for run in RUNS + [JUDGED]:
        fidelis_cli("score", "--config", "plain.toml", "--as-of", run, cwd=work)
    fidelis_cli(*gen, "--out", "realized", "--campaign", "untreated", cwd=work)
    config(work / "realized.toml", "realized", "measured")
    for run in RUNS:
        fidelis_cli("score", "--config", "realized.toml", "--as-of", run, cwd=work)
    fidelis_cli("train", "--config", "realized.toml", cwd=work)


def compare(work: Path, a):
    """Every learner on the same rows, judged on the same run."""
    model = fidelis.load_model(str(work / "models"))
    tx = pq.read_table(work / "realized/transactions.parquet")
    truth = pq.read_table(work / "realized/truth.parquet").to_pandas()
    truth = truth[truth.group != "exempt"]
    truth["first_run"] = truth.first_run.astype(str)
    frames = []
    for run in RUNS + [JUDGED]:
        f = model.features(tx, as_of=run).to_pandas()
        f = f.rename(columns={c: f"f__{c}" for c in f.columns if c != "customer_id"})
        rows = truth[truth.first_run == run].merge(f, on="customer_id")
        rows["run"] = run
        frames.append(rows)
    import pandas as pd

    rows = pd.concat(frames, ignore_index=True)
    rows["treated"] = rows.group == "treatment"
    rows["churned"] = np.where(rows.treated, rows.churn_if_contacted, rows.churn_if_not).astype(float)
    rows["retained"] = 1.0 - rows.churned
    cols = [c for c in rows.columns if c.startswith("f__")]
    fit, judged = rows[rows.run != JUDGED], rows[rows.run == JUDGED]
    scores = {}
    for learner in ("t_learner", "transformed_outcome", "x_learner"):
        m = uplift.UpliftModel.fit(
            pa.Table.from_pandas(fit[cols], preserve_index=False), fit.treated, fit.churned, learner=learner
        )
        scores[f"fidelis {m.learner}"] = m.predict(pa.Table.from_pandas(judged[cols], preserve_index=False))
    with tempfile.TemporaryDirectory() as tmp:
        keep = cols + ["treated", "retained"]
        pq.write_table(pa.Table.from_pandas(fit[keep], preserve_index=False), f"{tmp}/fit.parquet")
        pq.write_table(pa.Table.from_pandas(judged[keep], preserve_index=False), f"{tmp}/judged.parquet")
        subprocess.run(
            [a.causalml_python, "-c", CAUSALML, f"{tmp}/fit.parquet", f"{tmp}/judged.parquet", f"{tmp}/out.json"],
            check=True,
        )
        scores.update(json.load(open(f"{tmp}/out.json")))
    p = model.score(tx, as_of=JUDGED).to_pandas().set_index("customer_id")
    scores["churn probability (this run's model)"] = p.loc[judged.customer_id, "churn_probability"].values
    scores["oracle (true effect)"] = judged.true_effect.values
    # The true effect knows each customer's own draw (who a call would persuade); the expected
    # effect knows its state only: the ceiling of any model of the state.
    scores["oracle (expected effect)"] = judged.expected_effect.values
    y, t = judged.retained.values, judged.treated.values
    result = {k: uplift.qini_auc_score(y, v, t) for k, v in scores.items()}
    fitted = f"{len(fit)} rows fitted (runs {RUNS[0]} .. {RUNS[-1]})"
    print(f"\n{fitted}, {len(judged)} judged at {JUDGED} ({int(t.sum())} treated)")
    print(f"{'ranking':<42} {'Qini':>8}")
    for k, v in sorted(result.items(), key=lambda kv: -kv[1]):
        print(f"{k:<42} {v:>8.4f}")
    best = max((v, k) for k, v in result.items() if k.startswith("fidelis"))
    for oracle in ("oracle (true effect)", "oracle (expected effect)"):
        print(f"{best[1]}: {100 * best[0] / result[oracle]:.0f}% of the {oracle}")
    out = ROOT / "reports/bench/uplift_compare.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "customers": a.customers,
                "seed": a.seed,
                "fit_rows": len(fit),
                "judged_rows": len(judged),
                "qini": result,
            },
            indent=2,
        )
    )
    print(f"written to {out}")


if __name__ == "__main__":
    sys.exit(main())
