"""Curation behaviour users rely on: idempotence, failing fast, no partial data, hub loading, the CLI."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import prefhouse.pipelines.curate as curate_module
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import run_query
from prefhouse.pipelines.curate import curate, main
from prefhouse.pipelines.sources import reading
from prefhouse.pipelines.sources.base import append_turn
from prefhouse.pipelines.sources.reading import (
    InputReport,
    MissingColumnError,
    RawBatch,
    read_ahead,
    read_hub,
    regroup,
)
from prefhouse.pipelines.sources.registry import ADAPTERS

from .conftest import REPO, SAMPLES

DATA_TABLES = [S.PAIRS, S.PAIR_SOURCES, S.QUARANTINE, S.PROMPTS]


def data_versions(lake: Lake) -> dict:
    return {t: v for t, v in lake.versions().items() if t not in (S.RUNS, S.RUN_COUNTS, S.VALIDATIONS)}


def test_rerun_adds_nothing(lake: Lake) -> None:
    curate(["hh_rlhf", "helpsteer", "ultrafeedback"], lake, SAMPLES, progress=False)
    before = data_versions(lake)
    run, summaries = curate(["hh_rlhf", "helpsteer", "ultrafeedback"], lake, SAMPLES, progress=False)
    assert data_versions(lake) == before  # no commit at all to data tables
    assert run.rows_out == 0 and all(s.pairs_new == 0 and s.raw_new == 0 for s in summaries)
    runs = run_query(lake, "SELECT status FROM runs").column("status").to_pylist()
    assert runs == ["succeeded", "succeeded"]


def test_adding_a_source_later_appends_only_it(lake: Lake) -> None:
    curate(["shp"], lake, SAMPLES, progress=False)
    n = lake.read(S.PAIRS).num_rows
    curate(["shp", "codeultrafeedback"], lake, SAMPLES, progress=False)
    by_source = run_query(lake, "SELECT source, count(*) AS n FROM pairs GROUP BY source ORDER BY source").to_pylist()
    assert by_source == [{"source": "codeultrafeedback", "n": 101}, {"source": "shp", "n": n}]


def test_missing_column_fails_fast_and_writes_nothing(lake: Lake, tmp_path: Path) -> None:
    data = tmp_path / "raw"
    shutil.copytree(SAMPLES / "helpsteer", data / "helpsteer")
    shutil.copytree(SAMPLES / "shp", data / "shp")
    bad = data / "shp" / "askscience" / "validation.json"
    lines = [json.loads(line) for line in bad.read_text().splitlines()]
    for row in lines:
        row["labels_renamed"] = row.pop("labels")
    bad.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(MissingColumnError) as err:
        curate(["helpsteer", "shp"], lake, data, progress=False)
    assert err.value.source == "shp" and err.value.column == "labels"
    assert "'shp'" in str(err.value) and "'labels'" in str(err.value)
    assert lake.read(S.PAIRS).num_rows == 0  # helpsteer comes first, yet nothing of it landed
    assert not lake.exists("raw_helpsteer")
    assert run_query(lake, "SELECT status FROM runs").column("status").to_pylist() == ["failed"]


@pytest.mark.parametrize("step", ["prepare_batch", "stage_batch"])  # on a preparing thread; on the run's own
def test_crash_mid_run_leaves_no_partial_data(lake: Lake, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    real = getattr(curate_module, step)
    calls = itertools.count(1)

    def crash_on_third_batch(*args, **kwargs):
        if next(calls) == 3:
            raise MemoryError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(curate_module, step, crash_on_third_batch)
    with pytest.raises(MemoryError):
        curate(["hh_rlhf", "shp", "helpsteer"], lake, SAMPLES, progress=False)
    assert all(lake.read(t).num_rows == 0 for t in DATA_TABLES)
    assert not any(lake.exists(S.raw_table(s)) for s in ADAPTERS)
    monkeypatch.setattr(curate_module, step, real)
    curate(["hh_rlhf", "shp", "helpsteer"], lake, SAMPLES, progress=False)  # the same command finishes the job
    fresh = Lake(lake.uri + "-fresh")
    curate(["hh_rlhf", "shp", "helpsteer"], fresh, SAMPLES, progress=False)
    ids = lambda lk: sorted(lk.read(S.PAIRS, columns=["pair_id"]).column("pair_id").to_pylist())  # noqa: E731
    assert ids(lake) == ids(fresh)


def test_read_ahead_reads_the_next_batch_while_the_last_is_worked_on() -> None:
    """The same batches in the same order; the next is already being read when the caller gets one; a read
    error is raised where its batch is asked for, after the batches before it."""
    started = [threading.Event() for _ in range(3)]

    def batches():
        for i in range(3):
            started[i].set()
            if i == 2:
                raise OSError("truncated file")
            yield i

    got = []
    with pytest.raises(OSError, match="truncated file"):
        for b in read_ahead(batches()):
            assert started[b + 1].wait(10), f"batch {b + 1} was not read ahead"
            got.append(b)
    assert got == [0, 1]


def test_prepared_in_order_yields_in_input_order_with_bounded_work_ahead() -> None:
    """Results come in the items' order though later items finish first; no more than ``threads`` items are
    started beyond those the caller has; an error is raised at its item, after the results before it."""
    started: list[int] = []

    def prepare(i: int) -> int:
        started.append(i)
        time.sleep(0.01 * (3 - i % 3))  # within each three, the later items finish first
        if i == 7:
            raise ValueError("bad batch")
        return i * i

    got: list[int] = []
    with pytest.raises(ValueError, match="bad batch"):
        for result in curate_module.prepared_in_order(prepare, iter(range(100)), 2):
            got.append(result)
            assert len(started) <= len(got) + 2
    assert got == [i * i for i in range(7)]
    assert max(started) <= 9  # the items after the failed one were not all started


def test_where_takes_the_kept_rows_as_slices_when_few_are_dropped() -> None:
    """Whatever ``keep`` marks, the rows Arrow's filter keeps (a null keeps nothing); where it drops a few rows, they
    come as slices that share the table's buffers, with no text copied."""
    rows = pa.table({"i": list(range(200)), "t": [f"text {i}" for i in range(200)]})
    cases = {
        "every row": [True] * 200, "none": [False] * 200, "a few dropped": [i not in (0, 7, 8, 120, 199) for i in range(200)],
        "more runs than slices": [i % 2 == 0 for i in range(200)], "a null": [None if i == 3 else True for i in range(200)],
    }
    for name, marks in cases.items():
        out = curate_module._where(rows, pl.Series(marks, dtype=pl.Boolean))
        assert out.equals(rows.filter(pa.array(marks, pa.bool_()))), name
    few = curate_module._where(rows, pl.Series(cases["a few dropped"])).column("t")
    assert few.num_chunks == 3
    assert {chunk.buffers()[2].address for chunk in few.chunks} == {rows.column("t").chunk(0).buffers()[2].address}


def test_the_lake_is_the_same_whatever_the_number_of_preparing_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches of a few records each (pairs and prompts repeat across them and across sources), prepared on one
    thread and on three: the same rows in every table, the same counts."""
    monkeypatch.setattr(reading, "READ_BLOCK_BYTES", 1 << 12)
    monkeypatch.setattr(reading, "BATCH_BYTES", 1)
    monkeypatch.setattr(reading, "SLOW_PATH_ROWS", 3)

    def tables(threads: int) -> dict[str, pl.DataFrame]:
        monkeypatch.setattr(curate_module, "PREPARE_THREADS", threads)
        lake = Lake(str(tmp_path / f"lake-{threads}"))
        calls = itertools.count()
        real = curate_module.prepare_batch
        monkeypatch.setattr(curate_module, "prepare_batch", lambda *a: (next(calls), real(*a))[1])
        curate(list(ADAPTERS), lake, SAMPLES, progress=False)
        assert next(calls) > 3 * len(ADAPTERS)  # many batches a source
        out = {t: pl.from_arrow(lake.read(t)).drop("run_id", "created_at") for t in DATA_TABLES}
        out["run_counts"] = pl.from_arrow(lake.read("run_counts")).drop("run_id")
        return {t: df.sort(df.columns) for t, df in out.items()}

    one, three = tables(1), tables(3)
    for t in one:
        assert one[t].height and one[t].equals(three[t]), t


def test_batch_size_follows_what_a_sources_batches_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """BATCH_BYTES first; then STAGED_BYTES over the source's staged-to-raw ratio so far, within [BATCH_BYTES/4, 4 BATCH_BYTES]."""
    monkeypatch.setattr(reading, "BATCH_BYTES", 1000)
    monkeypatch.setattr(reading, "STAGED_BYTES", 8000)
    size = reading.BatchSize()
    assert size() == 1000
    size.observe(1000, 4000)  # each raw byte staged 4 bytes: 8000 / 4
    assert size() == 2000
    size.observe(3000, 4000)  # 8000 staged of 4000 raw so far: 8000 / 2, the most (4 x 1000)
    assert size() == 4000
    size.observe(1000, 92000)  # 100,000 of 5,000: 8000 / 20 = 400
    assert size() == 400
    size.observe(0, 100000)  # 200,000 of 5,000: 200, below the least
    assert size() == 250


def test_a_sources_batches_after_its_first_stage_about_staged_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each source's first batches are BATCH_BYTES of raw rows; once one is staged, the next are sized by the
    source's staged-to-raw ratio and each stages about STAGED_BYTES (to within the 4 KB blocks they are read in)."""
    for source in ("hh_rlhf", "ultrafeedback"):  # the samples, varied to 1,000 distinct rows
        records = [json.loads(line) for path in sorted((SAMPLES / source).rglob("*.jsonl")) for line in path.read_text().splitlines()]
        (tmp_path / source).mkdir()
        with open(tmp_path / source / "train.jsonl", "w") as out:
            for i in range(1000):
                record = dict(records[i % len(records)])
                if source == "hh_rlhf":  # one more exchange in front of both transcripts: their contexts still agree
                    record = {k: f"\n\nHuman: variant {i}\n\nAssistant: noted.{v}" for k, v in record.items()}
                else:
                    record["instruction"] += f" (variant {i})"
                out.write(json.dumps(record) + "\n")
    monkeypatch.setattr(reading, "READ_BLOCK_BYTES", 1 << 12)
    monkeypatch.setattr(reading, "BATCH_BYTES", 20_000)
    monkeypatch.setattr(reading, "STAGED_BYTES", 250_000)
    seen: dict[str, list[tuple[int, int]]] = {}  # (raw, staged) bytes of each batch, in input order
    real = curate_module.stage_batch

    def stage(ctx, prepared):
        seen.setdefault(ctx.adapter.name, []).append((prepared.raw_bytes, prepared.staged_bytes))
        real(ctx, prepared)

    monkeypatch.setattr(curate_module, "stage_batch", stage)
    curate(["hh_rlhf", "ultrafeedback"], Lake(str(tmp_path / "lake")), tmp_path, progress=False)
    for source, batches in seen.items():
        ratio = sum(s for _, s in batches) / sum(r for r, _ in batches)
        assert ratio > 2, (source, ratio)
        # each batch but the remainder is either of BATCH_BYTES (read before the source's first batch was staged: how
        # many depends on the threads' pace) or sized to stage about STAGED_BYTES, and once sized, sized to the end
        sized = [0.8 < raw * ratio / 250_000 < 1.25 and 0.75 < staged / 250_000 < 1.3 for raw, staged in batches[:-1]]
        first = [raw < 25_000 for raw, _ in batches[:-1]]
        assert first[0] and all(a or b for a, b in zip(sized, first)), (source, ratio, batches)
        assert sum(sized) >= 3 and all(sized[sized.index(True):]), (source, ratio, batches)


def test_append_turn_appends_the_reply_to_each_prompt_of_a_sliced_series() -> None:
    """The reply lands after each prompt's own turns, also when the lists start mid-buffer (a slice)."""
    prompts = pl.Series("prompt", [
        [{"role": "user", "content": "skipped"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi " * 10}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
        [{"role": "user", "content": ""}],
    ]).slice(1)
    replies = pl.Series(["first reply, longer than a view's inline twelve bytes", "second", " third "])
    got = append_turn(prompts, replies, "assistant")
    assert got.name == "prompt"
    expected = [p + [{"role": "assistant", "content": r}] for p, r in zip(prompts.to_list(), replies.to_list())]
    assert got.to_list() == expected


def test_non_contiguous_groups_are_an_error() -> None:
    schema = pa.schema([("prompt", pa.string())])
    batches = [RawBatch("train", "f", 0, pa.table({"prompt": ["a", "a", "b"]}, schema=schema)),
               RawBatch("train", "f", 3, pa.table({"prompt": ["b", "c", "a"]}, schema=schema))]
    with pytest.raises(ValueError, match="not contiguous"):
        list(regroup(iter(batches), "prompt", "helpsteer"))


def test_regroup_keeps_groups_whole() -> None:
    schema = pa.schema([("prompt", pa.string())])
    batches = [RawBatch("train", "f", 0, pa.table({"prompt": ["a", "a", "b"]}, schema=schema)),
               RawBatch("train", "f", 3, pa.table({"prompt": ["b", "b", "c"]}, schema=schema)),
               RawBatch("train", "f", 6, pa.table({"prompt": ["c"]}, schema=schema))]
    out = list(regroup(iter(batches), "prompt", "helpsteer"))
    assert [b.table.column("prompt").to_pylist() for b in out] == [["a", "a"], ["b", "b", "b"], ["c", "c"]]
    assert [b.first_index for b in out] == [0, 2, 5]
    assert [b.keys.to_pylist() for b in out] == [["train#0", "train#1"], ["train#2", "train#3", "train#4"], ["train#5", "train#6"]]


def test_hub_loader_through_datasets_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path (datasets.load_dataset + Arrow batches) run offline on local files in the hub schema."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    adapter = ADAPTERS["helpsteer"]
    files = [str(SAMPLES / "helpsteer" / "validation.jsonl")]
    report = InputReport()
    monkeypatch.setattr(reading, "READ_ROWS", 1)
    gathered = list(read_hub("helpsteer", "json", None, [None], adapter.raw_schema, InputReport(), data_files=files))
    assert [b.table.num_rows for b in gathered] == [2]  # reads of one row, gathered into one batch of BATCH_BYTES
    monkeypatch.setattr(reading, "BATCH_BYTES", 1)  # every record its own batch
    batches = list(read_hub("helpsteer", "json", None, [None], adapter.raw_schema, report, data_files=files))
    assert [b.table.num_rows for b in batches] == [1, 1]
    assert batches[0].table.schema == adapter.raw_schema
    assert [k for b in batches for k in b.keys.to_pylist()] == ["train#0", "train#1"]
    wrong = pa.schema([("prompt", pa.string()), ("no_such_column", pa.string())])
    with pytest.raises(MissingColumnError, match="'helpsteer'.*'no_such_column'"):
        list(read_hub("helpsteer", "json", None, [None], wrong, InputReport(), data_files=files))


def test_parquet_and_extra_columns(lake: Lake, tmp_path: Path) -> None:
    data = tmp_path / "raw" / "pku_saferlhf_30k"
    data.mkdir(parents=True)
    table = pa.Table.from_pylist([json.loads(line) for line in (SAMPLES / "pku_saferlhf_30k" / "train.jsonl").read_text().splitlines()])
    pq.write_table(table.append_column("prompt_source", pa.array(["x"] * table.num_rows)), data / "train.parquet")
    run, summaries = curate(["pku_saferlhf_30k"], lake, tmp_path / "raw", progress=False)
    assert summaries[0].rows_in == 20 and summaries[0].rows["paired"] == 16
    assert run.inputs["pku_saferlhf_30k"]["ignored_columns"]  # the extra column is reported, not silently used


def test_cli_help_and_bad_settings(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for option in ("--sources", "--data-dir", "--hub", "--lake", "--config", "--set", "shp.min_score_ratio", "helpsteer.score"):
        assert option in out
    assert main(["--set", "shp.no_such_rule=1", "--lake", "/nonexistent/never"]) == 2
    assert "unknown setting shp.no_such_rule" in capsys.readouterr().err
    assert main(["--sources", "nope"]) == 2
    assert main(["--set", "shp.min_score_ratio=abc"]) == 2


def test_cli_runs_as_a_script(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "curate.py"), "--sources", "distilabel_math_preference_dpo", "--lake", str(tmp_path / "lake"), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "distilabel_math_preference_dpo" in proc.stdout and "n_prompts" in proc.stdout


def test_cli_refuses_a_second_concurrent_run(lake: Lake, capsys: pytest.CaptureFixture) -> None:
    with lake.lock("curate"):
        assert main(["--sources", "shp", "--lake", lake.uri, "--no-progress"]) == 2
    assert "another process holds the 'curate' lock" in capsys.readouterr().err
    assert not lake.exists(S.PAIRS)  # it gave up before creating anything


def test_rule_flags_are_the_last_layer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Curation's rules go through the one configuration path: defaults < --config < --set < the rule's own flag."""
    count = lambda lake: Lake(str(lake)).read(S.PAIRS).num_rows  # noqa: E731
    common = ["--sources", "shp", "--quiet"]
    assert main([*common, "--lake", str(tmp_path / "a"), "--set", "shp.min_score_ratio=1"]) == 0
    assert main([*common, "--lake", str(tmp_path / "b"), "--set", "shp.min_score_ratio=1", "--shp.min_score_ratio", "1000"]) == 0
    assert count(tmp_path / "a") > 0 and count(tmp_path / "b") == 0  # the flag won over --set
    assert main([*common, "--lake", str(tmp_path / "c"), "--shp.min_score_ratio", "high"]) == 2
    assert "shp.min_score_ratio: expected float" in capsys.readouterr().err


def test_prompt_pool_holds_prompts_of_filtered_rows_with_their_origin(lake: Lake) -> None:
    """A prompt whose only pair a recipe rule dropped (Orca's chosen_score < 8, SHP's score ratio, a HelpSteer
    prompt with one response) is in ``prompts`` with the split and raw row it came from; a malformed one is not."""
    sources = ["distilabel_intel_orca_dpo_pairs", "shp", "helpsteer"]
    curate(sources, lake, SAMPLES, progress=False)
    filtered = run_query(lake, """
        SELECT q.source, q.rule, count(*) AS n,
               count(*) FILTER (WHERE p.prompt_id IS NULL) AS n_missing
        FROM quarantine q
        LEFT JOIN raw_distilabel_intel_orca_dpo_pairs o ON q.source = 'distilabel_intel_orca_dpo_pairs' AND o._raw_key = q.raw_keys[1]
        LEFT JOIN raw_shp s ON q.source = 'shp' AND s._raw_key = q.raw_keys[1]
        LEFT JOIN raw_helpsteer h ON q.source = 'helpsteer' AND h._raw_key = q.raw_keys[1]
        LEFT JOIN prompts p ON p.source = q.source AND p.split = q.split
             AND p.prompt_text = coalesce(o.input, s.history, h.prompt)
        WHERE q.level = 'row' AND q.kind = 'filter'
        GROUP BY ALL ORDER BY ALL
    """).to_pylist()
    rules = {(r["source"], r["rule"]) for r in filtered}
    assert {("distilabel_intel_orca_dpo_pairs", "min_chosen_score"), ("shp", "score_ratio")} <= rules
    assert all(r["n_missing"] == 0 for r in filtered), filtered
    # every kept pair's prompt is in the pool too, under its source and split; and origins point at real raw rows
    orphans = run_query(lake, """
        SELECT count(*) AS n FROM pairs x ANTI JOIN prompts p USING (prompt_id, source, split)
    """).column("n")[0].as_py()
    assert orphans == 0
    origins = run_query(lake, """
        SELECT count(*) AS n, count(r._raw_key) AS found FROM prompts p
        LEFT JOIN raw_shp r ON r._raw_key = p.raw_key AND r._split = p.split WHERE p.source = 'shp'
    """).to_pylist()[0]
    assert origins["n"] > 0 and origins["found"] == origins["n"]
    n_pairs_prompts = run_query(lake, "SELECT count(DISTINCT prompt_id) AS n FROM pairs").column("n")[0].as_py()
    assert lake.read(S.PROMPTS).num_rows > n_pairs_prompts  # the pool is larger than the kept pairs' prompts


def test_a_lake_from_before_the_prompt_origin_columns_gains_them(lake: Lake) -> None:
    old_schema = pa.schema([f for f in S.PROMPT_SCHEMA if f.name not in ("split", "raw_key")])
    lake.create(S.PROMPTS, old_schema, ["source"])
    curate(["helpsteer"], lake, SAMPLES, progress=False)
    splits = run_query(lake, "SELECT DISTINCT split FROM prompts ORDER BY 1").column("split").to_pylist()
    assert splits and None not in splits
