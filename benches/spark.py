"""The weekly scoring on Spark against the CLI, on the same machine, in one run.

    make bench-spark        (make bench runs it last, when .venv has PySpark and Java is there)

The bench's 1,000,000 generated customers (`data/bench/customers_1000000`, made by `make
bench`; FIDELIS_BENCH_SPARK_SIZE picks another cached size) and the model the pipeline bench
trained (`data/bench/pipeline_100000/models`, or FIDELIS_BENCH_MODELS) are scored at the bench
date by:

- `fidelis score` (release build), writing the scores and top-risk Parquet partitions;
- `python -m fidelis.spark score` in Spark `local[2]` and `local[1]` (the job a cluster runs:
  buckets through the Rust core on executors, ranks and quintiles by Spark, the same two
  Parquet outputs), with the release build of the Python package.

Each is timed as a whole process (JVM start-up included for Spark) and its peak memory is the
largest sum of resident memory over its process tree (the CLI alone; the JVM and every Python
worker for Spark), sampled every 50 ms. Prints a table and writes the figures under `spark` in
reports/bench/latest.json (the rest of the file is kept).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2024-12-31"


def processes() -> tuple:
    """Every process: ``(children by parent pid, (command name, resident bytes) by pid)``."""
    children: dict = {}
    info: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        info[int(entry)] = (comm, pages * os.sysconf("SC_PAGE_SIZE"))
    return children, info


def descendants(pid: int, children: dict) -> list:
    """The pids under ``pid`` (not itself)."""
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants."""
    children, info = processes()
    return sum(info.get(p, ("", 0))[1] for p in [pid, *descendants(pid, children)])


def measure(cmd: list, env: dict, cwd: Path) -> dict:
    """Wall time and peak tree RSS of one command (which must succeed)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss(proc.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-2000:]}\n{err[-4000:]}")
    return {"wall_s": round(wall, 3), "peak_rss_mb": round(peak[0] / 1e6, 1), "stdout": out}


def spark_env(cores: int) -> dict:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, RAYON_NUM_THREADS="1", POLARS_MAX_THREADS="1")
    env["PYSPARK_SUBMIT_ARGS"] = (
        f"--master local[{cores}] --driver-memory 4g --conf spark.ui.enabled=false "
        "--conf spark.driver.bindAddress=127.0.0.1 --conf spark.driver.host=127.0.0.1 "
        f"--conf spark.sql.shuffle.partitions={4 * cores} --conf spark.sql.session.timeZone=UTC pyspark-shell"
    )
    return env


def scored_count(out_dir: Path) -> int:
    """Rows of the scores dataset under ``out_dir/scores`` (from the footers; the top-risk
    segment is a dataset of its own, ``out_dir/top_risk``)."""
    import pyarrow.parquet as pq

    files = list((out_dir / "scores").rglob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def main() -> int:
    size = int(os.environ.get("FIDELIS_BENCH_SPARK_SIZE", "1000000"))
    bench = ROOT / "data/bench"
    tx = bench / f"customers_{size}/transactions.parquet"
    models = Path(os.environ.get("FIDELIS_BENCH_MODELS", bench / "pipeline_100000/models"))
    fidelis = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/fidelis"
    for needed, how in [(tx, "make bench"), (models / "latest", "make bench"), (fidelis, "cargo build --release")]:
        if not needed.exists():
            sys.exit(f"{needed} is missing ({how} makes it)")
    work = bench / f"spark_{size}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "fidelis.toml").write_text(
        f'[input.transactions]\npath = "{tx}"\n\n[output]\ndir = "{work / "cli"}"\nsql = []\n\n'
        f'[paths]\nmodels_dir = "{models}"\nreports_dir = "{work / "reports"}"\n'
    )
    env = dict(os.environ, FIDELIS_PG_URL="")
    cli = measure([str(fidelis), "score", "--config", str(work / "fidelis.toml"), "--as-of", AS_OF, "-q"], env, ROOT)
    n = scored_count(work / "cli")
    print(f"cli: {cli['wall_s']:.2f} s, {cli['peak_rss_mb']:.0f} MB, {n} scored", file=sys.stderr)
    results = {"customers": size, "scored": n, "as_of": AS_OF, "cli": cli}
    events = work / "eventlog"
    for cores in [2, 1]:
        out = work / f"local_{cores}"
        cmd = [sys.executable, "-m", "fidelis.spark", "score", "--model", str(models), "--transactions", str(tx)]
        cmd += ["--as-of", AS_OF, "--out", str(out), "--buckets", "64"]
        env = spark_env(cores)
        if cores == 2:
            # Spark's event log (its own listener, written as the jobs end: no measurable cost):
            # where the run's time goes, per job and stage.
            events.mkdir()
            env["PYSPARK_SUBMIT_ARGS"] = env["PYSPARK_SUBMIT_ARGS"].replace(
                " pyspark-shell",
                f" --conf spark.eventLog.enabled=true --conf spark.eventLog.dir=file://{events}"
                " --conf spark.eventLog.compress=false pyspark-shell",
            )
        r = measure(cmd, env, ROOT)
        got = scored_count(out)
        if got != n:
            sys.exit(f"Spark local[{cores}] scored {got} customers, the CLI {n}")
        print(f"spark local[{cores}]: {r['wall_s']:.2f} s, {r['peak_rss_mb']:.0f} MB", file=sys.stderr)
        results[f"spark_local_{cores}"] = r
    # The floor of this design: what Spark costs before any fidelis work - a session that
    # starts and stops, and a session that sends every transaction row to a Python worker
    # (no shuffle, no work there).
    for probe in ["session", "to_python"]:
        r = measure([sys.executable, str(Path(__file__).resolve()), "--probe", probe, str(tx)], spark_env(2), ROOT)
        print(f"spark local[2] {probe}: {r['wall_s']:.2f} s", file=sys.stderr)
        results[f"spark_local_2_{probe}"] = r
    logs = sorted(events.iterdir())
    results["spark_local_2_breakdown"] = breakdown(logs[0], results["spark_local_2"]["wall_s"]) if logs else None
    keys = ["cli", "spark_local_2", "spark_local_1", "spark_local_2_session", "spark_local_2_to_python"]
    for key in keys:
        results[key].pop("stdout", None)
    s1, s2 = results["spark_local_1"], results["spark_local_2"]
    results["wall_ratio_spark2_vs_cli"] = round(s2["wall_s"] / cli["wall_s"], 2)
    results["rss_ratio_spark2_vs_cli"] = round(s2["peak_rss_mb"] / cli["peak_rss_mb"], 2)
    results["speedup_1_to_2_cores"] = round(s1["wall_s"] / s2["wall_s"], 2)

    print(f"\nweekly scoring of {size:,} customers ({n:,} eligible at {AS_OF}), one run")
    print(f"{'':24}{'wall s':>10}{'peak MB':>10}")
    labels = ["fidelis score (CLI)", "Spark local[2]", "Spark local[1]", "  [2] session only", "  [2] rows to Python"]
    for label, key in zip(labels, keys, strict=True):
        print(f"{label:24}{results[key]['wall_s']:>10.2f}{results[key]['peak_rss_mb']:>10.0f}")
    results["floor_ratio_vs_cli"] = round(results["spark_local_2_to_python"]["wall_s"] / cli["wall_s"], 2)
    print(
        f"Spark local[2] / CLI: {results['wall_ratio_spark2_vs_cli']}x wall, "
        f"{results['rss_ratio_spark2_vs_cli']}x memory; 1 -> 2 cores: {results['speedup_1_to_2_cores']}x faster"
    )
    print(f"floor (session + every row to Python, no work) / CLI: {results['floor_ratio_vs_cli']}x")
    if results["spark_local_2_breakdown"]:
        print_breakdown(results["spark_local_2_breakdown"])
    print(f"written to {record('spark', results)} (spark)")
    return 0


def breakdown(log: Path, wall_s: float) -> dict:
    """Where a run's time went, from Spark's event log: the process's wall time split into
    the start-up before the session, each job (by the line of the job's Python code that ran
    it) with its stages (wall, tasks' summed run time, rows and bytes through the shuffle, the
    Python workers' metrics), the driver's time between jobs, and the stop."""
    app: dict = {}
    jobs: dict = {}
    stages: dict = {}
    tasks: dict = {}
    # Spark 4 writes a directory of rolled files (`events_<n>_<app>`); older ones one file.
    files = sorted(log.glob("events_*"), key=lambda f: int(f.name.split("_")[1])) if log.is_dir() else [log]
    for line in (line for part in files for line in part.read_text().splitlines()):
        e = json.loads(line)
        kind = e["Event"]
        if kind == "SparkListenerApplicationStart":
            app["start"] = e["Timestamp"]
        elif kind == "SparkListenerApplicationEnd":
            app["end"] = e["Timestamp"]
        elif kind == "SparkListenerJobStart":
            site = (e.get("Properties") or {}).get("callSite.short", "?")
            jobs[e["Job ID"]] = {"site": site, "start": e["Submission Time"], "stages": e["Stage IDs"]}
        elif kind == "SparkListenerJobEnd":
            jobs[e["Job ID"]]["end"] = e["Completion Time"]
        elif kind == "SparkListenerStageCompleted":
            info = e["Stage Info"]
            acc = {a["Name"]: a.get("Value") for a in info.get("Accumulables", [])}
            stages[info["Stage ID"]] = {
                "name": info["Stage Name"],
                "tasks": info["Number of Tasks"],
                "wall_ms": info["Completion Time"] - info["Submission Time"],
                "python": {k: v for k, v in acc.items() if "Python" in k or "python" in k},
            }
        elif kind == "SparkListenerTaskEnd" and e.get("Task Metrics"):
            m = e["Task Metrics"]
            t = tasks.setdefault(e["Stage ID"], {"run_ms": 0, "shuffle_write_mb": 0.0, "shuffle_read_mb": 0.0})
            t["run_ms"] += m.get("Executor Run Time", 0)
            t["shuffle_write_mb"] += m.get("Shuffle Write Metrics", {}).get("Shuffle Bytes Written", 0) / 1e6
            r = m.get("Shuffle Read Metrics", {})
            t["shuffle_read_mb"] += (r.get("Remote Bytes Read", 0) + r.get("Local Bytes Read", 0)) / 1e6
    out_jobs = []
    busy = 0.0
    for jid in sorted(jobs):
        j = jobs[jid]
        secs = (j.get("end", j["start"]) - j["start"]) / 1e3
        busy += secs
        job_stages = []
        for sid in j["stages"]:
            if sid in stages:
                st = dict(stages[sid], **tasks.get(sid, {}))
                st["wall_s"] = st.pop("wall_ms") / 1e3
                job_stages.append(st)
        out_jobs.append({"job": jid, "site": j["site"], "wall_s": round(secs, 2), "stages": job_stages})
    session = (app.get("end", 0) - app.get("start", 0)) / 1e3
    return {
        "wall_s": wall_s,
        "session_s": round(session, 2),
        "jobs_s": round(busy, 2),
        "driver_between_jobs_s": round(session - busy, 2),
        "outside_session_s": round(wall_s - session, 2),
        "jobs": out_jobs,
    }


def print_breakdown(b: dict) -> None:
    print(f"\nSpark local[2], where the {b['wall_s']:.1f} s went (event log):")
    print(f"  JVM start-up, imports and stop (outside the session): {b['outside_session_s']:.1f} s")
    print(f"  Spark jobs: {b['jobs_s']:.1f} s; driver work between jobs: {b['driver_between_jobs_s']:.1f} s")
    print("  stages over 1 s (wall, tasks' run time summed, shuffle written / read):")
    for j in b["jobs"]:
        for st in j["stages"]:
            if st["wall_s"] >= 1.0:
                print(
                    f"    job {j['job']:>2} {st['wall_s']:7.2f} s  run {st.get('run_ms', 0) / 1e3:7.2f} s  "
                    f"{st.get('shuffle_write_mb', 0):7.1f} / {st.get('shuffle_read_mb', 0):7.1f} MB  "
                    f"{st['tasks']:>4} tasks  {st['name'][:60]}"
                )


def record(section: str, results: dict) -> Path:
    """Write ``results`` under ``section`` of reports/bench/latest.json (the rest of the file
    is kept; written to a temporary file and renamed)."""
    latest = ROOT / "reports/bench/latest.json"
    latest.parent.mkdir(parents=True, exist_ok=True)
    report = json.loads(latest.read_text()) if latest.is_file() else {}
    report[section] = results
    tmp = latest.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(latest)
    return latest


def probe(kind: str, tx: str) -> int:
    """``--probe session``: start and stop a session; ``--probe to_python``: every row of
    ``tx`` through ``mapInArrow`` to a Python worker that only counts them."""
    import pyarrow as pa
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    if kind == "to_python":

        def count(batches):
            yield pa.RecordBatch.from_pydict({"n": [sum(b.num_rows for b in batches)]})

        rows = sum(r.n for r in spark.read.parquet(tx).mapInArrow(count, "n long").collect())
        print(rows)
    spark.stop()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--probe":
        sys.exit(probe(sys.argv[2], sys.argv[3]))
    sys.exit(main())
