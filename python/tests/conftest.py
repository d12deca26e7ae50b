"""Shared fixtures: the fidelis binary (for "equals the CLI" checks), workspaces with trained
models on the generated demo data and on CDNOW, built once per test session."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fidelis_bin() -> str:
    """The CLI built by `make test` (FIDELIS_BIN), or the one cargo builds by default."""
    env = os.environ.get("FIDELIS_BIN")
    if env:
        return env
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/fidelis/target"))
    return str(Path(target) / "debug" / "fidelis")


def run(args, cwd, check=True, env=None):
    full_env = dict(os.environ)
    full_env.pop("FIDELIS_PG_URL", None)
    full_env.update(env or {})
    out = subprocess.run([fidelis_bin(), *args], cwd=cwd, capture_output=True, text=True, env=full_env)
    if check and out.returncode != 0:
        raise AssertionError(f"fidelis {' '.join(args)} exited {out.returncode}:\n{out.stdout}{out.stderr}")
    return out


def free_port() -> int:
    """A TCP port free on loopback now (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# What a scheduler example's `outcome` makes of each exit code of `fidelis weekly` (its result,
# or the name of the exception it raises), run in a subprocess: argv[1] is the example's folder.
OUTCOMES = r"""
import sys
sys.path.insert(0, sys.argv[1])
import fidelis_weekly as m
for code in (0, 3, 6, 7, 4, 2, 5):
    try:
        print(code, m.outcome(code, ""))
    except Exception as e:
        print(code, type(e).__name__)
"""


def example_outcomes(example: Path, env: dict) -> dict:
    """`{exit code: outcome}` of the scheduler example `example` (examples/*/fidelis_weekly.py)."""
    import sys

    out = subprocess.run(
        [sys.executable, "-c", OUTCOMES, str(example.parent)], env=env, capture_output=True, text=True, check=True
    )
    return dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())


def demo_workspace(demo: Path, ws: Path) -> Path:
    """A working directory at ``ws`` with the demo's data and models (linked) and its config."""
    ws.mkdir()
    for name in ("data", "models"):
        (ws / name).symlink_to(demo / name)
    (ws / "fidelis.toml").write_text((demo / "fidelis.toml").read_text())
    return ws


def fixture_workspace(ws: Path, extra: str = "") -> Path:
    """A workspace at ``ws`` with the committed model fixture's model and data and a
    ``fidelis.toml`` writing to ``output`` (``extra``: more sections, before the output)."""
    fixture = ROOT / "tests/fixtures/model_v1"
    shutil.copytree(fixture / "models", ws / "models")
    shutil.copytree(fixture / "data", ws / "data")
    (ws / "fidelis.toml").write_text(
        f'[input.transactions]\npath = "data/transactions.parquet"\n\n{extra}[output]\ndir = "output"\nsql = []\n\n'
        '[paths]\nmodels_dir = "models"\nreports_dir = "reports"\n'
    )
    return ws


def datasets() -> Path:
    for candidate in [os.environ.get("FIDELIS_DATASETS"), ROOT / "../shared/datasets", ROOT / "data/external"]:
        if candidate and (Path(candidate) / "cdnow/CDNOW_master.txt").is_file():
            return Path(candidate).resolve()
    pytest.skip("real datasets not found (make datasets)")


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """20,000 generated customers and a model trained on them (`fidelis.toml` inside)."""
    ws = tmp_path_factory.mktemp("demo")
    run(["generate", "--customers", "20000", "--seed", "7", "--out", "data", "-q"], ws)
    (ws / "fidelis.toml").write_text(
        '[input.transactions]\npath = "data/transactions.parquet"\n\n[model]\niterations = 120\n\n'
        '[baselines]\nenabled = false\n\n[output]\ndir = "output"\nsql = []\n\n'
        '[paths]\nmodels_dir = "models"\nreports_dir = "reports"\n'
    )
    run(["train", "--config", "fidelis.toml", "-q"], ws)
    return ws


@pytest.fixture(scope="session")
def cdnow(tmp_path_factory) -> Path:
    """CDNOW and a model trained on it with configs/cdnow.toml (baselines off)."""
    src = datasets() / "cdnow/CDNOW_master.txt"
    ws = tmp_path_factory.mktemp("cdnow")
    shutil.copy(src, ws / "CDNOW_master.txt")
    text = (ROOT / "configs/cdnow.toml").read_text()
    text = text.replace('"${FIDELIS_DATASETS:-../shared/datasets}/cdnow/CDNOW_master.txt"', '"CDNOW_master.txt"')
    text = text.replace('models_dir = "models/cdnow"', 'models_dir = "models"').replace(
        'reports_dir = "reports/cdnow"', 'reports_dir = "reports"'
    )
    text += '\n[baselines]\nenabled = false\n\n[output]\ndir = "output"\nsql = []\n'
    (ws / "fidelis.toml").write_text(text)
    run(["train", "--config", "fidelis.toml", "-q"], ws)
    return ws
