"""Draw the prompts of online iteration N from the prompt table (RECIPE §3, stage 1).

Deterministic for a seed, stratified by source with the mixture the settings state, and never a prompt an
earlier (or later) iteration used: prompt ids already in ``responses`` or in online ``pairs`` of another
iteration are excluded, and by default so is every prompt of an evaluation split (and any prompt that also
appears in one): those are for evaluation. A prompt found in several sources counts once, for the first of its sources in
the mixture's order. Each source gets ``round(m * share)`` prompts (largest remainders first, so the quotas
sum to m); a source with fewer fresh prompts than its quota gives the rest to the others in proportion.
"""

from __future__ import annotations

import polars as pl
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.ids import with_md5
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.online.evaluate import eval_prompt_ids
from prefhouse.pipelines.online.settings import DrawSettings
from prefhouse.quality.guard import used_prompts, used_response_prompts


def used_prompt_ids(lake: Lake, iteration: int) -> set[str]:
    """Prompts other iterations generated responses for or made online pairs from, and the evaluation set's."""
    return used_response_prompts(lake, iteration) | used_prompts(lake, iteration) | eval_prompt_ids(lake)


def quotas(available: dict[str, int], m: int, mixture: dict[str, float]) -> dict[str, int]:
    """Prompts per source: m split by the shares, capped by what each source has, shortfalls handed on."""
    if sum(available.values()) < m:
        raise ValueError(f"only {sum(available.values())} fresh prompts in {sorted(available)}, {m} asked for (prompts of other "
                         f"iterations and of the evaluation set are not fresh: curate more data, or take fewer)")
    quota = {s: 0 for s in mixture}
    remaining, open_sources = m, [s for s in mixture if available.get(s, 0) > 0 and mixture[s] > 0]
    while remaining and open_sources:
        total = sum(mixture[s] for s in open_sources)
        exact = {s: remaining * mixture[s] / total for s in open_sources}
        share = {s: int(exact[s]) for s in open_sources}
        for s in sorted(open_sources, key=lambda s: (-(exact[s] - share[s]), s))[: remaining - sum(share.values())]:
            share[s] += 1
        for s in open_sources:
            take = min(share[s], available[s] - quota[s])
            quota[s] += take
            remaining -= take
        open_sources = [s for s in open_sources if quota[s] < available[s]]
    if remaining:
        raise ValueError(f"the mixture's sources have only {m - remaining} fresh prompts, {m} asked for")
    return quota


def draw_prompts(lake: Lake, iteration: int, settings: DrawSettings) -> pl.DataFrame:
    """The m prompts of ``iteration``: prompt_id, source, prompt, prompt_text, in a fixed order."""
    order = {s: i for i, s in enumerate(settings.mixture)}
    prompts = pl.from_arrow(lake.read(S.PROMPTS, columns=["prompt_id", "source", "split", "prompt", "prompt_text"]))
    if settings.splits == "train":
        is_eval = pl.col("split").fill_null("").str.contains(S.EVAL_SPLIT)
        prompts = prompts.filter(~is_eval & ~pl.col("prompt_id").is_in(prompts.filter(is_eval)["prompt_id"].implode()))
    prompts = prompts.filter(pl.col("source").is_in(list(settings.mixture)))
    used = used_prompt_ids(lake, iteration)
    if used:
        prompts = prompts.filter(~pl.col("prompt_id").is_in(pl.Series(sorted(used), dtype=pl.String).implode()))
    prompts = (
        prompts.with_columns(pl.col("source").replace_strict(order, return_dtype=pl.Int64).alias("_order"))
        .sort("prompt_id", "_order").unique("prompt_id", keep="first", maintain_order=True)
    )
    prompts = with_md5(prompts, "_draw", pl.lit(f"{settings.seed}|{iteration}"), pl.col("prompt_id"))
    available = dict(prompts.group_by("source").len().iter_rows())
    quota = quotas(available, settings.m, settings.mixture)
    drawn = (
        prompts.sort("source", "_draw")
        .filter(pl.int_range(pl.len()).over("source") < pl.col("source").replace_strict(quota, default=0, return_dtype=pl.Int64))
        .sort("_order", "_draw")
    )
    return drawn.select("prompt_id", "source", "prompt", "prompt_text")
