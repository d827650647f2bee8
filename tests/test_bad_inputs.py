"""Every bad raw input gets a one-line answer naming the source, the file and the line, or its record is
quarantined with the right rule while the rest lands (README, "Bad input")."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import run_query
from prefhouse.pipelines.curate import curate, main
from prefhouse.pipelines.sources.reading import InputError
from prefhouse.pipelines.sources.registry import ADAPTERS

from .conftest import SAMPLES

SOURCE = "hh_rlhf"  # raw schema: chosen, rejected (strings)
ROW = {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello, how can I help?", "rejected": "\n\nHuman: Hi there\n\nAssistant: Go away."}


def rows(n: int) -> list[dict]:
    return [{"chosen": ROW["chosen"].replace("Hi there", f"Question {i}"), "rejected": ROW["rejected"].replace("Hi there", f"Question {i}")}
            for i in range(n)]


def write_source(tmp_path: Path, files: dict[str, bytes]) -> Path:
    data = tmp_path / "raw"
    for name, content in files.items():
        path = data / SOURCE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return data


def jsonl(records: list) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def data_tables(lake: Lake) -> dict[str, int]:
    return {t: lake.read(t).num_rows for t in lake.tables() if t not in (S.RUNS, S.RUN_COUNTS, S.VALIDATIONS)}


def fails_cleanly(tmp_path: Path, files: dict[str, bytes], capsys: pytest.CaptureFixture, *expected: str) -> None:
    """The CLI answers in one line naming the source, file and what is wrong, exits 2, and commits no data."""
    data = write_source(tmp_path, files)
    lake = tmp_path / "lake"
    assert main(["--sources", SOURCE, "--data-dir", str(data), "--lake", str(lake), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: source '{SOURCE}': ") and str(data / SOURCE) in err, err
    for text in expected:
        assert text in err, err
    assert not any(data_tables(Lake(str(lake))).values())


def test_malformed_json_line_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    content = jsonl(rows(5)) + b'{"chosen": "x", "rejected": \n' + jsonl(rows(2))
    fails_cleanly(tmp_path, {"train.jsonl": content}, capsys, "train.jsonl line 6", "not valid JSON")


def test_malformed_line_deep_in_a_large_file_is_found(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    content = jsonl(rows(3000)) + b"{not json}\n"
    fails_cleanly(tmp_path, {"train.jsonl": content}, capsys, "train.jsonl line 3001")


def test_array_instead_of_object(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    content = jsonl(rows(2)) + b'["a", "b"]\n'
    fails_cleanly(tmp_path, {"train.jsonl": content}, capsys, "line 3", "record 2 is an array, not a JSON object")


def test_json_array_of_arrays(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails_cleanly(tmp_path, {"train.json": b'[["a", "b"]]'}, capsys, "record 0 is an array")


def test_truncated_gzip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    whole = gzip.compress(jsonl(rows(2000)))
    fails_cleanly(tmp_path, {"train.jsonl.gz": whole[: len(whole) // 2]}, capsys, "train.jsonl.gz", "gzip stream is truncated")


def test_bad_byte_early_and_late(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    early = b'{"chosen": "caf\xe9", "rejected": "x"}\n' + jsonl(rows(2))
    fails_cleanly(tmp_path / "early", {"train.jsonl": early}, capsys, "train.jsonl line 1", "not UTF-8")
    late = jsonl(rows(4000)) + b'{"chosen": "\n\nHuman: a\n\nAssistant: caf\xe9", "rejected": "x"}\n'.replace(b"\n\n", b"\\n\\n")
    assert len(late) > 1 << 16  # beyond the first 64 KB, where the check used to stop
    fails_cleanly(tmp_path / "late", {"train.jsonl": late}, capsys, "train.jsonl line 4001", "not UTF-8")


def test_missing_column_in_first_record_names_the_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fails_cleanly(tmp_path, {"train.jsonl": b"\n" + jsonl([{"chosen": "x"}])}, capsys, "line 2", "raw column 'rejected' is missing")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    data = write_source(tmp_path, {"train.jsonl": b"{oops\n"})
    with pytest.raises(InputError):
        main(["--sources", SOURCE, "--data-dir", str(data), "--lake", str(tmp_path / "lake"), "--quiet", "--debug"])


def test_wrong_type_in_row_11_is_quarantined_and_the_rest_lands(tmp_path: Path) -> None:
    records = rows(15)
    records[10]["chosen"] = 42  # a number where the hub schema has a string
    data = write_source(tmp_path, {"train.jsonl": jsonl(records)})
    lake = Lake(str(tmp_path / "lake"))
    run, summaries = curate([SOURCE], lake, data, progress=False)
    assert summaries[0].rows_in == 15 and summaries[0].rows["paired"] == 14 and summaries[0].rows["quarantined"] == 1
    q = pl.from_arrow(lake.read(S.QUARANTINE)).to_dicts()
    assert [(r["rule"], r["raw_keys"]) for r in q] == [("raw.wrong_type", ["train#10"])]
    assert "line 11" in q[0]["reason"] and "'chosen'" in q[0]["reason"]
    raw_keys = lake.read(S.raw_table(SOURCE)).column("_raw_key").to_pylist()
    assert "train#10" not in raw_keys and "train#11" in raw_keys  # keys stay the record's index in the file
    acc = run_query(lake, "filter_accounting").to_pylist()[0]
    assert acc["balanced"] and acc["rows_in"] == 15 and acc["quarantined_by"] == "raw.wrong_type=1"


def test_files_read_in_many_blocks_and_batches_lose_and_repeat_no_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON read in small blocks gathered into batches, a defect after several batches (the rest re-read by Python
    from the first record not yet handed on), and Parquet read in row groups gathered the same way."""
    from prefhouse.pipelines.sources import reading

    monkeypatch.setattr(reading, "READ_BLOCK_BYTES", 2048)
    monkeypatch.setattr(reading, "BATCH_BYTES", 3000)
    monkeypatch.setattr(reading, "READ_ROWS", 7)
    records = rows(300)
    records[250]["chosen"] = 42
    data = write_source(tmp_path, {"train.jsonl": jsonl(records)})
    pl.DataFrame(rows(100)).write_parquet(data / SOURCE / "test.parquet")
    files = sorted((data / SOURCE).iterdir())
    schema = ADAPTERS[SOURCE].raw_schema
    batches = list(reading.read_files(SOURCE, data / SOURCE, files, schema))
    json_batches = [b for b in batches if b.split == "train"]
    assert len(json_batches) > 3 and len([b for b in batches if b.split == "test"]) > 3
    assert [k for b in batches for k in b.keys.to_pylist()] == [f"test#{i}" for i in range(100)] + [f"train#{i}" for i in range(300) if i != 250]
    assert [i for b in json_batches if b.rejects is not None for i in b.rejects["index"]] == [250]
    lake = Lake(str(tmp_path / "lake"))
    _, summaries = curate([SOURCE], lake, data, progress=False)
    assert summaries[0].rows_in == 400 and summaries[0].rows["paired"] == 399 and summaries[0].rows["quarantined"] == 1


def test_column_missing_after_the_first_record_is_quarantined_with_that_reason(tmp_path: Path) -> None:
    records = rows(6)
    del records[3]["rejected"]
    data = write_source(tmp_path, {"train.jsonl": jsonl(records)})
    lake = Lake(str(tmp_path / "lake"))
    _, summaries = curate([SOURCE], lake, data, progress=False)
    q = pl.from_arrow(lake.read(S.QUARANTINE)).to_dicts()
    assert [(r["rule"], r["raw_keys"], r["reason"]) for r in q] == [("raw.missing_value", ["train#3"], "column 'rejected' is absent or null")]
    assert summaries[0].rows["paired"] == 5


def test_empty_and_blank_files_are_skipped_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = write_source(tmp_path, {"a/train.jsonl": jsonl(rows(3)), "b/empty.jsonl": b"", "c/blank.jsonl": b"  \n\n \n", "d/e.json.gz": gzip.compress(b"")})
    lake = tmp_path / "lake"
    assert main(["--sources", SOURCE, "--data-dir", str(data), "--lake", str(lake), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("note: hh_rlhf: skipped") == 3 and "empty.jsonl" in out
    assert Lake(str(lake)).read(S.PAIRS).num_rows == 3
    runs = pl.from_arrow(run_query(Lake(str(lake)), "SELECT inputs FROM runs"))
    assert len(json.loads(runs["inputs"][0])[SOURCE]["skipped"]) == 3


def test_bom_and_blank_first_line_are_accepted(tmp_path: Path) -> None:
    data = write_source(tmp_path, {"bom.jsonl": b"\xef\xbb\xbf" + jsonl(rows(2)), "blank.jsonl": b"\n\n" + jsonl(rows(3)[1:])})
    lake = Lake(str(tmp_path / "lake"))
    _, summaries = curate([SOURCE], lake, data, progress=False)
    assert summaries[0].rows_in == 4 and summaries[0].rows["paired"] == 4
    keys = sorted(lake.read(S.raw_table(SOURCE)).column("_raw_key").to_pylist())
    assert keys == ["blank#0", "blank#1", "bom#0", "bom#1"]  # blank lines are not records


def test_hub_loads_are_pinned_to_the_resolved_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An adapter without a pinned revision records the commit the hub resolved, in pairs and in the run log."""
    import datasets
    from huggingface_hub import HfApi
    from prefhouse.pipelines.sources.registry import ADAPTERS

    assert ADAPTERS[SOURCE].hub_revision is None
    commit = "0123456789abcdef0123456789abcdef01234567"
    asked: list[tuple] = []

    class Info:
        sha = commit

    def dataset_info(self, repo_id, revision=None, **kw):
        asked.append(("info", repo_id, revision))
        return Info()

    data = write_source(tmp_path, {"train.jsonl": jsonl(rows(3))})
    real_load = datasets.load_dataset

    def load_dataset(path, data_dir=None, revision=None, data_files=None, **kw):
        asked.append(("load", path, revision))
        return real_load("json", data_files={"train": str(data / SOURCE / "train.jsonl")})

    monkeypatch.setattr(HfApi, "dataset_info", dataset_info)
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(ADAPTERS[SOURCE], "hub_data_dirs", [None])
    lake = Lake(str(tmp_path / "lake"))
    run, _ = curate([SOURCE], lake, None, hub=True, progress=False)
    assert ("load", "Anthropic/hh-rlhf", commit) in asked
    assert set(lake.read(S.PAIRS).column("hub_revision").to_pylist()) == {commit}
    assert run.inputs[SOURCE]["hub_revision"] == commit and run.inputs[SOURCE]["files"][0]["commit"] == commit


def test_parquet_with_a_bad_string_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = pa.array(["\n\nHuman: a\n\nAssistant: b"] * 2)
    bad = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(b"\x00\x00\x00\x00\x02\x00\x00\x00"), pa.py_buffer(b"\xff\xfe")])
    path = tmp_path / "raw" / SOURCE / "train.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"chosen": pa.concat_arrays([good, bad]), "rejected": pa.concat_arrays([good, bad])}), path)
    fails_cleanly(tmp_path, {}, capsys, "train.parquet", "not valid UTF-8")


def test_samples_still_curate_unchanged(tmp_path: Path) -> None:
    """The bundled samples go through the same reader with no record quarantined for its encoding or type."""
    lake = Lake(str(tmp_path / "lake"))
    shutil.copytree(SAMPLES / SOURCE, tmp_path / "raw" / SOURCE)
    curate([SOURCE], lake, tmp_path / "raw", progress=False)
    rules = set(pl.from_arrow(lake.read(S.QUARANTINE))["rule"])
    assert not {r for r in rules if r.startswith("raw.")}
