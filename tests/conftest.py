"""Shared test fixtures: a fresh lake per test, the bundled samples, and ../shared when it is there.

The suite runs on two pytest-xdist workers (pyproject's addopts): the session's read-only fixtures are built once
for both (:func:`built_once`), and the Ray tests share one worker (``xdist_group``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prefhouse.pipelines.core.lake import Lake

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
SHARED_SOURCES = REPO.parent / "shared" / "sources"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The ``heavy`` tests first: the two workers then end on short tests together, not one on a long test alone."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``build`` filled, once per test session: under pytest-xdist the workers share it, the first one builds
    it while the others wait (pytest-xdist's documented recipe). Only for fixtures no test writes to."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    from filelock import FileLock

    folder = tmp_path_factory.getbasetemp().parent / name  # the session's folder, above each worker's own
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder


def unwritten(lake: Lake) -> Iterator[Lake]:
    """Yields a shared lake, and fails the session's teardown if any test wrote to it (every test sees the same lake)."""
    versions = lake.versions()
    yield lake
    assert lake.versions() == versions, f"a test wrote to the shared lake {lake.uri}: copy it first (tests/helpers.py: copy_lake)"


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    return Lake(str(tmp_path / "lake"))


@pytest.fixture(scope="session")
def curated_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """One curation of every bundled sample, shared by read-only tests."""
    from prefhouse.pipelines.curate import curate
    from prefhouse.pipelines.sources.settings import resolve_sources

    folder = built_once(tmp_path_factory, "curated", lambda f: curate(resolve_sources("all"), Lake(str(f / "lake")), SAMPLES, progress=False))
    yield from unwritten(Lake(str(folder / "lake")))


@pytest.fixture(scope="session")
def ready_template(curated_lake: Lake, tiny_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lake]:
    """:func:`curated_lake` with a tiny reward model trained and registered, made once: never written, tests take copies
    (:func:`ready_lake`). The model's folder sits beside it and the copies' model rows point there."""
    from prefhouse.training.train_rm import train_reward_model

    from .helpers import copy_lake, rm_settings

    def build(folder: Path) -> None:
        train_reward_model(copy_lake(curated_lake, folder / "lake"), rm_settings(tiny_model), folder / "models", progress=False)

    yield from unwritten(Lake(str(built_once(tmp_path_factory, "ready", build) / "lake")))


@pytest.fixture
def ready_lake(ready_template: Lake, tmp_path: Path) -> Lake:
    """Curated samples and a tiny reward model registered, in a lake of the test's own."""
    from .helpers import copy_lake

    return copy_lake(ready_template, tmp_path / "lake")


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

    def build(folder: Path) -> None:
        try:
            tokenizer = load_gguf_tokenizer()
        except FileNotFoundError as exc:
            pytest.skip(str(exc))
        assert tokenizer.pad_token_id != tokenizer.eos_token_id  # the GGUF ships pad = EOS; we replace it
        tiny_llama(folder, tokenizer)

    return str(built_once(tmp_path_factory, "tiny-llama", build))
