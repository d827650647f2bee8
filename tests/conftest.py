"""Shared test fixtures: a fresh lake per test, the bundled samples, and ../shared when it is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.lake import Lake

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
SHARED_SOURCES = REPO.parent / "shared" / "sources"


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def curated_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """One curation of every bundled sample, shared by read-only tests."""
    from pipelines.curate import curate
    from pipelines.settings import resolve_sources

    lake = Lake(str(tmp_path_factory.mktemp("curated") / "lake"))
    curate(resolve_sources("all"), lake, SAMPLES, progress=False)
    return lake


@pytest.fixture
def shared_sources() -> Path:
    if not SHARED_SOURCES.is_dir():
        pytest.skip(f"../shared/sources not found at {SHARED_SOURCES}: real sample rows unavailable")
    return SHARED_SOURCES
