"""The Spark job launched the ways users launch it: every command line of the Spark
section of docs/python-spark.md run as written (extracted from the page, so a doc change breaks
this test, not the user), and the job started the way cron and systemd start it (the virtual environment's
interpreter by absolute path, a PATH without the environment, no PYSPARK_PYTHON)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import ROOT, fixture_workspace

SECTION = "(`python/tests/test_spark_launch.py` reads them from this file):"


def readme_commands() -> list:
    """The Spark job commands of docs/python-spark.md that run on one machine (`JOB=...` and the
    `spark-submit --master local[2]` lines), continuations joined, comments and the optional
    `[...]` flags dropped."""
    text = (ROOT / "docs/python-spark.md").read_text()
    assert SECTION in text, "the Spark section of docs/python-spark.md moved: update this test"
    block = text.split(SECTION, 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    commands, current = [], ""
    for raw in block.splitlines():
        if raw.lstrip().startswith("#"):
            continue
        line = raw.split("  #", 1)[0].rstrip()
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        current += line.strip()
        if current:
            commands.append(" ".join(current.split()))
        current = ""
    keep = [c for c in commands if c.startswith("JOB=") or c.startswith("spark-submit --master local")]
    assert any(c.startswith("JOB=") for c in keep) and sum(c.startswith("spark-submit") for c in keep) >= 2, keep
    import re

    return [re.sub(r"\s*\[[^\]]*\]", "", c) for c in keep]


def spark_env(path: str) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYSPARK_PYTHON", "PYSPARK_SUBMIT_ARGS", "PYSPARK_DRIVER_PYTHON")
    }
    env.update(PATH=path, SPARK_LOCAL_IP="127.0.0.1", RAYON_NUM_THREADS="1", POLARS_MAX_THREADS="1", TZ="UTC")
    return env


def workspace(tmp_path: Path) -> Path:
    return fixture_workspace(tmp_path / "ws", "[model]\niterations = 40\n\n[baselines]\nenabled = false\n\n")


def needs_spark():
    pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        if os.environ.get("FIDELIS_REQUIRE_SPARK") == "1":
            raise AssertionError("FIDELIS_REQUIRE_SPARK=1 but no Java runtime")
        pytest.skip("no Java runtime for Spark")


def test_the_readme_spark_commands_run_as_written(tmp_path):
    needs_spark()
    ws = workspace(tmp_path)
    commands = readme_commands()
    venv_bin = str(Path(sys.executable).parent)
    script = "set -euo pipefail\n" + "\n".join(commands) + "\n"
    res = subprocess.run(
        ["bash", "-c", script],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=900,
        env=spark_env(f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"),
    )
    assert res.returncode == 0, f"{commands}\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    parts = list((ws / "out/scores/run=2024-12-31").glob("*.parquet"))
    assert parts and sum(pq.ParquetFile(p).metadata.num_rows for p in parts) > 0
    assert "WindowExec: No Partition Defined" not in res.stderr
    assert "FileNotFoundException" not in res.stderr, "a first run reads no missing path"
    latest = (ws / "models/latest").read_text().strip()
    assert (ws / "models" / latest / "model.json").is_file(), "train wrote a model and moved latest"


def test_the_job_runs_from_the_venv_interpreter_without_the_venv_on_path(tmp_path):
    """How cron and systemd start it: `/opt/fidelis/venv/bin/python -m fidelis.spark ...` with a
    PATH that does not hold the environment (the workers must still get an interpreter with
    fidelis: the job sets spark.pyspark.python to its own when nobody set it)."""
    needs_spark()
    ws = workspace(tmp_path)
    venv_bin = str(Path(sys.executable).parent)
    path = ":".join(p for p in os.environ.get("PATH", "/usr/bin:/bin").split(":") if p != venv_bin and "pyenv" not in p)
    assert shutil.which("python3", path=path) != sys.executable
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "fidelis.spark",
            "score",
            "--model",
            "models",
            "--transactions",
            "data/transactions.parquet",
            "--as-of",
            "2024-12-31",
            "--out",
            "out",
            "--buckets",
            "3",
        ],
        cwd=ws,
        capture_output=True,
        text=True,
        timeout=600,
        env=spark_env(path),
    )
    assert res.returncode == 0, res.stderr[-4000:]
    assert "ModuleNotFoundError" not in res.stderr
    assert list((ws / "out/scores/run=2024-12-31").glob("*.parquet"))


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "fidelis-spark"
    assert script.is_file(), "pyproject's [project.scripts] fidelis-spark"
    res = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "weekly" in res.stdout, res.stderr
