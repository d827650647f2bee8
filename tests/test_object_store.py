"""The lake on an object store: an S3 endpoint served by moto on loopback (no network)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import run_query
from prefhouse.pipelines.curate import curate

from .conftest import SAMPLES


@pytest.fixture
def s3_lake():
    pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -e '.[dev]')")
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # its own process: delta-rs calls hold the GIL, so a server thread in this process would never answer
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("the moto S3 server did not start within 30 s")
            time.sleep(0.2)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                     region_name="us-east-1").create_bucket(Bucket="lake")
        yield Lake("s3://lake/prefhouse", {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
        })
    finally:
        server.terminate()
        server.wait(10)


def test_curate_and_query_on_s3(s3_lake: Lake) -> None:
    run, _ = curate(["helpsteer", "shp"], s3_lake, SAMPLES, progress=False)
    assert run.rows_out == 38
    by_source = run_query(s3_lake, "SELECT source, count(*) AS n FROM pairs GROUP BY ALL ORDER BY ALL").to_pylist()
    assert by_source == [{"source": "helpsteer", "n": 25}, {"source": "shp", "n": 13}]
    versions = s3_lake.versions(["pairs", "raw_shp"])
    again, _ = curate(["helpsteer", "shp"], s3_lake, SAMPLES, progress=False)
    assert again.rows_out == 0 and s3_lake.versions(["pairs", "raw_shp"]) == versions  # idempotent there too
    assert run_query(s3_lake, "SELECT count(*) AS n FROM pairs", as_of="0").column("n")[0].as_py() == 0
