"""Reading raw rows of a source in bounded-memory Arrow batches, from local files or from the hub.

Local (the default, offline): ``<data dir>/<source>/`` holds JSON-lines (``.jsonl``, ``.json``, optionally
``.gz``), JSON arrays or Parquet files in the source's raw hub schema; the split of a row is its file's
path below that folder without extensions (``harmless-base/train``), and its raw key is
``<split>#<row index>`` (blank lines are not rows). Hub (online): ``datasets.load_dataset(hub_id,
revision=…)`` at the pinned revision, or at the commit the hub resolves the default branch to, which is
recorded; iterated as Arrow batches; the split is ``<data_dir>/<split>``.

Every batch is cast to the adapter's declared raw schema. What a bad input does (README, "Bad input"):

- the file cannot be read as a whole (not UTF-8, not valid JSON, a record that is not a JSON object, a
  truncated gzip, a missing column in its first record): :class:`InputError`, one line naming the source,
  the file and the line, and the run writes nothing;
- one record has a value of the wrong type for its column: that record is quarantined (rule
  ``raw.wrong_type``, its line in the reason) and the rest of the file lands;
- an empty or whitespace-only file is skipped, with a note in the run log; a UTF-8 byte-order mark and
  blank lines are accepted, as JSON-lines readers do.

Records are read by Arrow's JSON reader; only a file in which Arrow finds a defect is re-read, from the
first record Arrow did not return, by Python's ``json``, which can tell which record is at fault. A batch
is about as many bytes of Arrow data as its reader is asked for (:class:`BatchSize`; :data:`BATCH_BYTES` unless
told), in every format, whatever the file's size or its rows' width.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
# A batch is a bounded number of bytes of Arrow data in every format, so that curation's memory is set by it and not
# by a file's size or its rows' width (20,000 rows of the benchmark's CodeUltraFeedback are 50 MB): BATCH_BYTES for a
# source's first batches, then as many as make its staged rows come to STAGED_BYTES (BatchSize), within a quarter and
# four times BATCH_BYTES.
BATCH_BYTES = 16 << 20
STAGED_BYTES = 128 << 20  # what a batch's staged rows (raw rows, rejects, pair copies, pairs, prompts) should come to
# Arrow's JSON reader reads about 32 blocks ahead of the one it hands over: small blocks keep that near 140 MB
# (at 32 MB blocks it held whole files of up to 1 GB). A record longer than a block: the rest is re-read by Python.
READ_BLOCK_BYTES = 4 << 20
READ_ROWS = 1_000  # rows read at a time from a Parquet file or a hub dataset, gathered into batches
SLOW_PATH_ROWS = 5_000  # records per batch when Python re-reads a defective file
REJECT_COLUMNS = {"index": pl.Int64, "rule": pl.String, "reason": pl.String}


class InputError(ValueError):
    """A raw input that cannot be read as it stands: the message names the source, the file and the line."""

    def __init__(self, source: str, where: str, problem: str, line: int | None = None):
        at = f"{where} line {line}" if line is not None else where
        super().__init__(f"source {source!r}: {at}: {problem}")
        self.source, self.where, self.line, self.problem = source, where, line, problem


class MissingColumnError(InputError):
    """A raw input lacks a column of the source's hub schema (renamed upstream, wrong file, wrong source)."""

    def __init__(self, source: str, column: str, where: str, line: int | None = None):
        super().__init__(source, where, f"raw column {column!r} is missing", line)
        self.column = column


@dataclass(frozen=True)
class RawBatch:
    """Raw rows of one split, with their keys: ``table`` is in the adapter's raw schema.

    ``rejects`` are records of the same split that could not be cast to the raw schema (``index``, ``rule``,
    ``reason``); they are quarantined, never stored as raw rows.
    """

    split: str
    source_file: str
    first_index: int
    table: pa.Table
    rejects: pl.DataFrame | None = None
    indices: np.ndarray | None = None  # each row's record index, where they are not first_index, first_index + 1, …

    @property
    def row_indices(self) -> np.ndarray:
        if self.indices is not None:
            return self.indices
        return np.arange(self.first_index, self.first_index + self.table.num_rows, dtype=np.int64)

    @property
    def keys(self) -> pa.Array:
        return pc.binary_join_element_wise(self.split + "#", pa.array(self.row_indices).cast(pa.string()), "")


@dataclass
class InputReport:
    """What a read touched, for the run log."""

    files: list[dict] = field(default_factory=list)
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was skipped (empty)


def _strip_suffix(name: str) -> str:
    for suffix in sorted(JSON_SUFFIXES + PARQUET_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def local_files(source_dir: Path) -> list[Path]:
    """The raw files of a source folder, in a stable order."""
    return sorted(p for p in source_dir.rglob("*") if p.is_file() and p.name.endswith(JSON_SUFFIXES + PARQUET_SUFFIXES))


def conform(table: pa.Table, schema: pa.Schema, source: str, where: str) -> pa.Table:
    """Select and cast the schema's columns; a missing one raises MissingColumnError, an uncastable one InputError."""
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            raise MissingColumnError(source, f.name, where)
        col = table.column(f.name)
        try:
            columns.append(col if col.type == f.type else col.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(source, where, f"column {f.name!r} is {col.type}, not {f.type}: {exc}") from None
    return pa.Table.from_arrays(columns, schema=schema)


def _lines(path: Path, source: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line, decoded as UTF-8 (a leading BOM dropped); defects raise InputError."""
    opener = gzip.open if path.name.endswith(".gz") else open
    number = 0
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(source, str(path), f"byte {exc.start + 1} of the line is not UTF-8 ({raw[exc.start:exc.start + 1]!r}); "
                                     "JSON must be UTF-8: re-encode the file", number) from None
                if text.strip():
                    yield number, text
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(source, str(path), f"the gzip stream is truncated or corrupt after line {number} ({exc})") from None


def _is_json_array(path: Path, source: str) -> bool | None:
    """True for a JSON array file, False for JSON lines, None for a file with no content (empty or blank)."""
    for _, text in _lines(path, source):
        return text.lstrip().startswith("[")
    return None


def _records(path: Path, source: str) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) of each record: an element of a JSON array file, or a JSON line."""
    if _is_json_array(path, source):
        text = "".join(t for _, t in _lines(path, source))
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(source, str(path), f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
        yield from ((None, v) for v in values)  # a record's line is not known inside an array
        return
    for number, text in _lines(path, source):
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(source, str(path), f"not valid JSON: {exc.msg} (column {exc.colno})", number) from None


def _record_object(value: object, source: str, where: str, line: int | None, index: int) -> dict:
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)
        raise InputError(source, where, f"record {index} is {kind}, not a JSON object", line)
    return value


def check_columns(path: Path, schema: pa.Schema, source: str) -> list[str] | None:
    """Fail fast on a missing column, from the file's first record; return the extra columns (None: empty file)."""
    if path.name.endswith(PARQUET_SUFFIXES):
        try:
            names = set(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(source, str(path), f"not a readable Parquet file ({exc})") from None
        if pq.ParquetFile(path).metadata.num_rows == 0:
            return None
    else:
        first = next(_records(path, source), None)
        if first is None:
            return None
        line, value = first
        names = set(_record_object(value, source, str(path), line, 0))
        for f in schema:
            if f.name not in names:
                raise MissingColumnError(source, f.name, str(path), line)
    for f in schema:
        if f.name not in names:
            raise MissingColumnError(source, f.name, str(path))
    return sorted(names - set(schema.names))


def _checked_utf8(table: pa.Table, source: str, path: Path, first_index: int) -> pa.Table:
    """Arrow's JSON reader stores bytes as read: validate every string (nested ones too) before they go further."""
    try:
        table.validate(full=True)
    except pa.ArrowInvalid:
        if not path.name.endswith(PARQUET_SUFFIXES):
            for _ in _lines(path, source):  # raises InputError at the first line that is not UTF-8
                pass
        raise InputError(source, str(path), f"a string in records {first_index}..{first_index + table.num_rows - 1} is not valid UTF-8") from None
    return table


def _python_batches(path: Path, schema: pa.Schema, source: str, start: int) -> Iterator[tuple[pa.Table, np.ndarray, pl.DataFrame]]:
    """Records ``start``… of a file re-read by Python: (rows that cast to the schema, their indices, rejects of the others)."""
    where = str(path)
    index = 0
    chunk: list[tuple[int, int | None, dict]] = []

    def flush() -> tuple[pa.Table, np.ndarray, pl.DataFrame]:
        records = [{k: r.get(k) for k in schema.names} for _, _, r in chunk]
        indices = [i for i, _, _ in chunk]
        try:
            table, bad = pa.Table.from_pylist(records, schema=schema), []
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            good, kept, bad = [], [], []
            for (i, line, _), record in zip(chunk, records):
                problem = _cast_problem(record, schema)
                if problem:
                    at = f"line {line}" if line is not None else f"record {i}"
                    bad.append({"index": i, "rule": "raw.wrong_type", "reason": f"{where} {at}: {problem}"})
                else:
                    good.append(record)
                    kept.append(i)
            table, indices = pa.Table.from_pylist(good, schema=schema), kept
        chunk.clear()
        return table, np.array(indices, dtype=np.int64), pl.DataFrame(bad, schema=REJECT_COLUMNS)

    for line, value in _records(path, source):
        if index >= start:
            chunk.append((index, line, _record_object(value, source, where, line, index)))
            if len(chunk) >= SLOW_PATH_ROWS:
                yield flush()
        index += 1
    if chunk:
        yield flush()


def _cast_problem(record: dict, schema: pa.Schema) -> str | None:
    for f in schema:
        try:
            pa.array([record[f.name]], f.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            return f"column {f.name!r} is not {f.type}: {str(record[f.name])[:80]!r} ({exc})"
    return None


def read_ahead(batches: Iterator[RawBatch]) -> Iterator[RawBatch]:
    """The same batches, each next one read on a thread while the caller works on the one before.

    Reading (Arrow's JSON and Parquet readers, without the GIL) then overlaps curating, which leaves a core idle
    much of the time; memory holds one batch more. An error reading is raised where that batch is asked for.
    """
    end = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefhouse-read") as reader:
        coming = reader.submit(next, batches, end)
        while (batch := coming.result()) is not end:
            coming = reader.submit(next, batches, end)
            yield batch


class BatchSize:
    """The Arrow bytes of a source's next raw batch, sized so that the rows it stages come to :data:`STAGED_BYTES`.

    What a batch holds while it is prepared grows with what it stages, not with its raw bytes, and sources differ
    twofold in that ratio: a raw byte of UltraFeedback (four completions a row, six pairs, each holding the prompt
    three times) stages 5.5 bytes, one of HH-RLHF, SHP or UltraInteract 2.5. With one raw size for all, the widest
    source set it and the others' batches were small, paying polars' and DuckDB's fixed cost per call more often
    (1M rows of the ten sources: 96 batches, 62 sized this way, 0.91–0.97x the time). A source's first batches are
    :data:`BATCH_BYTES`; each later one follows the source's staged-to-raw ratio so far, within a quarter and four
    times :data:`BATCH_BYTES`. The reading thread asks for the size while the run's thread observes the batches it
    stages: two integers, each read or added under the GIL.
    """

    def __init__(self) -> None:
        self.raw = 0
        self.staged = 0

    def observe(self, raw_bytes: int, staged_bytes: int) -> None:
        self.raw += raw_bytes
        self.staged += staged_bytes

    def __call__(self) -> int:
        if not self.raw or not self.staged:
            return BATCH_BYTES
        return int(min(4 * BATCH_BYTES, max(BATCH_BYTES / 4, STAGED_BYTES * self.raw / self.staged)))


def _default_size() -> int:
    return BATCH_BYTES


def _gathered(batches: Iterable[pa.RecordBatch], batch_bytes: Callable[[], int] = _default_size) -> Iterator[pa.Table]:
    """Consecutive record batches gathered into tables of about ``batch_bytes()`` each (asked anew for each table)."""
    group: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        group.append(batch)
        size += batch.nbytes
        if size >= batch_bytes():
            yield pa.Table.from_batches(group)
            group, size = [], 0
    if group:
        yield pa.Table.from_batches(group)


def _json_batches(path: Path, schema: pa.Schema, source: str,
                  batch_bytes: Callable[[], int]) -> Iterator[tuple[pa.Table, np.ndarray | None, pl.DataFrame | None]]:
    """Arrow's streaming JSON reader; at a defect, Python re-reads the rest of the file to find the record at fault."""
    done = 0
    if not _is_json_array(path, source):
        try:
            reader = pajson.open_json(  # reads the first block at once: a defect there raises here
                pa.input_stream(str(path), compression="gzip" if path.name.endswith(".gz") else None),
                read_options=pajson.ReadOptions(block_size=READ_BLOCK_BYTES),
                parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
            )
            for table in _gathered(reader, batch_bytes):
                table = _checked_utf8(table, source, path, done)
                yield table, None, None
                done += table.num_rows
            return
        except (pa.ArrowInvalid, OSError):
            pass  # Arrow names neither the line nor the record: find them below
    yield from _python_batches(path, schema, source, done)


def check_local(source: str, source_dir: Path, schema: pa.Schema, report: InputReport) -> list[Path]:
    """The source's files with content, each checked for the schema's columns (reads one record a file); fills ``report``."""
    files = local_files(source_dir)
    if not files:
        raise FileNotFoundError(f"source {source!r}: no .jsonl/.json/.parquet files in {source_dir}")
    checked = []
    for path in files:
        extra = check_columns(path, schema, source)
        if extra is None:
            report.skipped[str(path)] = "empty: no records"
            continue
        if extra:
            report.ignored_columns[str(path)] = extra
        report.files.append({"path": str(path), "bytes": path.stat().st_size})
        checked.append(path)
    return checked


def read_files(source: str, source_dir: Path, files: list[Path], schema: pa.Schema,
               batch_bytes: Callable[[], int] = _default_size) -> Iterator[RawBatch]:
    """Raw batches of ``files`` (already checked by :func:`check_local`), split named by path below ``source_dir``,
    each about ``batch_bytes()`` of Arrow data."""
    for path in files:
        split = _strip_suffix(str(path.relative_to(source_dir)))
        index = 0
        if path.name.endswith(PARQUET_SUFFIXES):
            parquet = pq.ParquetFile(path)
            batches = ((table, None, None) for table in _gathered(parquet.iter_batches(batch_size=READ_ROWS), batch_bytes))
        else:
            batches = _json_batches(path, schema, source, batch_bytes)
        for table, indices, rejects in batches:
            if path.name.endswith(PARQUET_SUFFIXES):  # JSON batches are checked as they are read
                table = _checked_utf8(table, source, path, index)
            table = conform(table, schema, source, str(path))
            n_rejects = 0 if rejects is None else rejects.height
            yield RawBatch(split, str(path), index, table, rejects if n_rejects else None, indices)
            index += table.num_rows + n_rejects


def resolve_revision(hub_id: str, revision: str | None) -> str | None:
    """The commit a hub dataset's ``revision`` (default: its main branch) names now, so a load is pinned and logged.

    Builders that are not hub repositories (``json``, ``parquet``) have no commit: None.
    """
    if "/" not in hub_id:
        return revision
    from huggingface_hub import HfApi

    return HfApi().dataset_info(hub_id, revision=revision).sha


def read_hub(
    source: str,
    hub_id: str,
    revision: str | None,
    data_dirs: list[str | None],
    schema: pa.Schema,
    report: InputReport,
    data_files: list[str] | None = None,
    batch_bytes: Callable[[], int] = _default_size,
) -> Iterator[RawBatch]:
    """Raw batches through ``datasets.load_dataset`` (the hub path; also any builder such as "json").

    The revision is resolved to a commit first and loaded at that commit, which ``report`` records: an
    adapter without a pinned revision still yields rows traceable to the exact hub commit they came from.
    """
    import datasets  # imported here: the local path does not need its start-up cost

    commit = resolve_revision(hub_id, revision)
    for data_dir in data_dirs:
        loaded = datasets.load_dataset(hub_id, data_dir=data_dir, revision=commit, data_files=data_files)
        for split_name in sorted(loaded):
            ds = loaded[split_name]
            where = f"{hub_id}@{commit or 'main'}:{data_dir or ''}/{split_name}"
            for f in schema:
                if f.name not in ds.column_names:
                    raise MissingColumnError(source, f.name, where)
            extra = sorted(set(ds.column_names) - set(schema.names))
            if extra:
                report.ignored_columns[where] = extra
            report.files.append({"hub_id": hub_id, "revision": revision, "commit": commit, "data_dir": data_dir, "split": split_name, "rows": len(ds)})
            split = f"{data_dir}/{split_name}" if data_dir else split_name
            index = 0
            reads = ds.with_format("arrow").iter(batch_size=READ_ROWS)
            for table in _gathered((batch for read in reads for batch in read.to_batches()), batch_bytes):
                table = conform(table, schema, source, where)
                yield RawBatch(split, where, index, table)
                index += table.num_rows


def regroup(batches: Iterator[RawBatch], column: str, source: str) -> Iterator[RawBatch]:
    """Re-cut batches so that rows sharing ``column`` (a prompt, a post) are never split across two batches.

    Hub files keep such rows together; the rows of the key that ends a batch are held back and put in
    front of the next batch of the same split. A key that comes back after its group ended would make
    per-group rules (all comparisons, at most k pairs per post) wrong, so it is an error, not a guess.
    Rejected records travel on at once, in a batch of no rows.
    """
    pending: RawBatch | None = None
    closed: set = set()
    for batch in batches:
        if batch.rejects is not None:
            yield RawBatch(batch.split, batch.source_file, 0, batch.table.slice(0, 0), batch.rejects, np.empty(0, np.int64))
        if pending is not None and pending.split != batch.split:
            yield pending
            pending, closed = None, set()
        indices = batch.row_indices
        if pending is not None:
            indices = np.concatenate([pending.row_indices, indices])
            batch = RawBatch(batch.split, batch.source_file, 0, pa.concat_tables([pending.table, batch.table]))
        if not batch.table.num_rows:
            continue
        keys = pl.from_arrow(batch.table.column(column)).alias("k")
        starts = (keys != keys.shift(1)).fill_null(True).arg_true().to_list()
        run_keys = keys.gather(starts).to_list()
        if len(set(run_keys)) != len(run_keys) or closed.intersection(run_keys):
            again = next(k for i, k in enumerate(run_keys) if k in closed or k in run_keys[:i])
            raise InputError(
                source, batch.source_file,
                f"split {batch.split!r}: rows with {column}={again!r} are not contiguous; "
                f"sort the raw file by {column!r} (hub files are) so that per-{column} rules see whole groups",
            )
        cut = starts[-1]
        closed.update(run_keys[:-1])
        if cut:
            yield RawBatch(batch.split, batch.source_file, int(indices[0]), batch.table.slice(0, cut), None, indices[:cut])
        pending = RawBatch(batch.split, batch.source_file, int(indices[cut]), batch.table.slice(cut), None, indices[cut:])
    if pending is not None and pending.table.num_rows:
        yield pending
