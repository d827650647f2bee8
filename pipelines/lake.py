"""The only module that touches storage.

Every other module speaks in Arrow tables, record-batch readers or polars frames and asks this one to
append them to a table, or to read a table as of a version. Tables are Delta Lake tables (Parquet
files plus a transaction log) written with the ``deltalake`` package, so that DuckDB, polars and Spark
read the same bytes. A table lives at ``<lake uri>/<table name>``; the lake URI is a local folder by
default (``data/lake``) or any object-store URI delta-rs accepts (``s3://…``, ``gs://…``, ``az://…``)
with its ``storage_options``.

Writes are appends, one atomic Delta commit each: either every row of the call becomes visible at the
new version, or none does. Reads take an optional version, so any read in the project can be pinned.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

DEFAULT_LAKE = "data/lake"

Versions = dict[str, int]


class LakeError(RuntimeError):
    """A lake operation that cannot be carried out (missing table, concurrent writer, bad version)."""


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

    def __post_init__(self) -> None:
        self.uri = str(self.uri).rstrip("/")
        if _is_local(self.uri):
            self.uri = str(Path(self.uri.removeprefix("file://")).absolute())

    # ------------------------------------------------------------------ naming
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
        dt = self.delta(table, version)
        if not _is_local(self.uri):
            return dt.to_pyarrow_dataset()
        schema = pa.schema(dt.schema().to_arrow())
        partition_columns = dt.metadata().partition_columns
        actions = pa.table(dt.get_add_actions(flatten=True))
        root = Path(self.table_uri(table))
        paths = [str(root / unquote(p)) for p in actions.column("path").to_pylist()]
        partitions = []
        for i in range(actions.num_rows):
            expr = pads.scalar(True)
            for name in partition_columns:
                value = actions.column(f"partition.{name}")[i].as_py()
                term = pads.field(name).is_null() if value is None else pads.field(name) == pa.scalar(value, schema.field(name).type)
                expr = expr & term
            partitions.append(expr)
        return pads.FileSystemDataset.from_paths(
            paths, schema=schema, format=pads.ParquetFileFormat(), filesystem=pafs.LocalFileSystem(), partitions=partitions
        )

    def read(
        self,
        table: str,
        version: int | str | datetime | None = None,
        columns: list[str] | None = None,
        filter: pads.Expression | None = None,
    ) -> pa.Table:
        return self.dataset(table, version).to_table(columns=columns, filter=filter)

    def history(self, table: str) -> list[dict]:
        return self.delta(table).history()

    # ------------------------------------------------------------------ writing
    def create(self, table: str, schema: pa.Schema, partition_by: list[str] | None = None) -> None:
        """Create an empty table (version 0) unless it exists, so readers can query it before any append."""
        if self.exists(table):
            return
        DeltaTable.create(
            self.table_uri(table),
            schema=schema,
            partition_by=partition_by or None,
            mode="ignore",
            storage_options=self.storage_options or None,
        )

    def append(
        self,
        table: str,
        data: pa.Table | pa.RecordBatchReader,
        partition_by: list[str] | None = None,
        metadata: Mapping[str, str] | None = None,
        merge_schema: bool = False,
    ) -> int:
        """Append ``data`` in one atomic commit and return the new version.

        A record-batch reader is streamed to Parquet files and committed once at the end, so memory stays
        bounded however large the append, and a crash before the commit leaves only unreferenced files that
        no reader sees (``vacuum`` removes them).
        """
        write_deltalake(
            self.table_uri(table),
            data,
            mode="append",
            partition_by=partition_by or None,
            schema_mode="merge" if merge_schema else None,
            storage_options=self.storage_options or None,
            commit_properties=CommitProperties(custom_metadata=dict(metadata or {})),
        )
        return self.delta(table).version()

    @contextlib.contextmanager
    def lock(self, name: str = "writer") -> Iterator[None]:
        """Hold an exclusive, non-blocking writer lock for a pipeline (local lakes).

        Delta's log already makes each commit atomic; the lock makes a whole read-dedupe-append cycle
        exclusive, so two runs of the same stage cannot both decide a row is new. On object stores the
        commit itself is safe (conditional put) and this lock is a no-op.
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


class Staging:
    """Rows a run will append to several tables, spilled to local Arrow IPC files until ``commit``.

    A run produces rows for many tables in one pass over its input; holding them in memory would not be
    bounded, and appending batch by batch would make half a run visible after a crash. Staged rows are
    invisible to every reader; ``commit`` streams each table's file into one Delta append (one atomic
    commit per table) in the order the tables were first staged, so the caller can commit the table that
    marks completion (the run log) last. An abandoned staging folder is deleted when the context exits.
    """

    def __init__(self, lake: Lake, folder: str):
        self.lake = lake
        self.folder = Path(folder)
        self._writers: dict[str, tuple[pa.ipc.RecordBatchFileWriter, pa.Schema, list[str], bool]] = {}
        self.rows: dict[str, int] = {}

    def add(self, table: str, rows: pa.Table, schema: pa.Schema, partition_by: list[str] | None = None, merge_schema: bool = False) -> None:
        """Stage ``rows`` (conformed to ``schema``: same columns, cast to its types) for ``table``."""
        if table not in self._writers:
            writer = pa.ipc.new_file(str(self.folder / f"{table}.arrow"), schema)
            self._writers[table] = (writer, schema, partition_by or [], merge_schema)
            self.rows[table] = 0
        writer, schema, _, _ = self._writers[table]
        if rows.num_rows:
            conformed = rows.select(schema.names).cast(schema)
            writer.write_table(conformed)
            self.rows[table] += rows.num_rows

    def commit(self, metadata: Mapping[str, str] | None = None) -> Versions:
        """Append every staged table that has rows (one commit each); return the new versions."""
        versions: Versions = {}
        for table, (writer, schema, partition_by, merge_schema) in self._writers.items():
            writer.close()
        for table, (_, schema, partition_by, merge_schema) in self._writers.items():
            if not self.rows[table]:
                continue
            with pa.memory_map(str(self.folder / f"{table}.arrow")) as source:
                staged = pa.ipc.open_file(source)
                reader = pa.RecordBatchReader.from_batches(
                    schema, (staged.get_batch(i) for i in range(staged.num_record_batches))
                )
                versions[table] = self.lake.append(table, reader, partition_by, metadata, merge_schema)
        self._writers.clear()
        return versions


@contextlib.contextmanager
def staging(lake: Lake) -> Iterator[Staging]:
    """A Staging in a private temporary folder, removed afterwards whatever happens."""
    with tempfile.TemporaryDirectory(prefix="prefhouse-staging-") as folder:
        stage = Staging(lake, folder)
        try:
            yield stage
        finally:
            for writer, *_ in stage._writers.values():
                with contextlib.suppress(Exception):
                    writer.close()
