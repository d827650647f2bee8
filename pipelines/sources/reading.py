"""Reading raw rows of a source in bounded-memory Arrow batches, from local files or from the hub.

Local (the default, offline): ``<data dir>/<source>/`` holds JSON-lines (``.jsonl``, ``.json``, optionally
``.gz``), JSON arrays or Parquet files in the source's raw hub schema; the split of a row is its file's
path below that folder without extensions (``harmless-base/train``), and its raw key is
``<split>#<row index>``. Hub (online): ``datasets.load_dataset(hub_id, revision=…)`` with the pinned
revision, iterated as Arrow batches; the split is ``<data_dir>/<split>``.

Every batch is cast to the adapter's declared raw schema: a missing column fails before anything is read
further, naming the source and the column; extra columns are ignored and reported.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
BLOCK_BYTES = 32 << 20


class MissingColumnError(ValueError):
    """A raw input lacks a column of the source's hub schema (renamed upstream, wrong file, wrong source)."""

    def __init__(self, source: str, column: str, where: str):
        super().__init__(f"source {source!r}: raw column {column!r} is missing in {where}")
        self.source, self.column, self.where = source, column, where


@dataclass(frozen=True)
class RawBatch:
    """Raw rows of one split, with their keys: ``table`` is in the adapter's raw schema."""

    split: str
    source_file: str
    first_index: int
    table: pa.Table

    @property
    def keys(self) -> pa.Array:
        index = pa.array(np.arange(self.first_index, self.first_index + self.table.num_rows)).cast(pa.string())
        return pc.binary_join_element_wise(self.split + "#", index, "")


@dataclass
class InputReport:
    """What a read touched, for the run log."""

    files: list[dict] = field(default_factory=list)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)


def _strip_suffix(name: str) -> str:
    for suffix in sorted(JSON_SUFFIXES + PARQUET_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def local_files(source_dir: Path) -> list[Path]:
    """The raw files of a source folder, in a stable order."""
    return sorted(p for p in source_dir.rglob("*") if p.is_file() and p.name.endswith(JSON_SUFFIXES + PARQUET_SUFFIXES))


def conform(table: pa.Table, schema: pa.Schema, source: str, where: str) -> pa.Table:
    """Select and cast the schema's columns; a missing one raises MissingColumnError."""
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            raise MissingColumnError(source, f.name, where)
        col = table.column(f.name)
        columns.append(col if col.type == f.type else col.cast(f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def check_columns(path: Path, schema: pa.Schema, source: str) -> list[str]:
    """Fail fast on a missing column, from the file's first record; return the extra columns."""
    if path.name.endswith(PARQUET_SUFFIXES):
        names = set(pq.read_schema(path).names)
    else:
        with _open_text(path) as handle:
            head = handle.read(1 << 16).lstrip()
        if not head:
            return []
        if head.startswith("["):
            with _open_text(path) as handle:
                first = next(iter(json.load(handle)), {})
        else:
            with _open_text(path) as handle:
                first = json.loads(handle.readline())
        names = set(first)
    for f in schema:
        if f.name not in names:
            raise MissingColumnError(source, f.name, str(path))
    return sorted(names - set(schema.names))


def _json_batches(path: Path, schema: pa.Schema) -> Iterator[pa.Table]:
    with _open_text(path) as handle:
        is_array = handle.read(1 << 16).lstrip().startswith("[")
    if is_array:  # a JSON array cannot be streamed by Arrow; these files are small on the hub
        with _open_text(path) as handle:
            rows = json.load(handle)
        yield pa.Table.from_pylist(rows, schema=schema)
        return
    stream = pa.input_stream(str(path), compression="gzip" if path.name.endswith(".gz") else None)
    reader = pajson.open_json(
        stream,
        read_options=pajson.ReadOptions(block_size=BLOCK_BYTES),
        parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )
    for batch in reader:
        yield pa.Table.from_batches([batch])


def check_local(source: str, source_dir: Path, schema: pa.Schema, report: InputReport) -> list[Path]:
    """The source's files, each checked for the schema's columns (reads one record a file); fills ``report``."""
    files = local_files(source_dir)
    if not files:
        raise FileNotFoundError(f"source {source!r}: no .jsonl/.json/.parquet files in {source_dir}")
    for path in files:
        extra = check_columns(path, schema, source)
        if extra:
            report.ignored_columns[str(path)] = extra
        report.files.append({"path": str(path), "bytes": path.stat().st_size})
    return files


def read_local(source: str, source_dir: Path, schema: pa.Schema, report: InputReport) -> Iterator[RawBatch]:
    """Raw batches of every file below ``source_dir`` (checked for columns first, all of them)."""
    return read_files(source, source_dir, check_local(source, source_dir, schema, report), schema)


def read_files(source: str, source_dir: Path, files: list[Path], schema: pa.Schema) -> Iterator[RawBatch]:
    """Raw batches of ``files`` (already checked by :func:`check_local`), split named by path below ``source_dir``."""
    for path in files:
        split = _strip_suffix(str(path.relative_to(source_dir)))
        index = 0
        if path.name.endswith(PARQUET_SUFFIXES):
            parquet = pq.ParquetFile(path)
            batches = (pa.Table.from_batches([b]) for b in parquet.iter_batches(batch_size=20_000))
        else:
            batches = _json_batches(path, schema)
        for table in batches:
            table = conform(table, schema, source, str(path))
            yield RawBatch(split, str(path), index, table)
            index += table.num_rows


def read_hub(
    source: str,
    hub_id: str,
    revision: str | None,
    data_dirs: list[str | None],
    schema: pa.Schema,
    report: InputReport,
    data_files: list[str] | None = None,
    batch_rows: int = 20_000,
) -> Iterator[RawBatch]:
    """Raw batches through ``datasets.load_dataset`` (the hub path; also any builder such as "json")."""
    import datasets  # imported here: the local path does not need its start-up cost

    for data_dir in data_dirs:
        loaded = datasets.load_dataset(hub_id, data_dir=data_dir, revision=revision, data_files=data_files)
        for split_name in sorted(loaded):
            ds = loaded[split_name]
            where = f"{hub_id}@{revision or 'main'}:{data_dir or ''}/{split_name}"
            for f in schema:
                if f.name not in ds.column_names:
                    raise MissingColumnError(source, f.name, where)
            extra = sorted(set(ds.column_names) - set(schema.names))
            if extra:
                report.ignored_columns[where] = extra
            report.files.append({"hub_id": hub_id, "revision": revision, "data_dir": data_dir, "split": split_name, "rows": len(ds)})
            split = f"{data_dir}/{split_name}" if data_dir else split_name
            index = 0
            for table in ds.with_format("arrow").iter(batch_size=batch_rows):
                table = conform(table, schema, source, where)
                yield RawBatch(split, where, index, table)
                index += table.num_rows


def regroup(batches: Iterator[RawBatch], column: str, source: str) -> Iterator[RawBatch]:
    """Re-cut batches so that rows sharing ``column`` (a prompt, a post) are never split across two batches.

    Hub files keep such rows together; the rows of the key that ends a batch are held back and put in
    front of the next batch of the same split. A key that comes back after its group ended would make
    per-group rules (all comparisons, at most k pairs per post) wrong, so it is an error, not a guess.
    """
    pending: RawBatch | None = None
    closed: set = set()
    for batch in batches:
        if pending is not None and pending.split != batch.split:
            yield pending
            pending, closed = None, set()
        if pending is not None:
            batch = RawBatch(batch.split, batch.source_file, pending.first_index, pa.concat_tables([pending.table, batch.table]))
        if not batch.table.num_rows:
            continue
        keys = pl.from_arrow(batch.table.column(column)).alias("k")
        starts = (keys != keys.shift(1)).fill_null(True).arg_true().to_list()
        run_keys = keys.gather(starts).to_list()
        if len(set(run_keys)) != len(run_keys) or closed.intersection(run_keys):
            again = next(k for i, k in enumerate(run_keys) if k in closed or k in run_keys[:i])
            raise ValueError(
                f"source {source!r}, split {batch.split!r}: rows with {column}={again!r} are not contiguous; "
                f"sort the raw file by {column!r} (hub files are) so that per-{column} rules see whole groups"
            )
        cut = starts[-1]
        closed.update(run_keys[:-1])
        if cut:
            yield RawBatch(batch.split, batch.source_file, batch.first_index, batch.table.slice(0, cut))
        pending = RawBatch(batch.split, batch.source_file, batch.first_index + cut, batch.table.slice(cut))
    if pending is not None and pending.table.num_rows:
        yield pending
