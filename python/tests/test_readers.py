"""The reader globs of docs/weekly.md while runs replace partitions, and after runs killed at every
rename (reliability round three, fault 8): a run's work in progress must never be seen by
polars or DuckDB reading `output/scores/*/scores.parquet` with hive partitioning, so every
read returns the whole partition, whatever the writers are doing."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import fidelis_bin, run

pl = pytest.importorskip("polars")
duckdb = pytest.importorskip("duckdb")

AS_OF = "2024-12-31"
# The globs as docs/weekly.md gives them.
GLOB = "output/scores/*/*.parquet"


def read_polars(ws: Path) -> int:
    return pl.scan_parquet(str(ws / GLOB), hive_partitioning=True).select(pl.len()).collect().item()


def read_duckdb(ws: Path) -> int:
    con = duckdb.connect()
    try:
        path = str(ws / GLOB).replace("'", "''")
        return con.execute(f"SELECT count(*) FROM read_parquet('{path}', hive_partitioning = true)").fetchone()[0]
    finally:
        con.close()


def workspace(demo: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    for sub in ["data", "models"]:
        shutil.copytree(demo / sub, ws / sub)
    shutil.copy(demo / "fidelis.toml", ws / "fidelis.toml")
    run(["score", "--config", "fidelis.toml", "--as-of", AS_OF, "-q"], ws)
    return ws


def test_readers_never_fail_while_runs_replace_a_partition(demo, tmp_path):
    ws = workspace(demo, tmp_path)
    expected = read_polars(ws)
    assert expected > 0 and read_duckdb(ws) == expected
    done = threading.Event()
    writer_errors: list[str] = []

    def writer():
        try:
            for _ in range(12):
                out = run(["score", "--config", "fidelis.toml", "--as-of", AS_OF, "-q"], ws, check=False)
                if out.returncode != 0:
                    writer_errors.append(out.stderr)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    reads, failures = 0, []
    while not done.is_set() or reads < 20:
        for name, reader in [("polars", read_polars), ("duckdb", read_duckdb)]:
            try:
                n = reader(ws)
                if n != expected:
                    failures.append(f"{name}: {n} rows, expected {expected}")
            except Exception as e:  # noqa: BLE001 - any failed read is what this test counts
                failures.append(f"{name}: {type(e).__name__}: {e}")
            reads += 1
    t.join()
    assert not writer_errors, writer_errors
    assert reads >= 20
    assert not failures, f"{len(failures)} of {reads} reads failed: {failures[:5]}"


def strace_available() -> bool:
    ok = shutil.which("strace") is not None
    if not ok and os.environ.get("FIDELIS_REQUIRE_FAULTS") == "1":
        raise AssertionError("FIDELIS_REQUIRE_FAULTS=1 but strace is not installed")
    return ok


@pytest.mark.parametrize("syscall", ["rename", "renameat2"])
def test_readers_never_fail_after_a_run_killed_at_any_rename(demo, tmp_path, syscall):
    if not strace_available():
        pytest.skip("strace is not installed (Debian package strace; .ci/run installs it)")
    ws = workspace(demo, tmp_path)
    expected = read_polars(ws)
    killed = 0
    for n in range(1, 12):
        out = subprocess.run(
            [
                "strace",
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                f"trace={syscall}",
                "-e",
                f"inject={syscall}:signal=KILL:when={n}",
                fidelis_bin(),
                "score",
                "--config",
                "fidelis.toml",
                "--as-of",
                AS_OF,
                "-q",
            ],
            cwd=ws,
            capture_output=True,
            text=True,
        )
        if out.returncode == 0:
            break  # fewer than n such calls: every one has been killed at
        killed += 1
        # Right after the kill, before any other run puts things right, readers see a whole
        # partition.
        assert read_polars(ws) == expected, f"polars after a kill at {syscall} #{n}"
        assert read_duckdb(ws) == expected, f"duckdb after a kill at {syscall} #{n}"
    assert killed >= 1 or syscall == "rename", f"no {syscall} was killed at"
    # The next run cleans up and leaves nothing of the killed runs in the dataset's tree.
    run(["score", "--config", "fidelis.toml", "--as-of", AS_OF, "-q"], ws)
    hidden = [p for p in (ws / "output/scores").rglob("*") if p.name.startswith(".")]
    assert hidden == []
    assert read_polars(ws) == expected and read_duckdb(ws) == expected
