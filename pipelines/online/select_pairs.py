"""Select: one preference pair per prompt from its n scored responses (RECIPE §3, the online iteration).

Strategies of the recipe's public code: ``max_min`` (best vs worst; the paper's and the default),
``max_random`` (best vs a random other response; the public code's default), ``max_max`` (best vs the
second best), ``random`` (two random responses, the higher ranked chosen). Responses are ranked by
``reward - length_penalty * len(response)`` (paper eq. 8, length in characters; 0.001 gave the "concise"
variant). A prompt whose chosen and rejected rank equal, or whose two responses are the same text, gives
no pair and is counted. Every random choice is an md5 of the seed, the prompt and the response ids, so a
selection is reproducible on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from prefhouse.pipelines.core.ids import with_md5
from prefhouse.pipelines.online.settings import SelectSettings


@dataclass
class SelectedPairs:
    pairs: pl.DataFrame  # prompt_id, chosen/rejected response ids, texts, rewards, ranking scores
    ties: int  # prompts whose chosen and rejected rank equal
    identical: int  # prompts whose two selected responses are the same text
    prompts: int


def select_pairs(scored: pl.DataFrame, settings: SelectSettings = SelectSettings()) -> SelectedPairs:
    """``scored``: one row per response with prompt_id, response_id, response and reward."""
    ranked = scored.with_columns(
        (pl.col("reward") - settings.length_penalty * pl.col("response").str.len_chars()).alias("rank_score"),
    )
    ranked = with_md5(ranked, "draw", pl.lit(str(settings.seed)), pl.col("prompt_id"), pl.col("response_id"))
    # best first; equal scores broken by response id so the order never depends on input order
    ordered = ranked.sort(["prompt_id", "rank_score", "response_id"], descending=[False, True, False])
    best = ordered.group_by("prompt_id", maintain_order=True).first()
    if settings.strategy == "max_min":
        other = ordered.group_by("prompt_id", maintain_order=True).last()
    elif settings.strategy == "max_max":
        other = ordered.filter(pl.int_range(pl.len()).over("prompt_id") == 1)
    elif settings.strategy == "max_random":
        rest = ordered.filter(pl.int_range(pl.len()).over("prompt_id") > 0)
        other = rest.sort(["prompt_id", "draw"]).group_by("prompt_id", maintain_order=True).first()
    else:  # random: two responses drawn by their md5, the higher ranked one chosen
        two = ordered.sort(["prompt_id", "draw"]).filter(pl.int_range(pl.len()).over("prompt_id") < 2)
        two = two.sort(["prompt_id", "rank_score", "response_id"], descending=[False, True, False])
        best = two.group_by("prompt_id", maintain_order=True).first()
        other = two.group_by("prompt_id", maintain_order=True).last()
    cols = ["prompt_id", "response_id", "response", "reward", "rank_score"]
    pairs = best.select(cols).join(other.select(cols), on="prompt_id", suffix="_rejected").rename(
        {"response_id": "chosen_response_id", "response": "chosen", "reward": "chosen_reward", "rank_score": "chosen_rank_score",
         "response_id_rejected": "rejected_response_id", "response_rejected": "rejected", "reward_rejected": "rejected_reward",
         "rank_score_rejected": "rejected_rank_score"}
    )
    identical = pairs["chosen"].str.strip_chars() == pairs["rejected"].str.strip_chars()
    tie = (pairs["chosen_rank_score"] == pairs["rejected_rank_score"]) & ~identical
    kept = pairs.filter(~identical & ~tie).sort("prompt_id")
    return SelectedPairs(kept, int(tie.sum()), int(identical.sum()), scored["prompt_id"].n_unique())


def online_pairs(selection: SelectedPairs, prompts: pl.DataFrame, iteration: int, settings: SelectSettings, reward_model_id: str,
                 policy_model_id: str, run_id: str) -> pl.DataFrame:
    """The selected pairs as rows of the historical ``pairs`` table (source ``online``, partition ``iteration``).

    ``prompts``: prompt_id, prompt (message list). chosen/rejected are the prompt plus the reply, as every
    curated pair; the scores are the ranking scores (the rewards when there is no length penalty), and
    ``raw_keys`` are the two response ids, which lead back to the ``responses`` and ``scores`` rows.
    """
    import hashlib
    import json
    from datetime import UTC, datetime

    from prefhouse.pipelines.core import schema as S
    from prefhouse.pipelines.core.ids import trimmed

    version = hashlib.sha256(json.dumps({"strategy": settings.strategy, "length_penalty": settings.length_penalty,
                                         "seed": settings.seed}, sort_keys=True).encode()).hexdigest()[:12]
    turn = lambda col: pl.concat_list(pl.col("prompt"), pl.concat_list(pl.struct(pl.lit("assistant").alias("role"), pl.col(col).alias("content"))))  # noqa: E731
    kind = "reward_model" if settings.length_penalty == 0 else f"reward_model - {settings.length_penalty} * chars"
    rows = selection.pairs.join(prompts.select("prompt_id", "prompt"), on="prompt_id", how="left").with_columns(
        turn("chosen").alias("chosen_messages"), turn("rejected").alias("rejected_messages"),
    )
    rows = with_md5(rows, "pair_id", pl.col("prompt_id"), trimmed(pl.col("chosen")), trimmed(pl.col("rejected")))
    out = rows.select(
        "pair_id", "prompt_id", "prompt", pl.col("chosen_messages").alias("chosen"), pl.col("rejected_messages").alias("rejected"),
        pl.col("chosen_rank_score").alias("chosen_score"), pl.col("rejected_rank_score").alias("rejected_score"),
        (pl.col("chosen_rank_score") - pl.col("rejected_rank_score")).alias("margin"), pl.lit(kind).alias("score_kind"),
        pl.lit(policy_model_id).alias("chosen_model"), pl.lit(policy_model_id).alias("rejected_model"), pl.lit("online").alias("origin"),
        pl.lit(iteration, pl.Int32).alias("iteration"), pl.lit("online").alias("source"), pl.lit(None, pl.String).alias("hub_id"),
        pl.lit(None, pl.String).alias("hub_revision"), pl.lit("train").alias("split"),
        pl.concat_list("chosen_response_id", "rejected_response_id").alias("raw_keys"), pl.lit(f"select.{settings.strategy}").alias("rule"),
        pl.lit(version).alias("rule_version"), pl.lit(reward_model_id).alias("reward_model_id"), pl.lit(policy_model_id).alias("policy_model_id"),
        pl.lit(run_id).alias("run_id"), pl.lit(datetime.now(UTC), pl.Datetime("us", "UTC")).alias("created_at"),
    )
    return pl.from_arrow(out.to_arrow().cast(S.PAIR_SCHEMA)) if out.height else pl.from_arrow(S.PAIR_SCHEMA.empty_table())
