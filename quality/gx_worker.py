"""Great Expectations in a process of its own: the gates' validations, run where GX's import cannot slow the writer.

A writer judges its facts' tallies (:mod:`quality.gates`) with GX, whose import is ~1.5 s of CPU, almost all of it
Python holding the interpreter lock. On a thread of the writer's process (as it was until 2026-12-06) that import
held the lock the writer's own threads need to keep polars, Arrow and DuckDB busy: a cold 100K + 100K curation
left a core idle for most of its first seconds. So the first :class:`~prefhouse.quality.gates.Gatekeeper` of a
process (earlier still, ``prefhouse curate``'s start: :func:`prefhouse.pipelines.cli.start_process`) starts this
module as a worker (``python -m prefhouse.quality.gx_worker``), which imports GX, builds its context and validates
a tiny tally of each kind while the writer stages; the writer then sends each judgement's tallies (a few thousand
rows at most) and gets plain results back. GX never enters the writer's process.

The worker is the writer's child: it ends when the writer closes its pipe, exits or dies. Should it be gone when a
judgement is asked for (killed, out of memory), the judgement runs here, in the writer's process, with the same
code and the same results, and says so on stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import subprocess
import sys
import threading
import traceback
from typing import Any

from prefhouse.quality.gx_import import import_gx
from prefhouse.quality.suites import UNIQUE, ExpectationSpec

_context = None
_batches: dict[str, object] = {}  # tally kind -> its batch definition in the gates' one data source
_lock = threading.RLock()  # GX's context is not thread-safe: it is built, warmed up and used under this lock
_validating = threading.local()  # .configurations: while this thread runs one of the gates' validations (``_validate``)


def validate_tallies(table: str, suite_name: str, suite_version: str, specs: dict[str, ExpectationSpec], frames: dict[str, Any]) -> dict[str, dict]:
    """Run the gates (``specs``, by gate name) over the tallies (``frames``: pandas, by kind), in this process.

    Pass or fail for every gate first (GX's cheapest result format); the unexpected rows of the tallies only for the
    gates that failed. Returns, per gate: ``success``, the expectation's ``type``, the tally rows GX found unexpected
    (``unexpected_index_list``, failed gates only) and GX's ``exception_info``.
    """
    gx = _gx()
    from great_expectations.validator.v1_validator import Validator

    expectations = {}
    for name, spec in specs.items():
        expectations[name] = spec.build()
        expectations[name].meta = {"gate": name}
    with _lock:  # one validator a tally, so Great Expectations loads each once for both passes
        validators = {kind: Validator(batch_definition=_batch_definition(kind), batch_parameters={"dataframe": frame}) for kind, frame in frames.items()}

    def run(gate_names: list[str], result_format) -> dict:
        results = {}
        for kind, validator in validators.items():
            names = [g for g in gate_names if specs[g].tally == kind]
            if names:
                suite = gx.ExpectationSuite(name=f"{table}-{kind}-{len(names)}", meta={"prefhouse_suite": suite_name, "version": suite_version})
                for gate_name in names:
                    suite.add_expectation_configuration(expectations[gate_name].configuration)
                validator.result_format = result_format
                with _lock:
                    results |= {r.expectation_config.meta["gate"]: r for r in _validate(validator, suite).results}
        return results

    quick = run(list(specs), "BOOLEAN_ONLY")
    failed = [g for g, r in quick.items() if not r.success]
    detail = run(failed, {"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]}) if failed else {}
    answers = {}
    for name in specs:
        r = detail.get(name, quick[name])
        answers[name] = {"success": bool(r.success), "type": r.expectation_config.type, "exception_info": r.exception_info,
                         "unexpected_index_list": r.result.get("unexpected_index_list") if name in detail else None}
    return answers


def warm_up() -> None:
    """Import GX, build the context and validate a tiny tally of each kind (a process's first validation costs ~0.1 s
    more than later ones). A failure leaves the work, and the error, to the first real validation."""
    with contextlib.suppress(Exception), _lock:
        import pandas as pd

        specs = {"in_set": ExpectationSpec("ExpectColumnValuesToBeInSet", "s", {"value_set": ["x"]}),
                 "between": ExpectationSpec("ExpectColumnValuesToBeBetween", "n", {"min_value": 0, "max_value": 1}),
                 "not_null": ExpectationSpec("ExpectColumnValuesToNotBeNull", "n"), "unique": ExpectationSpec(UNIQUE, "s")}
        tally = pd.DataFrame({"_row": [0, 1, 2], "n": [1.0, 2.0, None], "s": ["x", "y", "x"]})
        validate_tallies("warm-up", "warm-up", "0", specs, {"values": tally, "repeats": tally})


def _gx():
    """``great_expectations``, with one ephemeral context per process (it costs seconds to build), no progress bars."""
    global _context
    with _lock:
        gx = import_gx()
        if _context is None:
            logging.getLogger("great_expectations").setLevel(logging.ERROR)
            from great_expectations.data_context.types.base import ProgressBarsConfig
            from great_expectations.execution_engine import pandas_execution_engine

            # GX fingerprints every pandas batch below this size (an md5 over a hash of every value); nothing reads the
            # fingerprint, and where tallies stay long (1M distinct margins: measured 0.64 s a judgement) it is a third of the time.
            pandas_execution_engine.HASH_THRESHOLD = 0

            _build_configurations_once_a_validation()
            _context = gx.get_context(mode="ephemeral")
            _context.variables.progress_bars = ProgressBarsConfig(globally=False)
        return gx


def context():
    """The process's Great Expectations context (built on first use)."""
    _gx()
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
            ctx = context()
            source = ctx.data_sources.all().get("prefhouse-gates") or ctx.data_sources.add_pandas("prefhouse-gates")
            _batches[kind] = source.add_dataframe_asset(kind).add_batch_definition_whole_dataframe(kind)
        return _batches[kind]


# what a pipe to a worker that died raises (a closed pipe, a cut-off reply)
LOST = (OSError, EOFError, ValueError, pickle.UnpicklingError)


class WorkerError(RuntimeError):
    """Great Expectations raised in the worker: its traceback, as the worker printed it."""


class GxWorker:
    """The writer's side of the worker: started at once, asked one validation at a time (from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = False
        self._gone: str | None = None  # why the worker can no longer answer
        self.process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        atexit.register(self.close)

    def wait_ready(self) -> None:
        """Wait until the worker has imported GX and warmed up (its first answer)."""
        with self._lock:
            if self._gone is None:
                try:
                    self._receive_ready()
                except LOST as exc:
                    self._lost(exc)

    def validate(self, *request: Any) -> dict[str, dict]:
        """:func:`validate_tallies` (``request`` its arguments) in the worker; here if the worker is gone."""
        with self._lock:
            if self._gone is None:
                try:
                    self._receive_ready()
                    pickle.dump(request, self.process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    self.process.stdin.flush()
                    kind, answer = pickle.load(self.process.stdout)
                except LOST as exc:
                    self._lost(exc)
                else:
                    if kind == "error":
                        raise WorkerError(answer)
                    return answer
        return validate_tallies(*request)

    def _receive_ready(self) -> None:
        if not self._ready:
            pickle.load(self.process.stdout)
            self._ready = True

    def _lost(self, exc: BaseException) -> None:
        if self._gone is None:
            code = self.process.poll()
            self._gone = f"the Great Expectations worker (pid {self.process.pid}) {'exited with code ' + str(code) if code is not None else 'stopped answering'} ({type(exc).__name__})"
            print(f"prefhouse: {self._gone}; validating in this process", file=sys.stderr)
            self.close()

    def close(self) -> None:
        """End the worker (it holds nothing a later run needs); what is asked of it afterwards runs here."""
        self._gone = self._gone or "closed"
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for pipe in (self.process.stdin, self.process.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


_worker: GxWorker | None = None
_worker_guard = threading.Lock()


def worker() -> GxWorker:
    """The process's one worker, started by the first call."""
    global _worker
    with _worker_guard:
        if _worker is None:
            _worker = GxWorker()
        return _worker


def stop_worker() -> None:
    """End the process's worker, if it has one (the next :func:`worker` starts another)."""
    global _worker
    with _worker_guard:
        if _worker is not None:
            _worker.close()
            _worker = None


def _serve() -> None:
    """The worker's loop: warm up, say so, then answer each pickled request on stdin with a pickled reply on stdout,
    until stdin closes. Whatever GX or a library prints goes to stderr, never into the replies."""
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    requests = sys.stdin.buffer
    warm_up()
    pickle.dump(("ready", None), replies)
    replies.flush()
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:
            return
        try:
            reply = ("ok", validate_tallies(*request))
        except Exception:  # noqa: BLE001 - sent back whole, raised in the writer
            reply = ("error", traceback.format_exc())
        pickle.dump(reply, replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


if __name__ == "__main__":
    _serve()
