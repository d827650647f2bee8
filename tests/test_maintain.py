"""Lake maintenance: optimize keeps the rows and the history; vacuum keeps young files."""

from __future__ import annotations

import pytest

from pipelines import schema as S
from pipelines.curate import curate
from pipelines.lake import Lake
from pipelines.maintain import main, optimize, vacuum
from pipelines.sql import run_query

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


def test_vacuum_lists_but_keeps_files_within_retention(lake: Lake, capsys: pytest.CaptureFixture) -> None:
    curate(["shp"], lake, SAMPLES, progress=False)
    curate(["helpsteer"], lake, SAMPLES, progress=False)
    optimize(lake, [S.PAIRS])
    assert vacuum(lake, [S.PAIRS]) == {S.PAIRS: []}  # replaced files are younger than 7 days: kept
    with pytest.raises(Exception, match="(?i)retention"):
        vacuum(lake, [S.PAIRS], retention_hours=0, apply=True)  # the retention check stays on
    assert main(["vacuum", "--lake", lake.uri]) == 0
    assert "dry run" in capsys.readouterr().out
