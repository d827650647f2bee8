"""Derived check columns: what the expectation suites look at, computed column-wise with polars.

Great Expectations validates flat columns well and nested message lists poorly (and slowly), so each
table's rows are first reduced to one row of facts per row: ids, partition values, lengths, and booleans
such as "chosen and rejected share their context". The suites in :mod:`quality.suites` then state what
those facts must be. Keys (``pair_id``, ``_raw_key``, …) stay in the frame so that failing rows can be
found again and quarantined.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import polars as pl
from prefhouse.pipelines.core.text import is_blank, roles_alternate, same_up_to_whitespace


def _all_turns_filled(messages: pl.Expr) -> pl.Expr:
    return ~messages.list.eval(is_blank(pl.element().struct.field("content"))).list.any().fill_null(True)


def _chars(messages: pl.Expr) -> pl.Expr:
    return messages.list.eval(pl.element().struct.field("content").str.len_chars()).list.sum()


def shares_context(pairs: pl.DataFrame) -> pl.Series:
    """Whether ``chosen`` and ``rejected`` both continue ``prompt``: each is the prompt's turns (same roles, same
    trimmed texts, a null text equal only to a null) plus one reply.

    Compared turn by turn on the flattened message lists, with no key string built per row (building three
    per pair was half the cost of all the pair facts).
    """
    n = pl.col("prompt").list.len()
    fits = ((pl.col("chosen").list.len() == n + 1) & (pl.col("rejected").list.len() == n + 1)).fill_null(False)
    rows = pairs.select(fits.alias("fits"), n.alias("n"), pl.int_range(pl.len(), dtype=pl.UInt32).alias("_row"), "prompt", "chosen", "rejected")
    # a one-turn prompt (every prompt of most sources) is compared with the first turns of chosen and rejected
    # directly: repeating and exploding its rows cost 3-5x the whole comparison
    single_turn = rows.filter(pl.col("fits") & (pl.col("n") == 1)).select(
        "_row", pl.col("prompt").list.first().alias("p"), pl.col("chosen").list.first().alias("c"), pl.col("rejected").list.first().alias("r"),
    )
    multi_turn = rows.filter(pl.col("fits") & (pl.col("n") > 1)).select(
        pl.col("_row").repeat_by("n").explode(), pl.col("prompt").explode().alias("p"),
        pl.col("chosen").list.head(pl.col("n")).explode().alias("c"), pl.col("rejected").list.head(pl.col("n")).explode().alias("r"),
    )
    turns = pl.concat([single_turn, multi_turn])
    field = lambda c, f: pl.col(c).struct.field(f)  # noqa: E731
    same_roles = field("p", "role").eq_missing(field("c", "role")) & field("p", "role").eq_missing(field("r", "role"))
    same = lambda text: same_roles & text("p").eq_missing(text("c")) & text("p").eq_missing(text("r"))  # noqa: E731
    # texts compared as they are first, trimmed only where they differ (trimming copies every text)
    in_doubt = turns.filter(~same(lambda c: field(c, "content")))
    mismatched = in_doubt.filter(~same(lambda c: field(c, "content").str.strip_chars()))["_row"].unique()
    return rows.select(pl.col("fits") & ~pl.col("_row").is_in(mismatched.implode())).to_series().alias("shares_context")


def pair_facts(pairs: pl.DataFrame, used_prompt_ids: set[str] | None = None) -> pl.DataFrame:
    """One row of facts per pair (curated or online) for the ``pairs`` suite.

    ``used_prompt_ids``: prompts earlier online iterations used; an online pair on one of them breaks
    "no prompt reused across iterations".
    """
    scored = pl.col("chosen_score").is_not_null() & pl.col("rejected_score").is_not_null()
    finite = lambda c: pl.col(c).is_null() | pl.col(c).is_finite()  # noqa: E731
    online = pl.col("iteration") > 0
    reused = pl.lit(False)
    if used_prompt_ids:
        reused = online & pl.col("prompt_id").is_in(pl.Series(sorted(used_prompt_ids), dtype=pl.String).implode())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefhouse-facts") as beside:
        # three facts are Series made by several polars calls each: inside the select they would stop polars running its
        # expressions in parallel (0.9 s instead of 0.5 s at 1M pairs); after it they ran alone, one core idle much of the
        # time. On a thread beside it (polars releases the GIL), the facts of 1M pairs in 4 frames: 0.36 -> 0.31 s (medians)
        prompt_roles = beside.submit(roles_alternate, pairs["prompt"])
        context = beside.submit(shares_context, pairs)
        differ = beside.submit(_final_turns_differ, pairs)
        facts = pairs.select(
            "pair_id", "prompt_id", "source", "iteration",
            ((last_role("chosen") == "assistant") & (last_role("rejected") == "assistant")).alias("roles_alternate"),
            (_all_turns_filled(pl.col("chosen")) & _all_turns_filled(pl.col("rejected"))).alias("no_empty_turn"),
            (finite("chosen_score") & finite("rejected_score") & finite("margin")).alias("scores_finite"),
            pl.when(scored).then(pl.col("margin")).alias("margin_where_scored"),
            _chars(pl.col("prompt")).alias("prompt_chars"),
            _last_text("chosen").str.len_chars().alias("chosen_chars"),
            _last_text("rejected").str.len_chars().alias("rejected_chars"),
            pl.when(online).then(pl.col("prompt_id") + "|" + pl.col("iteration").cast(pl.String)).alias("online_prompt_in_iteration"),
            reused.alias("prompt_reused"),
        )
        # the prompts' roles join the last turns' after the select: added as a column before it (one chunk among the frame's
        # several), they made polars rechunk every column, texts included (the facts of 1M pairs in 4 frames: 0.45 -> 0.35 s)
        facts = facts.with_columns((pl.col("roles_alternate") & pl.lit(prompt_roles.result())).fill_null(False))
        return facts.insert_column(4, context.result()).insert_column(5, differ.result())


def _final_turns_differ(pairs: pl.DataFrame) -> pl.Series:
    """Whether the last turns of ``chosen`` and ``rejected`` differ by more than whitespace."""
    replies = pairs.select(_last_text("chosen").alias("c"), _last_text("rejected").alias("r"))
    return (~same_up_to_whitespace(replies, "c", "r")).alias("final_turns_differ")


def _last_text(column: str) -> pl.Expr:
    return pl.col(column).list.last().struct.field("content")


def last_role(column: str) -> pl.Expr:
    return pl.col(column).list.last().struct.field("role")


def raw_facts(raw: pl.DataFrame, table: str) -> pl.DataFrame:
    """Facts of bronze rows; the raw tables of one run are judged together (one suite run, not ten)."""
    return raw.select("_raw_key", "_split", (pl.lit(table + "#") + pl.col("_raw_key")).alias("raw_row"))


def prompt_facts(prompts: pl.DataFrame) -> pl.DataFrame:
    return prompts.select(
        "prompt_id", "source", "split", "raw_key",
        (pl.col("prompt_id") + "|" + pl.col("source") + "|" + pl.col("split").fill_null("")).alias("prompt_in_source_split"),
        pl.col("prompt_text").str.strip_chars().str.len_chars().alias("prompt_text_chars"),
        _all_turns_filled(pl.col("prompt")).alias("no_empty_turn"),
    )


def response_facts(responses: pl.DataFrame, n: int, used_prompt_ids: set[str] | None = None) -> pl.DataFrame:
    """Facts per generated response: ids, its prompt's response count (must be n), text present, prompt fresh."""
    fresh = ~pl.col("prompt_id").is_in(pl.Series(sorted(used_prompt_ids or ()), dtype=pl.String).implode())
    return responses.select(
        "response_id", "prompt_id", "iteration",
        pl.len().over("prompt_id").alias("responses_for_prompt"),
        pl.col("sample_index").n_unique().over("prompt_id").alias("distinct_samples_for_prompt"),
        pl.col("response").is_not_null().alias("has_text"),
        pl.col("response").str.len_chars().fill_null(0).alias("response_chars"),
        (~fresh).alias("prompt_reused"),
    ).with_columns(pl.lit(n).alias("_n"))


def eval_response_facts(responses: pl.DataFrame, n: int) -> pl.DataFrame:
    """Facts per evaluation answer: n per (prompt, policy, settings), text present, log-probabilities finite."""
    finite = lambda c: pl.col(c).is_not_null() & pl.col(c).is_finite()  # noqa: E731
    return responses.select(
        "response_id", "prompt_id", "iteration",
        pl.len().over("prompt_id", "policy_model_id", "eval_key").alias("responses_for_prompt"),
        pl.col("response").is_not_null().alias("has_text"),
        (finite("logp") & finite("reference_logp")).alias("logps_finite"),
    )


def eval_score_facts(scores: pl.DataFrame, response_ids: pl.Series) -> pl.DataFrame:
    """Facts per evaluation reward: finite, of a known answer, one per (answer, judge)."""
    return scores.select(
        "score_id", "response_id", "iteration",
        (pl.col("reward").is_not_null() & pl.col("reward").is_finite()).alias("reward_finite"),
        pl.col("response_id").is_in(response_ids.implode()).alias("has_response"),
    )


def score_facts(scores: pl.DataFrame, responses: pl.DataFrame, n: int) -> pl.DataFrame:
    """Facts per reward: finite, one per response of the iteration, n per prompt."""
    known = responses.select("response_id").with_columns(pl.lit(True).alias("has_response"))
    return scores.join(known, on="response_id", how="left").select(
        "response_id", "prompt_id", "iteration",
        (pl.col("reward").is_not_null() & pl.col("reward").is_finite()).alias("reward_finite"),
        pl.col("has_response").fill_null(False),
        pl.len().over("prompt_id").alias("scores_for_prompt"),
    ).with_columns(pl.lit(n).alias("_n"))
