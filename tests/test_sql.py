"""The SQL runner: named queries, read-only guarantees, time travel, output formats; other readers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import named_queries, run_query, sql_literal
from prefhouse.pipelines.sql import main

from .conftest import REPO


def test_every_named_query_runs(curated_lake: Lake) -> None:
    some_pair = run_query(curated_lake, "SELECT min(pair_id) AS p FROM pairs").column("p")[0].as_py()
    for name in named_queries():
        result = run_query(curated_lake, name, params={"pair_id": some_pair, "model_id": "no-model-yet"})
        if name not in ("model_pairs", "pair_models", "evaluations"):  # no model has been trained or evaluated in this lake
            assert result.num_rows > 0, name


def test_table1_matches_polars_on_the_same_snapshot(curated_lake: Lake) -> None:
    table = pl.from_arrow(run_query(curated_lake, "table1"))
    t1, total = table.filter(pl.col("source") != "TOTAL"), table.filter(pl.col("source") == "TOTAL")
    pairs = pl.scan_delta(curated_lake.table_uri("pairs")).collect()  # polars reads the lake directly
    assert table["source"][-1] == "TOTAL" and total.select("n_prompts", "n_pairs").row(0) == (pairs["prompt_id"].n_unique(), pairs.height)
    expected = (
        pairs.group_by("source")
        .agg(
            pl.col("prompt_id").n_unique().alias("n_prompts"),
            pl.len().alias("n_pairs"),
            pl.col("chosen").list.last().struct.field("content").str.len_chars().mean().round(1).alias("chosen_len_chars"),
            # words: runs of anything but ASCII whitespace, as DuckDB's regex \S+ (polars' \S would be Unicode's)
            pl.col("rejected").list.last().struct.field("content").str.count_matches(r"[^ \t\n\f\r]+").mean().round(1).alias("rejected_len_words"),
        )
        .sort("source")
    )
    columns = ["source", "n_prompts", "n_pairs", "chosen_len_chars", "rejected_len_words"]
    assert t1.select(columns).sort("source").to_dicts() == expected.select(columns).to_dicts()


def test_word_count_counts_runs_of_non_whitespace(curated_lake: Lake) -> None:
    """views.sql's word_count macro (table1's word lengths), edge cases against DuckDB's regex count of \\S+."""
    texts = ["", "   ", "one", "  two  words ", "\ttab\tand\nnewline\r\n", "form\ffeed", "no\u00a0break"]
    literal = ", ".join(sql_literal(t) for t in texts)
    rows = run_query(curated_lake, f"SELECT t, word_count(t) AS n, len(regexp_extract_all(t, '\\S+')) AS regex FROM unnest([{literal}]) AS u(t)").to_pylist()
    assert [row["n"] for row in rows] == [0, 0, 1, 2, 3, 2, 1]
    assert all(row["n"] == row["regex"] for row in rows)


def test_filter_accounting_balances(curated_lake: Lake) -> None:
    """The accounting's counts agree with the tables themselves: rows in = the bronze table's rows, paired = the raw
    rows some kept pair copy came from; and every row has one outcome."""
    acc = {row["source"]: row for row in run_query(curated_lake, "filter_accounting").to_pylist()}
    assert len(acc) == 10 and all(row["balanced"] for row in acc.values())
    for source, row in acc.items():
        assert row["rows_in"] == curated_lake.read(f"raw_{source}").num_rows, source
        paired = run_query(curated_lake, f"SELECT count(DISTINCT k) AS n FROM (SELECT unnest(raw_keys) AS k FROM pair_sources WHERE source = '{source}')")
        assert row["paired"] == paired.column("n")[0].as_py(), source


def test_provenance_reaches_the_raw_row(curated_lake: Lake) -> None:
    pair = run_query(curated_lake, "SELECT pair_id FROM pairs WHERE source = 'shp' LIMIT 1").column("pair_id")[0].as_py()
    prov = run_query(curated_lake, "pair_provenance", params={"pair_id": pair}).to_pylist()
    assert prov[0]["is_first_copy"] and prov[0]["rule"] == "shp.standard" and prov[0]["hub_id"] == "stanfordnlp/SHP"
    raw = json.loads(prov[0]["raw_row"])
    assert raw["post_id"] and raw["_raw_key"] == prov[0]["raw_key"]
    assert json.loads(prov[0]["rule_settings"])["adapter"]["min_score_ratio"] == 2.0


# Each escape must be refused by the sandbox itself (file access off, configuration locked), not fail for
# another reason such as a missing file or a failed download.
SANDBOX_REFUSAL = "file system operations are disabled by configuration"


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("COPY (SELECT 1) TO '{out}/x.csv'", SANDBOX_REFUSAL),
        ("SELECT * FROM read_csv('/etc/hostname')", SANDBOX_REFUSAL),
        ("SET enable_external_access = true", "the configuration has been locked"),
        ("ATTACH '{out}/x.duckdb' AS x", SANDBOX_REFUSAL),
        ("INSTALL delta", SANDBOX_REFUSAL),
    ],
)
def test_queries_cannot_write_or_escape(curated_lake: Lake, tmp_path: Path, statement: str, refusal: str) -> None:
    from prefhouse.pipelines.core.sql import connect

    con, _ = connect(curated_lake)
    try:
        with pytest.raises(duckdb.Error, match=refusal):
            con.execute(statement.format(out=tmp_path))
    finally:
        con.close()
    assert list(tmp_path.iterdir()) == []


def test_dropping_a_view_does_not_touch_the_lake(curated_lake: Lake) -> None:
    from prefhouse.pipelines.core.sql import connect

    before = curated_lake.versions()
    con, _ = connect(curated_lake)
    con.execute("DROP VIEW pairs")
    con.close()
    assert curated_lake.versions() == before and curated_lake.read("pairs").num_rows > 0


def test_as_of_reads_old_versions(lake: Lake) -> None:
    from prefhouse.pipelines.curate import curate

    from .conftest import SAMPLES

    curate(["shp"], lake, SAMPLES, progress=False)
    v_shp = lake.version("pairs")
    curate(["helpsteer"], lake, SAMPLES, progress=False)
    count = lambda as_of: run_query(lake, "SELECT count(DISTINCT source) AS n FROM pairs", as_of=as_of).column("n")[0].as_py()  # noqa: E731
    assert count(None) == 2
    assert count(str(v_shp)) == 1
    assert count("0") == 0
    assert count(f"pairs={v_shp}") == 1
    first_run = run_query(lake, "SELECT run_id FROM runs ORDER BY started_at LIMIT 1").column("run_id")[0].as_py()
    assert count(f"run:{first_run}") == 1
    prompts = run_query(lake, "SELECT count(*) AS n FROM prompts", as_of=str(v_shp)).column("n")[0].as_py()
    assert prompts == run_query(lake, "SELECT count(*) AS n FROM prompts WHERE source = 'shp'").column("n")[0].as_py()


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet", "table"])
def test_output_formats(curated_lake: Lake, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    assert main(["table1", "--lake", curated_lake.uri, "--format", fmt, "--output", str(out)]) == 0
    if fmt == "parquet":
        assert pq.read_table(out).num_rows == 11
    elif fmt == "json":
        assert len(out.read_text().splitlines()) == 11
    elif fmt == "csv":
        assert out.read_text().splitlines()[0].startswith("source,n_prompts")
    else:
        assert "TOTAL" in out.read_text()


def test_cli_errors_are_clear(curated_lake: Lake, capsys: pytest.CaptureFixture) -> None:
    assert main(["pair_provenance", "--lake", curated_lake.uri]) == 2
    assert "--param pair_id" in capsys.readouterr().err
    assert main(["no_such_query", "--lake", curated_lake.uri]) == 2
    assert main(["SELECT * FROM nope", "--lake", curated_lake.uri]) == 2


def test_module_entry_point(curated_lake: Lake) -> None:
    proc = subprocess.run([sys.executable, "-m", "pipelines.sql", "--list", "--lake", curated_lake.uri],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and "table1" in proc.stdout and "pairs" in proc.stdout


# ------------------------------------------------------------------------------------------------ side doors (issue: no side door)
def test_a_folder_name_cannot_inject_sql(lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake
    from prefhouse.pipelines.curate import curate

    from .conftest import SAMPLES

    curate(["shp"], lake, SAMPLES, progress=False)
    monkeypatch.chdir(tmp_path)
    evil = "raw_x' AS source, 1 AS raw_key, 1 AS split, 1 AS source_file, 1 AS run_id, 1 AS row_json; COPY (SELECT 1) TO 'injected.csv'; --"
    write_deltalake(f"{lake.uri}/{evil}", pa.table({"x": [1]}))
    assert evil in lake.tables()  # a folder with a Delta log: what the runner used to splice into SQL
    assert run_query(lake, "SELECT count(*) AS n FROM pairs").column("n")[0].as_py() > 0
    assert run_query(lake, "SELECT count(*) AS n FROM raw_rows").column("n")[0].as_py() > 0
    assert not (tmp_path / "injected.csv").exists()


def test_duckdb_temp_folder_is_private_and_limits_are_set(curated_lake: Lake) -> None:
    from prefhouse.pipelines.core.sql import connect

    con1, _ = connect(curated_lake, memory_limit="512MB")
    con2, _ = connect(curated_lake)
    try:
        temp1 = con1.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        temp2 = con2.execute("SELECT current_setting('temp_directory')").fetchone()[0]
        assert temp1 != temp2 and Path(temp1).is_dir() and list(Path(temp1).iterdir()) == []
        assert con1.execute("SELECT current_setting('memory_limit')").fetchone()[0] in ("488.2 MiB", "512.0 MB")
        with pytest.raises(duckdb.Error, match="lock_configuration|locked"):
            con1.execute("SET memory_limit = '100GB'")
    finally:
        con1.close()
        con2.close()


def test_a_query_over_its_time_limit_is_stopped(curated_lake: Lake) -> None:
    with pytest.raises(ValueError, match="time limit"):
        run_query(curated_lake, "SELECT count(*) FROM range(100000000000) a", timeout_s=0.5)


def test_a_dollar_in_a_string_is_not_a_parameter(curated_lake: Lake, capsys: pytest.CaptureFixture) -> None:
    assert run_query(curated_lake, "SELECT '$5 or $price' AS t -- $not_one").column("t")[0].as_py() == "$5 or $price"
    assert main(["SELECT $a AS x", "--lake", curated_lake.uri, "--param", "a"]) == 2
    assert "--param 'a' is not NAME=VALUE" in capsys.readouterr().err


def test_csv_of_message_columns_and_whole_tables_to_a_file(curated_lake: Lake, tmp_path: Path) -> None:
    out = tmp_path / "new" / "folder" / "pairs.csv"  # a missing folder is made
    assert main(["SELECT pair_id, chosen FROM pairs ORDER BY pair_id LIMIT 3", "--lake", curated_lake.uri, "--format", "csv", "--output", str(out)]) == 0
    first = pl.read_csv(out).row(0, named=True)
    assert json.loads(first["chosen"])[-1]["role"] == "assistant"
    table = tmp_path / "t.txt"
    assert main(["SELECT range AS i FROM range(250)", "--lake", curated_lake.uri, "--output", str(table)]) == 0
    assert " 249 " in table.read_text() and "rows;" not in table.read_text()  # every row, not the first 200


def test_output_inside_the_lake_is_refused(curated_lake: Lake, capsys: pytest.CaptureFixture) -> None:
    versions = curated_lake.versions()
    log = Path(curated_lake.uri) / "pairs" / "_delta_log" / f"{versions['pairs']:020d}.json"
    before = log.read_bytes()
    assert main(["table1", "--lake", curated_lake.uri, "--format", "json", "--output", str(log)]) == 2
    assert "inside the lake" in capsys.readouterr().err and log.read_bytes() == before


def test_a_log_naming_a_file_outside_the_table_is_not_read(lake: Lake, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from prefhouse.pipelines.core.lake import LakeError

    lake.append("t", pa.table({"x": [1]}))
    secret = tmp_path / "secret.parquet"
    pq.write_table(pa.table({"x": [42]}), secret)
    log = Path(lake.table_uri("t")) / "_delta_log"
    add = {"add": {"path": "../../secret.parquet", "size": secret.stat().st_size, "partitionValues": {}, "modificationTime": 0, "dataChange": True}}
    (log / f"{1:020d}.json").write_text(json.dumps({"commitInfo": {"timestamp": 1}}) + "\n" + json.dumps(add) + "\n")
    with pytest.raises(LakeError, match="outside the table"):
        lake.read("t")


def test_a_query_registers_only_the_tables_it_names(curated_lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each registered table costs a read of its Delta log: a query of pair_texts reads the pairs log and no other."""
    from prefhouse.pipelines.core import sql as sql_module

    opened: list[str] = []
    real = curated_lake.data_files

    def counting(table, version=None):
        opened.append(table)
        return real(table, version)

    monkeypatch.setattr(curated_lake, "data_files", counting)
    assert run_query(curated_lake, "SELECT count(*) AS n FROM pair_texts").column("n")[0].as_py() > 0
    assert opened == ["pairs"]
    opened.clear()
    run_query(curated_lake, "pair_provenance", params={"pair_id": "x"})
    assert "raw_shp" in opened and "prompts" not in opened and "validations" not in opened
    assert sql_module.referenced_names("SELEC nonsense") is None  # unparsable: every table is registered and DuckDB words the error
    with pytest.raises(duckdb.Error, match="syntax error"):
        run_query(curated_lake, "SELECT * FROM pairs WHERE")


# ------------------------------------------------------------------------------------------------ DuckDB reading the files itself
def test_direct_reads_equal_arrow_reads_for_every_table(curated_lake: Lake) -> None:
    """Every table read by DuckDB's Parquet reader has the columns, types and rows of the Arrow dataset read."""
    from prefhouse.pipelines.core.sql import connect

    direct, _ = connect(curated_lake, direct=True)
    arrow, _ = connect(curated_lake)
    try:
        for table in [t for t in curated_lake.tables() if curated_lake.data_files(t).paths]:  # a table without files reads as empty
            sql = f'SELECT * FROM "{table}" ORDER BY ALL'
            assert "read_parquet" in direct.execute(f"SELECT sql FROM duckdb_views() WHERE view_name = '{table}'").fetchall()[0][0]
            a, b = direct.sql(sql).to_arrow_table(), arrow.sql(sql).to_arrow_table()
            assert a.schema == b.schema and a.num_rows == b.num_rows > 0, table
            assert a.to_pylist() == b.to_pylist(), table
    finally:
        direct.close()
        arrow.close()


def test_direct_reads_take_partition_values_from_the_log_and_type_added_columns(lake: Lake) -> None:
    """Partition values a path cannot spell plainly (a slash, a percent, a quote, the text NULL, a null) come
    from the Delta log; rows written before the table gained columns read them as typed nulls."""
    import pyarrow as pa

    parts = ["a/b", "50%", "it's", "NULL", None, "x=y", "é"]
    lake.append("t", pa.table({"id": pa.array(range(len(parts)), pa.int64()), "part": parts, "k": pa.array([1, 2, 1, 2, 1, 2, 1], pa.int32())}),
                partition_by=["part", "k"])
    wider = pa.schema([("id", pa.int64()), ("part", pa.string()), ("k", pa.int32()), ("note", pa.string()), ("tags", pa.list_(pa.string()))])
    lake.create("t", wider)  # the table gains two columns
    lake.append("t", pa.table({"id": pa.array([7], pa.int64()), "part": ["NULL"], "k": pa.array([3], pa.int32()), "note": ["new"], "tags": [["x"]]}, schema=wider),
                partition_by=["part", "k"])
    got = run_query(lake, "SELECT * FROM t ORDER BY id")
    want = lake.read("t").sort_by("id")
    assert got.column_names == ["id", "part", "k", "note", "tags"]
    assert got.to_pylist() == want.to_pylist()
    assert got.column("part").to_pylist() == parts + ["NULL"]
    assert got.column("note").to_pylist() == [None] * 7 + ["new"] and got.schema.field("tags").type == pa.list_(pa.string())
    count = lambda where: run_query(lake, f"SELECT count(*) AS n FROM t WHERE {where}").column("n")[0].as_py()  # noqa: E731
    assert (count("part IS NULL"), count("part = 'NULL'"), count("part = 'a/b' AND k = 1"), count("k = 2")) == (1, 2, 1, 3)


def test_only_read_statements_get_the_files(curated_lake: Lake, tmp_path: Path) -> None:
    """DuckDB may write any file it may read, so a statement that is not a read runs in the Arrow sandbox, where
    it cannot touch a data file however it is wrapped (each is given as a .sql file: query text must start as a read)."""
    from prefhouse.pipelines.core.sql import reads_only

    data_file = Path(curated_lake.data_files("pairs").paths[0])
    before = data_file.read_bytes()
    for statement in (f"COPY (SELECT 1 AS x) TO '{data_file}' (FORMAT parquet, USE_TMP_FILE false)",
                      f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{data_file}' (FORMAT parquet, USE_TMP_FILE false)",
                      f"SELECT 1; COPY (SELECT 1 AS x) TO '{data_file}' (FORMAT parquet, USE_TMP_FILE false)"):
        assert not reads_only(statement)
        (tmp_path / "q.sql").write_text(statement)
        with pytest.raises(duckdb.Error, match=SANDBOX_REFUSAL):
            run_query(curated_lake, str(tmp_path / "q.sql"))
    assert data_file.read_bytes() == before
    assert all(reads_only(q) for q in ("SELECT 1", "FROM pairs", "DESCRIBE pairs", "SUMMARIZE SELECT 1 AS x",
                                        "-- why\nEXPLAIN ANALYZE SELECT 1", "WITH a AS (SELECT 1) SELECT * FROM a; VALUES (2)"))
    assert not any(reads_only(q) for q in ("CREATE TABLE x AS SELECT 1", "SELECT * FROM (PIVOT (SELECT 1 AS a, 2 AS b) ON a USING sum(b))",
                                            "EXPLAIN CREATE TABLE x AS SELECT 1", "SELECT * FROM"))


def test_a_direct_connection_reads_no_file_but_the_lake_s(curated_lake: Lake, tmp_path: Path) -> None:
    import pyarrow as pa
    from prefhouse.pipelines.core.sql import connect

    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1]}), other)
    con, _ = connect(curated_lake, direct=True)
    try:
        assert con.sql("SELECT count(*) FROM pairs").fetchall()[0][0] > 0
        with pytest.raises(duckdb.Error, match=SANDBOX_REFUSAL):
            con.sql(f"SELECT * FROM read_parquet('{other}')").fetchall()
    finally:
        con.close()
