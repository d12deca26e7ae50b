"""Object storage against a local S3-compatible server (moto in server mode, started here;
fidelis signs its requests with SigV4 and speaks plain HTTP to it, nothing mocked in between):
the transaction log read from ``s3://`` gives the models and scores of the local file; ``[output]
dir`` and ``[paths] reports_dir`` on ``s3://`` get the score partitions, the top-risk segment,
the monitoring history and the reports, each changed directory with its ``_SUCCESS`` marker
naming the ETags of its files, written last; directory-level readers open the partitions; a
run killed half-way through publishing leaves the previous partition whole and the new one
without a marker, and the next run completes it; the secret key is in nothing written."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import fixture_workspace, free_port, run

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto")

SECRET = "s3-Secret-Key-never-written"
D1, D2 = "2024-12-03", "2024-12-10"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("moto")
    port = free_port()
    log = open(d / "moto.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise AssertionError((d / "moto.log").read_text()) from None
            time.sleep(0.2)
    url = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "fidelis-test",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }
    client = boto3.client(
        "s3", endpoint_url=url, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
    )
    yield client, env, url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def keys(client, bucket: str, prefix: str = "") -> dict:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = o["ETag"]
    return out


def model_files(ws: Path) -> dict:
    """Every file of the latest model with what names the run or the source left out: the model
    id, model.json's creation time, timings, the checksum of metrics.json (which holds the id),
    the recorded path of the transactions. What remains is the model."""
    latest = (ws / "models/latest").read_text().strip()
    files = {}
    for p in (ws / "models" / latest).iterdir():
        data = p.read_bytes()
        if p.suffix == ".json":
            text = data.decode().replace(latest, "MODEL_ID")
            if p.name == "model.json":
                v = json.loads(text)
                for k in ("created_at", "timings_s"):
                    v.pop(k)
                v["checksums"].pop("metrics.json")
                v["settings"]["input"]["transactions"].pop("path")
                v["data"].pop("path")
                v["validation"].pop("path")
                text = json.dumps(v, sort_keys=True)
            data = text.encode()
        files[p.name] = data
    return files


def test_the_transaction_log_on_s3_gives_the_models_and_scores_of_the_file(store, tmp_path):
    client, env, _ = store
    client.create_bucket(Bucket="lake")
    local = fixture_workspace(tmp_path / "local", "[model]\niterations = 40\n\n[baselines]\nenabled = false\n\n")
    remote = fixture_workspace(tmp_path / "remote", "[model]\niterations = 40\n\n[baselines]\nenabled = false\n\n")
    client.upload_file(str(local / "data/transactions.parquet"), "lake", "raw/transactions.parquet")
    cfg = (remote / "fidelis.toml").read_text()
    (remote / "fidelis.toml").write_text(
        cfg.replace('path = "data/transactions.parquet"', 'path = "s3://lake/raw/transactions.parquet"')
    )
    out = run(["validate", "--config", "fidelis.toml"], remote, env=env)
    assert "s3://lake/raw/transactions.parquet (parquet)" in out.stdout, out.stdout
    printed = out.stdout + out.stderr
    for ws in (local, remote):
        o = run(["train", "--config", "fidelis.toml", "-q"], ws, env=env)
        printed += o.stdout + o.stderr
    a, b = model_files(local), model_files(remote)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), [k for k in a if a[k] != b.get(k)]
    info = [
        json.loads((ws / "models" / (ws / "models/latest").read_text().strip() / "model.json").read_text())
        for ws in (local, remote)
    ]
    assert info[0]["data"]["xxh3"] == info[1]["data"]["xxh3"] and info[1]["data"]["path"].startswith("s3://lake/")
    shutil.rmtree(remote / "models")
    shutil.copytree(local / "models", remote / "models")
    for ws in (local, remote):
        o = run(["score", "--config", "fidelis.toml", "--as-of", D1, "-q"], ws, env=env)
        printed += o.stdout + o.stderr
    part = f"output/scores/run={D1}/part-0.parquet"
    assert (local / part).read_bytes() == (remote / part).read_bytes()
    # A missing object is a clear input error.
    (remote / "fidelis.toml").write_text(
        cfg.replace('path = "data/transactions.parquet"', 'path = "s3://lake/raw/nope.parquet"')
    )
    o = run(["validate", "--config", "fidelis.toml"], remote, check=False, env=env)
    assert (
        o.returncode == 2
        and "s3://lake/raw/nope.parquet: cannot read the object" in o.stderr
        and "NoSuchKey" in o.stderr
    ), o.stderr
    assert SECRET not in printed + o.stderr


def test_outputs_on_s3_are_published_last_with_markers_and_survive_a_killed_publish(store, tmp_path):
    client, env, url = store
    client.create_bucket(Bucket="out")
    cache = tmp_path / "cache"
    ws = fixture_workspace(tmp_path / "ws")
    cfg = (ws / "fidelis.toml").read_text()
    cfg = cfg.replace('dir = "output"', 'dir = "s3://out/churn"').replace(
        'reports_dir = "reports"', f'reports_dir = "s3://out/reports"\ns3_cache_dir = "{cache}"'
    )
    (ws / "fidelis.toml").write_text(cfg)
    local = fixture_workspace(tmp_path / "local")
    printed = ""
    for w in (ws, local):
        o = run(["weekly", "--config", "fidelis.toml", "--as-of", D1, "-q"], w, env=env)
        printed += o.stdout + o.stderr
    objects = keys(client, "out")
    for k in [f"churn/scores/run={D1}/part-0.parquet", f"churn/top_risk/run={D1}/part-0.parquet"]:
        assert k in objects, sorted(objects)
    assert "churn/monitoring/metrics_history.parquet" in objects, sorted(objects)
    assert any(k.startswith("reports/") and k.endswith(".html") for k in objects), sorted(objects)
    assert not any("/.staging/" in k or k.endswith(".fidelis.lock") for k in objects), sorted(objects)
    marker = json.loads(client.get_object(Bucket="out", Key=f"churn/scores/run={D1}/_SUCCESS")["Body"].read())
    assert marker["files"] == {"part-0.parquet": objects[f"churn/scores/run={D1}/part-0.parquet"]}
    body = client.get_object(Bucket="out", Key=f"churn/scores/run={D1}/part-0.parquet")["Body"].read()
    assert body == (local / f"output/scores/run={D1}/part-0.parquet").read_bytes()

    # Directory-level readers open the dataset on S3 (the marker is skipped).
    from pyarrow import fs

    s3 = fs.S3FileSystem(endpoint_override=url, access_key="x", secret_key="x", region="us-east-1", scheme="http")
    table = pq.read_table("out/churn/scores", filesystem=s3)
    assert table.num_rows == pq.read_table(local / "output/scores").num_rows

    # A run killed after its first object went into place: no marker for what it changed.
    o = run(
        ["weekly", "--config", "fidelis.toml", "--as-of", D2, "-q"],
        ws,
        check=False,
        env={**env, "FIDELIS_FAULT": "s3-publish"},
    )
    assert o.returncode != 0 and "FIDELIS_FAULT=s3-publish" in o.stderr, o.stderr
    objects = keys(client, "out")
    assert f"churn/scores/run={D2}/_SUCCESS" not in objects
    assert json.loads(client.get_object(Bucket="out", Key=f"churn/scores/run={D1}/_SUCCESS")["Body"].read())[
        "files"
    ] == {"part-0.parquet": objects[f"churn/scores/run={D1}/part-0.parquet"]}
    # The next run publishes it whole, and clears what the killed one staged.
    o = run(["weekly", "--config", "fidelis.toml", "--as-of", D2, "-q"], ws, env=env)
    printed += o.stdout + o.stderr
    objects = keys(client, "out")
    marker = json.loads(client.get_object(Bucket="out", Key=f"churn/scores/run={D2}/_SUCCESS")["Body"].read())
    assert marker["files"] == {"part-0.parquet": objects[f"churn/scores/run={D2}/part-0.parquet"]}
    assert not any("/.staging/" in k for k in objects), sorted(objects)
    run(["weekly", "--config", "fidelis.toml", "--as-of", D2, "-q"], local, env=env)
    assert (
        client.get_object(Bucket="out", Key=f"churn/scores/run={D2}/part-0.parquet")["Body"].read()
        == (local / f"output/scores/run={D2}/part-0.parquet").read_bytes()
    )
    # A fresh machine (empty cache) sees the same outputs.
    shutil.rmtree(cache)
    o = run(["monitor", "--config", "fidelis.toml", "--as-of", D2, "-q"], ws, env=env)
    assert SECRET not in printed + o.stdout + o.stderr
    for d in (ws, cache):
        for p in d.rglob("*"):
            if p.is_file():
                assert SECRET.encode() not in p.read_bytes(), p
