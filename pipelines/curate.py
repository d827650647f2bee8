"""Curate raw preference datasets into the lake: raw rows -> adapters -> shared rules -> pairs, prompts, quarantine.

    python pipelines/curate.py --sources all [--data-dir data/samples] [--lake data/lake]

One run reads every selected source in bounded-memory batches, stages what it will append, passes it
through the quality gates (quality/), and commits each table once at the end, the run log last. Re-running on the same inputs appends nothing: every row a
table holds has a content id (raw key, pair id, copy id, quarantine id, prompt id + source) and a run only
appends ids the lake does not have. Nothing is lost silently: every raw row ends as paired, filtered (by a
named recipe rule) or quarantined (invalid, with a reason), and the counts land in ``run_counts``.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: the process is set up and a --help answered here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.process import start
    from prefhouse.pipelines.sources.settings import curate_parser

    start(curate_parser)
    from prefhouse.quality.gx_worker import worker

    worker()  # GX imports in a process of its own while this one imports the job (pipelines/cli.py: GATES_FROM_THE_START)

import functools
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.config import flag_layer
from prefhouse.pipelines.core.digests import DigestSet, digests
from prefhouse.pipelines.core.errors import run as run_job
from prefhouse.pipelines.core.ids import prompt_ids, trimmed, with_md5
from prefhouse.pipelines.core.lake import Lake, Staging, staging
from prefhouse.pipelines.core.names import DEFAULT_SAMPLES
from prefhouse.pipelines.core.runlog import RunRecord
from prefhouse.pipelines.core.schema import INVALID
from prefhouse.pipelines.core.settings import load_config, merge, parse_overrides
from prefhouse.pipelines.sources.base import REJECT_SCHEMA, Adapter, rejects
from prefhouse.pipelines.sources.reading import (
    BatchSize,
    InputReport,
    RawBatch,
    check_local,
    read_ahead,
    read_files,
    read_hub,
    regroup,
    resolve_revision,
)
from prefhouse.pipelines.sources.registry import build_adapters
from prefhouse.pipelines.sources.rules import apply_shared_rules, prompt_is_valid
from prefhouse.pipelines.sources.settings import curate_parser as build_parser
from prefhouse.pipelines.sources.settings import resolve_sources, rule_sections
from prefhouse.quality.checks import pair_facts, prompt_facts, raw_facts
from prefhouse.quality.gates import Gatekeeper, Verdict, validation_rows
from prefhouse.quality.guard import enforce_gates
from prefhouse.quality.suites import GateContext
from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")
# batches prepared at once (:func:`prepared_in_order`): polars and DuckDB work without the GIL, so two threads keep
# both cores of a 2-core machine busy where one left them ~1.4 busy; each adds about one batch's memory
PREPARE_THREADS = max(1, min(4, os.cpu_count() or 1))
MAX_SLICES = 64  # at most this many runs of kept rows are taken as slices of a table rather than filtered (:func:`_where`)
COPY_SCHEMA = pa.schema([f for f in S.PAIR_SOURCE_SCHEMA if f.name != "is_first_copy"])  # known only where batches meet


@dataclass
class SourceSummary:
    source: str
    rows_in: int = 0
    rows: Counter = field(default_factory=Counter)  # outcome -> raw rows
    row_rules: Counter = field(default_factory=Counter)  # (outcome, rule) -> raw rows
    rejects: Counter = field(default_factory=Counter)  # (level, outcome, rule) -> responses or candidate pairs rejected
    pairs_new: int = 0
    pairs_duplicate: int = 0
    prompts_new: int = 0
    raw_new: int = 0
    seconds: float = 0.0


class Ids:
    """The ids of one kind a table already holds, plus those this run staged: the basis of idempotent appends.

    Ids in the lake are kept as one Arrow-backed polars Series (about 40 bytes an id, not a Python
    object each); ids staged by the run are remembered as 16-byte digests (:class:`DigestSet`), so a run's
    memory does not grow by a Python string per pair, and only where the same id can come again in a later
    batch (pairs and prompts shared across sources). Copy, quarantine and raw ids cannot: they are unique
    within a run by construction, so only the lake is asked about them.
    """

    def __init__(self, existing: pl.Series, across_batches: bool):
        self.existing = existing
        self.staged: DigestSet | None = DigestSet() if across_batches else None

    def new(self, ids: pl.Series) -> pl.Series:
        """True for ids neither in the lake, nor staged before, nor earlier in ``ids``; remembers them."""
        fresh = ids.is_first_distinct()
        if self.existing.len():
            fresh = fresh & ~ids.is_in(self.existing.implode())
        if self.staged is not None and ids.len():
            high, low = digests(ids)
            if len(self.staged):
                fresh = fresh & pl.Series(~self.staged.contains(high, low))
            kept = fresh.to_numpy()
            self.staged.add(high[kept], low[kept])
        return fresh


@dataclass
class Seen:
    pair_ids: Ids
    copy_ids: Ids
    quarantine_ids: Ids
    prompt_keys: Ids
    raw_keys: dict[str, Ids] = field(default_factory=dict)

    @classmethod
    def load(cls, lake: Lake) -> Seen:
        column = lambda t, c: pl.from_arrow(lake.read(t, columns=[c]).column(c)).alias("id")  # noqa: E731
        prompts = pl.from_arrow(lake.read(S.PROMPTS, columns=["prompt_id", "source", "split"]))
        return cls(
            pair_ids=Ids(column(S.PAIRS, "pair_id"), across_batches=True),
            copy_ids=Ids(column(S.PAIR_SOURCES, "copy_id"), across_batches=False),
            quarantine_ids=Ids(column(S.QUARANTINE, "quarantine_id"), across_batches=False),
            prompt_keys=Ids(prompts.select(pl.col("prompt_id") + "|" + pl.col("source") + "|" + pl.col("split").fill_null("")).to_series(), across_batches=True),
        )

    def raw(self, lake: Lake, source: str) -> Ids:
        if source not in self.raw_keys:
            table = S.raw_table(source)
            keys = pl.from_arrow(lake.read(table, columns=["_raw_key"]).column("_raw_key")) if lake.exists(table) else pl.Series([], dtype=pl.String)
            self.raw_keys[source] = Ids(keys, across_batches=False)
        return self.raw_keys[source]


@dataclass
class SourceRun:
    """What every batch of one source shares: its adapter, the ids the lake holds, the staging, the gates, the run, its counts."""

    adapter: Adapter
    lake: Lake
    seen: Seen
    stage: Staging
    gates: Gatekeeper
    run: RunRecord
    summary: SourceSummary
    hub_revision: str | None = None
    batch_size: BatchSize = field(default_factory=BatchSize)  # the raw bytes of its next batch, learnt from those staged

    @functools.cached_property
    def provenance(self) -> dict[str, pl.Expr]:
        a = self.adapter
        return {
            "source": pl.lit(a.name), "hub_id": pl.lit(a.hub_id), "hub_revision": pl.lit(self.hub_revision, pl.String),
            "rule": pl.lit(a.rule), "rule_version": pl.lit(a.rule_version), "run_id": pl.lit(self.run.run_id),
            "created_at": pl.lit(self.run.started_at, pl.Datetime("us", "UTC")),
        }


@dataclass
class PreparedBatch:
    """One batch worked out without touching what the run shares: its counts, and the rows it may stage.

    Everything here depends on the batch alone and on the ids the lake held before the run, so batches are
    prepared on several threads at once (:func:`prepared_in_order`; polars and DuckDB release the GIL). What
    depends on the batches before it — which pairs and prompts are new to the run, not only to the lake — is
    left to :func:`stage_batch`, which takes the batches one by one, in input order.
    """

    rows_in: int
    row_outcomes: list[tuple[str, str, int]]  # (outcome, rule, raw rows)
    reject_counts: list[tuple[str, str, str, int]]  # (level, outcome, rule, responses or candidate pairs)
    kept: int  # candidate pairs every rule kept
    raw_bytes: int = 0  # the batch's Arrow bytes as read
    raw: pa.Table | None = None  # raw rows the lake lacks
    quarantine: pa.Table | None = None  # rejects the lake lacks
    # every kept pair as a ``pair_sources`` row (less is_first_copy), and whether it is the first of its pair id in the batch
    pair_ids: pl.Series | None = None
    copies: pa.Table | None = None
    new_copy: pl.Series | None = None  # a copy (source, raw rows, item) the lake lacks
    first_in_batch: pl.Series | None = None
    # the first of each pair id in the batch as a ``pairs`` row, and the facts the gates judge of it
    pairs: pa.Table | None = None
    pair_facts: pl.DataFrame | None = None
    prompts: pa.Table | None = None  # valid prompts, one per (prompt id, split), new to the lake or not, and their facts
    prompt_facts: pl.DataFrame | None = None

    @property
    def staged_bytes(self) -> int:
        """The Arrow bytes of every row the batch may stage."""
        return sum(t.nbytes for t in (self.raw, self.quarantine, self.copies, self.pairs, self.prompts) if t is not None)


def prepare_batch(ctx: SourceRun, batch: RawBatch) -> PreparedBatch:
    """The rows, candidates, rejects, ids and gate facts of one batch of one source, and each raw row's outcome."""
    unreadable = _unreadable_rejects(batch)
    rows_in = batch.table.num_rows + unreadable.height
    if not batch.table.num_rows:
        return PreparedBatch(rows_in, _unreadable_outcomes(unreadable), [], 0, quarantine=_quarantine(ctx, unreadable))
    raw = _with_ingest_columns(ctx, batch)
    fresh = ctx.seen.raw(ctx.lake, ctx.adapter.name).new(pl.from_arrow(batch.keys))
    rows, missing = _without_missing_values(pl.from_arrow(raw), ctx.adapter)
    cands = ctx.adapter.candidates(rows)
    kept, pair_rejects = apply_shared_rules(cands.pairs, ctx.adapter)
    all_rejects = pl.concat([unreadable, missing, cands.rejects, pair_rejects])
    row_keys = pl.concat([rows.select("_raw_key"), missing.select(pl.col("raw_keys").list.first().alias("_raw_key"))])
    prepared = PreparedBatch(
        rows_in, _unreadable_outcomes(unreadable) + _row_outcomes(row_keys, kept, all_rejects), _reject_counts(all_rejects), kept.height,
        raw_bytes=batch.table.nbytes, raw=_where(raw, fresh) if fresh.any() else None,
        quarantine=_quarantine(ctx, all_rejects),
    )
    row_prompts = cands.row_prompts()
    valid = row_prompts.filter(prompt_is_valid(row_prompts["prompt"]))
    # one pass for the prompts of the pairs and of the pool, which are mostly the same: each distinct prompt hashed once
    ids = prompt_ids(pl.concat([kept["prompt"].cast(valid["prompt"].dtype), valid["prompt"]]))
    if kept.height:
        _prepare_pairs(ctx, kept.with_columns(ids[: kept.height].alias("prompt_id")), prepared)
    if row_prompts.height:
        _prepare_prompts(ctx, valid.with_columns(ids[kept.height:].alias("prompt_id")), prepared)
    return prepared


def stage_batch(ctx: SourceRun, prepared: PreparedBatch) -> None:
    """Count a prepared batch and stage what the lake and the run's earlier batches lack; batches come in input order."""
    summary, p = ctx.summary, prepared
    ctx.batch_size.observe(p.raw_bytes, p.staged_bytes)
    summary.rows_in += p.rows_in
    for outcome, rule, c in p.row_outcomes:
        summary.rows[outcome] += c
        summary.row_rules[(outcome, rule)] += c
    for level, outcome, rule, c in p.reject_counts:
        summary.rejects[(level, outcome, rule)] += c
    summary.rejects[("pair", "kept", None)] += p.kept
    if p.raw is not None:
        table = S.raw_table(ctx.adapter.name)
        ctx.stage.add(table, p.raw, ctx.adapter.lake_schema())
        ctx.gates.observe("raw", "raw", raw_facts(pl.from_arrow(p.raw.select(["_raw_key", "_split"])), table))
        summary.raw_new += p.raw.num_rows
    if p.quarantine is not None:
        ctx.stage.add(S.QUARANTINE, p.quarantine, S.QUARANTINE_SCHEMA, ["source"])
    if p.pairs is not None:
        first_copy = ctx.seen.pair_ids.new(p.pair_ids)
        summary.pairs_new += int(first_copy.sum())
        summary.pairs_duplicate += p.pair_ids.len() - int(first_copy.sum())
        copies = p.copies.append_column("is_first_copy", first_copy.to_arrow())
        ctx.stage.add(S.PAIR_SOURCES, _where(copies, p.new_copy), S.PAIR_SOURCE_SCHEMA, ["source"])
        first_copy = first_copy.filter(p.first_in_batch)  # every first copy is the first in its batch: one per row of p.pairs
        ctx.stage.add(S.PAIRS, _where(p.pairs, first_copy), S.PAIR_SCHEMA, S.PAIR_PARTITIONS)
        ctx.gates.observe(S.PAIRS, "pairs", p.pair_facts.filter(first_copy))
    if p.prompts is not None:
        new = ctx.seen.prompt_keys.new(p.prompt_facts["prompt_in_source_split"])
        summary.prompts_new += int(new.sum())
        ctx.stage.add(S.PROMPTS, _where(p.prompts, new), S.PROMPT_SCHEMA, ["source"])
        ctx.gates.observe(S.PROMPTS, "prompts", p.prompt_facts.filter(new))


def _with_ingest_columns(ctx: SourceRun, batch: RawBatch) -> pa.Table:
    """The batch with the bronze table's ingest columns: its raw key, split, file, run and time."""
    n, now = batch.table.num_rows, ctx.run.started_at
    ingest = {
        "_raw_key": batch.keys, "_split": pa.repeat(batch.split, n), "_source_file": pa.repeat(batch.source_file, n),
        "_run_id": pa.repeat(ctx.run.run_id, n), "_ingested_at": pa.repeat(pa.scalar(now, S.TIMESTAMP), n),
    }
    raw = batch.table
    for name, values in ingest.items():
        raw = raw.append_column(name, values)
    return raw


def _row_outcomes(raw_keys: pl.DataFrame, kept: pl.DataFrame, rejects: pl.DataFrame) -> list[tuple[str, str, int]]:
    """Each raw row's one outcome: paired > the first reject naming it > filtered as ``no_comparison``."""
    paired = kept.select(pl.col("raw_keys").explode().alias("_raw_key")).unique().with_columns(pl.lit(True).alias("_paired"))
    first_reject = (
        rejects.with_row_index("_order").explode("raw_keys").rename({"raw_keys": "_raw_key"})
        .sort("_order").unique("_raw_key", keep="first", maintain_order=True).select("_raw_key", "kind", "rule")
    )
    outcome = (
        raw_keys.join(paired, on="_raw_key", how="left").join(first_reject, on="_raw_key", how="left")
        .select(
            pl.when(pl.col("_paired")).then(pl.lit("paired"))
            .when(pl.col("kind") == INVALID).then(pl.lit("quarantined"))
            .otherwise(pl.lit("filtered")).alias("outcome"),
            pl.when(pl.col("_paired")).then(pl.lit(None, pl.String)).otherwise(pl.col("rule").fill_null("no_comparison")).alias("rule"),
        )
        .group_by("outcome", "rule").len()
    )
    return list(outcome.iter_rows())


def _reject_counts(rejected: pl.DataFrame) -> list[tuple[str, str, str, int]]:
    """The responses and candidate pairs among the rejects, per rule (whole rows are counted by their outcome)."""
    by_rule = rejected.filter(pl.col("level") != "row").group_by("level", "kind", "rule").len()
    return [(level, "quarantined" if kind == INVALID else "filtered", rule, c) for level, kind, rule, c in by_rule.iter_rows()]


def _arrow(rows: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """The schema's columns of ``rows`` in Arrow: only those are converted (the others can hold most of the text)."""
    return rows.select(schema.names).to_arrow().cast(schema)


def _where(rows: pa.Table, keep: pl.Series) -> pa.Table:
    """The rows ``keep`` marks, copied as little as can be.

    All of them, not copied, when it marks every one (a first run). When it drops only a few rows (in a first run, the
    pairs an earlier batch staged: ~6 of each 30,000-pair batch of the 100K benchmark), its runs of kept rows as slices
    of the table, which share its buffers: Arrow's filter copies every value it keeps, texts and message lists, on the
    one thread that stages (0.02-0.2 s a batch, 1.1 s over that benchmark's). Otherwise, the filter.
    """
    keep = keep.fill_null(False)
    if keep.all():
        return rows
    edges = np.flatnonzero(np.diff(keep.to_numpy().astype(np.int8), prepend=0, append=0))
    starts, ends = edges[0::2], edges[1::2]
    if len(starts) > MAX_SLICES:
        return rows.filter(keep.to_arrow())
    return pa.concat_tables([rows.slice(start, end - start) for start, end in zip(starts, ends)]) if len(starts) else rows.slice(0, 0)


def _prepare_pairs(ctx: SourceRun, kept: pl.DataFrame, prepared: PreparedBatch) -> None:
    """Ids, provenance and gate facts of the kept pairs (with their ``prompt_id``), and which copies the lake lacks."""
    kept = with_md5(kept, "pair_id", pl.col("prompt_id"), trimmed(pl.col("chosen_reply")), trimmed(pl.col("rejected_reply")))
    kept = with_md5(
        kept, "copy_id", pl.col("pair_id"), pl.lit(ctx.adapter.name), pl.col("split"), pl.col("raw_keys").list.join(","), pl.col("item").fill_null("")
    )
    score_kind = ctx.adapter.score_kind if kept["chosen_score"].is_not_null().any() else None
    pairs = kept.with_columns(
        **ctx.provenance, score_kind=pl.lit(score_kind, pl.String), origin=pl.lit("offline"), iteration=pl.lit(0, pl.Int32),
        reward_model_id=pl.lit(None, pl.String), policy_model_id=pl.lit(None, pl.String),
    )
    prepared.pair_ids = pairs["pair_id"]
    prepared.copies = _arrow(pairs, COPY_SCHEMA)
    prepared.new_copy = ctx.seen.copy_ids.new(kept["copy_id"])
    # a pair twice in one batch (5% of the benchmark's HH-RLHF and UltraFeedback pairs) is dropped here, on the
    # preparing thread, so that the run's thread filters the texts of ``pairs`` only for a pair an earlier batch staged
    prepared.first_in_batch = pairs["pair_id"].is_first_distinct()
    pairs = pairs.filter(prepared.first_in_batch)
    prepared.pairs = _arrow(pairs, S.PAIR_SCHEMA)
    prepared.pair_facts = pair_facts(pairs)


def _prepare_prompts(ctx: SourceRun, prompts: pl.DataFrame, prepared: PreparedBatch) -> None:
    """One ``prompts`` row per valid (prompt, split) of the batch, from every row the adapter parsed (with its ``prompt_id``).

    The pool is every valid prompt, not only those of kept pairs: a prompt whose pairs a recipe rule
    dropped (a low Orca rating, a tie) is still a prompt the online iterations may draw.
    """
    prompts = prompts.unique(["prompt_id", "split"], keep="first", maintain_order=True)
    prompts = prompts.select(
        "prompt_id", ctx.provenance["source"].alias("source"), "split", "raw_key", "prompt",
        pl.col("prompt").list.eval(pl.element().filter(pl.element().struct.field("role") == "user")).list.last().struct.field("content").alias("prompt_text"),
        pl.col("prompt").list.len().cast(pl.Int32).alias("n_turns"),
        ctx.provenance["run_id"].alias("run_id"), ctx.provenance["created_at"].alias("created_at"),
    )
    prepared.prompts = _arrow(prompts, S.PROMPT_SCHEMA)
    prepared.prompt_facts = prompt_facts(prompts)


def _unreadable_outcomes(unreadable: pl.DataFrame) -> list[tuple[str, str, int]]:
    """Records that never became rows are quarantined, by the rule that says why."""
    return [("quarantined", rule, c) for rule, c in unreadable.group_by("rule", maintain_order=True).len().iter_rows()]


def _quarantine(ctx: SourceRun, rejected: pl.DataFrame) -> pa.Table | None:
    """The batch's rejects the lake lacks, with their ids and provenance, for ``quarantine`` (None: the batch has none)."""
    if not rejected.height:
        return None
    q = with_md5(
        rejected.with_columns(**{k: ctx.provenance[k] for k in ("source", "rule_version", "run_id", "created_at")}),
        "quarantine_id", pl.col("source"), pl.col("split"), pl.col("raw_keys").list.join(","),
        pl.col("item").fill_null(""), pl.col("level"), pl.col("rule"),
    )
    return _arrow(q.filter(ctx.seen.quarantine_ids.new(q["quarantine_id"])), S.QUARANTINE_SCHEMA)


def _unreadable_rejects(batch: RawBatch) -> pl.DataFrame:
    """Records of the batch's file that did not fit the raw schema, as row rejects (quarantined, never raw rows)."""
    if batch.rejects is None or not batch.rejects.height:
        return pl.DataFrame(schema=REJECT_SCHEMA)
    return batch.rejects.select(
        pl.concat_list(pl.lit(batch.split + "#") + pl.col("index").cast(pl.String)).alias("raw_keys"), pl.lit(batch.split).alias("split"),
        pl.lit(None, pl.String).alias("item"), pl.lit("row").alias("level"), pl.lit(INVALID).alias("kind"), "rule", "reason",
    )


def _without_missing_values(rows: pl.DataFrame, adapter: Adapter) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Rows with a value in every column the adapter needs, and row rejects (``raw.missing_value``) for the others.

    A JSON record that lacks a key and one that holds null are the same to Arrow and to ``datasets``: no
    value. Either one is quarantined here, naming the column, before the adapter could misread it.
    """
    required = [c for c in adapter.raw_schema.names if c not in adapter.nullable_columns]
    if not required or not any(rows[c].null_count() for c in required):
        return rows, pl.DataFrame(schema=REJECT_SCHEMA)
    first_missing = pl.coalesce([pl.when(pl.col(c).is_null()).then(pl.lit(c)) for c in required])
    flagged = rows.with_columns(first_missing.alias("_missing"))
    bad = flagged.filter(pl.col("_missing").is_not_null())
    rejected = rejects(bad, "row", INVALID, "raw.missing_value", pl.format("column '{}' is absent or null", pl.col("_missing")))
    return flagged.filter(pl.col("_missing").is_null()).drop("_missing"), rejected


def iter_batches(adapter: Adapter, data_dir: Path | None, files: list[Path] | None, report: InputReport, revision: str | None,
                 batch_size: BatchSize):
    """The source's raw batches: from its checked local ``files`` under ``data_dir``, or from the hub (at ``revision``) when ``files`` is None;
    each of the Arrow bytes ``batch_size`` says when it is read."""
    if files is None:
        batches = read_hub(adapter.name, adapter.hub_id, revision, adapter.hub_data_dirs, adapter.raw_schema, report, batch_bytes=batch_size)
    else:
        assert data_dir is not None
        batches = read_files(adapter.name, data_dir / adapter.name, files, adapter.raw_schema, batch_size)
    return regroup(batches, adapter.group_column, adapter.name) if adapter.group_column else batches


def curate(
    sources: list[str],
    lake: Lake,
    data_dir: Path | None = DEFAULT_SAMPLES,
    hub: bool = False,
    config: dict | None = None,
    args: dict | None = None,
    progress: bool = True,
) -> tuple[RunRecord, list[SourceSummary]]:
    """Curate ``sources`` into ``lake``; return the run record and a summary per source."""
    adapters = build_adapters(sources, config or {})  # bad settings fail here, before any work
    with lake.lock("curate"):
        for table, (tschema, parts) in S.CORE_TABLES.items():
            lake.create(table, tschema, parts)
        run = RunRecord("curate", args or {"sources": sources, "data_dir": str(data_dir), "hub": hub})
        run.settings = {a.name: {"rule": a.rule, "rule_version": a.rule_version, **a.settings_dict()} for a in adapters}
        run.versions_before = lake.versions(list(S.CORE_TABLES) + [S.raw_table(a.name) for a in adapters])
        gates = Gatekeeper(GateContext(iterations=(0,), sources=tuple(a.name for a in adapters)), run.run_id)
        verdicts: list[Verdict] = []
        try:
            reports = {a.name: InputReport() for a in adapters}
            files: dict[str, list[Path] | None] = {a.name: None for a in adapters}
            if not hub:  # fail fast: every file of every source is checked before any row is processed
                for a in adapters:
                    files[a.name] = check_local(a.name, data_dir / a.name, a.raw_schema, reports[a.name])
            seen = Seen.load(lake)
            with staging(lake) as stage:
                # from the hub: the commit each revision names now, loaded and recorded as each pair's hub_revision
                contexts = [
                    SourceRun(a, lake, seen, stage, gates, run, SourceSummary(a.name), resolve_revision(a.hub_id, a.hub_revision) if hub else a.hub_revision)
                    for a in adapters
                ]
                _curate_batches(contexts, data_dir, files, reports, progress)
                summaries = [ctx.summary for ctx in contexts]
                for ctx in contexts:
                    report = reports[ctx.adapter.name]
                    run.inputs[ctx.adapter.name] = {"files": report.files, "ignored_columns": report.ignored_columns, "skipped": report.skipped,
                                                    "hub_revision": ctx.hub_revision}
                    run.timings[ctx.adapter.name] = round(ctx.summary.seconds, 3)
                t0 = time.perf_counter()
                drops = enforce_gates(gates, stage, run, verdicts, lake)
                _reaccount_gate_drops(drops.copies, stage, lake, summaries)
                for summary in summaries:
                    _record_counts(run, summary)
                run.timings["quality_gates"] = round(time.perf_counter() - t0, 3)
                t0 = time.perf_counter()
                # pairs last: a re-run decides which copies come first, and which gate rejects are new, from the pairs
                # the lake holds, so every table derived from that is committed before it (Staging.commit)
                committed = stage.commit({"prefhouse.run_id": run.run_id}, last=(S.PAIRS,))
                run.timings["commit"] = round(time.perf_counter() - t0, 3)
            run.rows_in = sum(s.rows_in for s in summaries)
            run.rows_out = sum(s.pairs_new for s in summaries) - drops.pairs
            run.versions_after = {**run.versions_before, **committed}
            if verdicts:
                lake.append(S.VALIDATIONS, validation_rows(verdicts, committed))
            run.write(lake, "succeeded")
        except BaseException as exc:
            if verdicts:  # what the gates found is kept even when the commit they guard was refused
                lake.append(S.VALIDATIONS, validation_rows(verdicts, {}))
            run.write(lake, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
    return run, summaries


def _curate_batches(contexts: list[SourceRun], data_dir: Path | None, files: dict[str, list[Path] | None],
                    reports: dict[str, InputReport], progress: bool) -> None:
    """Every batch of every source, prepared :data:`PREPARE_THREADS` at a time and staged in input order.

    A source's seconds are the wall time from the batch staged before its batch to that batch staged: the
    sources' seconds add up to the loop's.
    """

    def batches() -> Iterator[tuple[SourceRun, RawBatch]]:
        for ctx in contexts:
            a = ctx.adapter
            ctx.provenance, ctx.seen.raw(ctx.lake, a.name)  # what the preparing threads read, made before they start
            for batch in read_ahead(iter_batches(a, data_dir, files[a.name], reports[a.name], ctx.hub_revision, ctx.batch_size)):
                yield ctx, batch

    with tqdm(desc="curate", unit=" rows", disable=not progress, leave=False) as bar:
        last = time.perf_counter()
        for ctx, prepared in prepared_in_order(lambda item: (item[0], prepare_batch(*item)), batches(), PREPARE_THREADS):
            stage_batch(ctx, prepared)
            now = time.perf_counter()
            ctx.summary.seconds += now - last
            last = now
            bar.set_description(f"curate {ctx.adapter.name}", refresh=False)
            bar.update(prepared.rows_in)


def prepared_in_order(prepare: Callable[[T], R], items: Iterator[T], threads: int) -> Iterator[R]:
    """``prepare(item)`` for each item, run on ``threads`` threads, yielded in the items' order.

    At most ``threads`` items are being prepared while the caller works on the one before, so memory holds that
    many batches more; an error preparing one is raised where its result is asked for, and the items not yet
    started are then dropped.
    """
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="prefhouse-prepare")
    coming: deque[Future[R]] = deque()
    try:
        for item in items:
            coming.append(pool.submit(prepare, item))
            if len(coming) > threads:
                yield coming.popleft().result()
        while coming:
            yield coming.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _reaccount_gate_drops(copies: pl.DataFrame, stage: Staging, lake: Lake, summaries: list[SourceSummary]) -> None:
    """Raw rows whose every pair a quality gate dropped are quarantined (rule ``gx.<gate>``), no longer paired.

    A row stays paired when any other pair of it survived: one still staged, or one an earlier run committed.
    """
    if not copies.height:
        return
    candidates = copies.explode("raw_keys").rename({"raw_keys": "raw_key"}).unique(["source", "raw_key"], keep="first", maintain_order=True)
    keys = candidates["raw_key"].unique()
    surviving = [pl.from_arrow(t).explode("raw_keys") for t in (stage.read_staged(S.PAIR_SOURCES, ["source", "raw_keys"]),) if t is not None]
    if lake.exists(S.PAIR_SOURCES):
        committed = lake.read(S.PAIR_SOURCES, columns=["source", "raw_keys"], filter=pads.field("source").isin(candidates["source"].unique().to_list()))
        surviving.append(pl.from_arrow(committed).explode("raw_keys"))
    still = pl.concat(surviving).filter(pl.col("raw_keys").is_in(keys.implode())).rename({"raw_keys": "raw_key"}) if surviving else None
    moved = candidates if still is None else candidates.join(still.unique(), on=["source", "raw_key"], how="anti")
    by_source = {s.source: s for s in summaries}
    for source, gate, n in moved.group_by("source", "gate").len().iter_rows():
        summary = by_source[source]
        summary.rows["paired"] -= n
        summary.row_rules[("paired", None)] -= n
        summary.rows["quarantined"] += n
        summary.row_rules[("quarantined", f"gx.{gate}")] += n


def _record_counts(run: RunRecord, s: SourceSummary) -> None:
    run.count(s.source, "row", "in", None, s.rows_in)
    for (outcome, rule), n in sorted(s.row_rules.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        run.count(s.source, "row", outcome, rule, n)
    for (level, outcome, rule), n in sorted(s.rejects.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        run.count(s.source, level, outcome, rule, n)
    run.count(s.source, "pair", "new", None, s.pairs_new)
    run.count(s.source, "pair", "duplicate", None, s.pairs_duplicate)


def format_summary(summaries: list[SourceSummary]) -> str:
    header = f"{'source':40} {'rows in':>9} {'paired':>8} {'filtered':>9} {'quarant.':>9} {'new pairs':>10} {'dup pairs':>10} {'sec':>7}"
    lines = [header, "-" * len(header)]
    for s in summaries:
        lines.append(
            f"{s.source:40} {s.rows_in:9d} {s.rows['paired']:8d} {s.rows['filtered']:9d} {s.rows['quarantined']:9d} "
            f"{s.pairs_new:10d} {s.pairs_duplicate:10d} {s.seconds:7.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Exit codes as every job's (:mod:`prefhouse.pipelines.core.errors`): 0 committed, 1 a gate refused, 2 bad settings, input or lake."""
    return run_job(_curate_command, argv)


def _curate_command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    sources = resolve_sources(args.sources)
    config = merge(load_config(args.config), parse_overrides(args.overrides), flag_layer(args, rule_sections()))
    lake = Lake(args.lake)
    run, summaries = curate(
        sources, lake, None if args.hub else args.data_dir, args.hub, config,
        args={k: str(v) for k, v in vars(args).items()}, progress=not (args.no_progress or args.quiet),
    )
    if not args.quiet:
        from prefhouse.pipelines.core.sql import format_table, run_query

        for name, inputs in run.inputs.items():
            for path, why in inputs.get("skipped", {}).items():
                print(f"note: {name}: skipped {path} ({why})")
        print(f"run {run.run_id}: {run.rows_in} raw rows, {run.rows_out} new pairs, lake {lake.uri}")
        print(format_summary(summaries))
        print("\nAll curated pairs in the lake, per source (python -m pipelines.sql table1):")
        print(format_table(run_query(lake, "table1")))
    return 0


if __name__ == "__main__":
    from prefhouse.pipelines.core.process import finish

    finish(main())
