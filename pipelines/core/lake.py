"""The only module that touches storage.

Every other module speaks in Arrow tables, record-batch readers or polars frames and asks this one to
append them to a table, or to read a table as of a version. Tables are Delta Lake tables (Parquet
files plus a transaction log) written with the ``deltalake`` package, so that DuckDB, polars and Spark
read the same bytes. A table lives at ``<lake uri>/<table name>``; the lake URI is a local folder by
default (``data/lake``) or any object-store URI delta-rs accepts (``s3://…``, ``gs://…``, ``az://…``)
with its ``storage_options``.

Writes are appends, one atomic Delta commit each: either every row of the call becomes visible at the
new version, or none does. Reads take an optional version, so any read in the project can be pinned.

Concurrent writers. A row with a content id (:data:`ROW_KEYS`) must land once however many processes write
it. In a local lake a pipeline holds an exclusive file lock over its read-dedupe-append cycle
(:meth:`Lake.lock`). On an object store, where no such lock exists, an append of such a table inserts only
the rows whose key the table lacks, in a commit carrying a Delta application transaction: Delta's
optimistic concurrency refuses it when another insert committed since its read, and it is retried against
the new version, so two racing writers leave every id once (the loser inserts nothing it would duplicate)
or, after :data:`INSERT_ATTEMPTS` conflicts in a row, the call fails with a message saying so.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import BloomFilterProperties, ColumnProperties, CommitProperties, DeltaTable, Field, WriterProperties, write_deltalake
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import AddAction, create_table_with_add_actions
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.errors import UsageError
from prefhouse.pipelines.core.names import DEFAULT_LAKE

Versions = dict[str, int]
Partitions = Sequence[tuple[str, str, str]]  # Delta partition filters: (column, "=", value as text)
INSERT_ATTEMPTS = 8  # conflicting commits an object-store append retries through before it gives up
INSERT_APP_ID = "prefhouse.insert_new"  # the Delta application transaction every keyed object-store append carries


def row_key(table: str) -> tuple[str, ...] | None:
    """The columns whose values make a row of ``table`` the same row (its content id), if it has one."""
    return ("_raw_key",) if table.startswith("raw_") else S.ROW_KEYS.get(table)


class LakeError(UsageError):
    """A lake operation that cannot be carried out (missing table, concurrent writer, bad version)."""


@dataclass(frozen=True)
class DataFiles:
    """A local table's Parquet files at one version, as its Delta log lists them.

    ``schema`` is the table's (partition columns included, Delta's types); the files hold its other columns,
    or fewer when the table gained columns after they were written. ``actions`` are the log's add actions,
    flattened, one row per path: each file's partition values and statistics.
    """

    schema: pa.Schema
    partition_columns: list[str]
    paths: list[str]
    actions: pa.Table

    def partition_values(self, i: int) -> dict[str, object]:
        """File ``i``'s value of each partition column (None: null), typed as the log's add actions type them."""
        return {name: self.actions.column(f"partition.{name}")[i].as_py() for name in self.partition_columns}


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


@dataclass
class Lake:
    """A folder (or bucket prefix) of Delta tables.

    ``storage_options`` are passed to delta-rs unchanged (e.g. ``AWS_ENDPOINT_URL``) so that the same code
    writes to a local path in tests and to an object store at scale.
    """

    uri: str = DEFAULT_LAKE
    storage_options: dict[str, str] = field(default_factory=dict)
    _schemas_checked: set[str] = field(default_factory=set, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.uri = str(self.uri).rstrip("/")
        if _is_local(self.uri):
            self.uri = str(Path(self.uri.removeprefix("file://")).absolute())

    # ------------------------------------------------------------------ naming
    @property
    def local(self) -> bool:
        """Whether the lake is a local folder (its files can be opened by path), not an object store."""
        return _is_local(self.uri)

    def table_uri(self, table: str) -> str:
        return f"{self.uri}/{table}"

    def tables(self) -> list[str]:
        """Names of the tables in a local lake's folder; [] for object stores, where callers name their tables."""
        if not _is_local(self.uri):
            return []
        root = Path(self.uri)
        if not root.exists():
            return []
        return sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir())

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.table_uri(table), storage_options=self.storage_options or None)

    # ------------------------------------------------------------------ reading
    def delta(self, table: str, version: int | str | datetime | None = None) -> DeltaTable:
        """The Delta table, loaded as of ``version`` (an int, an ISO timestamp or a datetime) or the latest."""
        try:
            dt = DeltaTable(self.table_uri(table), storage_options=self.storage_options or None)
        except TableNotFoundError as exc:
            raise LakeError(f"table {table!r} does not exist in lake {self.uri}") from exc
        if version is not None:
            try:
                dt.load_as_version(version)
            except Exception as exc:  # delta-rs raises several types for a bad version
                raise LakeError(f"table {table!r} has no version {version!r}: {exc}") from exc
        return dt

    def table_id(self, table: str) -> str:
        """The Delta table's own id (a UUID made at creation): tells two lakes' same-named tables apart."""
        return self.delta(table).metadata().id

    def version(self, table: str) -> int | None:
        """The table's latest version, or None when it does not exist yet."""
        return self.delta(table).version() if self.exists(table) else None

    def version_at(self, table: str, when: datetime) -> int | None:
        """The table's version as of ``when`` (the last commit at or before it), None if it did not exist yet."""
        if not self.exists(table):
            return None
        cutoff = when.timestamp() * 1000
        committed = [h["version"] for h in self.delta(table).history() if h["timestamp"] <= cutoff]
        return max(committed) if committed else None

    def versions(self, tables: list[str] | None = None) -> Versions:
        """Latest version of each named (or every existing) table: the pins of a snapshot."""
        names = tables if tables is not None else self.tables()
        return {t: v for t in names if (v := self.version(t)) is not None}

    def dataset(self, table: str, version: int | str | datetime | None = None) -> pads.Dataset:
        """A pyarrow dataset over the table's files at that version (filter and projection push down).

        For a local lake it is built from the Delta log's add actions on Arrow's own local filesystem:
        delta-rs's ``to_pyarrow_dataset`` reads through a Python filesystem handler, and DuckDB abandoning
        such a scan early (``LIMIT``) crashed the interpreter at exit here (duckdb 2.0, deltalake 1.6).
        Object-store lakes use delta-rs's dataset.
        """
        return self._dataset(table, self.delta(table, version))

    def _dataset(self, table: str, dt: DeltaTable) -> pads.Dataset:
        """:meth:`dataset` of a table whose log is already read (at the version ``dt`` holds)."""
        if not _is_local(self.uri):
            return dt.to_pyarrow_dataset()
        files = self._data_files(table, dt)
        partitions = []
        for i in range(len(files.paths)):
            expr = pads.scalar(True)
            for name, value in files.partition_values(i).items():
                expr = expr & (pads.field(name).is_null() if value is None else pads.field(name) == pa.scalar(value, files.schema.field(name).type))
            partitions.append(expr & _stats_guarantee(files.actions, i, files.schema))
        return pads.FileSystemDataset.from_paths(
            files.paths, schema=files.schema, format=pads.ParquetFileFormat(), filesystem=pafs.LocalFileSystem(), partitions=partitions
        )

    def data_files(self, table: str, version: int | None = None) -> DataFiles:
        """A local table's Parquet files at ``version`` (latest if None) as its Delta log lists them, for readers
        that open the files themselves (DuckDB's Parquet reader, pyarrow); object-store lakes are read through
        delta-rs instead."""
        if not _is_local(self.uri):
            raise LakeError(f"data_files lists a local lake's files; {self.uri} is read through delta-rs")
        return self._data_files(table, self.delta(table, version))

    def _data_files(self, table: str, dt: DeltaTable) -> DataFiles:
        protocol = dt.protocol()
        if protocol.min_reader_version > 1:  # column mapping, deletion vectors: the paths alone would read them wrong
            raise LakeError(f"table {table!r} needs Delta reader features this lake does not apply "
                            f"(reader version {protocol.min_reader_version}, {protocol.reader_features or 'no named features'})")
        actions = pa.table(dt.get_add_actions(flatten=True))
        root = Path(self.table_uri(table))
        return DataFiles(
            schema=pa.schema(dt.schema().to_arrow()),
            partition_columns=list(dt.metadata().partition_columns),
            paths=[str(_inside(root, unquote(p), table)) for p in actions.column("path").to_pylist()],
            actions=actions,
        )

    def read(
        self,
        table: str,
        version: int | str | datetime | None = None,
        columns: list[str] | None = None,
        filter: pads.Expression | None = None,
    ) -> pa.Table:
        return self.dataset(table, version).to_table(columns=columns, filter=filter)

    # ------------------------------------------------------------------ writing
    def create(self, table: str, schema: pa.Schema, partition_by: list[str] | None = None) -> None:
        """Create an empty table (version 0) unless it exists, so readers can query it before any append.

        A table an earlier prefhouse wrote gains the columns ``schema`` adds (null in its old rows) in one
        schema-change commit, so a lake outlives a release that adds a column instead of refusing appends.
        """
        if self.exists(table):
            if table not in self._schemas_checked:  # once per table and process: reading the log costs a few ms
                dt = self.delta(table)
                have = {f.name for f in dt.schema().fields}
                missing = [Field.from_arrow(f) for f in schema if f.name not in have]
                if missing:
                    dt.alter.add_columns(missing)
                self._schemas_checked.add(table)
            return
        try:
            DeltaTable.create(
                self.table_uri(table),
                schema=schema,
                partition_by=partition_by or None,
                mode="ignore",
                storage_options=self.storage_options or None,
            )
        except CommitFailedError:
            if not self.exists(table):  # another writer created it first: that is the table we wanted
                raise

    def append(
        self,
        table: str,
        data: pa.Table | pa.RecordBatchReader,
        partition_by: list[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        replace: Partitions | None = None,
    ) -> int:
        """Append ``data`` in one atomic commit and return the new version (``replace``: instead of those partitions' rows).

        A record-batch reader is streamed to Parquet files and committed once at the end, so memory stays
        bounded however large the append, and a crash before the commit leaves only unreferenced files that
        no reader sees (``vacuum`` removes them). On an object store, a table with a row key gets
        :meth:`insert_new` instead, so that concurrent writers cannot duplicate a row.
        """
        keys = row_key(table)
        if not _is_local(self.uri) and keys and not replace:
            rows = data.read_all() if isinstance(data, pa.RecordBatchReader) else data  # a conditional insert may run more than once
            self.create(table, rows.schema, partition_by)  # created first, once: two writers cannot both create it with their rows
            return self.insert_new(table, lambda: rows, keys, metadata, partition_by=partition_by)
        write_deltalake(
            self.table_uri(table),
            data,
            mode="overwrite" if replace else "append",
            writer_properties=writer_properties(data.schema, _largest_partition(data, partition_by)),
            predicate=" AND ".join(f"{c} {op} {v if v.lstrip('-').isdigit() else repr(v)}" for c, op, v in replace) if replace else None,
            partition_by=partition_by or None,
            storage_options=self.storage_options or None,
            commit_properties=CommitProperties(custom_metadata=dict(metadata or {})),
        )
        return self.delta(table).version()

    def insert_new(self, table: str, make_rows, keys: Sequence[str], metadata: Mapping[str, str] | None = None,
                   partitions: Mapping[str, Sequence[str]] | None = None, partition_by: list[str] | None = None) -> int:
        """Append the rows of ``make_rows()`` whose ``keys`` the table lacks, in one commit that fails if another insert won.

        Each attempt reads the table at its latest version (the key columns of the ``partitions`` given, when
        known), drops the rows already there, and commits the rest with a Delta application transaction
        (``txn``: app id :data:`INSERT_APP_ID`, version one past what it read): Delta's conflict check refuses
        the commit when another writer committed that app id since the read, and the attempt is run again on
        the new version, up to :data:`INSERT_ATTEMPTS` times. The rows are written by ``write_deltalake``, as
        every other append (a Delta MERGE would do the same in one call but writes ``string_view`` columns that
        pyarrow's filters cannot compare, delta-rs #4579). ``make_rows``: a callable returning a table or a
        fresh record-batch reader.
        """
        from deltalake import Transaction

        for attempt in range(1, INSERT_ATTEMPTS + 1):
            dt = self.delta(table)
            where = None
            for column, values in (partitions or {}).items():
                term = pads.field(column).isin(pa.array(sorted(set(values)), pa.string()).cast(pa.schema(dt.schema().to_arrow()).field(column).type))
                where = term if where is None else where & term
            present = pa.chunked_array(
                [_key(b, keys) for b in self._dataset(table, dt).to_batches(columns=list(keys), filter=where)], pa.string()).combine_chunks()
            rows = make_rows()
            reader = rows if isinstance(rows, pa.RecordBatchReader) else pa.RecordBatchReader.from_batches(rows.schema, rows.to_batches())
            new = pa.RecordBatchReader.from_batches(
                reader.schema, (b.filter(pc.invert(pc.is_in(_key(b, keys), value_set=present))) for b in reader))
            seen = dt.transaction_version(INSERT_APP_ID) or 0
            props = CommitProperties(custom_metadata=dict(metadata or {}), app_transactions=[Transaction(INSERT_APP_ID, seen + 1)])
            try:
                write_deltalake(dt, new, mode="append", partition_by=partition_by or None, commit_properties=props)
                return self.delta(table).version()
            except CommitFailedError as exc:
                if attempt == INSERT_ATTEMPTS:
                    raise LakeError(f"{table}: another writer committed during each of {INSERT_ATTEMPTS} attempts to insert new rows "
                                    f"({exc}); nothing of this append landed and nothing was duplicated: run the same command again") from exc
                time.sleep(min(0.05 * 2 ** attempt, 2.0))
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def lock(self, name: str = "writer") -> Iterator[None]:
        """Hold an exclusive, non-blocking writer lock for a pipeline (local lakes).

        Delta's log already makes each commit atomic; the lock makes a whole read-dedupe-append cycle
        exclusive, so two runs of the same stage cannot both decide a row is new. Object stores have no such
        lock: there, appends of tables with a row key are conditional inserts (:meth:`insert_new`) and this is a no-op.
        """
        if not _is_local(self.uri):
            yield
            return
        Path(self.uri).mkdir(parents=True, exist_ok=True)
        path = Path(self.uri) / f"_{name}.lock"
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise LakeError(
                    f"another process holds the {name!r} lock on {self.uri} (pid in {path}); "
                    "wait for it to finish, or remove nothing: the lock is released when it exits"
                ) from exc
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class _DataFile:
    """One Parquet data file being written for one partition of one table, with its Delta statistics."""

    path: str  # relative to the table root, as the Delta log records it
    writer: pq.ParquetWriter
    partition_values: dict[str, str | None]
    rows: int = 0
    queued: int = 0  # rows handed to the staging's writer thread, written or not yet
    nulls: dict[str, int] = field(default_factory=dict)
    mins: dict[str, object] = field(default_factory=dict)
    maxs: dict[str, object] = field(default_factory=dict)
    no_stats: set[str] = field(default_factory=set)  # long-text columns: no min/max in the log

    def write(self, rows: pa.Table) -> None:
        self.writer.write_table(rows)
        self.rows += rows.num_rows
        for name in rows.column_names:
            column = rows.column(name)
            self.nulls[name] = self.nulls.get(name, 0) + column.null_count
            if name in self.no_stats or not _has_stats(column.type) or column.null_count == column.length():
                continue
            if pa.types.is_string(column.type) and pc.max(pc.binary_length(column)).as_py() > STATS_MAX_CHARS:
                self.no_stats.add(name)  # long text: exact min/max would bloat the log
                continue
            low, high = pc.min_max(column).values()
            low, high = low.as_py(), high.as_py()
            self.mins[name] = low if name not in self.mins else min(self.mins[name], low)
            self.maxs[name] = high if name not in self.maxs else max(self.maxs[name], high)

    def stats(self) -> str:
        keep = [k for k in self.maxs if k not in self.no_stats]
        return json.dumps({"numRecords": self.rows, "nullCount": self.nulls,
                           "minValues": {k: self.mins[k] for k in keep}, "maxValues": {k: self.maxs[k] for k in keep}})


STAGING_TOKEN_KEY = "prefhouse.staging"  # commit metadata: which staging wrote a commit
LANDED_LOOKBACK = 20  # commits of a table searched for a staging's own after a failed commit
STATS_MAX_CHARS = 64  # longer strings get no min/max in the log (exact values only, never truncated)
ROWS_PER_FILE = 1_000_000
QUEUED_BYTES = 64 << 20  # Arrow data handed to a staging's writer thread and not yet written: add() waits above it


BLOOM_FPP = 0.05  # a Bloom filter's false-positive rate: ~8 bits a value


def bloom_ndv(rows: int) -> int:
    """The distinct values a row group's Bloom filters are sized for: its rows, a power of two in [1024, ROWS_PER_FILE]."""
    return min(ROWS_PER_FILE, max(1024, 1 << max(0, rows - 1).bit_length()))


def _largest_partition(data: pa.Table | pa.RecordBatchReader, partition_by: list[str] | None) -> int:
    """The most rows ``data`` holds for one partition (a streamed append's are unknown: a whole file's)."""
    if not isinstance(data, pa.Table):
        return ROWS_PER_FILE
    if not partition_by or not data.num_rows:
        return data.num_rows
    return pc.max(data.group_by(partition_by).aggregate([([], "count_all")]).column("count_all")).as_py()


def bloom_columns(schema: pa.Schema) -> list[str]:
    return [c for c in S.LOOKUP_COLUMNS if c in schema.names]


def writer_properties(schema: pa.Schema, row_group_rows: int, compression: str = "SNAPPY", **options) -> WriterProperties:
    """delta-rs writer properties with Bloom filters on the lookup columns, sized for ``row_group_rows`` (the
    codec is always named: delta-rs writes uncompressed when given properties without one)."""
    bloom = ColumnProperties(bloom_filter_properties=BloomFilterProperties(True, BLOOM_FPP, bloom_ndv(row_group_rows)))
    return WriterProperties(compression=compression, column_properties={c: bloom for c in bloom_columns(schema)}, **options)


def _inside(root: Path, relative: str, table: str) -> Path:
    """A data file the log names, refused unless it lies inside the table's folder.

    Delta allows absolute paths in a log (shallow clones); this lake never writes them, so a log that names a
    file elsewhere (``../../etc/passwd``, ``/home/…``, ``file:///…``) was not written by it and is not read.
    """
    path = (root / relative).resolve()
    if "://" in relative or not path.is_relative_to(root.resolve()):
        raise LakeError(f"table {table!r}: its log names a data file outside the table ({relative!r}); refusing to read it")
    return path


def _stats_guarantee(actions: pa.Table, i: int, schema: pa.Schema) -> pads.Expression:
    """What file ``i``'s log statistics promise about its values, for pyarrow to skip the file without opening it.

    Each text or integer column with a min and max in the log holds only values within them (the Delta
    protocol requires a cut-off string bound to remain a bound), or null where the log counts nulls.
    Floats are left out: a NaN lies outside any min/max. ``pair_id = '…'`` then opens one file of a table
    z-ordered by pair id, not every file.
    """
    expr = pads.scalar(True)
    for column in schema:
        low_name, high_name = f"min.{column.name}", f"max.{column.name}"
        if not _has_stats(column.type) or pa.types.is_floating(column.type):
            continue
        if low_name not in actions.column_names or high_name not in actions.column_names:
            continue
        low, high = actions.column(low_name)[i].as_py(), actions.column(high_name)[i].as_py()
        if low is None or high is None:
            continue
        term = (pads.field(column.name) >= pa.scalar(low, column.type)) & (pads.field(column.name) <= pa.scalar(high, column.type))
        nulls = actions.column(f"null_count.{column.name}")[i].as_py() if f"null_count.{column.name}" in actions.column_names else None
        if nulls != 0:  # unknown or some: nulls are possible
            term = term | pads.field(column.name).is_null()
        expr = expr & term
    return expr


def _has_stats(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def _key(batch: pa.RecordBatch | pa.Table, keys: Sequence[str]) -> pa.Array:
    """One text per row of ``batch`` from its ``keys`` columns (a null is a value, distinct from every text)."""
    parts = [pc.fill_null(pc.cast(batch.column(k), pa.string()), "\x00") for k in keys]
    joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def _partition_dir(values: dict[str, str | None]) -> str:
    return "/".join(f"{k}={quote('__HIVE_DEFAULT_PARTITION__' if v is None else v, safe='')}" for k, v in values.items())


@dataclass
class _StagedTable:
    schema: pa.Schema
    partition_by: list[str]  # the Delta table's partition columns
    split_by: list[str]  # the columns files are split by: partition_by in place, none when staged for upload
    root: Path  # where data files go: the table itself (local lakes) or the staging folder
    files: dict[tuple, _DataFile] = field(default_factory=dict)
    done: list[_DataFile] = field(default_factory=list)
    rows: int = 0

    @property
    def file_schema(self) -> pa.Schema:
        return pa.schema([f for f in self.schema if f.name not in self.split_by])

    def with_partitions(self, rows: pa.Table, data_file: _DataFile, columns: list[str]) -> pa.Table:
        """Rows read from one staged file, with its partition columns (which live in its path) put back; ``columns`` only."""
        for name, value in data_file.partition_values.items():
            if name in columns:
                rows = rows.append_column(name, pa.array([value] * rows.num_rows, pa.string()).cast(self.schema.field(name).type))
        return rows.select(columns)


class Staging:
    """Rows a run will append to several tables, written as Parquet data files that no reader sees yet.

    A run produces rows for many tables in one pass over its input: holding them in memory would not be
    bounded, and committing batch by batch would make half a run visible after a crash. In a local lake,
    ``add`` writes Parquet files straight into the table's folder (one file per partition, rolled every
    million rows); a Delta reader sees only files the log names, so they stay invisible until ``commit``
    records them, with their statistics, in one transaction per table. That is the floor's cost: each
    byte is written once. For object-store lakes the files are written to a local staging folder and
    streamed to delta-rs at commit. Tables are committed in the order they were first staged, except
    those ``commit(last=…)`` names: a caller whose re-run decides what is new by looking at one table
    (curation: ``pairs``) commits that table after every table derived from it, so a run stopped between
    two commits is completed, not duplicated, by the same command.

    Files of an abandoned staging are deleted, but never those of a table whose commit was attempted:
    a commit that raised may still have landed (a lost reply from an object store, Ctrl-C after the log
    was written), and a committed table's files are the lake's data. Such files are kept unless the table's
    log proves the commit did not land; a file no version references is an orphan that ``vacuum`` lists.
    A crash (kill -9) likewise leaves only orphans.
    """

    def __init__(self, lake: Lake, folder: str):
        self.lake = lake
        self.folder = Path(folder)
        self.local = _is_local(lake.uri)
        self.tables: dict[str, _StagedTable] = {}
        self.token = uuid.uuid4().hex[:12]
        self._writer: ThreadPoolExecutor | None = None
        self._queued: deque[tuple[Future, int]] = deque()  # writes in order, with their Arrow bytes

    @property
    def rows(self) -> dict[str, int]:
        return {t: st.rows for t, st in self.tables.items()}

    def add(self, table: str, rows: pa.Table, schema: pa.Schema, partition_by: list[str] | None = None) -> None:
        """Stage ``rows`` for ``table``: its columns are selected and cast to ``schema``."""
        staged = self.tables.get(table)
        if staged is None:
            root = Path(self.lake.table_uri(table)) if self.local else self.folder / table
            parts = list(partition_by or [])
            staged = self.tables[table] = _StagedTable(schema, parts, parts if self.local else [], root)
        if not rows.num_rows:
            return
        rows = rows.select(staged.schema.names).cast(staged.schema)
        staged.rows += rows.num_rows
        for values, part in self._split(rows, staged.split_by):
            key = tuple(values.values())
            data_file = staged.files.get(key)
            if data_file is None:
                name = f"part-{self.token}-{len(staged.files) + len(staged.done):05d}.snappy.parquet"
                relative = f"{_partition_dir(values)}/{name}" if values else name
                (staged.root / relative).parent.mkdir(parents=True, exist_ok=True)
                # each add writes a row group: the Bloom filters are sized by this first one
                bloom = {c: {"ndv": bloom_ndv(part.num_rows), "fpp": BLOOM_FPP} for c in bloom_columns(staged.file_schema)}
                writer = pq.ParquetWriter(str(staged.root / relative), staged.file_schema, compression="snappy", bloom_filter_options=bloom or None)
                data_file = staged.files[key] = _DataFile(relative, writer, values)
            data_file.queued += part.num_rows
            self._write(data_file.write, part.drop_columns(staged.split_by))
            if data_file.queued >= ROWS_PER_FILE:
                self._write(data_file.writer.close)
                staged.done.append(staged.files.pop(key))

    def _write(self, step: Callable[..., object], *rows: pa.Table) -> None:
        """Run ``step(*rows)`` on the staging's one writer thread, after every step handed to it before.

        Encoding and compressing Parquet (pyarrow, without the GIL) then overlaps the caller's work on the next
        batch, which leaves a core idle much of the time; a failed write is raised by the next ``add`` or by
        whatever reads, commits or discards the staged files (all of which wait for the writes first).
        """
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefhouse-staging")
        self._queued.append((self._writer.submit(step, *rows), sum(r.nbytes for r in rows)))
        queued = sum(n for _, n in self._queued)
        while self._queued and (queued > QUEUED_BYTES or self._queued[0][0].done()):
            future, n = self._queued.popleft()
            future.result()
            queued -= n

    def _wait(self, raise_failure: bool = True) -> None:
        """Every write handed to the writer thread done; the first that failed raised (``raise_failure``)."""
        while self._queued:
            future = self._queued.popleft()[0]
            if raise_failure:
                future.result()
            else:
                future.exception()  # waits, and keeps the failure

    @staticmethod
    def _split(rows: pa.Table, partition_by: list[str]) -> Iterator[tuple[dict[str, str | None], pa.Table]]:
        if not partition_by:
            yield {}, rows
            return
        distinct = {k: rows.column(k).unique() for k in partition_by}
        if all(len(values) == 1 for values in distinct.values()):  # one partition (a batch of one source): no grouping
            keys = [{k: values[0].as_py() for k, values in distinct.items()}]
        else:  # a group_by starts an Acero plan: ~10 ms a call, 0.9 s of the 9 s the main thread spends on 200K raw rows
            keys = rows.select(partition_by).group_by(partition_by).aggregate([]).to_pylist()
        for combo in keys:
            values = {k: None if v is None else str(v) for k, v in combo.items()}
            if len(keys) == 1:  # every row: no mask, no copy
                yield values, rows
                continue
            mask = None
            for k, v in combo.items():
                term = pc.is_null(rows.column(k)) if v is None else pc.equal(rows.column(k), v)
                mask = term if mask is None else pc.and_(mask, term)
            yield values, rows.filter(mask)

    def drop_rows(self, table: str, column: str, values: set) -> pa.Table:
        """Remove staged rows whose ``column`` is in ``values`` (rows a gate rejected); return them.

        Only files holding such rows are rewritten; gates reject few rows, so this is rarely any work.
        """
        staged = self.tables.get(table)
        if staged is None or not values:
            return staged.schema.empty_table() if staged else pa.table({})
        self._close()
        wanted = pa.array(sorted(values), staged.schema.field(column).type)
        removed: list[pa.Table] = []
        for i, data_file in enumerate(staged.done):
            path = staged.root / data_file.path
            if not pc.any(pc.is_in(pq.read_table(path, columns=[column]).column(column), wanted)).as_py():
                continue
            rows = pq.read_table(path, schema=staged.file_schema)
            hit = pc.is_in(rows.column(column), wanted)
            keep = rows.filter(pc.invert(hit))
            removed.append(staged.with_partitions(rows.filter(hit), data_file, staged.schema.names))
            replacement = _DataFile(data_file.path, pq.ParquetWriter(str(path), staged.file_schema, compression="snappy"), data_file.partition_values)
            replacement.write(keep)
            replacement.writer.close()
            staged.done[i] = replacement
        dropped = pa.concat_tables(removed) if removed else staged.schema.empty_table()
        staged.rows -= dropped.num_rows
        return dropped

    def read_staged(self, table: str, columns: list[str]) -> pa.Table | None:
        """The staged, uncommitted rows of ``table`` (``columns`` only, partition columns included); None if nothing was staged."""
        staged = self.tables.get(table)
        if staged is None:
            return None
        self._close()
        parts = []
        for data_file in staged.done:
            in_file = [c for c in columns if c not in staged.split_by]
            rows = pq.read_table(staged.root / data_file.path, columns=in_file, schema=staged.file_schema)
            parts.append(staged.with_partitions(rows, data_file, columns))
        return pa.concat_tables(parts) if parts else pa.schema([staged.schema.field(c) for c in columns]).empty_table()

    def _close(self) -> None:
        self._wait()
        for staged in self.tables.values():
            for data_file in staged.files.values():
                data_file.writer.close()
            staged.done.extend(staged.files.values())
            staged.files.clear()

    def commit(self, metadata: Mapping[str, str] | None = None, last: Sequence[str] = (),
               replace: Mapping[str, Partitions] | None = None) -> Versions:
        """Record every staged table that has rows (one Delta commit each, ``last`` after the rest); return the new versions.

        ``replace``: tables whose named partitions (``[("iteration", "=", "1")]``) the commit replaces: their old
        files are removed and the staged ones added in the same commit, so a reader sees the old rows or the new.
        """
        self._close()
        versions: Versions = {}
        metadata = {**(metadata or {}), STAGING_TOKEN_KEY: self.token}
        order = [t for t in self.tables if t not in last] + [t for t in last if t in self.tables]
        for table in order:
            staged = self.tables[table]
            if not staged.rows:
                continue
            try:
                versions[table] = self._commit_table(table, staged, metadata, (replace or {}).get(table))
            except BaseException:
                if not self.local or self._landed(table) is False:
                    raise  # nothing of it is in the lake: discard() may delete its files
                del self.tables[table]  # landed, or not known: its files are (or may be) lake data
                raise
            del self.tables[table]
        return versions  # what is left had no rows: discard() deletes its (empty) files

    def _commit_table(self, table: str, staged: _StagedTable, metadata: dict[str, str], replace: Partitions | None = None) -> int:
        if not self.local:
            files = [str(staged.root / f.path) for f in staged.done]
            rows = lambda: pa.RecordBatchReader.from_batches(  # noqa: E731  (a new reader per attempt of a conditional insert)
                staged.schema, pads.dataset(files, schema=staged.schema, format="parquet").to_batches())
            keys = row_key(table)
            if keys and not replace:
                self.lake.create(table, staged.schema, staged.partition_by)
                staged_values = pads.dataset(files, schema=staged.schema, format="parquet").to_table(columns=staged.partition_by)
                partitions = {c: [str(v) for v in pc.unique(staged_values.column(c)).to_pylist()]  # the insert reads these partitions' keys only
                              for c in staged.partition_by if staged_values.column(c).null_count == 0}
                return self.lake.insert_new(table, rows, keys, metadata, partitions, staged.partition_by)
            return self.lake.append(table, rows(), staged.partition_by, metadata, replace)
        props = CommitProperties(custom_metadata=metadata)
        now = int(time.time() * 1000)
        actions = [
            AddAction(f.path, (staged.root / f.path).stat().st_size, f.partition_values, now, True, f.stats())
            for f in staged.done
        ]
        if self.lake.exists(table):
            self.lake.delta(table).create_write_transaction(
                actions, mode="overwrite" if replace else "append", schema=staged.schema, partition_by=staged.partition_by or None,
                partition_filters=list(replace) if replace else None, commit_properties=props,
            )
        else:
            create_table_with_add_actions(
                self.lake.table_uri(table), DeltaSchema.from_arrow(staged.schema), actions, partition_by=staged.partition_by or None, commit_properties=props
            )
        return self.lake.delta(table).version()

    def _landed(self, table: str) -> bool | None:
        """Whether this staging's commit of ``table`` is in its log (True / False), or None when the log cannot be read."""
        try:
            if not self.lake.exists(table):
                return False
            return any(h.get(STAGING_TOKEN_KEY) == self.token for h in self.lake.delta(table).history(LANDED_LOOKBACK))
        except Exception:
            return None

    def discard(self) -> None:
        """Delete the data files of anything not committed (after an error); stop the writer thread."""
        self._wait(raise_failure=False)  # a failed write was raised where it happened, or is moot now
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None
        self._close()
        for staged in self.tables.values():
            for data_file in staged.done:
                with contextlib.suppress(OSError):
                    (staged.root / data_file.path).unlink()
        self.tables.clear()


@contextlib.contextmanager
def staging(lake: Lake) -> Iterator[Staging]:
    """A Staging whose uncommitted files are removed whatever happens."""
    with tempfile.TemporaryDirectory(prefix="prefhouse-staging-") as folder:
        stage = Staging(lake, folder)
        try:
            yield stage
        finally:
            stage.discard()
