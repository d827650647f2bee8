"""Lineage: every training run becomes a ``models`` row and one ``training_pairs`` row per pair it read.

So a user can ask in SQL "which pairs trained this model" (``sql/model_pairs.sql``) and "which models
used this pair" (``sql/pair_models.sql``), down to the table versions and selection of the snapshot.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake, staging
from prefhouse.pipelines.core.runlog import code_version, package_versions
from prefhouse.training.snapshot import Snapshot


def register_model(
    lake: Lake,
    model_id: str,
    job_kind: str,
    base_model: str,
    snapshot: Snapshot,
    hyperparameters: dict,
    metrics: dict,
    output_path: str,
    status: str,
    run_id: str,
    reference_model: str | None = None,
    quality: dict | None = None,
    unused: set[str] | frozenset[str] = frozenset(),
    log_history: list[dict] | None = None,
) -> dict[str, int]:
    """Append the model row, its pair lineage and its training curves (one commit per table, models last); return versions.

    ``log_history``: the Trainer's ``state.log_history``, every numeric value of every logged step, kept as
    ``training_logs`` rows so the report can plot any run's curves long after its process is gone.

    ``unused``: train pairs of the snapshot the trainer dropped (TRL drops those longer than max_length);
    their lineage rows say ``train_unused`` so "which pairs trained this model" stays exact.
    """
    dumps = lambda v: json.dumps(v, sort_keys=True, default=str)  # noqa: E731
    row = {
        "model_id": model_id, "job_kind": job_kind, "base_model": base_model, "reference_model": reference_model,
        "snapshot_hash": snapshot.snapshot_hash, "snapshot": dumps(snapshot.describe()),
        "train_pairs": snapshot.train.num_rows, "eval_pairs": snapshot.eval.num_rows,
        "hyperparameters": dumps(hyperparameters), "metrics": dumps(metrics), "quality": dumps(quality or {}),
        "code_version": code_version(), "packages": dumps(package_versions()), "output_path": output_path,
        "status": status, "run_id": run_id, "created_at": datetime.now(UTC),
    }
    lineage = pa.concat_tables([
        pa.table({"model_id": [model_id] * part.num_rows, "pair_id": part.column("pair_id"),
                  "split": [f"{split}_unused" if p in unused else split for p in part.column("pair_id").to_pylist()],
                  "snapshot_hash": [snapshot.snapshot_hash] * part.num_rows}, schema=S.TRAINING_PAIR_SCHEMA)
        for split, part in (("train", snapshot.train), ("eval", snapshot.eval))
    ])
    with staging(lake) as stage:
        stage.add(S.TRAINING_PAIRS, lineage, S.TRAINING_PAIR_SCHEMA)
        curves = training_log_rows(model_id, job_kind, log_history or [])
        if curves.num_rows:
            stage.add(S.TRAINING_LOGS, curves, S.TRAINING_LOG_SCHEMA)
        stage.add(S.MODELS, pa.Table.from_pylist([row], schema=S.MODEL_SCHEMA), S.MODEL_SCHEMA)
        return stage.commit({"prefhouse.model_id": model_id})


def training_log_rows(model_id: str, job_kind: str, log_history: list[dict]) -> pa.Table:
    """One row per (logged step, numeric metric) of a Trainer's ``log_history``."""
    rows = [
        {"model_id": model_id, "job_kind": job_kind, "step": int(entry.get("step", i)), "epoch": entry.get("epoch"), "metric": key, "value": float(value)}
        for i, entry in enumerate(log_history)
        for key, value in entry.items()
        if key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    return pa.Table.from_pylist(rows, schema=S.TRAINING_LOG_SCHEMA)
