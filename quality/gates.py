"""The gate every writer passes before its commit: Great Expectations suites over derived facts.

A writer ``observe``s the rows it stages (as facts, :mod:`quality.checks`); before committing it asks
``judge(table)`` for the table's verdict over everything staged for it. Row-level failures come back as
the keys to drop and quarantine, with the gate's name; batch-level failures raise :class:`GateError`,
naming every failed gate, and the writer commits nothing. Every result, pass or fail, becomes a row of
the ``validations`` table: one per gate and table, however the facts were judged.

Great Expectations validates the facts pre-aggregated (:func:`tallies`: each column's distinct values, a
uniqueness gate's repeated values), which gives every gate the verdict it has over every row at a fraction
of the cost; the rows holding the values it rejects are found again in the facts.

Facts are judged in chunks of about :data:`CHUNK_ROWS` rows, as they arrive, so a run's memory is
bounded by the chunk and not by its input; a uniqueness gate also checks each chunk's values against
those of the chunks before it (kept as 16-byte fingerprints), so a duplicate is caught wherever its copies
fell. The chunks' results are merged into one result per gate (counts summed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.digests import DigestSet, digests
from prefhouse.pipelines.core.errors import Refused
from prefhouse.pipelines.core.schema import VALIDATION_SCHEMA
from prefhouse.quality.gx_worker import worker
from prefhouse.quality.suites import BATCH, ROW, SUITE_VERSION, SUITES, ExpectationSpec, GateContext

# Facts of one table judged together; a larger run is judged a chunk at a time. Measured on 1M raw rows' curation:
# peak RSS 1,247 MB at this size, 1,072 MB at 500,000 facts, and 1,284-1,334 MB at 500,000 when GX got a pandas copy
# of every row; each chunk judged costs ~0.1 s of GX's own work, whatever its size.
CHUNK_ROWS = 1_000_000
# the expectations a gate may be: each one's verdict depends only on which values a column holds (see ``tallies``)
VALUE_WISE = {"ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToBeInSet", "ExpectColumnValuesToBeBetween", "ExpectColumnValuesToBeUnique"}


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


def _pandas(facts: pl.DataFrame):
    """The facts as pandas for Great Expectations, in the dtypes its pandas engine is fast on: integers as
    int64 (float64 where null) and floats as float64 — its range checks are vectorised only for those and
    call a Python function per value otherwise — and strings as pandas' own string columns."""
    ints = [c for c, t in facts.schema.items() if t.is_integer()]
    return facts.with_columns(pl.col(ints).cast(pl.Int64), pl.col(pl.Float32).cast(pl.Float64)).to_pandas()


class Gatekeeper:
    """Collects facts per table while a run stages rows; judges them a chunk at a time; one verdict per table."""

    def __init__(self, context: GateContext, run_id: str, chunk_rows: int = CHUNK_ROWS):
        worker()  # judged later in the run: GX's import and first validation, in the worker's process, overlap the staging
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

    Great Expectations judges the facts' tallies (:func:`tallies`), not every row: its verdict on a gate is the
    one it would give over every row, and the rows holding the values it finds unexpected are the rows that
    fail; their count and first values are the result's ``unexpected_count`` and examples.

    ``seen``: each unique column's values in earlier chunks of the same table; a value found there fails the
    column's uniqueness gate as a value repeated within ``facts`` would. ``remember``: add this chunk's values
    (a later chunk will be checked against them).
    """
    specs = {gate.name: gate.make(context) for gate in SUITES[suite_name]}
    levels = {gate.name: gate.level for gate in SUITES[suite_name]}
    unique_columns = {e.column for e in specs.values() if e.tally == "repeats" and e.column in facts.columns}
    repeated, earlier = _repeats(facts, unique_columns, seen, remember)
    frames = tallies(facts, specs, repeated)
    answers = worker().validate(table, suite_name, SUITE_VERSION, specs, {kind: _pandas(frame) for kind, frame in frames.items()})

    now = datetime.now(UTC)
    failed_rows: dict[int, str] = {}
    batch_failures: list[tuple[str, str]] = []
    rows = []
    for gate, spec in specs.items():
        r = answers[gate]
        level, column = levels[gate], spec.column
        row = {
            "run_id": run_id, "table_name": table, "table_version": None, "suite": suite_name, "suite_version": SUITE_VERSION,
            "gate": gate, "level": level, "expectation": r["type"], "column": column, "success": r["success"],
            "element_count": facts.height, "unexpected_count": 0 if r["success"] else None, "observed_value": "", "validated_at": now,
        }
        rows.append(row)
        info = r["exception_info"] or {}
        raised = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
        if raised or info.get("raised_exception"):
            # an expectation that could not be evaluated guards nothing: refuse the batch, whatever its level
            message = raised[0].get("exception_message") if raised else info.get("exception_message")
            batch_failures.append((gate, f"could not be evaluated: {message}"))
            continue
        unexpected = [] if r["success"] else [_rows_holding(facts, spec, frames[spec.tally], r["unexpected_index_list"])]
        if column in earlier and spec.tally == "repeats":  # values an earlier chunk held: unexpected here too
            unexpected.append(earlier[column])
        if not unexpected or not (found := pl.concat(unexpected).unique("_row", maintain_order=True)).height:
            continue
        row["success"], row["unexpected_count"] = False, found.height
        row["observed_value"] = json.dumps({"unexpected_count": found.height, "examples": found[column].head(3).to_list()}, default=str)
        if level == BATCH:
            batch_failures.append((gate, row["observed_value"]))
        elif level == ROW:
            for index in found["_row"].to_list():
                failed_rows.setdefault(int(index), gate)
    failing = pl.DataFrame({"_row": list(failed_rows), "gate": list(failed_rows.values())}, schema={"_row": pl.UInt32, "gate": pl.String})
    # the usual verdict rejects no row: no join over every fact for it (~50 ms a million facts)
    rejected = facts.join(failing, on="_row", how="inner") if failed_rows else facts.clear().with_columns(failing["gate"])
    return Verdict(table, suite_name, rejected, batch_failures, rows)


def tallies(facts: pl.DataFrame, specs: dict[str, ExpectationSpec], repeated: dict[str, pl.Series]) -> dict[str, pl.DataFrame]:
    """The facts pre-aggregated for Great Expectations: per column, only the values its gates can tell apart.

    Every gate is a value-wise expectation (in a set, between bounds, not null, unique; never ``mostly``), so its
    verdict over a column depends only on which values the column holds, not on how often or where:

    - ``values``: each column's distinct values (a column checked only for nulls: one value and a null, if it
      has one), its list repeated up to the longest column's length (a repeat changes no such verdict);
    - ``repeats``: each uniqueness gate's column, the values it holds more than once (``repeated``), each
      listed twice (padded with nulls, which a uniqueness check ignores).

    A chunk of a million pairs' facts becomes a few thousand rows (a column of distinct floats, such as online
    pairs' margins, is no shorter), and Great Expectations no longer factorizes every id to find none repeated.
    """
    distinct: dict[str, pl.Expr] = {}
    for gate, spec in specs.items():
        name, column, c, mostly = spec.type, spec.column, pl.col(spec.column), spec.kwargs.get("mostly")
        if name not in VALUE_WISE or (mostly or 1) < 1:
            raise ValueError(f"gate {gate!r}: {name} (mostly={mostly}) cannot be judged on "
                             "tallies; gates must be value-wise expectations without 'mostly'")
        if spec.tally == "repeats" or column not in facts.columns:
            continue  # (a missing column: Great Expectations reports the gate as not evaluated)
        if name == "ExpectColumnValuesToNotBeNull" and column not in distinct:
            distinct[column] = c.drop_nulls().head(1).append(c.filter(c.is_null()).head(1))
        else:  # distinct values serve every value-wise gate, a not-null check too
            distinct[column] = c.unique()
    lists = facts.select([e.implode().alias(column) for column, e in distinct.items()])
    values = [lists[column][0].alias(column) for column in lists.columns]
    length = max(map(len, values), default=0)
    frames = {"values": pl.DataFrame([
        v.gather(np.arange(length) % len(v)) if len(v) else pl.repeat(None, length, dtype=v.dtype, eager=True).alias(v.name) for v in values
    ]).with_row_index("_row")}
    if any(e.tally == "repeats" for e in specs.values()):
        twice = [pl.concat([r, r]).alias(column) for column, r in repeated.items()]
        length = max(map(len, twice), default=0)
        frames["repeats"] = pl.DataFrame([r.extend_constant(None, length - len(r)) for r in twice]).with_row_index("_row")
    return frames


def _rows_holding(facts: pl.DataFrame, spec: ExpectationSpec, tally: pl.DataFrame, unexpected_index_list: list[dict]) -> pl.DataFrame:
    """``_row`` and the gate's column of the facts holding the tally values Great Expectations found unexpected."""
    column = spec.column
    if spec.type == "ExpectColumnValuesToNotBeNull":
        return facts.filter(pl.col(column).is_null()).select("_row", column)
    values = tally[column].gather([int(i["_row"]) for i in unexpected_index_list]).drop_nulls().unique()
    return facts.filter(pl.col(column).is_in(values.implode())).select("_row", column)


def _repeats(facts: pl.DataFrame, columns: set[str], seen: dict[str, DigestSet] | None, remember: bool) -> tuple[dict[str, pl.Series], dict[str, pl.DataFrame]]:
    """For each uniqueness gate's column: the values it holds more than once (exactly: a 64-bit hash finds the
    candidates, their texts decide), and the rows (``_row`` and the column) whose value an earlier chunk held.

    ``seen`` keeps each column's values of earlier chunks as 128-bit fingerprints (:func:`digests`). Nulls are not
    values here, as Great Expectations' uniqueness check ignores them.
    """
    repeated, earlier = {}, {}
    for column in sorted(columns):
        values = facts.select("_row", column).drop_nulls(column)
        high, low = digests(values[column])
        hashes = pl.Series(high)
        if hashes.n_unique() == len(hashes):  # (the usual answer: counting distinct hashes is 4x faster than marking repeats)
            repeated[column] = values[column].clear()
        else:
            candidates = values[column].filter(hashes.is_duplicated())
            repeated[column] = candidates.filter(candidates.is_duplicated()).unique()
        if seen is None:
            continue
        held = seen.setdefault(column, DigestSet())
        if len(held):
            earlier[column] = values.filter(pl.Series(held.contains(high, low)))
        if remember:
            held.add(high, low)
    return repeated, earlier


def validation_rows(verdicts: list[Verdict], versions: dict[str, int]) -> pa.Table:
    """The verdicts as rows of the ``validations`` table, with the version each commit produced (if any)."""
    rows = [{**r, "table_version": versions.get(r["table_name"])} for v in verdicts for r in v.results]
    return pa.Table.from_pylist(rows, schema=VALIDATION_SCHEMA)
