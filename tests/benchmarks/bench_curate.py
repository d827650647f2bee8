"""Curation speed: the project vs a naive per-row Python baseline vs the pyarrow Parquet write floor.

    python tests/benchmarks/bench_curate.py --rows 1000000
    python tests/benchmarks/bench_curate.py --datasets-map 100000 --repeats 3   # HH-RLHF + UltraFeedback vs datasets.map, cold processes

Generates (or reuses) scaled raw data in the real schemas (tests/benchmarks/scale.py), then runs, each in
its own process so that peak RSS is its own: (a) the project's curation into a fresh lake, (b) the naive
per-row baseline on the same files, (c) writing the project's output tables with ``pyarrow.parquet`` alone
(snappy, delta-rs's default), the floor for any writer of the same bytes, and then pyarrow reading every raw file
before that write (the floor of --datasets-map's (e), over all ten sources). Prints rows/s, peak RSS and the
ratios. Targets on a 2-core machine: (a) >= 10x (b), (a) within 3x of (c), peak RSS of (a) < 2 GB.

``--datasets-map N``: N raw rows each of HH-RLHF and UltraFeedback (hub schemas), three cold processes timed
whole: (a) ``prefhouse curate --sources hh_rlhf,ultrafeedback``; (d) the common script, ``datasets.load_dataset
("json")`` and a ``.map`` doing the same parsing and pairing per row as the adapters (naive_curate's rules), no
ids, provenance or gates, ``to_parquet``; (e) the floor: ``pyarrow.json`` reads the same files and
``pyarrow.parquet`` writes the project's resulting pairs. Targets: (a) <= 0.5x (d), (a) <= 3x (e).

Both modes also print the CPU time (a) used, over every thread, and the wall time that much work needs at the least
with every core of the machine busy: a ratio target below that bound cannot be met by overlapping work, only by doing less.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))


HH_UF = ("hh_rlhf", "ultrafeedback")  # the two sources of the datasets.map comparison


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_project(data: Path, work: Path, profile: int = 0) -> dict:
    """``profile``: also run it under cProfile, serially, and return its top entries by cumulative time (the timing
    is the unprofiled run's; the profile costs time of its own)."""
    from prefhouse.pipelines.core.lake import Lake
    from prefhouse.pipelines.curate import curate
    from prefhouse.pipelines.sources.settings import resolve_sources

    lake = Lake(str(work / "lake"))
    t0, cpu0 = time.perf_counter(), time.process_time()
    run, summaries = curate(resolve_sources("all"), lake, data, progress=False)
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0  # process_time: every thread's CPU
    # and the Great Expectations worker's (quality.gx_worker), a child of this process: its CPU counts once it has ended
    # (its peak RSS from /proc: a child's ru_maxrss counts the parent's pages it was forked with)
    from prefhouse.quality.gx_worker import stop_worker, worker

    status = Path(f"/proc/{worker().process.pid}/status").read_text()
    worker_rss_mb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
    stop_worker()
    gx = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {"seconds": seconds, "cpu_s": cpu_s + gx.ru_utime + gx.ru_stime, "rows": run.rows_in, "pairs": run.rows_out, "rss_mb": peak_rss_mb(),
              "worker_rss_mb": worker_rss_mb, "lake": lake.uri}
    if profile:
        import cProfile
        import io
        import pstats

        from unittest import mock

        profiler = cProfile.Profile()
        profiler.enable()
        # cProfile sees only the thread it runs on: the batches are prepared on it too, one after another
        with mock.patch("prefhouse.pipelines.curate.prepared_in_order", lambda prepare, items, threads: map(prepare, items)):
            curate(resolve_sources("all"), Lake(str(work / "profiled-lake")), data, progress=False)
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(profile)
        result["profile"] = out.getvalue()
    return result


def run_naive(data: Path, work: Path) -> dict:
    from naive_curate import naive_curate
    from prefhouse.pipelines.sources.registry import ADAPTERS

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


def run_datasets_map(data: Path, work: Path, sources: list[str]) -> dict:
    """The common script: datasets' JSON loader, a per-row map (batched only so that one row may give several pairs), Parquet."""
    import datasets
    from naive_curate import Sink, map_row

    datasets.disable_progress_bars()

    def mapper(source: str):
        def pairs_of(batch: dict) -> dict:
            sink = Sink(source, ids=False)
            columns = list(batch)
            for i in range(len(batch[columns[0]])):
                map_row(source, sink, f"{i}", {c: batch[c][i] for c in columns}, {})
            out = {k: [p[k] for p in sink.pairs] for k in ("prompt", "chosen", "rejected", "chosen_score", "rejected_score", "source", "raw_key")}
            return out
        return pairs_of

    pairs = 0
    for source in sources:
        files = sorted(str(p) for p in (data / source).glob("*.jsonl"))
        raw = datasets.load_dataset("json", data_files=files, split="train", cache_dir=str(work / "hf-cache"))
        mapped = raw.map(mapper(source), batched=True, batch_size=1000, remove_columns=raw.column_names)
        mapped.to_parquet(str(work / f"datasets-{source}.parquet"))
        pairs += mapped.num_rows
    return {"pairs": pairs, "rss_mb": peak_rss_mb()}


def run_read_write_floor(data: Path, lake_uri: str) -> dict:
    """Read every raw file under ``data`` with pyarrow (timed: JSON lines and Parquet), load the project's pairs (not
    timed), write them with pyarrow (timed)."""
    import pyarrow.json as pj
    import pyarrow.parquet as pq
    from prefhouse.pipelines.core.lake import Lake

    t0 = time.perf_counter()
    files = sorted(data.glob("*/*"))
    rows = sum(pj.read_json(p).num_rows for p in files if p.suffix == ".jsonl") + sum(pq.read_table(p).num_rows for p in files if p.suffix == ".parquet")
    read_s = time.perf_counter() - t0
    pairs = Lake(lake_uri).read("pairs")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        pq.write_table(pairs, Path(out) / "pairs.parquet", compression="snappy")
        write_s = time.perf_counter() - t0
    return {"seconds": read_s + write_s, "read_s": read_s, "write_s": write_s, "rows": rows, "pairs": pairs.num_rows}


def timed_child(variant: str, *args: str) -> tuple[float, dict]:
    """A cold process, timed whole (interpreter start and imports included)."""
    t0 = time.perf_counter()
    result = child(variant, *args)
    return time.perf_counter() - t0, result


def scaled_data(data: Path, rows: int, pad: int, per_source: dict[str, int] | None = None) -> int:
    """Generate the scaled raw files under ``data`` unless a marker says they are there; return their bytes."""
    marker = data / f".rows-{rows}-pad-{pad}"
    if not marker.exists():
        from scale import generate

        shutil.rmtree(data, ignore_errors=True)
        t0 = time.perf_counter()
        generate(0 if per_source else rows, data, pad, per_source=per_source)
        marker.touch()
        print(f"generated scaled raw data in {time.perf_counter() - t0:.1f}s")
    return sum(p.stat().st_size for p in data.rglob("*") if p.is_file())


def datasets_map_comparison(rows: int, data_root: Path, pad: int, repeats: int = 1) -> None:
    """(a), (d) and (e) in turn, ``repeats`` rounds: each round's ratios compare runs made one after the other, and
    the median over rounds is the figure (this machine's speed drifts by 10-15% between minutes)."""
    sources = list(HH_UF)
    data = data_root.parent / f"raw-hh-uf-{rows}"
    size = scaled_data(data, rows, pad, per_source={s: rows for s in sources})
    print(f"\nHH-RLHF + UltraFeedback, {rows:,} raw rows each ({size / 1e6:,.0f} MB of JSONL), cold processes timed whole")
    to_common, to_floor = [], []
    for round_ in range(1, repeats + 1):
        project_s, project_cpu, common_s, common, floor = _datasets_map_round(data, sources)
        to_common.append(project_s / common_s)
        to_floor.append(project_s / floor["seconds"])
        print(f"\nround {round_} of {repeats}")
        print(f"(a) prefhouse curate              : {project_s:7.1f} s  ({floor['pairs']:,} pairs, with ids, provenance, prompts, quarantine, gates)")
        print(f"(d) datasets.load_dataset + .map  : {common_s:7.1f} s  ({common['pairs']:,} pairs, no ids or dedup; peak RSS {common['rss_mb']:,.0f} MB)")
        print(f"(e) pyarrow read + write (floor)  : {floor['seconds']:7.1f} s  (read {floor['read_s']:.1f} s, write {floor['write_s']:.1f} s)")
        print(f"(a) / (d): {to_common[-1]:.2f}x (target <= 0.5x); (a) / (e): {to_floor[-1]:.1f}x (target <= 3x)")
        print(cpu_bound(project_cpu, project_s, floor["seconds"], "the floor"))
    if repeats > 1:
        print(f"\nmedian of {repeats} rounds: (a) / (d) {statistics.median(to_common):.2f}x (range {min(to_common):.2f}-{max(to_common):.2f}); "
              f"(a) / (e) {statistics.median(to_floor):.1f}x (range {min(to_floor):.1f}-{max(to_floor):.1f})")


def _datasets_map_round(data: Path, sources: list[str]) -> tuple[float, float, float, dict, dict]:
    """One round: (a) timed whole with its CPU time over every thread, then (d), then (e) on (a)'s lake."""
    work = Path(tempfile.mkdtemp(prefix="prefhouse-bench-"))
    try:
        before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "prefhouse.pipelines.curate", "--sources", ",".join(sources), "--data-dir", str(data),
                               "--lake", str(work / "lake"), "--quiet"], capture_output=True, text=True)
        project_s = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        project_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode:
            raise SystemExit(f"curate failed:\n{proc.stderr}")
        common_s, common = timed_child("datasets", "--data", str(data), "--work", str(work))
        _, floor = timed_child("readfloor", "--data", str(data), "--lake-uri", str(work / "lake"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return project_s, project_cpu, common_s, common, floor


def cpu_bound(cpu_s: float, wall_s: float, reference_s: float, reference: str) -> str:
    """What (a)'s CPU time says about its wall time: that work, spread over every core of this machine with none idle,
    still takes cpu_s / cores. A target below that needs less work, not more overlap."""
    cores = len(os.sched_getaffinity(0))  # the cores this process may run on
    return (f"(a) used {cpu_s:.1f} s of CPU ({cpu_s / wall_s:.2f} of {cores} cores): with every core busy all the time it would still "
            f"take >= {cpu_s / cores:.1f} s = {cpu_s / cores / reference_s:.1f}x {reference}")


def child(variant: str, *args: str) -> dict:
    """One variant in a process of its own (``--variant``), set up as the ``prefhouse`` command sets up its process."""
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
    parser.add_argument("--datasets-map", type=int, default=0, metavar="N", help="only the HH-RLHF + UltraFeedback comparison, N rows each")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of --datasets-map; ratios are also printed as the median over rounds")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions of a cProfile run of (a), by cumulative time")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--lake-uri", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.variant:
        # polars' allocator settings, before anything here imports polars: (a) then runs as ``prefhouse curate`` would
        from prefhouse.pipelines.core.process import set_allocator

        set_allocator()
        two = list(HH_UF)
        result = {"project": lambda: run_project(args.data, args.work, args.profile), "naive": lambda: run_naive(args.data, args.work),
                  "floor": lambda: run_floor(args.lake_uri, args.work), "datasets": lambda: run_datasets_map(args.data, args.work, two),
                  "readfloor": lambda: run_read_write_floor(args.data, args.lake_uri)}[args.variant]()
        print(json.dumps(result))
        return
    if args.datasets_map:
        datasets_map_comparison(args.datasets_map, args.data, args.pad, args.repeats)
        return

    size = scaled_data(args.data, args.rows, args.pad)
    work = Path(tempfile.mkdtemp(prefix="prefhouse-bench-"))
    try:
        common = ["--data", str(args.data), "--work", str(work)]
        project = child("project", *common, "--profile", str(args.profile))
        floor = child("floor", "--lake-uri", project["lake"], "--work", str(work))
        read_write = child("readfloor", "--data", str(args.data), "--lake-uri", project["lake"])
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
    print(f"pyarrow reading every raw file and writing the output: {read_write['seconds']:.2f} s (read {read_write['read_s']:.2f} s, "
          f"write {read_write['write_s']:.2f} s); the project is {project['seconds'] / read_write['seconds']:.2f}x that"
          + (f", and 10x the naive baseline would allow {naive['seconds'] / 10:.1f} s" if naive else ""))
    if naive:
        print(cpu_bound(project["cpu_s"], project["seconds"], naive["seconds"] / 10, "the time 10x the naive baseline allows"))
    print(f"peak RSS of the project's curation: {project['rss_mb']:,.0f} MB (target < 2048 MB); its Great Expectations worker process "
          f"{project['worker_rss_mb']:,.0f} MB")
    if project.get("profile"):
        print(f"\nwhere (a)'s time goes (cProfile, a second run into another lake; cumulative time):\n{project['profile']}")


if __name__ == "__main__":
    main()
