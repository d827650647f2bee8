"""SQL over the lake vs scanning the same pairs stored as JSONL files (what the reference scripts keep).

    python tests/benchmarks/bench_sql.py --pairs 10000000

Generates ``--pairs`` synthetic pairs in the lake's pair schema (DuckDB builds them in chunks), appends
them to a Delta ``pairs`` table partitioned by iteration and source (``--iterations`` x 10 partitions),
and writes the same rows as JSONL files. Then runs, through the project's read-only runner and through
DuckDB's ``read_json`` over the JSONL files: an aggregate per partition over its small columns (count,
mean margin, latest time), the same over the text of every chosen reply (which must decode all of it),
and a point lookup by pair id.
Both sides run in this process, each query ``--repeat`` times on each side, interleaved; prints the median
seconds of each side and their ratio (and each side's best). The baseline is DuckDB scanning the JSONL
files the reference scripts keep: it parses every record each time, has no partitions, statistics or
file skipping, and holds no versions; the lake side goes through the project's runner (pinned Delta
versions, the sandbox) with the connection already open, as the runner opens it for a read statement
(DuckDB reading the data files itself). The column "via Arrow" times the same query on the connection
the runner opens for other statements and object-store lakes (pyarrow datasets of the same files).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import duckdb  # noqa: E402
from prefhouse.pipelines.core import schema as S  # noqa: E402
from prefhouse.pipelines.core.lake import Lake  # noqa: E402
from prefhouse.pipelines.core.sql import connect, reads_only  # noqa: E402
from synthetic import generate  # noqa: E402


def once(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[float, list]:
    t0 = time.perf_counter()
    rows = con.sql(sql).fetchall()
    return time.perf_counter() - t0, rows


def compare(lake_con: duckdb.DuckDBPyConnection, arrow_con: duckdb.DuckDBPyConnection, json_con: duckdb.DuckDBPyConnection,
            sql: str, repeat: int) -> tuple[list[float], list[float], list[float]]:
    """Each side ``repeat`` times, interleaved; the row counts must agree."""
    lake_times, arrow_times, json_times = [], [], []
    for _ in range(repeat):
        seconds, rows = once(lake_con, sql.format(t="pairs"))
        lake_times.append(seconds)
        seconds, arrow_rows = once(arrow_con, sql.format(t="pairs"))
        arrow_times.append(seconds)
        seconds, json_rows = once(json_con, sql.format(t="pairs_json"))
        json_times.append(seconds)
        assert len(rows) == len(arrow_rows) == len(json_rows), (sql, len(rows), len(arrow_rows), len(json_rows))
    return lake_times, arrow_times, json_times


def report(name: str, lake_times: list[float], arrow_times: list[float], json_times: list[float]) -> None:
    lake_s, arrow_s, json_s = (statistics.median(t) for t in (lake_times, arrow_times, json_times))
    print(f"{name:28} {lake_s:9.3f} {arrow_s:10.3f} {json_s:9.3f} {json_s / lake_s:8.1f}x   (best {min(lake_times):.3f} vs {min(json_times):.3f})")


def run_queries(lake: Lake, json_con: duckdb.DuckDBPyConnection, queries: dict[str, str], repeat: int) -> None:
    assert all(reads_only(sql.format(t="pairs")) for sql in queries.values())  # what the runner reads directly
    lake_con, _ = connect(lake, names={S.PAIRS}, direct=True)
    arrow_con, _ = connect(lake, names={S.PAIRS})
    print(f"{'query':28} {'lake s':>9} {'via Arrow':>10} {'JSONL s':>9} {'speed-up':>9}   (medians of {repeat} runs each)")
    for name, sql in queries.items():
        report(name, *compare(lake_con, arrow_con, json_con, sql, repeat))
    lake_con.close()
    arrow_con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=10_000_000)
    parser.add_argument("--iterations", type=int, default=10, help="iteration partitions (x 10 sources)")
    parser.add_argument("--chunk", type=int, default=500_000)
    parser.add_argument("--work", type=Path, default=REPO / "data" / "bench" / "sql")
    parser.add_argument("--repeat", type=int, default=3, help="runs per query and side; the medians are compared")
    parser.add_argument("--zorder", action="store_true", help="then z-order the pairs table by pair_id and time the queries again")
    args = parser.parse_args()

    lake, jsonl = Lake(str(args.work / "lake")), args.work / "jsonl"
    marker = args.work / f".pairs-{args.pairs}-it-{args.iterations}"
    if not marker.exists():
        shutil.rmtree(args.work, ignore_errors=True)
        seconds = generate(lake, jsonl, args.pairs, args.iterations, args.chunk)
        marker.touch()
        print(f"generated the lake and the JSONL copy in {seconds:.0f}s")
    lake_bytes = sum(p.stat().st_size for p in Path(lake.table_uri(S.PAIRS)).rglob("*.parquet"))
    json_bytes = sum(p.stat().st_size for p in jsonl.glob("*.jsonl"))
    partitions = len(lake.delta(S.PAIRS).partitions())
    lookup_id = duckdb.sql(f"SELECT md5('pair' || {args.pairs // 2 + 7}::VARCHAR)").fetchall()[0][0]

    queries = {
        "aggregate per partition": "SELECT iteration, source, count(*) AS n, avg(margin) AS m, max(created_at) AS t FROM {t} GROUP BY ALL ORDER BY ALL",
        "aggregate of reply lengths": "SELECT iteration, source, avg(length(chosen[-1].content)) AS l FROM {t} GROUP BY ALL ORDER BY ALL",
        "point lookup by pair_id": f"SELECT pair_id, source, iteration, chosen[-1].content FROM {{t}} WHERE pair_id = '{lookup_id}'",
    }
    json_con = duckdb.connect()
    json_con.execute(f"CREATE VIEW pairs_json AS SELECT * FROM read_json('{jsonl}/*.jsonl', format = 'newline_delimited')")
    print(f"\n{args.pairs:,} pairs in {partitions} partitions: Delta {lake_bytes / 1e9:.2f} GB, JSONL {json_bytes / 1e9:.2f} GB")
    run_queries(lake, json_con, queries, args.repeat)
    if args.zorder:
        from prefhouse.pipelines.maintain import optimize

        t0 = time.perf_counter()
        run = optimize(lake, [S.PAIRS], zorder_by=["pair_id"])
        print(f"\nz-ordered pairs by pair_id in {time.perf_counter() - t0:.0f}s: {run.timings[S.PAIRS]}")
        run_queries(lake, json_con, queries, args.repeat)


if __name__ == "__main__":
    main()
