"""The Airflow example (examples/airflow/fidelis_weekly.py) parses and runs: `dag.test()` runs
`fidelis weekly` on the demo model and the run succeeds with the scores written; the exit codes
map to the task states its docstring lists. Airflow runs in a subprocess (its own AIRFLOW_HOME
and SQLite database): importing it configures logging process-wide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, demo_workspace, example_outcomes, fidelis_bin

DAG = ROOT / "examples/airflow/fidelis_weekly.py"


def airflow_env(tmp_path: Path) -> dict[str, str]:
    pytest.importorskip("airflow")
    env = dict(os.environ)
    env.pop("FIDELIS_PG_URL", None)
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(DAG.parent),
    )
    return env


def test_the_exit_codes_map_to_task_states(tmp_path: Path) -> None:
    env = airflow_env(tmp_path)
    got = example_outcomes(DAG, env)
    assert got == {
        "0": "ok",
        "3": "alert",
        "6": "partial",
        "7": "partial",
        "4": "AirflowException",  # retried
        "2": "AirflowFailException",  # not retried
        "5": "AirflowFailException",
    }


def test_the_dag_runs_the_weekly_batch(demo: Path, tmp_path: Path) -> None:
    env = airflow_env(tmp_path)
    ws = demo_workspace(demo, tmp_path / "ws")
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], env=env, capture_output=True, text=True, check=True)
    env.update(FIDELIS_BIN=str(fidelis_bin()), FIDELIS_DIR=str(ws))
    out = subprocess.run([sys.executable, str(DAG)], env=env, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "DagRun Finished: dag_id=fidelis_weekly" in log and "state=success" in log, log[-4000:]
    assert any((ws / "output/scores").iterdir()), "the weekly batch wrote its scores"
