"""Snapshots: the exact pairs a training job reads, as pinned table versions plus a selection.

A snapshot is resolved, never stored as a copy: table versions (every table as of one point) and a
:class:`Selection` (a named mixture or explicit sources, per-source caps or fractions, Tulu 2.5's
size-matched sub-sampling, which iterations, an optional SQL filter, and a held-out split by prompt).
Resolving the same snapshot twice gives the same rows in the same order: every random choice is an md5
of the seed and an id, computed in SQL, so it is independent of threads, batches and library versions.
Its ``snapshot_hash`` names it in the run log and on every model trained from it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake, LakeError
from prefhouse.pipelines.core.sql import connect, reads_only, sql_literal
from prefhouse.training.settings import Selection


@dataclass
class Snapshot:
    versions: dict[str, int]
    selection: Selection
    train: pa.Table  # pair_id, prompt_id, source, iteration, ... in a fixed order
    eval: pa.Table

    @functools.cached_property
    def snapshot_hash(self) -> str:
        """A name for what the snapshot holds: the selection and its train and eval pair ids, in order.

        Two resolutions with the same rows share it even at different table versions (an offline selection
        read again after online iterations appended pairs), so a job re-run on the same data finds its model;
        the versions it was read at are recorded beside it (``describe``).
        """
        digest = hashlib.sha256(json.dumps(asdict(self.selection), sort_keys=True, default=str).encode())
        for part in (self.train, self.eval):
            digest.update(b"\x00" + "\n".join(part.column("pair_id").to_pylist()).encode())
        return digest.hexdigest()[:16]

    def describe(self) -> dict:
        return {"snapshot_hash": self.snapshot_hash, "versions": self.versions, "selection": asdict(self.selection),
                "train_pairs": self.train.num_rows, "eval_pairs": self.eval.num_rows}



def _quote(values: list[str]) -> str:
    return ", ".join(sql_literal(v) for v in values)


def selection_sql(sel: Selection, columns: str) -> str:
    """The DuckDB query that resolves a selection over the registered (pinned) ``pairs`` view."""
    offline = sel.offline_sources()
    parts = [f"(iteration = 0 AND source IN ({_quote(offline) if offline else 'NULL'}))"]
    if sel.iterations == "all":
        parts.append(f"(iteration BETWEEN 1 AND {int(sel.max_iteration)})")
    elif sel.iterations == "latest":
        parts = [f"(iteration = {int(sel.max_iteration)} AND iteration > 0)"]
    where = "(" + " OR ".join(parts) + ")" + (f" AND ({sel.where})" if sel.where else "")
    if sel.splits != "all":
        is_eval = f"regexp_matches(coalesce(split, ''), '{S.EVAL_SPLIT}')"
        where += f" AND {'NOT ' if sel.splits == 'train' else ''}{is_eval}"
    seed = int(sel.seed)
    limits = []
    for source, cap in sel.caps.items():
        limits.append(f"(source = '{source}' AND rank > {int(cap)})")
    for source, fraction in sel.fractions.items():
        limits.append(f"(source = '{source}' AND rank > ceil({float(fraction)} * n_source))")
    if sel.size_matched:
        limits.append(f"(iteration = 0 AND rank > {int(sel.size_matched)})")  # size-matching is of the offline datasets
    dropped = " OR ".join(limits) or "false"
    return f"""
        WITH chosen AS (
            SELECT {columns},
                   md5('{seed}|' || pair_id) AS order_key,
                   (('0x' || left(md5('{seed}|eval|' || prompt_id), 8))::BIGINT % 1000000) / 1e6 AS prompt_draw
            FROM pairs WHERE {where}),
        ranked AS (
            SELECT *, row_number() OVER (PARTITION BY source ORDER BY order_key) AS rank, count(*) OVER (PARTITION BY source) AS n_source
            FROM chosen)
        SELECT * EXCLUDE (rank, n_source, order_key), prompt_draw < {float(sel.eval_fraction)} AS is_eval
        FROM ranked WHERE NOT ({dropped})
        ORDER BY order_key"""


def resolve(lake: Lake, selection: Selection, versions: dict[str, int] | None = None,
            columns: str = "pair_id, prompt_id, source, iteration") -> Snapshot:
    """Resolve ``selection`` at ``versions`` (default: the latest ``pairs``, the one table it reads) into train and eval rows.

    Only the tables a snapshot reads are pinned, so writes elsewhere (runs, models, stored reference
    log-probs) leave its hash unchanged and a re-run job recognises its own earlier snapshot.
    """
    if versions is None:
        if not lake.exists(S.PAIRS):
            raise LakeError(f"no pairs table in {lake.uri}: run curation first")
        versions = lake.versions([S.PAIRS])
    spec = ",".join(f"{t}={v}" for t, v in sorted(versions.items()))
    sql = selection_sql(selection, columns)
    con, pinned = connect(lake, as_of=spec or None, direct=reads_only(sql))  # the selection's `where` is configured text
    try:
        rows = con.sql(sql).to_arrow_table()
    finally:
        con.close()
    is_eval = rows.column("is_eval")
    return Snapshot({t: pinned[t] for t in versions if t in pinned}, selection,
                    rows.filter(pc.invert(is_eval)).drop_columns(["is_eval", "prompt_draw"]),
                    rows.filter(is_eval).drop_columns(["is_eval", "prompt_draw"]))
