"""The Spark job at 10,000,000 customers in local mode, with the driver's memory bounded.

    make bench-spark-10m        (not part of make bench: about a quarter of an hour on 2 cores)

The base is the bench's 1,000,000 generated customers (`data/bench/customers_1000000`, made
by `make bench`) ten times over, each copy with its own customer ids (`<id>~<copy>`), written
once as ten Parquet files under `data/bench/customers_10000000x/` (the generator holds a base
in memory; 300 million rows would not fit this machine). `python -m fidelis.spark score`
then runs in `local[2]` with `--driver-memory 2g` (FIDELIS_BENCH_DRIVER_MEMORY) on the model
of the pipeline bench, and the bench reports:

- the wall time, and the peak resident memory of the JVM (driver and executor: one process in
  local mode) and of the Python workers, sampled every 50 ms;
- the share of the transaction rows in the largest task of the per-customer stage (the
  partitioning the job uses: the customer id as a string, hash-partitioned into `--buckets`);
- how many times the log says a window moved everything to a single partition (must be 0).

Writes the figures under `spark_10m` in reports/bench/latest.json.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
from spark import AS_OF, descendants, processes, record, spark_env  # noqa: E402

COPIES = 10
BUCKETS = 256
SINGLE = "No Partition Defined for Window operation"


def replicate(src: Path, dst: Path) -> None:
    """``COPIES`` copies of ``src`` with distinct customer ids, one file each (streamed by row
    group; written to a temporary directory and renamed when complete)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    source = pq.ParquetFile(src)
    for copy in range(COPIES):
        with pq.ParquetWriter(tmp / f"part-{copy}.parquet", source.schema_arrow) as out:
            for i in range(source.num_row_groups):
                t = source.read_row_group(i)
                ids = pc.binary_join_element_wise(t["customer_id"].cast(pa.string()), pa.scalar(str(copy)), "~")
                out.write_table(t.set_column(t.schema.get_field_index("customer_id"), "customer_id", ids))
    tmp.rename(dst)


def rss_by_kind(pid: int) -> dict:
    """Resident bytes of the process tree under ``pid`` (the launcher itself left out): the
    JVM (``java``) and the rest (the Python workers)."""
    children, info = processes()
    out = {"jvm": 0, "python": 0}
    for p in descendants(pid, children):
        comm, rss = info.get(p, ("", 0))
        out["jvm" if comm == "java" else "python"] += rss
    return out


def largest_task_share(tx: Path, buckets: int) -> float:
    """The largest partition's share of the rows under the job's partitioning of the
    per-customer stage."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from fidelis.spark._core import _key_of

    spark = SparkSession.builder.getOrCreate()
    df = spark.read.parquet(str(tx)).repartition(buckets, _key_of("customer_id"))
    counts = [r[1] for r in df.groupBy(F.spark_partition_id()).count().collect()]
    spark.stop()
    return max(counts) / sum(counts)


def main() -> int:
    bench = ROOT / "data/bench"
    src = bench / "customers_1000000/transactions.parquet"
    models = Path(os.environ.get("FIDELIS_BENCH_MODELS", bench / "pipeline_100000/models"))
    for needed in [src, models / "latest"]:
        if not needed.exists():
            sys.exit(f"{needed} is missing (make bench makes it)")
    tx = bench / f"customers_{COPIES * 1_000_000}x"
    if not tx.is_dir():
        replicate(src, tx)
    out = bench / "spark_10000000"
    shutil.rmtree(out, ignore_errors=True)
    memory = os.environ.get("FIDELIS_BENCH_DRIVER_MEMORY", "2g")
    env = spark_env(2)
    env["PYSPARK_SUBMIT_ARGS"] = env["PYSPARK_SUBMIT_ARGS"].replace("--driver-memory 4g", f"--driver-memory {memory}")
    cmd = [sys.executable, "-m", "fidelis.spark", "score", "--model", str(models), "--transactions", str(tx)]
    cmd += ["--as-of", AS_OF, "--out", str(out), "--buckets", str(BUCKETS)]
    start = time.perf_counter()
    log = open(bench / "spark_10000000.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    peak = {"jvm": 0, "python": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for k, v in rss_by_kind(proc.pid).items():
                peak[k] = max(peak[k], v)
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    log.close()
    text = (bench / "spark_10000000.log").read_text()
    if code != 0:
        sys.exit(f"the Spark job exited {code}; its log: {bench / 'spark_10000000.log'}\n{text[-3000:]}")
    import pyarrow.parquet as pq

    scored = sum(pq.ParquetFile(f).metadata.num_rows for f in (out / "scores").rglob("*.parquet"))
    os.environ["PYSPARK_SUBMIT_ARGS"] = env["PYSPARK_SUBMIT_ARGS"]
    share = largest_task_share(tx, BUCKETS)
    results = {
        "customers": COPIES * 1_000_000,
        "scored": scored,
        "buckets": BUCKETS,
        "driver_memory": memory,
        "wall_s": round(wall, 1),
        "peak_jvm_mb": round(peak["jvm"] / 1e6),
        "peak_python_workers_mb": round(peak["python"] / 1e6),
        "largest_task_share": round(share, 5),
        "even_share": round(1 / BUCKETS, 5),
        "single_partition_warnings": text.count(SINGLE),
    }
    print(f"\nSpark local[2], {COPIES * 1_000_000:,} customers ({scored:,} scored at {AS_OF}), driver memory {memory}")
    for k, v in results.items():
        print(f"  {k:28}{v}")
    record("spark_10m", results)
    return 0 if results["single_partition_warnings"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
