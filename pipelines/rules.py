"""The rules every source shares, applied column-wise to candidate pairs.

Order matters and is fixed: a candidate is rejected by the first rule it breaks, so each rejection has
exactly one named rule. Malformed data is ``invalid`` (quarantined); a recipe choice is a ``filter``.
"""

from __future__ import annotations

import polars as pl

from pipelines.ids import normalised
from pipelines.sources.base import FILTER, INVALID, REJECT_SCHEMA, Adapter, message

ROLE_LETTER = {"system": "S", "user": "U", "assistant": "A"}
PROMPT_ROLES = r"^S?U(AU)*$"  # optional system turn, then alternating turns that end with the user


def _is_blank(expr: pl.Expr) -> pl.Expr:
    return expr.is_null() | (expr.str.strip_chars() == "")


def role_pattern(messages: pl.Expr) -> pl.Expr:
    """The roles of a message list as letters (S, U, A; ? for anything else), e.g. 'UAU'."""
    letters = pl.element().struct.field("role").replace_strict(ROLE_LETTER, default="?")
    return messages.list.eval(letters).list.join("")


def apply_shared_rules(cands: pl.DataFrame, adapter: Adapter) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split candidates into valid pairs (standard format) and rejects, then apply the adapter's caps."""
    empty_prompt_turn = pl.col("prompt").list.eval(_is_blank(pl.element().struct.field("content"))).list.any()
    margin = pl.col("chosen_score") - pl.col("rejected_score")
    shared = adapter.shared
    checks: list[tuple[pl.Expr, str, str, pl.Expr]] = [
        (
            pl.col("prompt").is_null() | (pl.col("prompt").list.len() == 0) | empty_prompt_turn.fill_null(True),
            INVALID, "empty_turn", pl.lit("a prompt turn is empty"),
        ),
        (
            _is_blank(pl.col("chosen_reply")) | _is_blank(pl.col("rejected_reply")),
            INVALID, "empty_turn", pl.lit("a final reply is empty"),
        ),
        (
            ~role_pattern(pl.col("prompt")).str.contains(PROMPT_ROLES),
            INVALID, "non_alternating_roles", pl.lit("prompt roles are ") + role_pattern(pl.col("prompt")),
        ),
        (
            normalised(pl.col("chosen_reply")) == normalised(pl.col("rejected_reply")),
            INVALID, "identical_replies", pl.lit("chosen and rejected replies are the same text"),
        ),
        (
            margin < 0,
            INVALID, "label_contradicted",
            pl.format("chosen scored {} below rejected {}", pl.col("chosen_score"), pl.col("rejected_score")),
        ),
        (
            (margin == 0) & pl.lit(shared.drop_ties),
            FILTER, "tie", pl.format("equal scores {}", pl.col("chosen_score")),
        ),
        (
            margin < shared.min_margin,
            FILTER, "small_margin", pl.format("margin {} < min_margin " + str(shared.min_margin), margin),
        ),
    ]
    rule = kind = reason = None
    for condition, k, r, why in reversed(checks):  # build one when-chain; the first check wins
        cond = condition.fill_null(False)
        rule = pl.when(cond).then(pl.lit(r)) if rule is None else pl.when(cond).then(pl.lit(r)).otherwise(rule)
        kind = pl.when(cond).then(pl.lit(k)) if kind is None else pl.when(cond).then(pl.lit(k)).otherwise(kind)
        reason = pl.when(cond).then(why) if reason is None else pl.when(cond).then(why).otherwise(reason)
    judged = cands.with_columns(rule.alias("_rule"), kind.alias("_kind"), reason.alias("_reason"))

    failed = judged.filter(pl.col("_rule").is_not_null()).select(
        "raw_keys", "split", "item", pl.lit("pair").alias("level"), pl.col("_kind").alias("kind"),
        pl.col("_rule").alias("rule"), pl.col("_reason").alias("reason"),
    )
    kept = judged.filter(pl.col("_rule").is_null()).drop("_rule", "_kind", "_reason")
    kept, capped = adapter.cap(kept)
    kept = kept.with_columns(
        pl.concat_list([pl.col("prompt"), pl.concat_list([message("assistant", pl.col("chosen_reply"))])]).alias("chosen"),
        pl.concat_list([pl.col("prompt"), pl.concat_list([message("assistant", pl.col("rejected_reply"))])]).alias("rejected"),
        margin.alias("margin"),
    )
    rejected = pl.concat([failed.cast(REJECT_SCHEMA), capped.cast(REJECT_SCHEMA)])
    return kept, rejected
