"""Building all comparisons among the scored responses to one prompt (HelpSteer, UltraFeedback, CodeUltraFeedback).

Input: one row per response with ``group`` (the prompt's raw row or prompt text), ``response_index``,
``raw_key``, ``split``, ``prompt``, ``reply``, ``score`` and ``model``. Output: one candidate per unordered
pair of responses, the higher score as chosen. Equal scores are kept as candidates (chosen = the earlier
response) so that the shared rules drop them, counted, as ties.
"""

from __future__ import annotations

import polars as pl
from prefhouse.pipelines.core.schema import INVALID
from prefhouse.pipelines.sources.base import Candidates, concat_rejects, conform_candidates, rejects, row_prompts, user_prompt


def response_rows(df: pl.DataFrame, group: pl.Expr, prompt_text: str, score: pl.Expr, model: pl.Expr) -> pl.DataFrame:
    """The input of :func:`all_comparisons` from raw-shaped rows (``_raw_key``, ``_split``, ``response``)."""
    return df.select(
        group.alias("group"),
        "response_index",
        pl.col("_raw_key").alias("raw_key"),
        pl.col("_split").alias("split"),
        user_prompt(pl.col(prompt_text)).alias("prompt"),
        pl.col("response").alias("reply"),
        score.alias("score"),
        model.alias("model"),
    )


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


def explode_responses(rows: pl.DataFrame, column: str, keep: list[str]) -> pl.DataFrame:
    """One row per element of the list-of-structs ``column`` (fields unnested), with its ``response_index``."""
    return (
        rows.select(*keep, column)
        .with_columns(pl.int_ranges(0, pl.col(column).list.len()).alias("response_index"))
        .explode(column, "response_index")
        .filter(pl.col(column).is_not_null())
        .unnest(column)
    )


def compare_scored(scored: pl.DataFrame, item: str, reason: pl.Expr) -> Candidates:
    """All comparisons among the responses of each raw row (one prompt per row, as UltraFeedback and
    CodeUltraFeedback have it); a response without a numeric ``score`` is quarantined as
    ``non_numeric_rating`` with ``reason``, named ``"<item> <index>"`` within its row.

    ``scored``: one row per response with ``_raw_key``, ``_split``, ``instruction``, ``response``,
    ``response_index``, ``model`` and ``score``.
    """
    missing = pl.col("score").is_null() | pl.col("score").is_nan()
    unrated = scored.filter(missing).with_columns(pl.format(item + " {}", pl.col("response_index")).alias("item"))
    responses = response_rows(scored.filter(~missing), pl.col("_raw_key"), "instruction", pl.col("score"), pl.col("model"))
    pairs = all_comparisons(responses, keys_from_both=False)
    prompts = row_prompts(scored.unique("_raw_key", keep="first", maintain_order=True), user_prompt(pl.col("instruction")))
    return Candidates(conform_candidates(pairs), concat_rejects([rejects(unrated, "response", INVALID, "non_numeric_rating", reason)]), prompts)
