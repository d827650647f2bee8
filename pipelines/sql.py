"""Read-only SQL over the lake: a named query (``sql/*.sql``), a .sql file or SELECT text, as a table, CSV, JSON or Parquet.

    prefhouse sql table1                          python -m pipelines.sql pairs_by_iteration --format csv
    prefhouse sql "SELECT source, count(*) FROM pairs GROUP BY 1" --as-of 3

The command; the runner (connections, views, time travel, output) is :mod:`prefhouse.pipelines.core.sql`.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: the process is set up and a --help answered here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.process import start
    from prefhouse.pipelines.parsers import sql_parser

    start(sql_parser)

import sys

import duckdb
from prefhouse.pipelines.core.errors import run
from prefhouse.pipelines.core.lake import Lake, LakeError
from prefhouse.pipelines.core.names import named_queries
from prefhouse.pipelines.core.sql import check_output, parse_params, run_query, write_output
from prefhouse.pipelines.parsers import sql_parser as build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    lake = Lake(args.lake)
    try:
        if args.list or not args.query:
            for name, path in named_queries().items():
                first = path.read_text().splitlines()[0].removeprefix("--").strip()
                print(f"{name:24} {first}")
            print()
            for table, version in lake.versions().items():
                print(f"{table:44} version {version}")
            return 0
        params = parse_params(args.param)
        output = check_output(args.output, lake) if args.output else None
        result = run_query(lake, args.query, args.as_of, params, args.memory_limit, args.timeout or None)
        write_output(result, args.format, output)
    except (ValueError, LakeError, duckdb.Error, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from prefhouse.pipelines.core.process import finish

    finish(run(main))
