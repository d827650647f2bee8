"""Building all comparisons among the scored responses to one prompt (HelpSteer, UltraFeedback, CodeUltraFeedback).

Input: one row per response with ``group`` (the prompt's raw row or prompt text), ``response_index``,
``raw_key``, ``split``, ``prompt``, ``reply``, ``score`` and ``model``. Output: one candidate per unordered
pair of responses, the higher score as chosen. Equal scores are kept as candidates (chosen = the earlier
response) so that the shared rules drop them, counted, as ties.
"""

from __future__ import annotations

import polars as pl


def all_comparisons(responses: pl.DataFrame, keys_from_both: bool) -> pl.DataFrame:
    """Self-join responses of the same group (i < j) and orient each pair by score.

    ``keys_from_both``: the pair's raw keys are both responses' rows (HelpSteer: a row per response), or the
    one shared row (UltraFeedback: a row per prompt).
    """
    left = responses.select("group", "response_index", "raw_key", "split", "prompt", "reply", "score", "model")
    right = left.select("group", "response_index", "raw_key", "reply", "score", "model")
    joined = left.join(right, on="group", suffix="_j").filter(pl.col("response_index") < pl.col("response_index_j"))
    i_wins = pl.col("score") >= pl.col("score_j")
    keys = (
        pl.concat_list([pl.col("raw_key"), pl.col("raw_key_j")]) if keys_from_both else pl.concat_list([pl.col("raw_key")])
    )
    pick = lambda a, b: pl.when(i_wins).then(pl.col(a)).otherwise(pl.col(b))  # noqa: E731
    return joined.sort("group", "response_index", "response_index_j", maintain_order=True).select(
        keys.alias("raw_keys"),
        "split",
        "prompt",
        pick("reply", "reply_j").alias("chosen_reply"),
        pick("reply_j", "reply").alias("rejected_reply"),
        pick("score", "score_j").alias("chosen_score"),
        pick("score_j", "score").alias("rejected_score"),
        pick("model", "model_j").alias("chosen_model"),
        pick("model_j", "model").alias("rejected_model"),
        pl.format("{} vs {}", pl.col("response_index"), pl.col("response_index_j")).alias("item"),
        "group",
    )
