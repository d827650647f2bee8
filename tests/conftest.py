"""Shared test fixtures: a fresh lake per test, the bundled samples, and ../shared when it is there."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefhouse.pipelines.core.lake import Lake

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
SHARED_SOURCES = REPO.parent / "shared" / "sources"


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def curated_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """One curation of every bundled sample, shared by read-only tests."""
    from prefhouse.pipelines.curate import curate
    from prefhouse.pipelines.sources.settings import resolve_sources

    lake = Lake(str(tmp_path_factory.mktemp("curated") / "lake"))
    curate(resolve_sources("all"), lake, SAMPLES, progress=False)
    return lake


@pytest.fixture
def shared_sources() -> Path:
    if not SHARED_SOURCES.is_dir():
        pytest.skip(f"../shared/sources not found at {SHARED_SOURCES}: real sample rows unavailable")
    return SHARED_SOURCES


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny randomly initialised Llama with SmolLM2's real tokenizer (read from the embedded GGUF)."""
    pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[dev]')")
    from prefhouse.training.models import load_gguf_tokenizer

    from .helpers import tiny_llama

    try:
        tokenizer = load_gguf_tokenizer()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    assert tokenizer.pad_token_id != tokenizer.eos_token_id  # the GGUF ships pad = EOS; we replace it
    return str(tiny_llama(tmp_path_factory.mktemp("tiny-llama"), tokenizer))
