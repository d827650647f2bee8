"""The gate every writer passes before its commit: Great Expectations suites over derived facts.

A writer ``observe``s the rows it stages (as facts, :mod:`quality.checks`); before committing it asks
``judge(table)``, which runs the table's suite once over everything staged for it. Row-level failures
come back as the keys to drop and quarantine, with the gate's name; batch-level failures raise
:class:`GateError`, naming every failed gate, and the writer commits nothing. Every result, pass or
fail, becomes a row of the ``validations`` table.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.errors import Refused
from prefhouse.pipelines.core.schema import VALIDATION_SCHEMA
from prefhouse.quality.gx_import import import_gx
from prefhouse.quality.suites import BATCH, ROW, SUITE_VERSION, SUITES, GateContext


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
        _context.data_sources.add_pandas("prefhouse")
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
    """Collects facts per table while a run stages rows; judges each table once before the commit."""

    def __init__(self, context: GateContext, run_id: str):
        self.context = context
        self.run_id = run_id
        self.facts: dict[str, tuple[str, list[pl.DataFrame]]] = {}

    def observe(self, table: str, suite: str, facts: pl.DataFrame) -> None:
        if facts.height:
            self.facts.setdefault(table, (suite, []))[1].append(facts)

    def tables(self) -> list[str]:
        return list(self.facts)

    def judge(self, table: str) -> Verdict:
        """Judge the table's facts once; they are let go here (not kept beside their copy for GX)."""
        suite_name, frames = self.facts.pop(table)
        facts = pl.concat(frames, how="vertical_relaxed", rechunk=False).with_row_index("_row")
        del frames
        return judge(table, suite_name, facts, self.context, self.run_id)


def judge(table: str, suite_name: str, facts: pl.DataFrame, context: GateContext, run_id: str) -> Verdict:
    """Run the suite over ``facts`` (which has a ``_row`` index) and sort the failures by level."""
    ctx = _gx()
    import great_expectations as gx
    from great_expectations.validator.v1_validator import Validator

    name = f"{table}-{uuid.uuid4().hex[:8]}"
    expectations = {}  # gate name -> its expectation, built once for both passes
    for gate in SUITES[suite_name]:
        expectations[gate.name] = gate.make(context)
        expectations[gate.name].meta = {"gate": gate.name, "level": gate.level}
    used = {"_row"} | {e.column for e in expectations.values()}
    source = ctx.data_sources.get("prefhouse")
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
        source.delete_asset(name)
    results = [detail.get(r.expectation_config.meta["gate"], r) for r in quick]

    now = datetime.now(UTC)
    failed_rows: dict[int, str] = {}
    batch_failures: list[tuple[str, str]] = []
    rows = []
    for r in results:
        meta = r.expectation_config.meta or {}
        gate, level = meta.get("gate"), meta.get("level")
        info = r.result or {}
        rows.append({
            "run_id": run_id, "table_name": table, "table_version": None, "suite": suite_name, "suite_version": SUITE_VERSION,
            "gate": gate, "level": level, "expectation": r.expectation_config.type,
            "column": r.expectation_config.kwargs.get("column"), "success": bool(r.success),
            "element_count": info.get("element_count", facts.height), "unexpected_count": info.get("unexpected_count", 0 if r.success else None),
            "observed_value": _observed(r), "validated_at": now,
        })
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


def validation_rows(verdicts: list[Verdict], versions: dict[str, int]) -> pa.Table:
    """The verdicts as rows of the ``validations`` table, with the version each commit produced (if any)."""
    rows = [{**r, "table_version": versions.get(r["table_name"])} for v in verdicts for r in v.results]
    return pa.Table.from_pylist(rows, schema=VALIDATION_SCHEMA)
