"""Curate raw preference datasets into the lake: raw rows -> adapters -> shared rules -> pairs, prompts, quarantine.

    python pipelines/curate.py --sources all [--data-dir data/samples] [--lake data/lake]

One run reads every selected source in bounded-memory batches, stages what it will append, passes it
through the quality gates (quality/), and commits each table once at the end, the run log last. Re-running on the same inputs appends nothing: every row a
table holds has a content id (raw key, pair id, copy id, quarantine id, prompt id + source) and a run only
appends ids the lake does not have. Nothing is lost silently: every raw row ends as paired, filtered (by a
named recipe rule) or quarantined (invalid, with a reason), and the counts land in ``run_counts``.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: a --help answers here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.config import answer_help
    from prefhouse.pipelines.sources.settings import curate_parser

    answer_help(curate_parser)

import functools
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

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

    @functools.cached_property
    def provenance(self) -> dict[str, pl.Expr]:
        a = self.adapter
        return {
            "source": pl.lit(a.name), "hub_id": pl.lit(a.hub_id), "hub_revision": pl.lit(self.hub_revision, pl.String),
            "rule": pl.lit(a.rule), "rule_version": pl.lit(a.rule_version), "run_id": pl.lit(self.run.run_id),
            "created_at": pl.lit(self.run.started_at, pl.Datetime("us", "UTC")),
        }


def process_batch(ctx: SourceRun, batch: RawBatch) -> None:
    """One batch of one source: stage new raw rows, pairs, copies, prompts and rejects; count every row."""
    unreadable = _unreadable_rejects(batch)
    ctx.summary.rows_in += batch.table.num_rows + unreadable.height
    for rule, c in unreadable.group_by("rule").len().iter_rows():  # records that never became rows: quarantined
        ctx.summary.rows["quarantined"] += c
        ctx.summary.row_rules[("quarantined", rule)] += c
    if not batch.table.num_rows:
        _stage_rejects(ctx, unreadable)
        return
    rows, missing = _without_missing_values(pl.from_arrow(_stage_raw(ctx, batch)), ctx.adapter)
    cands = ctx.adapter.candidates(rows)
    kept, pair_rejects = apply_shared_rules(cands.pairs, ctx.adapter)
    all_rejects = pl.concat([missing, cands.rejects, pair_rejects])
    _count_rows(ctx.summary, pl.concat([rows.select("_raw_key"), missing.select(pl.col("raw_keys").list.first().alias("_raw_key"))]),
                kept, all_rejects)
    _stage_rejects(ctx, pl.concat([unreadable, all_rejects]))
    ctx.summary.rejects[("pair", "kept", None)] += kept.height
    if kept.height:
        _stage_pairs(ctx, kept)
    _stage_prompts(ctx, cands.row_prompts())


def _stage_raw(ctx: SourceRun, batch: RawBatch) -> pa.Table:
    """The batch with its ingest columns; the rows the lake lacks are staged for the bronze table."""
    n, now = batch.table.num_rows, ctx.run.started_at
    ingest = {
        "_raw_key": batch.keys, "_split": pa.repeat(batch.split, n), "_source_file": pa.repeat(batch.source_file, n),
        "_run_id": pa.repeat(ctx.run.run_id, n), "_ingested_at": pa.repeat(pa.scalar(now, S.TIMESTAMP), n),
    }
    raw = batch.table
    for name, values in ingest.items():
        raw = raw.append_column(name, values)
    fresh = ctx.seen.raw(ctx.lake, ctx.adapter.name).new(pl.from_arrow(batch.keys))
    if fresh.any():
        new_raw = raw if fresh.all() else raw.filter(fresh.to_arrow())  # a first run: every row is new, nothing to copy
        table = S.raw_table(ctx.adapter.name)
        ctx.stage.add(table, new_raw, ctx.adapter.lake_schema())
        ctx.gates.observe("raw", "raw", raw_facts(pl.from_arrow(new_raw.select(["_raw_key", "_split"])), table))
        ctx.summary.raw_new += int(fresh.sum())
    return raw


def _count_rows(summary: SourceSummary, raw_keys: pl.DataFrame, kept: pl.DataFrame, rejects: pl.DataFrame) -> None:
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
    for o, r, c in outcome.iter_rows():
        summary.rows[o] += c
        summary.row_rules[(o, r)] += c


def _stage(ctx: SourceRun, table: str, rows: pl.DataFrame, schema: pa.Schema, partition_by: list[str]) -> None:
    """Stage the table's columns of ``rows``: only those are converted to Arrow (the others can hold most of the text)."""
    ctx.stage.add(table, rows.select(schema.names).to_arrow(), schema, partition_by)


def _stage_pairs(ctx: SourceRun, kept: pl.DataFrame) -> None:
    """Ids for the kept pairs; every new copy staged for ``pair_sources``, each pair's first copy for ``pairs``."""
    kept = kept.with_columns(prompt_ids(kept["prompt"]).alias("prompt_id"))
    kept = with_md5(kept, "pair_id", pl.col("prompt_id"), trimmed(pl.col("chosen_reply")), trimmed(pl.col("rejected_reply")))
    kept = with_md5(
        kept, "copy_id", pl.col("pair_id"), pl.lit(ctx.adapter.name), pl.col("split"), pl.col("raw_keys").list.join(","), pl.col("item").fill_null("")
    )
    first_copy = ctx.seen.pair_ids.new(kept["pair_id"])
    kept = kept.with_columns(first_copy.alias("is_first_copy"), **ctx.provenance)
    new_copies = kept.filter(ctx.seen.copy_ids.new(kept["copy_id"]))
    ctx.summary.pairs_new += int(first_copy.sum())
    ctx.summary.pairs_duplicate += kept.height - int(first_copy.sum())
    _stage(ctx, S.PAIR_SOURCES, new_copies, S.PAIR_SOURCE_SCHEMA, ["source"])
    score_kind = ctx.adapter.score_kind if kept["chosen_score"].is_not_null().any() else None
    pairs = kept.filter(pl.col("is_first_copy")).with_columns(
        pl.lit(score_kind, pl.String).alias("score_kind"), pl.lit("offline").alias("origin"), pl.lit(0, pl.Int32).alias("iteration"),
        pl.lit(None, pl.String).alias("reward_model_id"), pl.lit(None, pl.String).alias("policy_model_id"),
    )
    _stage(ctx, S.PAIRS, pairs, S.PAIR_SCHEMA, S.PAIR_PARTITIONS)
    ctx.gates.observe(S.PAIRS, "pairs", pair_facts(pairs))


def _stage_prompts(ctx: SourceRun, row_prompts: pl.DataFrame) -> None:
    """One ``prompts`` row per valid (prompt, source, split) the lake lacks, from every row the adapter parsed.

    The pool is every valid prompt, not only those of kept pairs: a prompt whose pairs a recipe rule
    dropped (a low Orca rating, a tie) is still a prompt the online iterations may draw.
    """
    if not row_prompts.height:
        return
    prompts = row_prompts.filter(prompt_is_valid(row_prompts["prompt"]))
    prompts = prompts.with_columns(prompt_ids(prompts["prompt"]).alias("prompt_id"))
    prompts = prompts.unique(["prompt_id", "split"], keep="first", maintain_order=True)
    prompts = prompts.filter(ctx.seen.prompt_keys.new(prompts["prompt_id"] + f"|{ctx.adapter.name}|" + prompts["split"]))
    prompts = prompts.select(
        "prompt_id", ctx.provenance["source"].alias("source"), "split", "raw_key", "prompt",
        pl.col("prompt").list.eval(pl.element().filter(pl.element().struct.field("role") == "user")).list.last().struct.field("content").alias("prompt_text"),
        pl.col("prompt").list.len().cast(pl.Int32).alias("n_turns"),
        ctx.provenance["run_id"].alias("run_id"), ctx.provenance["created_at"].alias("created_at"),
    )
    ctx.summary.prompts_new += prompts.height
    _stage(ctx, S.PROMPTS, prompts, S.PROMPT_SCHEMA, ["source"])
    ctx.gates.observe(S.PROMPTS, "prompts", prompt_facts(prompts))


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


def _stage_rejects(ctx: SourceRun, rejected: pl.DataFrame) -> None:
    """Quarantine a batch's rejects (the ids the lake lacks); count the responses and candidate pairs among them.

    Whole rows are counted once each, by their outcome (:func:`_count_rows`, and unreadable records in
    :func:`process_batch`).
    """
    summary = ctx.summary
    for level, kind, rule, c in rejected.filter(pl.col("level") != "row").group_by("level", "kind", "rule").len().iter_rows():
        summary.rejects[(level, "quarantined" if kind == INVALID else "filtered", rule)] += c
    if not rejected.height:
        return
    q = with_md5(
        rejected.with_columns(**{k: ctx.provenance[k] for k in ("source", "rule_version", "run_id", "created_at")}),
        "quarantine_id", pl.col("source"), pl.col("split"), pl.col("raw_keys").list.join(","),
        pl.col("item").fill_null(""), pl.col("level"), pl.col("rule"),
    )
    q = q.filter(ctx.seen.quarantine_ids.new(q["quarantine_id"]))
    _stage(ctx, S.QUARANTINE, q, S.QUARANTINE_SCHEMA, ["source"])


def iter_batches(adapter: Adapter, data_dir: Path | None, files: list[Path] | None, report: InputReport, revision: str | None = None):
    """The source's raw batches: from its checked local ``files`` under ``data_dir``, or from the hub (at ``revision``) when ``files`` is None."""
    if files is None:
        batches = read_hub(adapter.name, adapter.hub_id, revision, adapter.hub_data_dirs, adapter.raw_schema, report)
    else:
        assert data_dir is not None
        batches = read_files(adapter.name, data_dir / adapter.name, files, adapter.raw_schema)
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
        summaries: list[SourceSummary] = []
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
                for adapter in adapters:
                    t0 = time.perf_counter()
                    summary = SourceSummary(adapter.name)
                    report = reports[adapter.name]
                    # from the hub: the commit the revision names now, loaded and recorded as each pair's hub_revision
                    revision = resolve_revision(adapter.hub_id, adapter.hub_revision) if hub else adapter.hub_revision
                    bar = tqdm(desc=f"curate {adapter.name}", unit=" rows", disable=not progress, leave=False)
                    ctx = SourceRun(adapter, lake, seen, stage, gates, run, summary, revision)
                    for batch in read_ahead(iter_batches(adapter, data_dir, files[adapter.name], report, revision)):
                        process_batch(ctx, batch)
                        bar.update(batch.table.num_rows)
                    bar.close()
                    summary.seconds = time.perf_counter() - t0
                    summaries.append(summary)
                    run.inputs[adapter.name] = {"files": report.files, "ignored_columns": report.ignored_columns, "skipped": report.skipped,
                                                "hub_revision": revision}
                    run.timings[adapter.name] = round(summary.seconds, 3)
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
    sys.exit(main())
