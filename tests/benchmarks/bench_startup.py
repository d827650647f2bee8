"""Start-up: `prefhouse <job> --help` for every job, against the floor of any prefhouse command.

    .venv/bin/python tests/benchmarks/bench_startup.py --repeats 5

Each command runs as a fresh process (what a user waits for), ``--repeats`` times, interleaved with the
baseline: a bare interpreter importing polars, pyarrow.dataset and duckdb, which every job needs to touch
the lake. Prints each job's min and median wall time and its ratio to the baseline's (target: < 1 s; a job
imports Great Expectations, torch, transformers, TRL or vLLM only when it runs, which ``tests/
test_packaging.py`` checks).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from prefhouse.pipelines.cli import JOBS

    baseline = [sys.executable, "-c", "import polars, pyarrow.dataset, duckdb"]
    commands = {job: [sys.executable, "-m", "prefhouse.pipelines.cli", job, "--help"] for job in JOBS}
    times: dict[str, list[float]] = {"baseline": [], **{job: [] for job in commands}}
    for _ in range(args.repeats):  # interleaved, so a busy moment of the machine hits every command alike
        times["baseline"].append(wall(baseline))
        for job, argv in commands.items():
            times[job].append(wall(argv))
    floor = statistics.median(times["baseline"])
    print(f"{'command':<28} {'min s':>7} {'median s':>9} {'x floor':>8}")
    print(f"{'floor: import polars, pyarrow, duckdb':<28} {min(times['baseline']):7.2f} {floor:9.2f} {1:8.2f}")
    for job in commands:
        median = statistics.median(times[job])
        print(f"{'prefhouse ' + job + ' --help':<28} {min(times[job]):7.2f} {median:9.2f} {median / floor:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
