"""Stable content ids: md5 of normalised text, computed column-wise.

Ids must not change across library versions or machines (they are how a pair is found again years later),
so they are md5 digests of an explicit normalisation, never a dataframe library's internal hash. DuckDB's
vectorised ``md5`` does the hashing; polars does the normalisation.
"""

from __future__ import annotations

import duckdb
import polars as pl
import pyarrow as pa

UNIT = "\x1f"  # separates role from content
RECORD = "\x1e"  # separates turns
GROUP = "\x1d"  # separates fields of a composite id


def normalised(expr: pl.Expr) -> pl.Expr:
    """NFC, whitespace runs folded to one space, trimmed: what counts as 'the same text' for ids."""
    return expr.str.normalize("NFC").str.replace_all(r"\s+", " ").str.strip_chars()


def messages_key(expr: pl.Expr) -> pl.Expr:
    """A message list as one normalised string (role, content per turn)."""
    return expr.list.eval(
        pl.element().struct.field("role") + UNIT + normalised(pl.element().struct.field("content"))
    ).list.join(RECORD)


def md5_hex(texts: pl.Series) -> pl.Series:
    """md5 hex digest of each string, vectorised in DuckDB (order preserved)."""
    with duckdb.connect() as con:
        con.execute("SET preserve_insertion_order = true")
        con.register("hash_input", pa.table({"t": texts.to_arrow()}))
        out = con.sql("SELECT md5(t) AS h FROM hash_input").to_arrow_table()
    return pl.from_arrow(out.column("h")).alias(texts.name)


def with_md5(df: pl.DataFrame, name: str, *parts: pl.Expr) -> pl.DataFrame:
    """Add column ``name`` = md5 of the parts joined with a separator that cannot occur in normalised text."""
    if df.height == 0:
        return df.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    key = df.select(pl.concat_str(list(parts), separator=GROUP).alias(name)).to_series()
    return df.with_columns(md5_hex(key))
