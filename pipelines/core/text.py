"""Text predicates that curation's rules and the quality gates share: role patterns and whitespace-blind equality."""

from __future__ import annotations

import polars as pl
from prefhouse.pipelines.core.ids import without_whitespace

ROLE_LETTER = {"system": "S", "user": "U", "assistant": "A"}
PROMPT_ROLES = r"^S?U(AU)*$"  # optional system turn, then alternating turns that end with the user


def role_pattern(messages: pl.Expr) -> pl.Expr:
    """The roles of a message list as letters (S, U, A; ? for anything else), e.g. 'UAU'."""
    letters = pl.element().struct.field("role").replace_strict(ROLE_LETTER, default="?")
    return messages.list.eval(letters).list.join("")


def same_up_to_whitespace(df: pl.DataFrame, a: str, b: str) -> pl.Series:
    """Whether columns a and b hold the same text once whitespace is ignored.

    Removing whitespace from every long reply is costly, so it is done only where the trimmed texts
    begin and end with the same character: a necessary condition, cheap to test.
    """
    ta, tb = pl.col(a).str.strip_chars(), pl.col(b).str.strip_chars()
    maybe = (ta.str.head(1) == tb.str.head(1)) & (ta.str.tail(1) == tb.str.tail(1))
    rows = df.select(pl.int_range(pl.len()).alias("_row"), maybe.fill_null(False).alias("_maybe"), a, b)
    checked = rows.filter("_maybe").select("_row", (without_whitespace(pl.col(a)) == without_whitespace(pl.col(b))).alias("_same"))
    return rows.join(checked, on="_row", how="left", maintain_order="left")["_same"].fill_null(False)
