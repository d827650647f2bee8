"""Curation speed: the project vs a naive per-row Python baseline vs the pyarrow Parquet write floor.

    python tests/benchmarks/bench_curate.py --rows 1000000

Generates (or reuses) scaled raw data in the real schemas (tests/benchmarks/scale.py), then runs, each in
its own process so that peak RSS is its own: (a) the project's curation into a fresh lake, (b) the naive
per-row baseline on the same files, (c) writing the project's output tables with ``pyarrow.parquet`` alone
(snappy, delta-rs's default), the floor for any writer of the same bytes. Prints rows/s, peak RSS and the
ratios. Targets on a 2-core machine: (a) >= 10x (b), (a) within 3x of (c), peak RSS of (a) < 2 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_project(data: Path, work: Path, profile: int = 0) -> dict:
    """``profile``: also run it under cProfile and return its top entries by cumulative time (the timing is the
    unprofiled run's; the profile costs time of its own)."""
    from prefhouse.pipelines.core.lake import Lake
    from prefhouse.pipelines.curate import curate
    from prefhouse.pipelines.sources.settings import resolve_sources

    lake = Lake(str(work / "lake"))
    t0 = time.perf_counter()
    run, summaries = curate(resolve_sources("all"), lake, data, progress=False)
    seconds = time.perf_counter() - t0
    result = {"seconds": seconds, "rows": run.rows_in, "pairs": run.rows_out, "rss_mb": peak_rss_mb(), "lake": lake.uri}
    if profile:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        curate(resolve_sources("all"), Lake(str(work / "profiled-lake")), data, progress=False)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(profile)
        result["profile"] = out.getvalue()
    return result


def run_naive(data: Path, work: Path) -> dict:
    from naive_curate import naive_curate
    from prefhouse.pipelines.sources import ADAPTERS

    t0 = time.perf_counter()
    rows, pairs = naive_curate(data, work / "naive", list(ADAPTERS))
    return {"seconds": time.perf_counter() - t0, "rows": rows, "pairs": pairs, "rss_mb": peak_rss_mb()}


def run_floor(lake_uri: str, work: Path) -> dict:
    """Write exactly the tables the project's run produced, with pyarrow alone; time only the writes."""
    import pyarrow.parquet as pq
    from prefhouse.pipelines.core.lake import Lake

    lake = Lake(lake_uri)
    tables = {t: lake.read(t) for t in lake.tables() if t not in ("runs", "run_counts")}
    out = work / "floor"
    out.mkdir()
    t0 = time.perf_counter()
    for name, table in tables.items():
        pq.write_table(table, out / f"{name}.parquet", compression="snappy")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": sum(t.num_rows for t in tables.values()), "rss_mb": peak_rss_mb(),
            "bytes": sum(p.stat().st_size for p in out.iterdir())}


def child(variant: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--variant", variant, *args], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{variant} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="raw rows across the ten sources")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "bench" / "raw", help="scaled raw data (generated if absent)")
    parser.add_argument("--pad", type=int, default=3, help="filler paragraphs per prompt and reply (see scale.py)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions of a cProfile run of (a), by cumulative time")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lake-uri", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:
        result = {"project": lambda: run_project(args.data, args.work, args.profile), "naive": lambda: run_naive(args.data, args.work),
                  "floor": lambda: run_floor(args.lake_uri, args.work)}[args.variant]()
        print(json.dumps(result))
        return

    marker = args.data / f".rows-{args.rows}-pad-{args.pad}"
    if not marker.exists():
        from scale import generate

        shutil.rmtree(args.data, ignore_errors=True)
        t0 = time.perf_counter()
        generate(args.rows, args.data, args.pad)
        marker.touch()
        print(f"generated scaled raw data in {time.perf_counter() - t0:.1f}s")
    size = sum(p.stat().st_size for p in args.data.rglob("*") if p.is_file())
    work = Path(tempfile.mkdtemp(prefix="prefhouse-bench-"))
    try:
        common = ["--data", str(args.data), "--work", str(work)]
        project = child("project", *common, "--profile", str(args.profile))
        floor = child("floor", "--lake-uri", project["lake"], "--work", str(work))
        naive = None if args.skip_naive else child("naive", *common)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = project["rows"]
    print(f"\ncuration of {rows:,} raw rows ({size / 1e6:,.0f} MB of raw files) across the ten sources")
    print(f"{'variant':34} {'seconds':>9} {'raw rows/s':>12} {'peak RSS MB':>12}")
    print(f"{'(a) prefhouse curate':34} {project['seconds']:9.2f} {rows / project['seconds']:12,.0f} {project['rss_mb']:12,.0f}")
    if naive:
        print(f"{'(b) naive per-row Python':34} {naive['seconds']:9.2f} {naive['rows'] / naive['seconds']:12,.0f} {naive['rss_mb']:12,.0f}")
    print(f"{'(c) pyarrow write of the output':34} {floor['seconds']:9.2f} {rows / floor['seconds']:12,.0f} {floor['rss_mb']:12,.0f}"
          f"   ({floor['rows']:,} output rows, {floor['bytes'] / 1e6:,.0f} MB)")
    print()
    if naive:
        print(f"speed-up over the naive baseline: {naive['seconds'] / project['seconds']:.1f}x (target >= 10x); "
              f"pairs: project {project['pairs']:,}, naive {naive['pairs']:,}")
    print(f"time relative to the write floor: {project['seconds'] / floor['seconds']:.2f}x (target <= 3x)")
    print(f"peak RSS of the project's curation: {project['rss_mb']:,.0f} MB (target < 2048 MB)")
    if project.get("profile"):
        print(f"\nwhere (a)'s time goes (cProfile, a second run into another lake; cumulative time):\n{project['profile']}")


if __name__ == "__main__":
    main()
