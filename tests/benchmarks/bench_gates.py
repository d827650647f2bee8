"""Quality-gate cost relative to the write it guards, on 1,000,000 pairs (target: <= 30% overhead).

    python tests/benchmarks/bench_gates.py --pairs 1000000 --repeats 5

Same process, same synthetic pairs (tests/benchmarks/synthetic.py), held as polars frames as the writers
hold the pairs they build (``curate.py``, ``quality/guard.py``): (a) the guarded write alone, as writers do
it, staging each frame (``to_arrow``) as Parquet data files and committing them to a fresh Delta table;
(b) the gate as writers run it, deriving the fact columns with polars for each staged chunk and handing them to a ``Gatekeeper``,
which runs the pairs suite with Great Expectations over the facts' tallies a chunk (``quality.gates.CHUNK_ROWS``)
at a time and checks uniqueness across chunks; GX runs in its worker process (``quality.gx_worker``), so (b) includes
handing it the tallies and reading its results back. The worker's start (GX's import, its context and a first tiny
validation: a process's first validation costs ~0.1 s more than later ones) is waited for once before timing, as a run
starts it when it begins staging; the script prints that time.
Prints seconds and the ratio b / a.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl  # noqa: E402
from prefhouse.pipelines.core import schema as S  # noqa: E402
from prefhouse.pipelines.core.lake import Lake, staging  # noqa: E402
from prefhouse.quality.checks import pair_facts  # noqa: E402
from prefhouse.quality.gates import CHUNK_ROWS, Gatekeeper, Verdict  # noqa: E402
from prefhouse.quality.gx_worker import worker  # noqa: E402
from prefhouse.quality.suites import GateContext  # noqa: E402
from synthetic import chunks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=250_000)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of write and gate; the median overhead is printed too")
    args = parser.parse_args()
    frames = [pl.from_arrow(table) for table in chunks(args.pairs, 1, args.chunk)]
    t0 = time.perf_counter()
    worker().wait_ready()  # GX's worker: its import, context and first validation, once per process, outside the timings
    warm_up_s = time.perf_counter() - t0
    sources = tuple(sorted({s for frame in frames for s in frame["source"].unique()}))
    ratios = []
    for round_ in range(1, args.repeats + 1):
        write_s, facts_s, judge_s, verdict = guarded_write_and_gate(frames, sources)
        assert verdict.success, verdict.batch_failures
        ratios.append((facts_s + judge_s) / write_s)
        print(f"round {round_} of {args.repeats}: {args.pairs:,} pairs, {len(verdict.results)} expectations")
        print(f"(a) guarded write (Parquet files + Delta commit): {write_s:7.2f} s")
        print(f"(b) gate: derive facts (polars)                 : {facts_s:7.2f} s")
        print(f"    gate: Great Expectations suite               : {judge_s:7.2f} s")
        print(f"overhead of the gate over the write: {ratios[-1]:.0%} (target <= 30%)")
    if args.repeats > 1:
        print(f"median of {args.repeats} rounds: {statistics.median(ratios):.0%} (range {min(ratios):.0%}-{max(ratios):.0%}; target <= 30%)")
    print(f"judged in {-(-args.pairs // CHUNK_ROWS)} chunk(s) of about {CHUNK_ROWS:,} facts")
    print(f"once per process, not timed above: importing GX, building its context and a first tiny validation {warm_up_s:.2f} s "
          "(in a run, in the worker process while it stages)")


def guarded_write_and_gate(frames: list[pl.DataFrame], sources: tuple[str, ...]) -> tuple[float, float, float, Verdict]:
    """(a) the frames staged and committed to a fresh Delta table, timed; (b) their facts and the gate, timed apart."""
    work = Path(tempfile.mkdtemp(prefix="prefhouse-gates-"))
    try:
        lake = Lake(str(work / "lake"))
        keeper = Gatekeeper(GateContext((0,), sources), "bench")  # before the write, as writers make it
        t0 = time.perf_counter()
        with staging(lake) as stage:
            for frame in frames:
                stage.add(S.PAIRS, frame.to_arrow(), S.PAIR_SCHEMA, S.PAIR_PARTITIONS)
            stage.commit()
        write_s = time.perf_counter() - t0

        facts_s = judge_s = 0.0
        for frame in frames:
            t0 = time.perf_counter()
            facts = pair_facts(frame)
            facts_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            keeper.observe(S.PAIRS, "pairs", facts)
            judge_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        verdict = keeper.judge(S.PAIRS)
        judge_s += time.perf_counter() - t0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return write_s, facts_s, judge_s, verdict


if __name__ == "__main__":
    main()
