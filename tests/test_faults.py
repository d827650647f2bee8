"""Fault injection: an exception, Ctrl-C or kill -9 at any commit never loses committed data, and the same
command afterwards completes to exactly the rows one clean run writes.

Every Delta commit the project makes goes through four deltalake entry points (``write_deltalake``,
``DeltaTable.create``, ``DeltaTable.create_write_transaction``, ``create_table_with_add_actions``). The
injector wraps them and fails the k-th call, either before it runs (the commit never happens) or after
it returns (the commit landed, but the caller sees an error, as after a lost reply from an object store).
Each test injects at every commit of a clean run in turn, re-runs the same operation, and compares every
table with a clean run's, row for row (run ids and timestamps aside).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import polars as pl
import prefhouse.pipelines.core.lake as lake_module
import pytest
from deltalake import DeltaTable
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import run_query
from prefhouse.pipelines.curate import curate
from prefhouse.quality.guard import append_pairs, append_responses, append_scores

from .conftest import REPO, SAMPLES
from .helpers import copy_lake

SOURCES = ["shp", "helpsteer", "ultrafeedback"]
RUN_COLUMNS = {"run_id", "created_at", "_run_id", "_ingested_at"}  # differ between any two runs by design
LOG_TABLES = {S.RUNS, S.RUN_COUNTS, S.VALIDATIONS, S.ITERATIONS}


class Injected(RuntimeError):
    """The fault the injector raises."""


class FaultInjector:
    """Counts the commits made through deltalake's entry points and fails the k-th one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.calls = 0
        self.fail_at: int | None = None
        self.after = False
        self.error: type[BaseException] = Injected
        for owner, name in ((lake_module, "write_deltalake"), (lake_module, "create_table_with_add_actions"), (DeltaTable, "create_write_transaction")):
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name)))
        create = DeltaTable.create
        monkeypatch.setattr(DeltaTable, "create", staticmethod(self._wrap(create)))

    def arm(self, k: int | None, after: bool = False, error: type[BaseException] = Injected) -> None:
        self.calls, self.fail_at, self.after, self.error = 0, k, after, error

    def _wrap(self, fn: Callable) -> Callable:
        def wrapped(*args, **kwargs):
            self.calls += 1
            failing = self.calls == self.fail_at
            if failing and not self.after:
                raise self.error(f"injected before commit {self.calls}")
            result = fn(*args, **kwargs)
            if failing:
                raise self.error(f"injected after commit {self.calls}")
            return result

        return wrapped


def lake_state(lake: Lake) -> dict[str, list[str]]:
    """Every data table's rows (run ids and times aside) as sorted JSON lines; every table, log ones too, must read."""
    state = {}
    for table in lake.tables():
        rows = pl.from_arrow(lake.read(table))  # reads every file the latest version names: a deleted one fails here
        if table in LOG_TABLES:
            continue
        rows = rows.drop([c for c in rows.columns if c in RUN_COLUMNS])
        state[table] = sorted(rows.write_ndjson().splitlines())
    return state


def assert_same(actual: dict[str, list[str]], expected: dict[str, list[str]], where: str) -> None:
    assert sorted(actual) == sorted(expected), where
    for table in expected:
        assert len(actual[table]) == len(expected[table]), f"{where}: {table} has {len(actual[table])} rows, a clean run {len(expected[table])}"
        assert actual[table] == expected[table], f"{where}: {table} differs from a clean run"


# ------------------------------------------------------------------------------------------------ curation
def clean_curation(injector: FaultInjector, tmp_path: Path) -> tuple[int, dict[str, list[str]]]:
    """How many commits a clean curation of SOURCES makes, and the lake it leaves."""
    clean = Lake(str(tmp_path / "clean"))
    injector.arm(None)
    curate(SOURCES, clean, SAMPLES, progress=False)
    return injector.calls, lake_state(clean)


@pytest.mark.heavy
def test_curation_survives_a_fault_at_every_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    injector = FaultInjector(monkeypatch)
    commits, expected = clean_curation(injector, tmp_path)
    assert commits >= 10 and expected[S.PAIRS]
    for k in range(1, commits + 1):
        for after, error in ((False, Injected), (True, KeyboardInterrupt)):
            where = f"fault {'after' if after else 'before'} commit {k} of {commits}"
            lake = Lake(str(tmp_path / f"k{k}-{after}"))
            injector.arm(k, after, error)
            with pytest.raises(error):
                curate(SOURCES, lake, SAMPLES, progress=False)
            injector.arm(None)
            lake_state(lake)  # whatever was committed is readable
            curate(SOURCES, lake, SAMPLES, progress=False)
            assert_same(lake_state(lake), expected, where)
            shutil.rmtree(lake.uri)


def test_a_commit_that_raised_after_landing_keeps_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defect: Staging.commit's cleanup deleted the data files of tables it had already committed."""
    injector = FaultInjector(monkeypatch)
    injector.arm(None)
    curate(["shp"], Lake(str(tmp_path / "clean")), SAMPLES, progress=False)
    pairs_commit = injector.calls - 3  # the run's last commits: pairs, validations, run_counts, runs
    lake = Lake(str(tmp_path / "lake"))
    injector.arm(pairs_commit, after=True)
    with pytest.raises(Injected):
        curate(["shp"], lake, SAMPLES, progress=False)
    injector.arm(None)
    assert lake.read(S.PAIRS).num_rows > 0 and lake.read(S.PAIR_SOURCES).num_rows > 0  # every file the log names is there


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from deltalake import DeltaTable
    import prefhouse.pipelines.core.lake as lake_module
    from prefhouse.pipelines.curate import curate
    from prefhouse.pipelines.core.lake import Lake
    calls = [0]
    def wrap(fn):
        def wrapped(*a, **k):
            calls[0] += 1
            if calls[0] == {k}:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **k)
        return wrapped
    lake_module.write_deltalake = wrap(lake_module.write_deltalake)
    lake_module.create_table_with_add_actions = wrap(lake_module.create_table_with_add_actions)
    DeltaTable.create_write_transaction = wrap(DeltaTable.create_write_transaction)
    DeltaTable.create = staticmethod(wrap(DeltaTable.create))
    curate({sources!r}, Lake({lake!r}), Path({samples!r}), progress=False)
""")


def test_commit_order_pairs_after_what_derives_from_them_and_the_run_log_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The order the guarantees rest on: a stop before the pairs commit leaves no pair whose copies or quarantine
    rows are missing, and a run whose log says succeeded has committed everything."""
    commits: list[str] = []

    def recording(fn: Callable) -> Callable:
        def wrapped(target, *args, **kwargs):
            uri = target.table_uri if isinstance(target, DeltaTable) else str(target)
            commits.append(uri.rstrip("/").rsplit("/", 1)[-1])
            return fn(target, *args, **kwargs)
        return wrapped

    for owner, name in ((lake_module, "write_deltalake"), (lake_module, "create_table_with_add_actions"), (DeltaTable, "create_write_transaction")):
        monkeypatch.setattr(owner, name, recording(getattr(owner, name)))
    lake = Lake(str(tmp_path / "lake"))
    lake.create(S.RUNS, S.RUN_SCHEMA)  # so that only the run's own commits are counted below
    curate(SOURCES, lake, SAMPLES, progress=False)
    last = {table: i for i, table in enumerate(commits)}
    derived = [S.PAIR_SOURCES, S.PROMPTS, S.QUARANTINE, *(S.raw_table(s) for s in SOURCES)]
    assert all(last[t] < last[S.PAIRS] for t in derived), commits
    assert commits[-1] == S.RUNS and commits.count(S.RUNS) == 1, commits


def test_kill_9_during_curation_then_the_same_command_completes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    injector = FaultInjector(monkeypatch)
    commits, expected = clean_curation(injector, tmp_path)
    for k in (commits - 5, commits - 3, commits):  # among the staged tables, at the pairs commit, at the run log
        lake = Lake(str(tmp_path / f"killed-{k}"))
        script = KILLER.format(repo=str(REPO), k=k, sources=SOURCES, lake=lake.uri, samples=str(SAMPLES))
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        curate(SOURCES, lake, SAMPLES, progress=False)
        assert_same(lake_state(lake), expected, f"kill -9 at commit {k} of {commits}")
        # the killed run's staged files are orphans: a full vacuum lists them (retention 0 to see them now)
        from prefhouse.pipelines.maintain import vacuum

        orphans = [f for files in vacuum(lake, [S.PAIRS], retention_hours=0, enforce_retention=False).values() for f in files]
        if k <= commits - 3:  # killed at or before the pairs commit: the staged pairs files were never committed
            assert orphans, f"kill at {k}: the killed run's staged pairs files are not listed"


# ------------------------------------------------------------------------------------------------ guarded appends
def _online_pairs(curated_lake: Lake) -> pl.DataFrame:
    pairs = pl.from_arrow(curated_lake.read(S.PAIRS)).filter(pl.col("source") == "ultrafeedback")
    return pairs.unique("prompt_id", keep="first", maintain_order=True).head(5).with_columns(
        pl.lit(1, pl.Int32).alias("iteration"), pl.lit("online").alias("origin"), pl.lit("online").alias("source"),
        pl.lit("rm-test").alias("reward_model_id"), pl.lit("policy-test").alias("policy_model_id"),
    )


def _responses() -> pl.DataFrame:
    rows = [
        {"response_id": f"{p}-1-{k}", "prompt_id": p, "iteration": 1, "sample_index": k, "prompt": [{"role": "user", "content": f"q {p}"}],
         "response": f"answer {k} to {p}", "n_tokens": 5, "finish_reason": "stop", "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64,
         "seed": 42, "engine": "transformers", "policy_model_id": "policy-0", "run_id": "test", "created_at": None}
        for p in ("p1", "p2") for k in range(2)
    ]
    return pl.DataFrame(rows, schema=pl.from_arrow(S.RESPONSE_SCHEMA.empty_table()).schema)


@pytest.mark.parametrize("kind", ["pairs", "responses_then_scores"])
def test_guarded_appends_survive_a_fault_at_every_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, curated_lake: Lake, kind: str) -> None:
    pairs = _online_pairs(curated_lake)
    pairs = pairs.with_columns(pl.when(pl.int_range(pl.len()) == 0).then(pl.col("rejected")).otherwise(pl.col("chosen")).alias("chosen"))
    responses = _responses()
    scores = responses.select("response_id", "prompt_id", "iteration", (pl.col("sample_index") * 0.5).cast(pl.Float64).alias("reward"),
                               pl.lit("rm-0").alias("reward_model_id"), pl.lit("test").alias("run_id"), pl.col("created_at"), pl.lit("none").alias("truncation"),
                       pl.lit("local").alias("executor"), pl.lit("test").alias("worker"))

    def operation(lake: Lake) -> None:
        if kind == "pairs":  # one pair has identical replies: a row gate quarantines it, so quarantine is staged too
            assert append_pairs(lake, pairs, 1).landed in (0, 4)
        else:
            append_responses(lake, responses, 1, n=2)
            append_scores(lake, scores, 1, n=2)

    injector = FaultInjector(monkeypatch)
    clean = Lake(str(tmp_path / "clean"))
    injector.arm(None)
    operation(clean)
    commits, expected = injector.calls, lake_state(clean)
    for k in range(1, commits + 1):
        for after in (False, True):
            lake = Lake(str(tmp_path / f"k{k}-{after}"))
            injector.arm(k, after)
            with pytest.raises(Injected):
                operation(lake)
            injector.arm(None)
            operation(lake)
            assert_same(lake_state(lake), expected, f"{kind}: fault {'after' if after else 'before'} commit {k} of {commits}")


def test_quarantine_rows_of_a_rerun_are_not_duplicated(lake: Lake, curated_lake: Lake) -> None:
    pairs = _online_pairs(curated_lake)
    bad = pairs.with_columns(pl.col("chosen").alias("rejected")).head(1)  # identical replies: quarantined, never landed
    append_pairs(lake, bad, 1)
    append_pairs(lake, bad, 1)
    quarantine = pl.from_arrow(lake.read(S.QUARANTINE))
    assert quarantine.height == 1 and quarantine["rule"][0].startswith("gx.")


def test_filter_accounting_counts_gate_rejects_as_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The defect: rows whose pairs a quality gate dropped were still counted as paired."""
    import prefhouse.quality.checks as checks

    real = checks.pair_facts

    def with_one_overlong(pairs: pl.DataFrame, *args, **kwargs) -> pl.DataFrame:
        facts = real(pairs, *args, **kwargs)
        first = facts["pair_id"].sort()[0] if facts.height else None
        return facts.with_columns(pl.when(pl.col("pair_id") == first).then(10**9).otherwise(pl.col("chosen_chars")).alias("chosen_chars"))

    monkeypatch.setattr("prefhouse.pipelines.curate.pair_facts", with_one_overlong)
    lake = Lake(str(tmp_path / "lake"))
    curate(["shp"], lake, SAMPLES, progress=False)
    acc = run_query(lake, "filter_accounting").to_pylist()[0]
    assert acc["balanced"] and "gx." in (acc["quarantined_by"] or ""), acc
    counts = pl.from_arrow(run_query(lake, "SELECT * FROM run_counts WHERE level = 'row'"))
    gx = counts.filter(pl.col("rule").str.starts_with("gx."))
    assert gx["n"].sum() >= 1 and set(gx["outcome"]) == {"quarantined"}
    paired = counts.filter(pl.col("outcome") == "paired")["n"].sum()
    in_pairs = run_query(lake, "SELECT count(DISTINCT k) AS n FROM (SELECT unnest(raw_keys) AS k FROM pair_sources)").column("n")[0].as_py()
    assert paired == in_pairs  # every raw row counted as paired has a pair in the lake


# ------------------------------------------------------------------------------------------------ the iteration's stages
ONLINE_STAGES = ("prompts", "generate", "score", "select")


@pytest.mark.heavy
def test_iteration_stages_survive_a_fault_at_every_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: str,
                                                          ready_template: Lake) -> None:
    """prompts → generate → score → select, failed after each of their commits in turn, then run again as the same command would."""
    from prefhouse.pipelines.online.iterations import pending_stages
    from prefhouse.pipelines.run_iteration import Iteration, IterationConfig

    config = IterationConfig.load("cpu", overrides=[
        f"iteration.initial_policy={tiny_model}", "prompts.m=4", "generate.n=2", "generate.max_new_tokens=4",
        "generate.engine=transformers", "generate.chunk_prompts=2",
    ])

    def stages(lake: Lake) -> None:  # what run_iteration does, stopped before the report (the train stage has its own tests)
        todo = [s for s in pending_stages(lake, 1) if s in ONLINE_STAGES]
        Iteration(lake, 1, config, tmp_path / "models", tmp_path / "reports", progress=False).run(todo)

    injector = FaultInjector(monkeypatch)
    clean = copy_lake(ready_template, tmp_path / "clean")
    injector.arm(None)
    stages(clean)
    commits, expected = injector.calls, lake_state(clean)
    assert expected[S.RESPONSES] and expected[S.SCORES] and commits >= 8
    for k in range(1, commits + 1):
        lake = copy_lake(ready_template, tmp_path / f"k{k}")
        injector.arm(k, after=True)
        with pytest.raises(Injected):
            stages(lake)
        injector.arm(None)
        stages(lake)
        assert_same(lake_state(lake), expected, f"iteration: fault after commit {k} of {commits}")
        shutil.rmtree(lake.uri)
