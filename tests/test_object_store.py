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


RACER = """
import sys
from pathlib import Path
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.curate import curate
lake = Lake({uri!r}, {options!r})
run, _ = curate(["helpsteer", "shp"], lake, Path({samples!r}), progress=False)
print("rows_out", run.rows_out)
"""


def test_two_curations_racing_on_s3_store_every_row_once(s3_lake: Lake) -> None:
    """The writer lock is a local file lock; on S3 the appends of id-keyed tables are conditional inserts (a Delta
    application transaction). Two curations of the same files at once (measured before: 76 pair rows, 38 distinct)
    leave every id once."""
    code = RACER.format(uri=s3_lake.uri, options=s3_lake.storage_options, samples=str(SAMPLES))
    racers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(p.wait(600), p.stdout.read(), p.stderr.read()) for p in racers]
    for code_, out, err in outcomes:  # each finished, or gave up saying why and that the same command resumes
        assert code_ == 0 or "run the same command again" in err, err[-2000:]
    assert any(code_ == 0 for code_, _, _ in outcomes)
    counts = run_query(s3_lake, """
        SELECT (SELECT count(*) FROM pairs) AS pairs, (SELECT count(DISTINCT pair_id) FROM pairs) AS pair_ids,
               (SELECT count(*) FROM pair_sources) AS copies, (SELECT count(DISTINCT copy_id) FROM pair_sources) AS copy_ids,
               (SELECT count(*) FROM quarantine) AS quarantined, (SELECT count(DISTINCT quarantine_id) FROM quarantine) AS quarantine_ids,
               (SELECT count(*) FROM prompts) AS prompts, (SELECT count(DISTINCT (prompt_id, source, split)) FROM prompts) AS prompt_keys
    """).to_pylist()[0]
    assert counts["pairs"] == counts["pair_ids"] == 38
    assert (counts["copies"], counts["quarantined"], counts["prompts"]) == (counts["copy_ids"], counts["quarantine_ids"], counts["prompt_keys"])
    raw = s3_lake.read("raw_shp", columns=["_raw_key"]).column("_raw_key").to_pylist()
    assert len(raw) == len(set(raw))


def test_a_conflicting_commit_is_retried_on_the_new_version(s3_lake: Lake, monkeypatch) -> None:
    """Deterministic: the insert reads a version another writer has already moved past; Delta refuses its commit, the
    insert runs again on the new version, and the row the other writer landed is not inserted twice."""
    import pyarrow as pa
    from prefhouse.pipelines.core import schema as S

    s3_lake.create(S.EVAL_PROMPTS, S.EVAL_PROMPT_SCHEMA)
    row = lambda pid: pa.Table.from_pylist([{"prompt_id": pid}], schema=S.EVAL_PROMPT_SCHEMA)  # noqa: E731
    stale = s3_lake.delta(S.EVAL_PROMPTS)
    s3_lake.append(S.EVAL_PROMPTS, row("a"))  # the other writer
    real, calls = Lake.delta, []

    def first_stale(self, table, version=None):
        calls.append(table)
        return stale if len(calls) == 1 else real(self, table, version)

    monkeypatch.setattr(Lake, "delta", first_stale)
    s3_lake.append(S.EVAL_PROMPTS, pa.concat_tables([row("a"), row("b")]))
    monkeypatch.setattr(Lake, "delta", real)
    ids = sorted(s3_lake.read(S.EVAL_PROMPTS).column("prompt_id").to_pylist())
    assert ids == ["a", "b"] and len(calls) >= 3  # the stale attempt, the retry, the version read


@pytest.mark.heavy
def test_an_iteration_with_its_training_jobs_and_report_on_s3(s3_lake: Lake, tiny_model: str, tmp_path) -> None:
    """The whole chain on the object store: curation, the reward model, iteration 1 (generate, score, select, report,
    DPO), and SQL over what it wrote."""
    import json

    from prefhouse.pipelines.run_iteration import run_iteration
    from prefhouse.training.train_rm import train_reward_model

    from .helpers import rm_settings
    from .test_run_iteration import small_config

    curate(["helpsteer", "ultrafeedback", "distilabel_capybara_dpo_7k_binarized"], s3_lake, SAMPLES, progress=False)
    train_reward_model(s3_lake, rm_settings(tiny_model), tmp_path / "models", progress=False)
    config = small_config(tiny_model, "transformers", 'prompts.mixture={"ultrafeedback": 0.5, "helpsteer": 0.5}', 'dpo.mixture=all')
    timings, summary = run_iteration(s3_lake, 1, config, models_dir=tmp_path / "models", reports_dir=tmp_path / "reports", progress=False)
    assert list(timings) == ["prompts", "generate", "score", "select", "report", "train", "evaluate"]
    assert summary["report_status"] == "passed" and (tmp_path / "reports" / "iteration-1" / "report.html").exists()
    rows = run_query(s3_lake, "SELECT (SELECT count(*) FROM responses) AS responses, (SELECT count(*) FROM scores) AS scores, "
                              "(SELECT count(*) FROM pairs WHERE iteration = 1) AS online").to_pylist()[0]
    assert rows["responses"] == rows["scores"] == 16 and rows["online"] == summary["pairs"]
    trained = [m for m in s3_lake.read("models").to_pylist() if m["job_kind"] == "dpo"]
    assert len(trained) == 1 and json.loads(trained[0]["quality"])["quality_status"] == "passed"
