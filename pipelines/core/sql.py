"""Read-only SQL over the lake with DuckDB: ``python -m pipelines.sql NAME|FILE|"SELECT …"``.

Every lake table is registered as a DuckDB view of its Parquet files at a pinned version (no DuckDB
extension is needed), plus the views of ``sql/views.sql`` and ``raw_rows`` (every raw table's rows as
JSON, for provenance). Named queries are the ``.sql`` files of ``sql/``. The command is
``python -m pipelines.sql`` or ``prefhouse sql`` (``pipelines/sql.py`` is its entry point).

Two ways to read a table. A query made only of read statements (SELECT, WITH, FROM, VALUES, DESCRIBE, SHOW,
SUMMARIZE, EXPLAIN of one of these) on a local lake reads the files with DuckDB's own Parquet reader: the
view lists the version's data files from the Delta log, joins each file's partition values from the log
(never parsed from paths), and gives every column the table's type (null where an older file lacks it).
It is faster than scanning through Arrow (``tests/benchmarks/bench_sql.py`` prints both; a lookup by id
also skips row groups by the files' Bloom filters, which only DuckDB's reader reads). Anything else (a
PIVOT without its IN list, CREATE, COPY …) and every object-store lake scans Arrow datasets of the same
files, through which DuckDB cannot write.

Sandboxed either way: the database is in memory, and before DuckDB touches anything of the lake the
connection gets a private, empty temporary folder and a memory limit, disables external access (no
COPY … TO, no ATTACH, no reading or writing files or URLs, no extension loading) except for the listed
data files when it reads them itself, and locks its configuration so no query can re-enable it. DuckDB
would let a statement write to a file it may read, which is why only read statements get that connection.
Only folder names that are table names (lower-case letters, digits, underscores) become views, quoted. A
query runs under a time limit. Output files are written by this program, not by SQL, and never inside
the lake.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import DataFiles, Lake, LakeError, Versions
from prefhouse.pipelines.core.names import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT_S, VIEWS_FILE, named_queries

TABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,127}")  # what a lake table may be called; any other folder is ignored
TERMINAL_ROWS = 200  # rows a table printed to the terminal shows (all of them go to --output)
_TEMP_ROOT: tempfile.TemporaryDirectory | None = None


def _private_temp_dir() -> str:
    """A fresh folder for DuckDB's spill files, inside one this process owns and removes at exit.

    Queries can read and write DuckDB's temporary folder even with external access off; a private, empty
    one per connection leaves them nothing to read there and nothing that outlives the process.
    """
    global _TEMP_ROOT
    if _TEMP_ROOT is None:
        _TEMP_ROOT = tempfile.TemporaryDirectory(prefix="prefhouse-duckdb-")
    return tempfile.mkdtemp(dir=_TEMP_ROOT.name)


def quoted(name: str) -> str:
    """A lake table name as a DuckDB identifier; anything that is not a table name is refused."""
    if not TABLE_NAME.fullmatch(name):
        raise LakeError(f"{name!r} is not a table name (lower-case letters, digits and underscores)")
    return f'"{name}"'


def resolve_query(spec: str) -> str:
    """A named query, a .sql file, or the SQL text itself."""
    queries = named_queries()
    if spec in queries:
        return queries[spec].read_text()
    if spec.endswith(".sql") and Path(spec).is_file():
        return Path(spec).read_text()
    if re.match(r"^\s*(select|with|from|describe|show|summarize|pivot|unpivot|values|table|explain)\b", spec, re.I):
        return spec
    raise ValueError(f"{spec!r} is not a named query ({', '.join(queries)}), a .sql file, or a SELECT statement")


def resolve_as_of(lake: Lake, spec: str | None, tables: list[str]) -> dict[str, int | None]:
    """The version of each table that ``--as-of`` selects (None: the table did not exist then).

    ``N`` (an integer) pins ``pairs`` at version N and every other table as the run that wrote that version
    left it (by commit time when no run did, e.g. version 0 which creates the table);
    ``TABLE=V[,TABLE=V…]`` pins tables explicitly (others latest); an ISO timestamp pins every table as of
    that time; ``run:RUN_ID`` pins the versions a run left behind (from the run log).
    """
    latest = {t: lake.version(t) for t in tables}
    if not spec:
        return latest
    if spec.startswith("run:"):
        run_id = spec.removeprefix("run:")
        runs = lake.read(S.RUNS, filter=pads.field("run_id") == run_id, columns=["versions_after"])
        if runs.num_rows == 0:
            raise LakeError(f"no run {run_id!r} in the run log")
        after: Versions = json.loads(runs.column("versions_after")[0].as_py())
        return {t: after.get(t) for t in tables}
    if re.fullmatch(r"\d+", spec):
        if lake.exists(S.RUNS):
            runs = lake.read(S.RUNS, columns=["run_id", "status", "started_at", "versions_after"]).sort_by("started_at")
            for row in runs.to_pylist():  # the earliest run that left pairs at version N
                after = json.loads(row["versions_after"] or "{}")
                if row["status"] == "succeeded" and after.get(S.PAIRS) == int(spec):
                    return resolve_as_of(lake, f"run:{row['run_id']}", tables)
        commits = {h["version"]: h["timestamp"] for h in lake.delta(S.PAIRS).history()}
        if int(spec) not in commits:
            raise LakeError(f"table 'pairs' has no version {spec}")
        when = datetime.fromtimestamp(commits[int(spec)] / 1000, UTC)
        return {t: int(spec) if t == S.PAIRS else lake.version_at(t, when) for t in tables}
    if "=" in spec:
        pins = dict(latest)
        for part in spec.split(","):
            name, _, version = part.partition("=")
            if name.strip() not in pins:
                raise LakeError(f"--as-of names unknown table {name.strip()!r}")
            pins[name.strip()] = int(version)
        return pins
    when = datetime.fromisoformat(spec.replace("Z", "+00:00"))
    when = when if when.tzinfo else when.astimezone()
    return {t: lake.version_at(t, when) for t in tables}


_parser = threading.local()


def _parser_connection() -> duckdb.DuckDBPyConnection:
    """An empty in-memory connection per thread, used only to parse SQL (never given lake data)."""
    con = getattr(_parser, "con", None)
    if con is None:
        con = _parser.con = duckdb.connect(":memory:")
    return con


EXPLAIN_PREFIX = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*explain\s+(?:analyze\s+)?", re.I | re.S)


def reads_only(sql: str) -> bool:
    """Whether every statement of ``sql`` only reads: a SELECT (DESCRIBE, SHOW, SUMMARIZE, VALUES, FROM … are
    SELECTs to DuckDB's parser), or an EXPLAIN [ANALYZE] of one (EXPLAIN ANALYZE runs what it explains).
    False for anything else and for text that does not parse."""
    con = _parser_connection()
    try:
        for statement in con.extract_statements(sql):
            if statement.type == duckdb.StatementType.EXPLAIN:
                explained = EXPLAIN_PREFIX.sub("", statement.query, count=1)
                if explained == statement.query or not reads_only(explained):
                    return False
            elif statement.type != duckdb.StatementType.SELECT:
                return False
    except duckdb.Error:
        return False
    return True


def referenced_names(sql: str) -> set[str] | None:
    """The table and view names ``sql`` reads (CTE names included, harmlessly), from DuckDB's parse tree without
    binding; None when it does not parse (then every table is registered and DuckDB words the error)."""
    con = _parser_connection()
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE" and isinstance(node.get("table_name"), str):
                names.add(node["table_name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    try:
        for statement in con.extract_statements(sql):
            tree = json.loads(con.execute("SELECT json_serialize_sql($1)", [statement.query]).fetchone()[0])
            if tree.get("error"):
                return None
            walk(tree)
    except duckdb.Error:
        return None
    return names


@functools.cache
def _views_file() -> tuple[tuple[str, ...], dict[str, tuple[str, set[str]]]]:
    """views.sql's macros (their CREATE statements: every connection makes them, they read no table) and its
    views (name -> its CREATE statement and the names it reads); parsed once per process."""
    if not VIEWS_FILE.exists():
        return (), {}
    parser = duckdb.connect(":memory:")
    try:
        macros, views = [], {}
        for statement in parser.extract_statements(VIEWS_FILE.read_text()):
            name = re.search(r"CREATE\s+(?:OR\s+REPLACE\s+)?VIEW\s+(\w+)", statement.query, re.I)
            if name:  # json_serialize_sql parses SELECTs only: the names are read from the view's query
                body = re.sub(r"^\s*AS\s+", "", statement.query[name.end():], flags=re.I)
                views[name.group(1)] = (statement.query, referenced_names(body) or set())
            elif re.search(r"CREATE\s+(?:OR\s+REPLACE\s+)?MACRO\s", statement.query, re.I):
                macros.append(statement.query)
        return tuple(macros), views
    finally:
        parser.close()


def needed_names(names: set[str]) -> set[str]:
    """``names`` with every view's own inputs, transitively (a query of ``pair_texts`` needs ``pairs``)."""
    views, needed, todo = _views_file()[1], set(), list(names)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(views.get(name, ("", set()))[1])
    return needed


def connect(lake: Lake, as_of: str | None = None, memory_limit: str = DEFAULT_MEMORY_LIMIT,
            names: set[str] | None = None, direct: bool = False) -> tuple[duckdb.DuckDBPyConnection, Versions]:
    """An in-memory DuckDB connection with the lake's tables as views, locked before DuckDB reads any of them.

    ``names``: only the tables (and views.sql's views) these names need are registered, so a query reads the
    Delta logs of the tables it names and no other; None registers every table. ``direct``: on a local lake,
    DuckDB reads the pinned data files itself (:func:`parquet_view`), which also lets the connection open
    them; give it only to code that runs read statements (:func:`reads_only`).
    """
    empty = {t: sch for t, (sch, _) in S.CORE_TABLES.items()}  # core tables read as empty before their first write
    tables = sorted(t for t in set(lake.tables()) | set(empty) if TABLE_NAME.fullmatch(t))
    needed = needed_names(names) if names is not None else None
    if needed is not None:
        if as_of and "=" in as_of and not as_of.startswith("run:"):  # tables pinned by name are registered too
            needed |= {part.partition("=")[0].strip() for part in as_of.split(",")}
        wants_raw = "raw_rows" in needed
        tables = [t for t in tables if t in needed or (wants_raw and t.startswith("raw_"))]
    pins = resolve_as_of(lake, as_of, tables)
    direct = direct and lake.local
    versions: Versions = {}
    sources: dict[str, DataFiles | pads.Dataset | pa.Table] = {}
    for table in tables:
        if pins.get(table) is not None:
            sources[table] = lake.data_files(table, pins[table]) if direct else lake.dataset(table, pins[table])
            versions[table] = pins[table]
        elif table in empty:  # not created yet (at that point in time)
            sources[table] = empty[table].empty_table()

    con = duckdb.connect(":memory:", config={"temp_directory": _private_temp_dir(), "memory_limit": memory_limit})
    readable = [path for source in sources.values() if isinstance(source, DataFiles) for path in source.paths]
    if readable:
        con.execute("SET allowed_paths = $1", [readable])
        # later queries of the connection reuse the files' footers (a Delta data file never changes): 0.05 s a
        # query over 100 files; the reader is built in, loaded here before extension loading is switched off
        con.execute("LOAD parquet")
        con.execute("SET parquet_metadata_cache = true")
    for statement in ("SET enable_external_access = false", "SET autoinstall_known_extensions = false",
                      "SET autoload_known_extensions = false", "SET lock_configuration = true"):
        con.execute(statement)
    for table, source in sources.items():
        if isinstance(source, DataFiles) and source.paths:
            con.execute(parquet_view(con, table, source))
        else:
            con.register(table, source.schema.empty_table() if isinstance(source, DataFiles) else source)
    raw_tables = [t for t in sources if t.startswith("raw_")]
    raw_union = " UNION ALL ".join(
        f"SELECT '{t.removeprefix('raw_')}' AS source, _raw_key AS raw_key, _split AS split, _source_file AS source_file, "
        f"_run_id AS run_id, to_json(r) AS row_json FROM {quoted(t)} r"
        for t in raw_tables
    ) or "SELECT NULL::VARCHAR AS source, NULL::VARCHAR AS raw_key, NULL::VARCHAR AS split, NULL::VARCHAR AS source_file, NULL::VARCHAR AS run_id, NULL::JSON AS row_json WHERE false"
    con.execute(f"CREATE VIEW raw_rows AS {raw_union}")
    macros, views = _views_file()
    for statement in macros:
        con.execute(statement)
    for name, (statement, _) in views.items():
        if needed is None or name in needed:
            con.execute(statement)
    return con, versions


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: object) -> str:
    """A value as SQL literal text (a partition value from the Delta log, a path, a source name); a text is quoted
    with its quotes doubled. The caller casts it to its column's type where that matters."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


@functools.lru_cache(maxsize=65536)
def _file_schema(path: str) -> pa.Schema:
    """A data file's own columns (its footer); a Delta data file never changes, so once per process is enough."""
    return pq.read_schema(path).remove_metadata()


def _column_types(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    return {row[0]: row[1] for row in con.execute(f"DESCRIBE {relation}").fetchall()}


def parquet_view(con: duckdb.DuckDBPyConnection, table: str, files: DataFiles) -> str:
    """``CREATE VIEW table`` over ``files`` read by DuckDB's own Parquet reader, with the table's columns and types.

    Partition values come from the log, joined by file name (DuckDB's ``filename`` column), not parsed from
    the paths: Delta does not promise ``column=value`` folders, and their encodings (``%2F``, the null marker,
    a value spelled ``NULL``) are where readers disagree. Files are grouped by their own schema: a file written
    before the table gained a column reads it as null, typed as the table types it, so no query pays for
    ``union_by_name``, which opens every file's footer at every bind.
    """
    con.register("_prefhouse_table_schema", files.schema.empty_table())
    try:
        types = _column_types(con, "_prefhouse_table_schema")
    finally:
        con.unregister("_prefhouse_table_schema")
    file_column = next(n for n in (f"_file{'_' * i}" for i in range(len(types) + 1)) if n not in types)
    partitioned = bool(files.partition_columns)
    groups: dict[pa.Schema, list[int]] = {}
    for i, path in enumerate(files.paths):
        groups.setdefault(_file_schema(path), []).append(i)
    selects = []
    for group in groups.values():
        listed = "[" + ", ".join(sql_literal(files.paths[i]) for i in group) + "]"
        scan = f"read_parquet({listed}, hive_partitioning = false" + (f", filename = {sql_literal(file_column)})" if partitioned else ")")
        held = _column_types(con, f"SELECT * FROM read_parquet({sql_literal(files.paths[group[0]])}, hive_partitioning = false)")
        columns = []
        for name, kind in types.items():
            column = _identifier(name)
            if name in files.partition_columns:
                columns.append(f"m.{column}")
            elif name not in held:
                columns.append(f"CAST(NULL AS {kind}) AS {column}")
            elif held[name] != kind:
                columns.append(f"CAST(r.{column} AS {kind}) AS {column}")
            else:
                columns.append(f"r.{column}")
        select = f"SELECT {', '.join(columns)} FROM {scan} r"
        if partitioned:
            rows = ", ".join(
                "(" + ", ".join([sql_literal(files.paths[i])] + [f"CAST({sql_literal(v)} AS {types[c]})" for c, v in files.partition_values(i).items()]) + ")"
                for i in group
            )
            names = ", ".join(_identifier(n) for n in [file_column, *files.partition_columns])
            select += f" JOIN (VALUES {rows}) m({names}) ON r.{_identifier(file_column)} = m.{_identifier(file_column)}"
        selects.append(select)
    return f"CREATE VIEW {quoted(table)} AS " + " UNION ALL ".join(selects)


def query_parameters(con: duckdb.DuckDBPyConnection, sql: str) -> set[str]:
    """The ``$name`` parameters DuckDB's parser finds in ``sql`` (a ``$`` inside a string literal or a comment is text)."""
    return {name for statement in con.extract_statements(sql) for name in statement.named_parameters}


def run_query(lake: Lake, query: str, as_of: str | None = None, params: dict[str, str] | None = None,
              memory_limit: str = DEFAULT_MEMORY_LIMIT, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> pa.Table:
    """Run ``query`` (a name, a file or SQL text) and return its rows as an Arrow table; interrupted after ``timeout_s``."""
    sql = resolve_query(query)
    con, _ = connect(lake, as_of, memory_limit, referenced_names(sql), direct=reads_only(sql))
    timer = threading.Timer(timeout_s, con.interrupt) if timeout_s else None
    try:
        used = query_parameters(con, sql)
        missing = used - set(params or {})
        if missing:
            raise ValueError(f"query needs --param {' --param '.join(f'{m}=…' for m in sorted(missing))}")
        args = {k: v for k, v in (params or {}).items() if k in used}
        if timer:
            timer.start()
        try:
            return con.sql(sql, params=args or None).to_arrow_table()
        except duckdb.InterruptException:
            raise ValueError(f"the query ran longer than its time limit ({timeout_s:g} s; --timeout changes it)") from None
    finally:
        if timer:
            timer.cancel()
        con.close()


def parse_params(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` strings as a dict; anything else is a usage error naming it."""
    params = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--param {pair!r} is not NAME=VALUE (e.g. --param pair_id=abc123)")
        params[name.strip()] = value
    return params


def format_table(table: pa.Table, max_rows: int = TERMINAL_ROWS) -> str:
    """A polars-drawn text table; ``max_rows = -1`` draws every row."""
    with pl.Config(tbl_rows=max_rows, tbl_cols=-1, fmt_str_lengths=60, tbl_width_chars=250, tbl_hide_dataframe_shape=True):
        text = str(pl.from_arrow(table))
    if 0 <= max_rows < table.num_rows:
        text += f"\n({table.num_rows} rows; {max_rows} shown: --output FILE or --format csv|json writes them all)"
    return text


def flattened(table: pa.Table) -> pa.Table:
    """Nested columns (messages, lists, structs) as JSON text, for formats that hold only flat values (CSV)."""
    columns = []
    for column in table.columns:
        if pa.types.is_nested(column.type):
            column = pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in column.to_pylist()], pa.string())
        columns.append(column)
    return pa.Table.from_arrays(columns, names=table.column_names)


def check_output(output: Path, lake: Lake) -> Path:
    """Where ``--output`` may write: anywhere but inside the lake (its folders are Delta's); missing folders are made."""
    target = output.expanduser().absolute()
    if "://" not in lake.uri and target.resolve().is_relative_to(Path(lake.uri).resolve()):
        raise ValueError(f"--output {output} is inside the lake {lake.uri}; write results elsewhere")
    if target.exists() and target.is_dir():
        raise ValueError(f"--output {output} is a folder; name a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def write_output(table: pa.Table, fmt: str, output: Path | None) -> None:
    """Write the result; the only place the runner writes anything, and only where the user asked (whole, or not at all)."""
    if fmt == "parquet" and output is None:
        raise ValueError("--format parquet needs --output FILE")
    if output is None:
        if fmt == "table":
            print(format_table(table))
        elif fmt == "csv":
            sys.stdout.write(pl.from_arrow(flattened(table)).write_csv())
        else:
            sys.stdout.write(pl.from_arrow(table).write_ndjson())
        return
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        if fmt == "table":
            partial.write_text(format_table(table, max_rows=-1) + "\n")
        elif fmt == "csv":
            pl.from_arrow(flattened(table)).write_csv(partial)
        elif fmt == "json":
            pl.from_arrow(table).write_ndjson(partial)
        else:
            import pyarrow.parquet as pq

            pq.write_table(table, partial)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
