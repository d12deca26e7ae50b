"""The Dagster example (examples/dagster/fidelis_weekly.py) loads and runs: its job runs
`fidelis weekly` on the demo model in process and succeeds with the scores written; the exit
codes map to the op results its docstring lists; a locked output (exit 4) asks for a retry and
a bad configuration fails the run. Dagster runs in a subprocess (its own DAGSTER_HOME)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, demo_workspace, example_outcomes, fidelis_bin

JOB = ROOT / "examples/dagster/fidelis_weekly.py"


def dagster_env(tmp_path: Path) -> dict[str, str]:
    pytest.importorskip("dagster")
    env = dict(os.environ)
    env.pop("FIDELIS_PG_URL", None)
    (tmp_path / "dagster").mkdir(exist_ok=True)
    env.update(DAGSTER_HOME=str(tmp_path / "dagster"))
    return env


def test_the_exit_codes_map_to_op_results(tmp_path: Path) -> None:
    env = dagster_env(tmp_path)
    got = example_outcomes(JOB, env)
    assert got == {
        "0": "ok",
        "3": "alert",
        "6": "partial",
        "7": "partial",
        "4": "RetryRequested",
        "2": "Failure",
        "5": "Failure",
    }


def test_the_job_runs_the_weekly_batch(demo: Path, tmp_path: Path) -> None:
    env = dagster_env(tmp_path)
    ws = demo_workspace(demo, tmp_path / "ws")
    env.update(FIDELIS_BIN=str(fidelis_bin()), FIDELIS_DIR=str(ws))
    out = subprocess.run([sys.executable, str(JOB)], env=env, capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "RUN_SUCCESS" in log, log[-4000:]
    assert any((ws / "output/scores").iterdir()), "the weekly batch wrote its scores"
    # A configuration that does not parse: exit 2, the run fails (no retry).
    (ws / "fidelis.toml").write_text("[input.transactions\n")
    out = subprocess.run([sys.executable, str(JOB)], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "fidelis weekly failed (exit 2)" in out.stdout + out.stderr
