"""The lake module: atomic appends, versions, reads as of a version, staging, locking."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from prefhouse.pipelines.core import lake as lake_module
from prefhouse.pipelines.core.lake import Lake, LakeError, staging

SCHEMA = pa.schema([("id", pa.string()), ("part", pa.string()), ("x", pa.int64())])


def rows(ids: list[str], part: str = "a") -> pa.Table:
    return pa.table({"id": ids, "part": [part] * len(ids), "x": list(range(len(ids)))}, schema=SCHEMA)


def test_append_versions_and_time_travel(lake: Lake) -> None:
    lake.create("t", SCHEMA, ["part"])
    assert lake.version("t") == 0
    assert lake.append("t", rows(["1", "2"]), ["part"]) == 1
    assert lake.append("t", rows(["3"], "b"), ["part"]) == 2
    assert lake.read("t").num_rows == 3
    assert lake.read("t", version=1).num_rows == 2
    assert lake.read("t", version=0).num_rows == 0
    # partition values come back from the log, not from the Parquet files
    assert sorted(lake.read("t").column("part").to_pylist()) == ["a", "a", "b"]
    with pytest.raises(LakeError, match="no version 7"):
        lake.read("t", version=7)


def test_file_statistics_let_a_lookup_skip_files(lake: Lake) -> None:
    """Each file's min/max from the log is its fragment's guarantee: an id lookup opens one file, nulls stay found."""
    lake.create("t", SCHEMA, ["part"])
    lake.append("t", rows(["a1", "a2"]), ["part"])
    lake.append("t", rows(["b1", "b2"]), ["part"])
    lake.append("t", pa.table({"id": ["c1", "c2"], "part": ["a", "a"], "x": [None, 5]}, schema=SCHEMA), ["part"])
    dataset = lake.dataset("t")
    assert len(list(dataset.get_fragments())) == 3
    hits = list(dataset.get_fragments(filter=pads.field("id") == "b2"))
    assert len(hits) == 1 and hits[0].to_table().column("id").to_pylist() == ["b1", "b2"]
    assert len(list(dataset.get_fragments(filter=pads.field("x") > 1))) == 1  # only the file whose max x is 5
    assert lake.read("t", filter=pads.field("x").is_null()).column("id").to_pylist() == ["c1"]  # a file with nulls keeps them
    assert lake.read("t", filter=pads.field("id") == "zz").num_rows == 0


def test_version_at_a_time(lake: Lake) -> None:
    before = datetime.now(UTC)
    time.sleep(0.01)
    lake.append("t", rows(["1"]))
    assert lake.version_at("t", before) is None
    assert lake.version_at("t", datetime.now(UTC)) == 0


def test_missing_table_is_a_clear_error(lake: Lake) -> None:
    with pytest.raises(LakeError, match="does not exist"):
        lake.read("nope")
    assert lake.version("nope") is None


def test_staging_commits_each_table_once_and_streams(lake: Lake) -> None:
    with staging(lake) as stage:
        for i in range(5):
            stage.add("t", rows([f"{i}a", f"{i}b"]), SCHEMA, ["part"])
        stage.add("empty", rows([]), SCHEMA)
        assert not lake.exists("t")  # nothing is visible before the commit
        versions = stage.commit()
    assert versions == {"t": 0}  # one commit for five batches; nothing for an empty table
    assert lake.read("t").num_rows == 10
    assert not lake.exists("empty")


def test_staged_rows_are_written_in_order_and_a_failed_write_stops_the_commit(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes run on the staging's writer thread: rows keep the order they were added in, a file rolls over at
    ROWS_PER_FILE, and a write that fails there is raised in the caller, leaving nothing in the lake or the table's folder."""
    monkeypatch.setattr(lake_module, "ROWS_PER_FILE", 4)
    monkeypatch.setattr(lake_module, "QUEUED_BYTES", 0)  # add() waits for each write: the failure below is raised by add
    with staging(lake) as stage:
        for i in range(5):
            stage.add("t", rows([f"{i}a", f"{i}b"]), SCHEMA)
        assert stage.read_staged("t", ["id"]).column("id").to_pylist() == [f"{i}{c}" for i in range(5) for c in "ab"]
        assert len(stage.tables["t"].done) == 3  # 4 + 4 + 2 rows
        stage.commit()
    assert lake.read("t").column("id").to_pylist() == [f"{i}{c}" for i in range(5) for c in "ab"]

    real = lake_module._DataFile.write

    def fail_third(self, table):
        fail_third.calls += 1
        if fail_third.calls == 3:
            raise OSError("disk full")
        return real(self, table)

    fail_third.calls = 0
    monkeypatch.setattr(lake_module._DataFile, "write", fail_third)
    with pytest.raises(OSError, match="disk full"):
        with staging(lake) as stage:
            for i in range(5):
                stage.add("u", rows([f"{i}a"]), SCHEMA)
            stage.commit()
    assert fail_third.calls == 3 and not lake.exists("u")
    assert not list((Path(lake.uri) / "u").rglob("*.parquet"))


def test_abandoned_staging_leaves_nothing(lake: Lake) -> None:
    with pytest.raises(RuntimeError):
        with staging(lake) as stage:
            stage.add("t", rows(["1"]), SCHEMA)
            raise RuntimeError("crash before commit")
    assert not lake.exists("t")


def _hold_lock(uri: str, ready, release) -> None:
    with Lake(uri).lock("curate"):
        ready.set()
        release.wait(10)


def test_second_writer_fails_fast(lake: Lake) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(lake.uri, ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(LakeError, match="another process holds"):
            with lake.lock("curate"):
                pass
    finally:
        release.set()
        holder.join(10)
    with lake.lock("curate"):  # released when the holder exits
        pass


def test_content_ids_trim_each_text_and_normalise_unicode_but_keep_inner_whitespace() -> None:
    """What README promises of ids: trimmed texts and NFC, so ' é' (e + combining accent) and 'é' share an id;
    inner whitespace is content. And the digest is md5 of the documented key, stable across libraries."""
    import hashlib

    import polars as pl
    from prefhouse.pipelines.core.ids import GROUP, RECORD, UNIT, messages_key, trimmed, with_md5

    turns = lambda *texts: [{"role": "user", "content": t} for t in texts]  # noqa: E731
    df = pl.DataFrame({"prompt": [turns("caf\u00e9"), turns("  cafe\u0301\n"), turns("ca f\u00e9"), turns("caf\u00e9", "more")],
                       "reply": ["ok", " ok ", "ok", "ok"]})
    ids = with_md5(df, "id", messages_key(pl.col("prompt")), trimmed(pl.col("reply")))["id"].to_list()
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3]}) == 3
    assert ids[0] == hashlib.md5(("user" + UNIT + "caf\u00e9" + GROUP + "ok").encode()).hexdigest()
    assert ids[3] == hashlib.md5(("user" + UNIT + "caf\u00e9" + RECORD + "user" + UNIT + "more" + GROUP + "ok").encode()).hexdigest()


def test_a_digest_set_holds_exactly_the_ids_added() -> None:
    """Ids as 128-bit fingerprints in sorted runs: every id added is found after runs merge, no other is (not even
    one sharing its high 64 bits), and a null is a key of its own."""
    import hashlib

    import numpy as np
    import polars as pl
    from prefhouse.pipelines.core.digests import DigestSet, digests

    ids = pl.Series([hashlib.md5(str(i).encode()).hexdigest() for i in range(5000)])
    held = DigestSet()
    for start in range(0, 3000, 250):  # twelve adds: runs are merged as they grow
        held.add(*digests(ids[start:start + 250]))
    assert len(held) == 3000 and len(held._runs) < 12
    assert held.contains(*digests(ids)).tolist() == [i < 3000 for i in range(5000)]  # many asked: hashed first
    assert held.contains(*digests(ids[2990:3010])).tolist() == [i < 3000 for i in range(2990, 3010)]  # a few: searched
    assert held.contains(*digests(ids.gather([2999, 0, 4999, 2, 5] * 4))).tolist() == [True, True, False, True, True] * 4
    high, low = digests(ids[:2])
    assert (high[0], low[0]) != (high[1], low[1]) and high[0] != low[0]  # two seeds, two different hashes
    twins = DigestSet()
    twins.add(np.array([7, 7, 9], np.uint64), np.array([1, 3, 1], np.uint64))
    assert twins.contains(np.array([7, 7, 7, 9, 8], np.uint64), np.array([1, 2, 3, 2, 1], np.uint64)).tolist() == [True, False, True, False, False]
    keys = DigestSet()
    keys.add(*digests(pl.Series(["p|shp|train", None])))
    assert keys.contains(*digests(pl.Series(["p|shp|train", None, "P|shp|train", "p|shp|test", "\x00null"]))).tolist() == [True, True, False, False, False]


def test_a_prompt_hashed_once_per_distinct_message_key_has_the_same_id() -> None:
    """``prompt_ids`` hashes each distinct message key once: the ids, in row order, of hashing every row; a null
    list stays null; lists equal only once trimmed share an id, as every prompt id does."""
    import polars as pl
    from prefhouse.pipelines.core.ids import messages_key, prompt_ids, with_md5

    turn = lambda text: {"role": "user", "content": text}  # noqa: E731
    frame = pl.DataFrame({"prompt": [[turn("x")], None, [turn("x")], [turn("y"), turn("x")], [turn(" x")], [turn("y")], [turn("x")]]})
    once = prompt_ids(frame["prompt"])
    assert once.name == "prompt"
    assert once.to_list() == with_md5(frame, "id", messages_key(pl.col("prompt")))["id"].to_list()
    assert once[1] is None and once[0] == once[2] == once[4] == once[6] and len({once[0], once[3], once[5]}) == 3
