"""Lake maintenance: ``python -m pipelines.maintain optimize|vacuum``.

Every run appends new files, so a lake that grows run by run has many small files; ``optimize`` rewrites
a table's files into few large ones, optionally clustered by columns (z-order: ``--zorder pair_id`` makes
a lookup by pair id read one small row group of each file instead of every file whole). It is a new Delta version with the same
rows: older versions stay readable (``--as-of``) until ``vacuum`` deletes the files no version within the
retention period references: files older versions removed, and orphans, files no version ever named (a
run killed before its commit leaves its staged files so). Vacuum is a full one (delta-rs ``full=True``:
the table's whole folder is listed, not just the log since its last checkpoint) and keeps Delta's
retention check on (default 7 days, by file age), which is also what keeps it from deleting the data files
a running writer has staged but not committed yet.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: the process is set up and a --help answered here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.process import start
    from prefhouse.pipelines.parsers import maintain_parser

    start(maintain_parser)

import pyarrow as pa
from deltalake import CommitProperties
from prefhouse.pipelines.core.lake import Lake, writer_properties
from prefhouse.pipelines.core.runlog import RunRecord
from prefhouse.pipelines.parsers import maintain_parser as build_parser

# Rewritten files hold row groups of this many rows: with one row group per file (delta-rs's default), a
# lookup by the z-order column reads every file's projected columns whole; with small ones, pyarrow skips
# the row groups whose min/max exclude the value (10M pairs: 1.2 s -> 0.13 s for a pair id, bench_sql.py).
ROW_GROUP_ROWS = 8192


def optimize(lake: Lake, tables: list[str], zorder_by: list[str] | None = None) -> RunRecord:
    """Compact (or z-order) each table in one commit; log the run with versions and file counts."""
    run = RunRecord("optimize", {"tables": tables, "zorder_by": zorder_by})
    with lake.lock("maintain"):
        run.versions_before = lake.versions(tables)
        try:
            for table in tables:
                dt = lake.delta(table)
                props = CommitProperties(custom_metadata={"prefhouse.run_id": run.run_id})
                writer = writer_properties(pa.schema(dt.schema().to_arrow()), ROW_GROUP_ROWS, "ZSTD", max_row_group_size=ROW_GROUP_ROWS)
                metrics = (dt.optimize.z_order(zorder_by, commit_properties=props, writer_properties=writer) if zorder_by
                           else dt.optimize.compact(commit_properties=props, writer_properties=writer))
                run.timings[table] = {k: metrics.get(k) for k in ("numFilesAdded", "numFilesRemoved", "totalConsideredFiles")}
            run.versions_after = lake.versions(tables)
            run.write(lake, "succeeded")
        except BaseException as exc:
            run.write(lake, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
    return run


def vacuum(lake: Lake, tables: list[str], retention_hours: int | None = None, apply: bool = False,
           enforce_retention: bool = True) -> dict[str, list[str]]:
    """Files no version within the retention references, orphans included (deleted only with ``apply``), per table.

    ``enforce_retention = False`` allows a retention below the table's (Delta refuses it otherwise): only
    safe when no writer is running, since a running writer's staged files are young orphans.
    """
    found = {}
    with lake.lock("maintain"):
        for table in tables:
            found[table] = lake.delta(table).vacuum(retention_hours=retention_hours, dry_run=not apply, enforce_retention_duration=enforce_retention, full=True)
        if apply:
            run = RunRecord("vacuum", {"tables": tables, "retention_hours": retention_hours})
            run.rows_out = sum(len(v) for v in found.values())
            run.write(lake, "succeeded")
    return found


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    lake = Lake(args.lake)
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    if args.action == "optimize":
        run = optimize(lake, tables, args.zorder.split(",") if args.zorder else None)
        for table in tables:
            print(f"{table}: version {run.versions_before.get(table)} -> {run.versions_after.get(table)} {run.timings[table]}")
    else:
        for table, files in vacuum(lake, tables, args.retention_hours, args.apply).items():
            print(f"{table}: {len(files)} unreferenced files {'deleted' if args.apply else 'would be deleted (dry run; --apply deletes)'}")
    return 0


if __name__ == "__main__":
    from prefhouse.pipelines.core.errors import run
    from prefhouse.pipelines.core.process import finish

    finish(run(main))
