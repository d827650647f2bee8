"""The bundled samples of the ten sources, curated into a temporary lake: the inputs of the model benchmarks."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.curate import DEFAULT_SAMPLES, curate
from prefhouse.pipelines.sources.settings import resolve_sources


@contextmanager
def samples_lake() -> Iterator[tuple[Lake, Path]]:
    """(lake, its temporary folder), removed when the block ends."""
    with tempfile.TemporaryDirectory() as tmp:
        lake = Lake(str(Path(tmp) / "lake"))
        curate(resolve_sources("all"), lake, DEFAULT_SAMPLES, progress=False)
        yield lake, Path(tmp)
