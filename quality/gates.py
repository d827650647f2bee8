"""The gate every writer passes before its commit: Great Expectations suites over derived facts.

A writer ``observe``s the rows it stages (as facts, :mod:`quality.checks`); before committing it asks
``judge(table)`` for the table's verdict over everything staged for it. Row-level failures come back as
the keys to drop and quarantine, with the gate's name; batch-level failures raise :class:`GateError`,
naming every failed gate, and the writer commits nothing. Every result, pass or fail, becomes a row of
the ``validations`` table: one per gate and table, however the facts were judged.

Facts are judged in chunks of about :data:`CHUNK_ROWS` rows, as they arrive, so a run's memory is
bounded by the chunk and not by its input; a uniqueness gate also checks each chunk's values against
those of the chunks before it (kept as 16-byte digests), so a duplicate is caught wherever its copies
fell. The chunks' results are merged into one result per gate (counts summed).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.digests import DigestSet, digests
from prefhouse.pipelines.core.errors import Refused
from prefhouse.pipelines.core.schema import VALIDATION_SCHEMA
from prefhouse.quality.gx_import import import_gx
from prefhouse.quality.suites import BATCH, ROW, SUITE_VERSION, SUITES, GateContext


CHUNK_ROWS = 500_000  # facts of one table judged together; a larger run is judged a chunk at a time


class GateError(Refused):
    """A batch-level expectation failed: the commit it guards must not happen."""

    def __init__(self, table: str, failures: list[tuple[str, str]]):
        detail = "; ".join(f"{gate} (observed: {observed})" for gate, observed in failures)
        super().__init__(f"quality gate failed for table {table!r}, nothing was committed: {detail}")
        self.table, self.failures = table, failures

    @property
    def gates(self) -> list[str]:
        return [g for g, _ in self.failures]


@dataclass
class Verdict:
    table: str
    suite: str
    rejected: pl.DataFrame  # facts of rows failing a row gate, with column "gate" (first failed gate)
    batch_failures: list[tuple[str, str]]
    results: list[dict] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.batch_failures and self.rejected.height == 0

    @classmethod
    def merged(cls, parts: list[Verdict]) -> Verdict:
        """One verdict from those of a table's chunks: one result row per gate, its counts summed over the chunks
        (it succeeds only if it did in every chunk), every rejected row, each failed gate once."""
        if len(parts) == 1:
            return parts[0]
        by_gate: dict[str, list[dict]] = {}
        for part in parts:
            for row in part.results:
                by_gate.setdefault(row["gate"], []).append(row)
        results = []
        for rows in by_gate.values():
            failed = [r for r in rows if not r["success"]]
            counts = [r["unexpected_count"] for r in rows]
            unexpected = None if None in counts else sum(counts)
            observed = failed[0]["observed_value"] if failed else rows[0]["observed_value"]
            if len(failed) > 1 and unexpected is not None:
                examples = [e for r in failed for e in json.loads(r["observed_value"] or "{}").get("examples", [])]
                observed = json.dumps({"unexpected_count": unexpected, "examples": examples[:3]}, default=str)
            results.append({**rows[0], "success": not failed, "element_count": sum(r["element_count"] for r in rows),
                            "unexpected_count": unexpected, "observed_value": observed})
        failures: dict[str, str] = {}
        for part in parts:
            for gate, observed in part.batch_failures:
                failures.setdefault(gate, observed)
        return cls(parts[0].table, parts[0].suite, pl.concat([p.rejected for p in parts]), list(failures.items()), results)


_context = None


def _gx():
    """One ephemeral Great Expectations context per process (it costs seconds to build), no progress bars."""
    global _context
    if _context is None:
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        gx = import_gx()
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine

        # GX fingerprints every pandas batch below this size (an md5 over a hash of every value: half the
        # validation time at 1M rows); our rows carry their own content ids and nothing reads the fingerprint.
        pandas_execution_engine.HASH_THRESHOLD = 0

        _context = gx.get_context(mode="ephemeral")
        _context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return _context


def _pandas(facts: pl.DataFrame):
    """The facts as pandas for Great Expectations, in the dtypes its pandas engine is fast on: integers as
    int64 (float64 where null) and floats as float64 — its range checks are vectorised only for those and
    call a Python function per value otherwise — and strings as pandas' own string columns."""
    ints = [c for c, t in facts.schema.items() if t.is_integer()]
    return facts.with_columns(pl.col(ints).cast(pl.Int64), pl.col(pl.Float32).cast(pl.Float64)).to_pandas()


def _observed(result) -> str:
    r = result.result or {}
    if "observed_value" in r:
        return json.dumps(r["observed_value"], default=str)
    if "unexpected_count" in r:
        partial = r.get("partial_unexpected_list") or []
        return json.dumps({"unexpected_count": r["unexpected_count"], "examples": partial[:3]}, default=str)
    return ""


class Gatekeeper:
    """Collects facts per table while a run stages rows; judges them a chunk at a time; one verdict per table."""

    def __init__(self, context: GateContext, run_id: str, chunk_rows: int = CHUNK_ROWS):
        self.context = context
        self.run_id = run_id
        self.chunk_rows = chunk_rows
        self.facts: dict[str, tuple[str, list[pl.DataFrame]]] = {}
        self.judged: dict[str, list[Verdict]] = {}  # verdicts of a table's chunks judged so far
        self.seen: dict[str, dict[str, DigestSet]] = {}  # table -> unique column -> its values in those chunks

    def observe(self, table: str, suite: str, facts: pl.DataFrame) -> None:
        if facts.height:
            if sum(f.height for f in self.facts.get(table, ("", []))[1]) >= self.chunk_rows:
                # a full chunk, and more facts after it: judged now, its unique values remembered for what follows
                # (judged only once more facts arrive, the last chunk is never remembered for nothing)
                self._judge_chunk(table, more_to_come=True)
            self.facts.setdefault(table, (suite, []))[1].append(facts)

    def tables(self) -> list[str]:
        return list(dict.fromkeys([*self.judged, *self.facts]))

    def _judge_chunk(self, table: str, more_to_come: bool) -> None:
        """Judge the table's facts observed since its last chunk; they are let go here (not kept beside their copy for GX)."""
        suite_name, frames = self.facts.pop(table)
        facts = pl.concat(frames, how="vertical_relaxed", rechunk=False).with_row_index("_row")
        del frames
        verdict = judge(table, suite_name, facts, self.context, self.run_id, self.seen.setdefault(table, {}), remember=more_to_come)
        self.judged.setdefault(table, []).append(verdict)

    def judge(self, table: str) -> Verdict:
        """The table's verdict over every fact observed for it (its last chunk judged now)."""
        if table in self.facts:
            self._judge_chunk(table, more_to_come=False)
        self.seen.pop(table, None)
        return Verdict.merged(self.judged.pop(table))


def judge(table: str, suite_name: str, facts: pl.DataFrame, context: GateContext, run_id: str,
          seen: dict[str, DigestSet] | None = None, remember: bool = False) -> Verdict:
    """Run the suite over ``facts`` (which has a ``_row`` index) and sort the failures by level.

    ``seen``: each unique column's values in earlier chunks of the same table; a value found there fails the
    column's uniqueness gate as a value repeated within ``facts`` would. ``remember``: add this chunk's values
    (a later chunk will be checked against them).
    """
    ctx = _gx()
    import great_expectations as gx
    from great_expectations.validator.v1_validator import Validator

    name = f"{table}-{uuid.uuid4().hex[:8]}"
    expectations = {}  # gate name -> its expectation, built once for both passes
    for gate in SUITES[suite_name]:
        expectations[gate.name] = gate.make(context)
        expectations[gate.name].meta = {"gate": gate.name, "level": gate.level}
    used = {"_row"} | {e.column for e in expectations.values()}
    # A data source of its own, deleted after: a data source's execution engine keeps every batch it ever
    # loaded (GX's BatchManager never evicts), so one shared source held a pandas copy of every chunk judged.
    source = ctx.data_sources.add_pandas(name)
    asset = source.add_dataframe_asset(name)
    # One validator, so Great Expectations loads the batch once for both passes.
    validator = Validator(batch_definition=asset.add_batch_definition_whole_dataframe(name),
                          batch_parameters={"dataframe": _pandas(facts.select([c for c in facts.columns if c in used]))},
                          result_format="BOOLEAN_ONLY")

    def run(gate_names: list[str]):
        suite = gx.ExpectationSuite(name=f"{name}-{len(gate_names)}", meta={"prefhouse_suite": suite_name, "version": SUITE_VERSION})
        for gate_name in gate_names:
            suite.add_expectation_configuration(expectations[gate_name].configuration)
        return validator.validate_expectation_suite(suite).results

    try:
        # Pass or fail for every gate first (the cheap format); the failing rows only for gates that failed.
        quick = run(list(expectations))
        failed = [r.expectation_config.meta["gate"] for r in quick if not r.success]
        validator.result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]}
        detail = {r.expectation_config.meta["gate"]: r for r in (run(failed) if failed else [])}
    finally:
        ctx.data_sources.delete(name)
    results = [detail.get(r.expectation_config.meta["gate"], r) for r in quick]
    repeats = _earlier_repeats(facts, expectations, seen, remember) if seen is not None else {}

    now = datetime.now(UTC)
    failed_rows: dict[int, str] = {}
    batch_failures: list[tuple[str, str]] = []
    rows = []
    for r in results:
        meta = r.expectation_config.meta or {}
        gate, level = meta.get("gate"), meta.get("level")
        info = r.result or {}
        row = {
            "run_id": run_id, "table_name": table, "table_version": None, "suite": suite_name, "suite_version": SUITE_VERSION,
            "gate": gate, "level": level, "expectation": r.expectation_config.type,
            "column": r.expectation_config.kwargs.get("column"), "success": bool(r.success),
            "element_count": info.get("element_count", facts.height), "unexpected_count": info.get("unexpected_count", 0 if r.success else None),
            "observed_value": _observed(r), "validated_at": now,
        }
        rows.append(row)
        repeated = repeats.get(gate)
        if repeated is not None and repeated.height:  # values an earlier chunk held: unexpected here too
            row["success"], row["unexpected_count"] = False, (row["unexpected_count"] or 0) + repeated.height
            row["observed_value"] = json.dumps({"unexpected_count": row["unexpected_count"], "examples": repeated[row["column"]].head(3).to_list()}, default=str)
            if level == BATCH:
                batch_failures.append((gate, row["observed_value"]))
                continue
            for index in repeated["_row"].to_list():
                failed_rows.setdefault(int(index), gate)
        if r.success:
            continue
        raised = [v for v in (r.exception_info or {}).values() if isinstance(v, dict) and v.get("raised_exception")]
        if raised or (r.exception_info or {}).get("raised_exception"):
            # an expectation that could not be evaluated guards nothing: refuse the batch, whatever its level
            message = raised[0].get("exception_message") if raised else r.exception_info.get("exception_message")
            batch_failures.append((gate, f"could not be evaluated: {message}"))
        elif level == BATCH:
            batch_failures.append((gate, _observed(r)))
        elif level == ROW:
            for row in info.get("unexpected_index_list") or []:
                failed_rows.setdefault(int(row["_row"]), gate)
    rejected = facts.join(
        pl.DataFrame({"_row": list(failed_rows), "gate": list(failed_rows.values())}, schema={"_row": pl.UInt32, "gate": pl.String}),
        on="_row", how="inner",
    )
    return Verdict(table, suite_name, rejected, batch_failures, rows)


def _earlier_repeats(facts: pl.DataFrame, expectations: dict, seen: dict[str, DigestSet], remember: bool) -> dict[str, pl.DataFrame]:
    """For each uniqueness gate, the rows (``_row`` and the column) whose value an earlier chunk held; nulls are
    not values here, as Great Expectations' uniqueness check ignores them."""
    from great_expectations.expectations import ExpectColumnValuesToBeUnique

    repeats = {}
    for gate, expectation in expectations.items():
        if not isinstance(expectation, ExpectColumnValuesToBeUnique) or expectation.column not in facts.columns:
            continue  # (a missing column: Great Expectations reports the gate as not evaluated)
        values = facts.select("_row", expectation.column).drop_nulls(expectation.column)
        held = seen.setdefault(expectation.column, DigestSet())
        if not len(held) and not remember:
            continue
        high, low = digests(values[expectation.column].cast(pl.String))
        repeats[gate] = values.filter(pl.Series(held.contains(high, low))) if len(held) else values.clear()
        if remember:
            held.add(high, low)
    return repeats


def validation_rows(verdicts: list[Verdict], versions: dict[str, int]) -> pa.Table:
    """The verdicts as rows of the ``validations`` table, with the version each commit produced (if any)."""
    rows = [{**r, "table_version": versions.get(r["table_name"])} for v in verdicts for r in v.results]
    return pa.Table.from_pylist(rows, schema=VALIDATION_SCHEMA)
