"""The rules every source shares, applied column-wise to candidate pairs.

Order matters and is fixed: a candidate is rejected by the first rule it breaks, so each rejection has
exactly one named rule. Malformed data is ``invalid`` (quarantined); a recipe choice is a ``filter``.
Conditions are computed for every candidate; the human-readable reason only for the rejected ones.
"""

from __future__ import annotations

import polars as pl
from prefhouse.pipelines.core.schema import FILTER, INVALID
from prefhouse.pipelines.core.text import is_blank, role_pattern, roles_alternate, same_up_to_whitespace
from prefhouse.pipelines.sources.base import REJECT_SCHEMA, Adapter, append_turn


def _has_empty_turn(prompt: pl.Expr) -> pl.Expr:
    return prompt.is_null() | (prompt.list.len() == 0) | prompt.list.eval(is_blank(pl.element().struct.field("content"))).list.any().fill_null(True)


def prompt_is_valid(prompt: pl.Series) -> pl.Series:
    """A prompt the shared rules accept (every turn filled, roles alternating, as :func:`roles_alternate` says for the
    rules' own check): what the prompt pool holds."""
    filled = prompt.to_frame("m").select(~_has_empty_turn(pl.col("m"))).to_series()
    return (filled & roles_alternate(prompt)).fill_null(False)


def apply_shared_rules(cands: pl.DataFrame, adapter: Adapter) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split candidates into valid pairs (standard format) and rejects, then apply the adapter's caps."""
    shared = adapter.shared
    margin = pl.col("chosen_score") - pl.col("rejected_score")
    # (rule, kind, condition, reason): conditions over all rows, reasons only over the rows they reject
    checks: list[tuple[str, str, pl.Expr, pl.Expr]] = [
        ("empty_turn", INVALID, _has_empty_turn(pl.col("prompt")), pl.lit("a prompt turn is empty")),
        ("empty_turn", INVALID, is_blank(pl.col("chosen_reply")) | is_blank(pl.col("rejected_reply")), pl.lit("a final reply is empty")),
        ("non_alternating_roles", INVALID, ~pl.col("_roles_alternate"), pl.lit("prompt roles are ") + role_pattern(pl.col("prompt"))),
        ("identical_replies", INVALID, pl.col("_same"), pl.lit("chosen and rejected replies are the same text up to whitespace")),
        ("label_contradicted", INVALID, margin < 0,
         pl.format("chosen scored {} below rejected {}", pl.col("chosen_score"), pl.col("rejected_score"))),
        ("tie", FILTER, (margin == 0) & pl.lit(shared.drop_ties), pl.format("equal scores {}", pl.col("chosen_score"))),
        ("small_margin", FILTER, margin < shared.min_margin, pl.format("margin {} < min_margin " + str(shared.min_margin), margin)),
    ]
    judged = cands.with_columns(roles_alternate(cands["prompt"]).alias("_roles_alternate"),
                                same_up_to_whitespace(cands, "chosen_reply", "rejected_reply").alias("_same"))
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

    helper = ["_roles_alternate", "_same", "_check"] + [f"_c{i}" for i in range(len(checks))]
    kept = judged.filter(pl.col("_check").is_null()).drop(helper)
    kept, capped = adapter.cap(kept)
    kept = kept.with_columns(
        append_turn(kept["prompt"], kept["chosen_reply"], "assistant").alias("chosen"),
        append_turn(kept["prompt"], kept["rejected_reply"], "assistant").alias("rejected"),
        margin.alias("margin"),
    )
    rejected = pl.concat([failed.cast(REJECT_SCHEMA), capped.cast(REJECT_SCHEMA)])
    return kept, rejected
