"""Lake maintenance: optimize keeps the rows and the history; vacuum keeps young files."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
from prefhouse.pipelines import maintain
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import run_query
from prefhouse.pipelines.curate import curate
from prefhouse.pipelines.maintain import main, optimize, vacuum

from .conftest import SAMPLES


def test_optimize_compacts_and_clusters_without_changing_rows(lake: Lake) -> None:
    # two runs append to the same partition: a strict margin first, then the default margin adds the rest
    curate(["ultrafeedback"], lake, SAMPLES, config={"ultrafeedback": {"min_margin": 1.0}}, progress=False)
    curate(["ultrafeedback", "shp"], lake, SAMPLES, progress=False)
    before_version = lake.version(S.PAIRS)
    ids = lambda v=None: sorted(lake.read(S.PAIRS, version=v, columns=["pair_id"]).column("pair_id").to_pylist())  # noqa: E731
    rows = ids()
    files_before = len(lake.delta(S.PAIRS).file_uris())
    run = optimize(lake, [S.PAIRS, S.PROMPTS], zorder_by=None)
    assert run.versions_after[S.PAIRS] == before_version + 1
    assert ids() == rows and ids(before_version) == rows  # same rows; the old version still reads
    assert len(lake.delta(S.PAIRS).file_uris()) == files_before - 1  # ultrafeedback's two files became one
    optimize(lake, [S.PAIRS], zorder_by=["pair_id"])
    assert ids() == rows
    assert run_query(lake, "SELECT status FROM runs WHERE pipeline = 'optimize'").column("status").to_pylist() == ["succeeded", "succeeded"]


def test_optimize_writes_small_compressed_row_groups(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row groups small enough for a lookup to skip by their min/max, and compressed (delta-rs writes uncompressed by default)."""
    curate(["ultrafeedback"], lake, SAMPLES, progress=False)
    monkeypatch.setattr(maintain, "ROW_GROUP_ROWS", 2)
    optimize(lake, [S.PAIRS], zorder_by=["pair_id"])
    files = lake.dataset(S.PAIRS).files
    assert files
    for path in files:
        meta = pq.ParquetFile(path).metadata
        assert meta.num_rows > 2 and meta.num_row_groups == math.ceil(meta.num_rows / 2)
        assert meta.row_group(0).column(0).compression == "ZSTD"


def test_every_writer_leaves_bloom_filters_on_the_lookup_columns(lake: Lake) -> None:
    """Staged files (curation), delta-rs appends and optimized files all carry a Parquet Bloom filter for each
    lookup column (pair_id, prompt_id, _raw_key …) and for no other column: DuckDB's lookup by id skips by them."""
    import duckdb
    import pyarrow as pa

    def filtered(table: str) -> set[str]:
        paths = lake.data_files(table).paths
        assert paths
        rows = duckdb.sql(f"SELECT DISTINCT path_in_schema FROM parquet_metadata({paths!r}) WHERE bloom_filter_offset IS NOT NULL").fetchall()
        return {r[0] for r in rows}

    curate(["shp"], lake, SAMPLES, progress=False)  # staged files
    assert filtered(S.PAIRS) == {"pair_id", "prompt_id"} and filtered("raw_shp") == {"_raw_key"} and filtered(S.PROMPTS) == {"prompt_id"}
    lake.append("looked_up", pa.table({"response_id": ["a", "b"], "n": [1, 2]}))  # a delta-rs append
    assert filtered("looked_up") == {"response_id"}
    optimize(lake, [S.PAIRS], zorder_by=["pair_id"])  # rewritten files
    assert filtered(S.PAIRS) == {"pair_id", "prompt_id"}


def test_vacuum_lists_but_keeps_files_within_retention(lake: Lake, capsys: pytest.CaptureFixture) -> None:
    curate(["shp"], lake, SAMPLES, progress=False)
    curate(["helpsteer"], lake, SAMPLES, progress=False)
    optimize(lake, [S.PAIRS])
    assert vacuum(lake, [S.PAIRS]) == {S.PAIRS: []}  # replaced files are younger than 7 days: kept
    with pytest.raises(Exception, match="(?i)retention"):
        vacuum(lake, [S.PAIRS], retention_hours=0, apply=True)  # the retention check stays on
    assert main(["vacuum", "--lake", lake.uri]) == 0
    assert "dry run" in capsys.readouterr().out


def test_vacuum_lists_orphans_a_killed_run_left(lake: Lake) -> None:
    """The defect: files no version ever referenced were never listed (vacuum was not a full one)."""
    import os
    import time

    curate(["shp"], lake, SAMPLES, progress=False)
    table = lake.delta(S.PAIRS)
    referenced = {os.path.basename(u) for u in table.file_uris()}
    some = next(p for p in (lake.table_uri(S.PAIRS) + "/" + u.split(S.PAIRS + "/", 1)[1] for u in table.file_uris()))
    orphan_old = some.replace(".snappy.parquet", "-orphan-old.snappy.parquet")
    orphan_young = some.replace(".snappy.parquet", "-orphan-young.snappy.parquet")
    for orphan in (orphan_old, orphan_young):
        with open(some, "rb") as src, open(orphan, "wb") as dst:
            dst.write(src.read())
    old = time.time() - 8 * 24 * 3600
    os.utime(orphan_old, (old, old))
    listed = [os.path.basename(f) for f in vacuum(lake, [S.PAIRS])[S.PAIRS]]
    assert listed == [os.path.basename(orphan_old)]  # the young one may be a running writer's: kept
    vacuum(lake, [S.PAIRS], apply=True)
    assert not os.path.exists(orphan_old) and os.path.exists(orphan_young)
    assert {os.path.basename(u) for u in lake.delta(S.PAIRS).file_uris()} == referenced and lake.read(S.PAIRS).num_rows > 0
