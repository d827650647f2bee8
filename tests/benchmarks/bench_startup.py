"""Start-up: the ``--help`` of every command, ``prefhouse <job>`` and the card's scripts, against two floors.

    .venv/bin/python tests/benchmarks/bench_startup.py --repeats 5

Each command runs as a fresh process (what a user waits for), ``--repeats`` times, interleaved with the two
baselines, so a busy moment of the machine hits every command alike: a bare interpreter (``python -c pass``,
the least any command can cost) and an interpreter importing polars, pyarrow.dataset and DuckDB (what every
job that touches the lake pays before its first row). Prints each command's min and median wall time and its
median's ratio to both floors (target: < 1 s). A ``--help`` builds only the job's parser
(``pipelines/parsers.py``): ``tests/test_packaging.py`` checks that it imports none of polars, pyarrow, DuckDB,
deltalake, numpy, pandas, Great Expectations, torch, transformers, TRL or vLLM.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def script(module: str) -> str:
    """The card's script of a job module: ``prefhouse.pipelines.curate`` -> ``pipelines/curate.py`` (``python -m pipelines.sql``
    runs ``pipelines/sql.py`` the same way)."""
    return module.removeprefix("prefhouse.").replace(".", "/") + ".py"


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from prefhouse.pipelines.cli import JOBS

    py = sys.executable
    floors = {"floor: python -c pass": [py, "-c", "pass"], "floor: import polars, pyarrow, duckdb": [py, "-c", "import polars, pyarrow.dataset, duckdb"]}
    commands = {**floors, **{f"prefhouse {job} --help": [py, "-m", "prefhouse.pipelines.cli", job, "--help"] for job in JOBS},
                **{f"python {script(module)} --help": [py, script(module), "--help"] for module, _ in JOBS.values()}}
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.repeats):  # interleaved
        for name, argv in commands.items():
            times[name].append(wall(argv))
    bare, data = (statistics.median(times[name]) for name in floors)
    width = max(map(len, commands))
    print(f"{'command':<{width}} {'min s':>7} {'median s':>9} {'x bare':>7} {'x data':>7}")
    for name in commands:
        median = statistics.median(times[name])
        print(f"{name:<{width}} {min(times[name]):7.2f} {median:9.2f} {median / bare:7.2f} {median / data:7.2f}")
    slowest = max(statistics.median(times[name]) for name in commands if name not in floors)
    print(f"\nslowest --help: {slowest:.2f} s median (target < 1 s: {'met' if slowest < 1 else 'not met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
