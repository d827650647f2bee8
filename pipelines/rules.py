"""The rules every source shares, applied column-wise to candidate pairs.

Order matters and is fixed: a candidate is rejected by the first rule it breaks, so each rejection has
exactly one named rule. Malformed data is ``invalid`` (quarantined); a recipe choice is a ``filter``.
Conditions are computed for every candidate; the human-readable reason only for the rejected ones.
"""

from __future__ import annotations

import polars as pl

from pipelines.ids import without_whitespace
from pipelines.sources.base import FILTER, INVALID, REJECT_SCHEMA, Adapter, append_turn

ROLE_LETTER = {"system": "S", "user": "U", "assistant": "A"}
PROMPT_ROLES = r"^S?U(AU)*$"  # optional system turn, then alternating turns that end with the user


def _is_blank(expr: pl.Expr) -> pl.Expr:
    return expr.is_null() | (expr.str.strip_chars() == "")


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


def apply_shared_rules(cands: pl.DataFrame, adapter: Adapter) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split candidates into valid pairs (standard format) and rejects, then apply the adapter's caps."""
    shared = adapter.shared
    margin = pl.col("chosen_score") - pl.col("rejected_score")
    roles = pl.col("_roles")
    # (rule, kind, condition, reason): conditions over all rows, reasons only over the rows they reject
    checks: list[tuple[str, str, pl.Expr, pl.Expr]] = [
        ("empty_turn", INVALID,
         pl.col("prompt").is_null() | (pl.col("prompt").list.len() == 0)
         | pl.col("prompt").list.eval(_is_blank(pl.element().struct.field("content"))).list.any().fill_null(True),
         pl.lit("a prompt turn is empty")),
        ("empty_turn", INVALID, _is_blank(pl.col("chosen_reply")) | _is_blank(pl.col("rejected_reply")), pl.lit("a final reply is empty")),
        ("non_alternating_roles", INVALID, ~roles.str.contains(PROMPT_ROLES), pl.lit("prompt roles are ") + roles),
        ("identical_replies", INVALID, pl.col("_same"), pl.lit("chosen and rejected replies are the same text up to whitespace")),
        ("label_contradicted", INVALID, margin < 0,
         pl.format("chosen scored {} below rejected {}", pl.col("chosen_score"), pl.col("rejected_score"))),
        ("tie", FILTER, (margin == 0) & pl.lit(shared.drop_ties), pl.format("equal scores {}", pl.col("chosen_score"))),
        ("small_margin", FILTER, margin < shared.min_margin, pl.format("margin {} < min_margin " + str(shared.min_margin), margin)),
    ]
    judged = cands.with_columns(role_pattern(pl.col("prompt")).alias("_roles"), same_up_to_whitespace(cands, "chosen_reply", "rejected_reply").alias("_same"))
    judged = judged.with_columns([cond.fill_null(False).alias(f"_c{i}") for i, (_, _, cond, _) in enumerate(checks)])
    first = pl.lit(None, dtype=pl.Int32)
    for i in reversed(range(len(checks))):
        first = pl.when(pl.col(f"_c{i}")).then(pl.lit(i, dtype=pl.Int32)).otherwise(first)
    judged = judged.with_columns(first.alias("_check"))

    failed = judged.filter(pl.col("_check").is_not_null())
    rule = kind = reason = pl.lit(None, dtype=pl.String)
    for i, (r, k, _, why) in enumerate(checks):
        hit = pl.col("_check") == i
        rule, kind, reason = (pl.when(hit).then(pl.lit(r)).otherwise(rule), pl.when(hit).then(pl.lit(k)).otherwise(kind),
                              pl.when(hit).then(why).otherwise(reason))
    failed = failed.select("raw_keys", "split", "item", pl.lit("pair").alias("level"), kind.alias("kind"), rule.alias("rule"), reason.alias("reason"))

    helper = ["_roles", "_same", "_check"] + [f"_c{i}" for i in range(len(checks))]
    kept = judged.filter(pl.col("_check").is_null()).drop(helper)
    kept, capped = adapter.cap(kept)
    kept = kept.with_columns(
        append_turn(kept["prompt"], kept["chosen_reply"], "assistant").alias("chosen"),
        append_turn(kept["prompt"], kept["rejected_reply"], "assistant").alias("rejected"),
        margin.alias("margin"),
    )
    rejected = pl.concat([failed.cast(REJECT_SCHEMA), capped.cast(REJECT_SCHEMA)])
    return kept, rejected
