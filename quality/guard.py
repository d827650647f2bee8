"""Writers' side of the quality gates: judge what is staged, quarantine failing rows, refuse bad batches.

Used by curation and by any writer of pairs (``append_pairs``: the online iteration's pairs, or pairs a
user brings), so that every append to the lake passes the same suites before its commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl
import pyarrow.dataset as pads
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.ids import with_md5
from prefhouse.pipelines.core.lake import Lake, Staging, staging
from prefhouse.pipelines.core.runlog import RunRecord
from prefhouse.quality.checks import eval_response_facts, eval_score_facts, pair_facts, response_facts, score_facts
from prefhouse.quality.gates import GateError, Gatekeeper, Verdict, validation_rows
from prefhouse.quality.settings import Bounds
from prefhouse.quality.suites import SUITE_VERSION, GateContext

MISSING_SOURCE = "(missing)"  # the quarantine partition of a rejected row that names no source (the source_present gate)


@dataclass
class GateDrops:
    """What the gates took out of a staging: how many pairs, and their copies (source, raw_keys, gate) for row accounting."""

    pairs: int = 0
    copies: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema={"source": pl.String, "raw_keys": pl.List(pl.String), "gate": pl.String}))


def enforce_gates(gates: Gatekeeper, stage: Staging, run: RunRecord, verdicts: list[Verdict], lake: Lake | None = None) -> GateDrops:
    """Judge every staged table; drop and quarantine rows failing row gates; raise on batch gates.

    Every table is judged before anything is raised, so the validations table records all failures of a
    refused run, not only the first. A quarantine row ``lake`` already holds (a re-run after a run that
    stopped between its commits) is not staged again.
    """
    for table in gates.tables():
        verdicts.append(gates.judge(table))
    failures = [v for v in verdicts if v.batch_failures]
    if failures:
        raise GateError(failures[0].table, [f for v in failures for f in v.batch_failures])
    drops = GateDrops()
    for verdict in verdicts:
        if not verdict.rejected.height:
            continue
        if verdict.suite == "pairs":
            ids = set(verdict.rejected["pair_id"].to_list())
            gone = pl.from_arrow(stage.drop_rows(S.PAIRS, "pair_id", ids))
            drops.pairs += gone.height
            copies = stage.drop_rows(S.PAIR_SOURCES, "pair_id", ids)
            if copies.num_rows:
                gates_by_pair = verdict.rejected.select("pair_id", "gate").unique("pair_id", keep="first")
                copies = pl.from_arrow(copies.select(["pair_id", "source", "raw_keys"])).join(gates_by_pair, on="pair_id")
                drops.copies = pl.concat([drops.copies, copies.select(drops.copies.columns)])
            # a null pair_id (the pair_id_present gate) must still find its row
            rejected = gone.select("pair_id", "split", "raw_keys").join(verdict.rejected.select("pair_id", "source", "gate"), on="pair_id", nulls_equal=True)
        elif verdict.suite == "prompts":  # dropped by id (the pool admits only valid prompts: a failure here is a bug upstream)
            stage.drop_rows(S.PROMPTS, "prompt_id", set(verdict.rejected["prompt_id"].to_list()))
            rejected = verdict.rejected.with_columns(pl.concat_list([pl.col("raw_key")]).alias("raw_keys"))
        else:
            raise AssertionError(f"suite {verdict.suite!r} has no row gates to quarantine by")
        quarantine = rejected.select(
            pl.col("source").fill_null(MISSING_SOURCE), pl.col("split"), pl.col("raw_keys"), pl.lit(None, pl.String).alias("item"),
            pl.lit("pair" if verdict.suite == "pairs" else "prompt").alias("level"), pl.lit(S.INVALID).alias("kind"),
            ("gx." + pl.col("gate")).alias("rule"), pl.lit(f"suite {verdict.suite} v{SUITE_VERSION}").alias("rule_version"),
            pl.format("failed quality gate {} ({})", pl.col("gate"), pl.lit(verdict.suite)).alias("reason"),
            pl.lit(run.run_id).alias("run_id"), pl.lit(run.started_at, pl.Datetime("us", "UTC")).alias("created_at"),
        )
        quarantine = with_md5(quarantine, "quarantine_id", pl.col("source"), pl.col("split").fill_null(""),
                              pl.col("raw_keys").list.join(","), pl.col("level"), pl.col("rule"))
        if lake is not None:
            quarantine = quarantine.filter(~pl.col("quarantine_id").is_in(existing_ids(lake, S.QUARANTINE, "quarantine_id", quarantine["quarantine_id"]).implode()))
        stage.add(S.QUARANTINE, quarantine.to_arrow(), S.QUARANTINE_SCHEMA, ["source"])
        level = "pair" if verdict.suite == "pairs" else "prompt"
        for source, gate, n in rejected.group_by("source", "gate").len().iter_rows():
            run.count(source, level, "quarantined", f"gx.{gate}", n)
    return drops


def existing_ids(lake: Lake, table: str, column: str, ids: pl.Series, within: pads.Expression | None = None) -> pl.Series:
    """Those of ``ids`` that ``table`` already holds in ``column``, in the rows ``within`` selects (pushed down: reads matching files only)."""
    if not ids.len() or not lake.exists(table):
        return ids.clear()
    wanted = pads.field(column).isin(ids.unique().to_list())
    found = lake.read(table, columns=[column], filter=wanted if within is None else wanted & within)
    return pl.from_arrow(found.column(column)).alias(ids.name)


ROW_IDS = {S.PAIRS: "pair_id", S.RESPONSES: "response_id", S.SCORES: "response_id", S.EVAL_RESPONSES: "response_id", S.EVAL_SCORES: "score_id"}  # what makes a row of each guarded table new


@dataclass
class AppendResult:
    run: RunRecord
    versions: dict[str, int]
    verdicts: list[Verdict]
    landed: int
    quarantined: int


def used_prompts(lake: Lake, iteration: int) -> set[str]:
    """Prompt ids online iterations other than ``iteration`` already used."""
    if not lake.exists(S.PAIRS):
        return set()
    used = lake.read(S.PAIRS, columns=["prompt_id"], filter=(pads.field("iteration") > 0) & (pads.field("iteration") != iteration))
    return set(used.column("prompt_id").to_pylist())


def used_response_prompts(lake: Lake, iteration: int) -> set[str]:
    """Prompt ids earlier (or later) iterations generated responses for."""
    if not lake.exists(S.RESPONSES):
        return set()
    used = lake.read(S.RESPONSES, columns=["prompt_id"], filter=pads.field("iteration") != iteration)
    return set(used.column("prompt_id").to_pylist())


def guarded_append(
    lake: Lake, table: str, rows: pl.DataFrame, suite: str, facts: pl.DataFrame, context: GateContext, pipeline: str, args: dict,
    counts: tuple[tuple[str, str, str, str | None, int], ...] = (), replace_iteration: int | None = None,
) -> AppendResult:
    """Validate ``rows`` with ``suite`` (over their ``facts``) and append what passes to ``table`` in one commit.

    ``replace_iteration``: the commit replaces that iteration's rows instead of adding to them (a re-selection).

    Rows failing a row gate go to quarantine with the gate's name; a batch gate failure raises
    :class:`quality.gates.GateError` and nothing lands. The run and its validations are logged either way.
    ``counts``: (source, level, outcome, rule, n) rows for ``run_counts``, e.g. the ties a selection dropped.
    """
    schema, partitions = S.CORE_TABLES[table]
    id_column = ROW_IDS[table]
    run = RunRecord(pipeline, args)
    for count in counts:
        run.count(*count)
    verdicts: list[Verdict] = []
    with lake.lock(table):
        for name, (tschema, parts) in S.CORE_TABLES.items():
            lake.create(name, tschema, parts)
        run.versions_before = lake.versions(list(S.CORE_TABLES))
        gates = Gatekeeper(context, run.run_id)
        try:
            # an id counts as present in the batch's own iterations (an online pair may repeat an offline pair's content)
            present = existing_ids(lake, table, id_column, rows[id_column], pads.field("iteration").isin(rows["iteration"].unique().to_list()))
            if present.len() and replace_iteration is None:  # landed before: a re-run after a fault between this append's commits
                rows = rows.filter(~pl.col(id_column).is_in(present.implode()))
                if id_column in facts.columns:
                    facts = facts.filter(~pl.col(id_column).is_in(present.implode()))
                run.inputs["already_present"] = present.n_unique()
            dropped = 0
            versions: dict[str, int] = {}
            if rows.height:
                with staging(lake) as stage:
                    stage.add(table, rows.to_arrow(), schema, partitions)
                    gates.observe(table, suite, facts)
                    dropped = enforce_gates(gates, stage, run, verdicts, lake).pairs
                    # the table whose ids say "done" commits last: a stop before it leaves only quarantine rows, never duplicated
                    replace = {table: [("iteration", "=", str(replace_iteration))]} if replace_iteration is not None else None
                    versions = stage.commit({"prefhouse.run_id": run.run_id}, last=(table,), replace=replace)
            run.rows_in, run.rows_out = rows.height, rows.height - dropped
            run.versions_after = {**run.versions_before, **versions}
            if verdicts:
                lake.append(S.VALIDATIONS, validation_rows(verdicts, versions))
            run.write(lake, "succeeded")
        except BaseException as exc:
            if verdicts:
                lake.append(S.VALIDATIONS, validation_rows(verdicts, {}))
            run.write(lake, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
    return AppendResult(run, versions, verdicts, rows.height - dropped, dropped)


def append_pairs(lake: Lake, pairs: pl.DataFrame, iteration: int, pipeline: str = "append_pairs", bounds: Bounds = Bounds(),
                 counts: tuple[tuple[str, str, str, str | None, int], ...] = (), replace: bool = False) -> AppendResult:
    """Append pairs (the pairs table's schema) made for ``iteration``, through the pairs suite.

    ``replace``: the pairs are the iteration's whole new set (a re-selection with other settings); one commit
    removes its old pairs and adds these, so the iteration never holds two pairs for a prompt.
    """
    sources = tuple(sorted(set(pairs["source"].drop_nulls())))
    facts = pair_facts(pairs, used_prompts(lake, iteration))
    return guarded_append(lake, S.PAIRS, pairs, "pairs", facts, GateContext((iteration,), sources, bounds), pipeline,
                          {"iteration": iteration, "replace": replace}, counts, iteration if replace else None)


def append_responses(lake: Lake, responses: pl.DataFrame, iteration: int, n: int, pipeline: str = "generate") -> AppendResult:
    """Append the n sampled responses per prompt of ``iteration``, through the responses suite."""
    facts = response_facts(responses, n, used_response_prompts(lake, iteration))
    return guarded_append(lake, S.RESPONSES, responses, "responses", facts, GateContext((iteration,), n=n), pipeline, {"iteration": iteration, "n": n})


def append_scores(lake: Lake, scores: pl.DataFrame, iteration: int, n: int, pipeline: str = "score") -> AppendResult:
    """Append one reward per response of ``iteration``; a reward without a response, or a count other than n, is refused."""
    known = pl.from_arrow(lake.read(S.RESPONSES, columns=["response_id"], filter=pads.field("iteration") == iteration)) if lake.exists(S.RESPONSES) else pl.DataFrame(schema={"response_id": pl.String})
    facts = score_facts(scores, known, n)
    return guarded_append(lake, S.SCORES, scores, "scores", facts, GateContext((iteration,), n=n), pipeline, {"iteration": iteration, "n": n})


def append_eval_responses(lake: Lake, responses: pl.DataFrame, iteration: int, n: int) -> AppendResult:
    """Append evaluation answers (n per prompt, policy and settings) with their log-probabilities, through their suite."""
    return guarded_append(lake, S.EVAL_RESPONSES, responses, "eval_responses", eval_response_facts(responses, n), GateContext((iteration,), n=n),
                          "evaluate", {"iteration": iteration, "n": n})


def append_eval_scores(lake: Lake, scores: pl.DataFrame, iteration: int) -> AppendResult:
    """Append one reward per (evaluation answer, judge); a reward of an answer the lake lacks is refused."""
    known = pl.from_arrow(lake.read(S.EVAL_RESPONSES, columns=["response_id"]).column("response_id")) if lake.exists(S.EVAL_RESPONSES) else pl.Series([], dtype=pl.String)
    return guarded_append(lake, S.EVAL_SCORES, scores, "eval_scores", eval_score_facts(scores, known), GateContext((iteration,)),
                          "evaluate", {"iteration": iteration})
