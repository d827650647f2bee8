"""Generation and scoring on Ray (local Ray, 2 CPU workers, tiny models): the same rows as the local executor, a lost
actor costs only its shard, and every row says which executor and worker made it."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import polars as pl
import pytest
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.errors import UsageError
from prefhouse.pipelines.online.executors import ExecutorSettings, run_shards
from prefhouse.pipelines.online.generate import GenerateReplica, SamplingSettings

from .test_run_iteration import small_config

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[dev]')")
pytestmark = pytest.mark.xdist_group("ray")  # one local Ray at a time: these tests run on one worker, in turn


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def shards(n_prompts: int = 6, size: int = 2) -> list[pl.DataFrame]:
    prompts = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(n_prompts)],
                            "prompt": [[{"role": "user", "content": f"Question {i}: why is the sky blue?"}] for i in range(n_prompts)]})
    return [prompts.slice(i, size) for i in range(0, n_prompts, size)]


def replica(tiny_model: str) -> partial:
    return partial(GenerateReplica, "transformers", tiny_model, SamplingSettings(n=2, max_new_tokens=6, seed=3), 1, "policy", "run", {}, False)


def test_ray_gives_the_local_executors_rows_whatever_the_replica(local_ray, tiny_model: str) -> None:
    columns = ["response_id", "prompt_id", "sample_index", "response", "n_tokens", "finish_reason", "temperature", "seed"]
    local = pl.concat(run_shards(ExecutorSettings(), shards(), replica(tiny_model), "generate", False)).sort("response_id")
    for replicas in (1, 2):
        settings = ExecutorSettings(executor="ray", replicas=replicas, num_cpus=1)
        remote = pl.concat(run_shards(settings, shards(), replica(tiny_model), "generate", False)).sort("response_id")
        assert remote.select(columns).equals(local.select(columns))  # ids, counts, texts: the seed and the shard decide, not the worker
        assert set(remote["executor"]) == {"ray"} and all(w.startswith("ray:") for w in remote["worker"])
    assert set(local["executor"]) == {"local"} and local["worker"].n_unique() == 1
    with pytest.raises(UsageError, match=r"generate.replicas = 3 x 1 CPUs per replica = 3 CPUs, but the Ray cluster has 2"):
        list(run_shards(ExecutorSettings(executor="ray", replicas=3), shards(), replica(tiny_model), "generate", False))


class DiesOnce:
    """A replica whose process exits on its first shard (once per test, a marker file says so): a lost Ray worker."""

    def __init__(self, marker: str, inner):
        self.marker, self.inner = marker, inner()

    def __call__(self, shard: pl.DataFrame) -> pl.DataFrame:
        if not os.path.exists(self.marker):
            Path(self.marker).touch()
            os._exit(1)
        return self.inner(shard)


def test_a_lost_worker_costs_only_its_shard(local_ray, tiny_model: str, tmp_path: Path) -> None:
    settings = ExecutorSettings(executor="ray", replicas=2, num_cpus=1)
    rows = pl.concat(run_shards(settings, shards(), partial(DiesOnce, str(tmp_path / "died"), replica(tiny_model)), "generate", False))
    assert (tmp_path / "died").exists()  # a worker did die
    assert rows.height == 12 and rows["response_id"].is_unique().all()  # every shard once: retried, never duplicated


def test_an_iteration_generates_and_scores_on_ray(local_ray, ready_lake, tiny_model: str, tmp_path: Path) -> None:
    from prefhouse.pipelines.online.stages import Iteration

    sets = ["generate.executor=ray", "generate.replicas=2", "score.executor=ray", "score.replicas=2"]
    config = small_config(tiny_model, "transformers", *sets)
    Iteration(ready_lake, 1, config, tmp_path / "models", tmp_path / "reports", progress=False).run(["prompts", "generate", "score", "select"])
    responses = pl.from_arrow(ready_lake.read(S.RESPONSES))
    scores = pl.from_arrow(ready_lake.read(S.SCORES))
    assert responses.group_by("prompt_id").len()["len"].to_list() == [4] * 4 and responses["response_id"].is_unique().all()
    assert sorted(scores["response_id"]) == sorted(responses["response_id"])
    for table in (responses, scores):
        assert set(table["executor"]) == {"ray"} and all(w.startswith("ray:") for w in table["worker"])
    # which worker made what: a SQL question
    from prefhouse.pipelines.core.sql import run_query

    by_worker = run_query(ready_lake, "SELECT worker, count(*) AS n FROM responses GROUP BY worker").to_pylist()
    assert sum(r["n"] for r in by_worker) == 16


def test_a_driver_stopped_mid_stage_resumes_by_skipping_committed_shards(local_ray, ready_lake, tiny_model: str, tmp_path: Path,
                                                                         monkeypatch) -> None:
    """The driver dies after the first shard committed (Ctrl-C here; the local executor's kill -9 test covers SIGKILL):
    the same stage again generates only the shards that have no rows, and each prompt ends with exactly n."""
    import prefhouse.pipelines.online.stages as stages
    from prefhouse.pipelines.online.iterations import latest_event

    config = small_config(tiny_model, "transformers", "generate.executor=ray", "generate.replicas=2")
    real = stages.append_responses

    def stopped_after_one(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "append_responses", stopped_after_one)
    iteration = stages.Iteration(ready_lake, 1, config, tmp_path / "models", tmp_path / "reports", progress=False)
    with pytest.raises(KeyboardInterrupt):
        iteration.run(["prompts", "generate"])
    assert ready_lake.read(S.RESPONSES).num_rows == 2 * 4  # one shard of 2 prompts x n = 4
    monkeypatch.setattr(stages, "append_responses", real)
    stages.Iteration(ready_lake, 1, config, tmp_path / "models", tmp_path / "reports", progress=False).run(["generate"])
    responses = pl.from_arrow(ready_lake.read(S.RESPONSES))
    assert responses.group_by("prompt_id").len()["len"].to_list() == [4] * 4 and responses["response_id"].is_unique().all()
    import json

    assert json.loads(latest_event(ready_lake, 1, "generate", "done")["counts"])["already_generated"] == 2
