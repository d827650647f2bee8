"""Where the iteration's generation and scoring run: in this process, or on Ray as a pool of model replicas.

A stage cuts its work into fixed shards (``generate.chunk_prompts`` prompts each) and hands them to an
executor with a *replica*: a callable that loads its model once and turns one shard (a polars frame) into
rows of the stage's table. ``local`` calls one replica in this process, shard after shard. ``ray`` streams
the shards through Ray Data (``map_batches`` over an actor pool of ``replicas`` actors, each with its
``num_gpus`` / ``num_cpus``), the standard shape of LLM batch inference on Ray: every actor loads the model
once, and each finished shard comes back to the driver, which commits it at once through the stage's guarded
writer. The driver holds one shard at a time, never the stage's output; a shard is one row of the Ray
dataset (its rows travel as Arrow IPC bytes), so Ray never splits a prompt's n responses across commits. A
lost actor is restarted and its shard retried by Ray; a killed driver leaves only whole shards, and the same
command skips them. Every row says which executor and which worker process made it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.errors import UsageError
from prefhouse.pipelines.online.settings import ExecutorSettings

Replica = Callable[[pl.DataFrame], pl.DataFrame]


def run_shards(settings: ExecutorSettings, shards: list[pl.DataFrame], make_replica: Callable[[], Replica], what: str,
               progress: bool = True) -> Iterator[pl.DataFrame]:
    """Each shard's rows, as soon as it is done (order not guaranteed under Ray), made by replicas of ``make_replica``."""
    if not shards:
        return
    if settings.executor == "local":
        replica = make_replica()
        try:
            for i, shard in enumerate(shards):
                print(f"  {what}: shard {i + 1} of {len(shards)}, {shard.height} rows (local)", file=sys.stderr, flush=True)
                yield replica(shard).with_columns(pl.lit("local").alias("executor"))
        finally:
            getattr(replica, "close", lambda: None)()
        return
    yield from _ray_shards(settings, shards, make_replica, what, progress)


def connect_ray(settings: ExecutorSettings, what: str) -> None:
    """Join (or start) the Ray cluster and check it can hold the replicas asked for, before any model is loaded."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError(f"{what}.executor = ray needs Ray: pip install -e '.[ray]'") from exc
    if not ray.is_initialized():
        ray.init(address=settings.ray_address, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    have = ray.cluster_resources()
    for resource, per_replica in (("GPU", settings.gpus_per_replica()), ("CPU", settings.num_cpus)):
        need = settings.replicas * per_replica
        if need > have.get(resource, 0.0) + 1e-9:
            raise UsageError(f"{what}.replicas = {settings.replicas} x {per_replica:g} {resource}s per replica = {need:g} {resource}s, "
                             f"but the Ray cluster has {have.get(resource, 0.0):g} (lower {what}.replicas or {what}.num_{resource.lower()}s)")


class _RayReplica:
    """One Ray Data actor: the replica, loaded once; each call turns shards (IPC bytes) into rows (IPC bytes)."""

    def __init__(self, make_replica: Callable[[], Replica]):
        self.replica = make_replica()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        out = []
        for data in batch["shard"]:
            rows = self.replica(pl.from_arrow(pa.ipc.open_stream(data).read_all())).with_columns(pl.lit("ray").alias("executor"))
            out.append(_to_ipc(rows.to_arrow()))
        return {"rows": np.array(out, dtype=object)}


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _ray_shards(settings: ExecutorSettings, shards: list[pl.DataFrame], make_replica: Callable[[], Replica], what: str,
                progress: bool) -> Iterator[pl.DataFrame]:
    import ray

    connect_ray(settings, what)
    import logging

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    logging.getLogger("ray.data").setLevel(logging.INFO if progress else logging.WARNING)
    items = [{"shard": _to_ipc(shard.to_arrow())} for shard in shards]
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        _RayReplica, fn_constructor_kwargs={"make_replica": make_replica}, batch_size=1, compute=ray.data.ActorPoolStrategy(size=settings.replicas),
        num_cpus=settings.num_cpus, num_gpus=settings.gpus_per_replica(), batch_format="numpy",
        max_restarts=3, max_task_retries=3,  # a lost actor is restarted, its shard run again
    )
    print(f"  {what}: {len(shards)} shards on {settings.replicas} Ray replica(s)", file=sys.stderr, flush=True)
    for row in dataset.iter_rows():
        yield pl.from_arrow(pa.ipc.open_stream(row["rows"]).read_all())
