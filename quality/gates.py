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

import contextlib
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.digests import DigestSet, digests
from prefhouse.pipelines.core.errors import Refused
from prefhouse.pipelines.core.schema import VALIDATION_SCHEMA
from prefhouse.quality.gx_import import import_gx
from prefhouse.quality.suites import BATCH, ROW, SUITE_VERSION, SUITES, GateContext

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


_context = None
_batches: dict[str, object] = {}  # tally kind -> its batch definition in the gates' one data source
_lock = threading.RLock()  # GX's context is not thread-safe: it is built, warmed up and used under this lock
_warm_up: threading.Thread | None = None
_warm_up_guard = threading.Lock()
_validating = threading.local()  # .configurations: while this thread runs one of the gates' validations (``_validate``)


def warm_up_in_background() -> threading.Thread:
    """Import Great Expectations, build the context and validate a tiny tally of each kind, on a thread, once per process.

    For a run that will judge later: the import is ~1.5 s of a cold curation and a process's first validation
    ~0.1 s more than the ones after it; on a thread both overlap the run's reading and staging, which leave a core
    idle much of the time. Whatever uses GX meanwhile waits for the warm-up (:data:`_lock`); a warm-up that failed
    leaves the work, and the error, to the first real use. Returns the warm-up's thread (started by the first call).
    Not a daemon: a run that ends early (an input error) waits for the rest of the warm-up before the interpreter
    shuts down, instead of finalising under a thread inside GX, pandas or numpy, which can abort the process
    (SIGABRT, seen in the test suite) and so lose the run's exit code.
    """
    global _warm_up
    with _warm_up_guard:
        if _warm_up is None:
            _warm_up = threading.Thread(target=_validate_tiny_tallies, name="prefhouse-gx-warm-up")
            _warm_up.start()
        return _warm_up


def _validate_tiny_tallies() -> None:
    with contextlib.suppress(Exception), _lock:
        gx = import_gx()
        from great_expectations.validator.v1_validator import Validator

        e = gx.expectations
        suite = gx.ExpectationSuite(name="prefhouse-warm-up")
        for expectation in (e.ExpectColumnValuesToBeInSet(column="s", value_set=["x"]), e.ExpectColumnValuesToBeBetween(column="n", min_value=0, max_value=1),
                            e.ExpectColumnValuesToNotBeNull(column="n"), e.ExpectColumnValuesToBeUnique(column="s")):
            suite.add_expectation_configuration(expectation.configuration)
        tally = _pandas(pl.DataFrame({"n": [1, 2, None], "s": ["x", "y", "x"]}))
        for kind in ("values", "repeats"):
            validator = Validator(batch_definition=_batch_definition(kind), batch_parameters={"dataframe": tally})
            for result_format in ("BOOLEAN_ONLY", {"result_format": "COMPLETE", "unexpected_index_column_names": ["n"]}):
                validator.result_format = result_format
                _validate(validator, suite)


def _gx():
    """One ephemeral Great Expectations context per process (it costs seconds to build), no progress bars."""
    global _context
    with _lock:
        if _context is None:
            logging.getLogger("great_expectations").setLevel(logging.ERROR)
            gx = import_gx()
            from great_expectations.data_context.types.base import ProgressBarsConfig
            from great_expectations.execution_engine import pandas_execution_engine

            # GX fingerprints every pandas batch below this size (an md5 over a hash of every value); nothing reads the
            # fingerprint, and where tallies stay long (1M distinct margins: measured 0.64 s a judgement) it is a third of the time.
            pandas_execution_engine.HASH_THRESHOLD = 0

            _build_configurations_once_a_validation()
            _context = gx.get_context(mode="ephemeral")
            _context.variables.progress_bars = ProgressBarsConfig(globally=False)
        return _context


def _build_configurations_once_a_validation() -> None:
    """Make ``Expectation.configuration`` build each expectation's configuration once per ``_validate`` call.

    Great Expectations rebuilds it (a pydantic ``dict()`` and a new ``ExpectationConfiguration``) every time it is
    read, ~80 times an expectation in a judgement: 1,383 builds for the pairs suite's 17 gates, measured 0.04 s
    of a judgement's 0.16 s at 1M pairs, whatever the facts' size. Nothing in a validation changes an expectation
    (GX builds them from the suite's configurations for the call), so during ours, and on its thread only, the
    first build is kept for the call; everywhere else, and in GX's own use, the property is what it was.
    """
    from great_expectations.expectations.expectation import Expectation

    build = Expectation.configuration.fget
    if getattr(build, "kept_per_validation", False):
        return

    def configuration(self):
        kept = getattr(_validating, "configurations", None)
        if kept is None:
            return build(self)
        hit = kept.get(id(self))
        if hit is None or hit[0] is not self:  # (the object held beside it: its id is not reused during the call)
            hit = kept[id(self)] = (self, build(self))
        return hit[1]

    configuration.kept_per_validation = True
    Expectation.configuration = property(configuration, doc=Expectation.configuration.__doc__)


def _validate(validator, suite):
    """``validator.validate_expectation_suite(suite)``, each expectation's configuration built once (see above)."""
    _validating.configurations = {}
    try:
        return validator.validate_expectation_suite(suite)
    finally:
        del _validating.configurations


def _batch_definition(kind: str):
    """The whole-dataframe batch definition every judgement loads its ``kind`` of tally through: one data source
    and asset per process (adding or deleting one re-serialises the context's configuration, ~9 ms each time).
    Great Expectations caches a loaded batch under its asset's batch id, which is the same for every dataframe,
    so it keeps only the last tally of each kind."""
    with _lock:
        if kind not in _batches:
            context = _gx()
            source = context.data_sources.all().get("prefhouse-gates") or context.data_sources.add_pandas("prefhouse-gates")
            _batches[kind] = source.add_dataframe_asset(kind).add_batch_definition_whole_dataframe(kind)
        return _batches[kind]


def _pandas(facts: pl.DataFrame):
    """The facts as pandas for Great Expectations, in the dtypes its pandas engine is fast on: integers as
    int64 (float64 where null) and floats as float64 — its range checks are vectorised only for those and
    call a Python function per value otherwise — and strings as pandas' own string columns."""
    ints = [c for c, t in facts.schema.items() if t.is_integer()]
    return facts.with_columns(pl.col(ints).cast(pl.Int64), pl.col(pl.Float32).cast(pl.Float64)).to_pandas()


class Gatekeeper:
    """Collects facts per table while a run stages rows; judges them a chunk at a time; one verdict per table."""

    def __init__(self, context: GateContext, run_id: str, chunk_rows: int = CHUNK_ROWS):
        warm_up_in_background()  # judged later in the run: GX's import and first validation overlap the staging
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
    _gx()
    import great_expectations as gx
    from great_expectations.validator.v1_validator import Validator

    expectations = {}  # gate name -> its expectation, built once for both passes
    for gate in SUITES[suite_name]:
        expectations[gate.name] = gate.make(context)
        expectations[gate.name].meta = {"gate": gate.name, "level": gate.level}
    unique_columns = {e.column for e in expectations.values() if _frame_of(e) == "repeats" and e.column in facts.columns}
    repeated, earlier = _repeats(facts, unique_columns, seen, remember)
    frames = tallies(facts, expectations, repeated)
    # one validator a tally, so Great Expectations loads each once for both passes
    with _lock:  # one thread at a time in GX's context (the warm-up may be in it)
        validators = {kind: Validator(batch_definition=_batch_definition(kind), batch_parameters={"dataframe": _pandas(frame)})
                      for kind, frame in frames.items()}

    def run(gate_names: list[str], result_format) -> dict:
        results = {}
        for kind, validator in validators.items():
            names = [g for g in gate_names if _frame_of(expectations[g]) == kind]
            if names:
                suite = gx.ExpectationSuite(name=f"{table}-{kind}-{len(names)}", meta={"prefhouse_suite": suite_name, "version": SUITE_VERSION})
                for gate_name in names:
                    suite.add_expectation_configuration(expectations[gate_name].configuration)
                validator.result_format = result_format
                with _lock:
                    results |= {r.expectation_config.meta["gate"]: r for r in _validate(validator, suite).results}
        return results

    # Pass or fail for every gate first (the cheap format); the unexpected values only for gates that failed.
    quick = run(list(expectations), "BOOLEAN_ONLY")
    failed = [g for g, r in quick.items() if not r.success]
    detail = run(failed, {"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]}) if failed else {}

    now = datetime.now(UTC)
    failed_rows: dict[int, str] = {}
    batch_failures: list[tuple[str, str]] = []
    rows = []
    for gate, expectation in expectations.items():
        r = detail.get(gate, quick[gate])
        level, column = expectation.meta["level"], expectation.column
        row = {
            "run_id": run_id, "table_name": table, "table_version": None, "suite": suite_name, "suite_version": SUITE_VERSION,
            "gate": gate, "level": level, "expectation": r.expectation_config.type, "column": column, "success": bool(r.success),
            "element_count": facts.height, "unexpected_count": 0 if r.success else None, "observed_value": "", "validated_at": now,
        }
        rows.append(row)
        raised = [v for v in (r.exception_info or {}).values() if isinstance(v, dict) and v.get("raised_exception")]
        if raised or (r.exception_info or {}).get("raised_exception"):
            # an expectation that could not be evaluated guards nothing: refuse the batch, whatever its level
            message = raised[0].get("exception_message") if raised else r.exception_info.get("exception_message")
            batch_failures.append((gate, f"could not be evaluated: {message}"))
            continue
        unexpected = [] if r.success else [_rows_holding(facts, expectation, frames[_frame_of(expectation)], r.result["unexpected_index_list"])]
        if column in earlier and _frame_of(expectation) == "repeats":  # values an earlier chunk held: unexpected here too
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


def _frame_of(expectation) -> str:
    """Which tally a gate is judged on: a uniqueness gate on the repeats, every other gate on the values."""
    return "repeats" if type(expectation).__name__ == "ExpectColumnValuesToBeUnique" else "values"


def tallies(facts: pl.DataFrame, expectations: dict, repeated: dict[str, pl.Series]) -> dict[str, pl.DataFrame]:
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
    for expectation in expectations.values():
        name, column, c = type(expectation).__name__, expectation.column, pl.col(expectation.column)
        if name not in VALUE_WISE or (expectation.mostly or 1) < 1:
            raise ValueError(f"gate {expectation.meta['gate']!r}: {name} (mostly={expectation.mostly}) cannot be judged on "
                             "tallies; gates must be value-wise expectations without 'mostly'")
        if _frame_of(expectation) == "repeats" or column not in facts.columns:
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
    if any(_frame_of(e) == "repeats" for e in expectations.values()):
        twice = [pl.concat([r, r]).alias(column) for column, r in repeated.items()]
        length = max(map(len, twice), default=0)
        frames["repeats"] = pl.DataFrame([r.extend_constant(None, length - len(r)) for r in twice]).with_row_index("_row")
    return frames


def _rows_holding(facts: pl.DataFrame, expectation, tally: pl.DataFrame, unexpected_index_list: list[dict]) -> pl.DataFrame:
    """``_row`` and the gate's column of the facts holding the tally values Great Expectations found unexpected."""
    column = expectation.column
    if type(expectation).__name__ == "ExpectColumnValuesToNotBeNull":
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
