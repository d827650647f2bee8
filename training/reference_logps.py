"""Reference log-probabilities stored in the lake: computed once per (pair, reference model, encoding), reused.

DPO's loss needs log π_ref(chosen | x) and log π_ref(rejected | x) for every pair. TRL can precompute them
once per run; we keep them in the ``reference_logps`` table, keyed by pair id, the reference model's id
and an encoding key (chat template, max length, truncation mode: what else changes the numbers), so the
paper's setting (π0 fixed as reference, all historical pairs) computes each pair's numbers once for all
epochs and all later iterations. :class:`LakeDPOTrainer` reads them from the lake and only runs the
reference model on the pairs that have none, then appends those.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.dataset as pads
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from trl import DPOTrainer


def encoding_key(tokenizer, max_length: int | None, truncation_mode: str, precision: str = "fp32") -> str:
    """What makes two reference log-probs of a pair the same number: the encoding, and the precision they were computed in
    (fp32 values must not be reused by a bf16 run, nor the other way)."""
    spec = {"template": tokenizer.chat_template, "vocab": len(tokenizer), "eos": tokenizer.eos_token, "max_length": max_length,
            "truncation_mode": truncation_mode, "precision": precision}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


class ReferenceStore:
    """Lookup and append of one reference model's log-probs under one encoding."""

    def __init__(self, lake: Lake, reference_model_id: str, encoding: str, run_id: str):
        self.lake, self.reference_model_id, self.encoding, self.run_id = lake, reference_model_id, encoding, run_id
        self.reused = self.computed = 0

    def lookup(self, pair_ids: list[str]) -> dict[str, tuple[float, float]]:
        if not self.lake.exists(S.REFERENCE_LOGPS) or not pair_ids:
            return {}
        wanted = (pads.field("reference_model_id") == self.reference_model_id) & (pads.field("encoding_key") == self.encoding) \
            & pads.field("pair_id").isin(pa.array(sorted(set(pair_ids)), pa.string()))
        rows = self.lake.read(S.REFERENCE_LOGPS, columns=["pair_id", "chosen_logp", "rejected_logp"], filter=wanted)
        return {p: (c, r) for p, c, r in zip(*(rows.column(n).to_pylist() for n in rows.column_names), strict=True)}

    def missing(self, pair_ids: list[str]) -> list[str]:
        known = self.lookup(pair_ids)
        return [p for p in pair_ids if p not in known]

    def append(self, values: dict[str, tuple[float, float]]) -> None:
        if not values:
            return
        now = datetime.now(UTC)
        rows = pa.Table.from_pylist([
            {"pair_id": p, "reference_model_id": self.reference_model_id, "encoding_key": self.encoding, "chosen_logp": c,
             "rejected_logp": r, "run_id": self.run_id, "created_at": now} for p, (c, r) in values.items()
        ], schema=S.REFERENCE_LOGP_SCHEMA)
        self.lake.create(S.REFERENCE_LOGPS, S.REFERENCE_LOGP_SCHEMA)
        self.lake.append(S.REFERENCE_LOGPS, rows)


class LakeDPOTrainer(DPOTrainer):
    """TRL's DPOTrainer whose precomputed reference log-probs come from (and go to) a :class:`ReferenceStore`.

    Needs ``precompute_ref_log_probs=True`` and a ``pair_id`` column in the datasets (TRL keeps extra columns
    through its tokenisation and drops them before the model sees a batch).
    """

    def __init__(self, *args, reference_store: ReferenceStore, **kwargs):
        self.reference_store = reference_store
        super().__init__(*args, **kwargs)
        self.ref_model = None  # every reference number is in the datasets now; free the model

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        ids = dataset["pair_id"]
        store = self.reference_store
        known = store.lookup(ids)
        missing = [i for i, p in enumerate(ids) if p not in known]
        if missing:
            computed = super()._precompute_ref_logps(dataset.select(missing), name, batch_size)
            fresh = {p: (float(c), float(r)) for p, c, r in zip(computed["pair_id"], computed["ref_chosen_logps"], computed["ref_rejected_logps"], strict=True)}
            if self.accelerator.is_main_process:
                store.append(fresh)
            known.update(fresh)
            store.computed += len(fresh)
        store.reused += len(ids) - len(missing)
        return dataset.add_column("ref_chosen_logps", [known[p][0] for p in ids]).add_column("ref_rejected_logps", [known[p][1] for p in ids])
