"""Drawing the prompts of an online iteration: deterministic, stratified, never reused."""

from __future__ import annotations

import polars as pl
import pytest
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.online.draw_prompts import DrawSettings, draw_prompts, quotas

MIX = {"ultrafeedback": 0.5, "helpsteer": 0.25, "ultrainteract_pair": 0.25}


def test_quotas_sum_to_m_and_hand_on_shortfalls() -> None:
    assert quotas({"a": 100, "b": 100, "c": 100}, 10, {"a": 0.5, "b": 0.25, "c": 0.25}) == {"a": 5, "b": 3, "c": 2}
    assert quotas({"a": 100, "b": 1, "c": 100}, 10, {"a": 0.5, "b": 0.25, "c": 0.25}) == {"a": 6, "b": 1, "c": 3}
    with pytest.raises(ValueError, match="fresh prompts"):
        quotas({"a": 2}, 5, {"a": 1.0})


def test_draw_is_deterministic_and_stratified(curated_lake: Lake) -> None:
    first = draw_prompts(curated_lake, 1, DrawSettings(m=12, mixture=MIX))
    again = draw_prompts(curated_lake, 1, DrawSettings(m=12, mixture=MIX))
    assert first.equals(again) and first.height == 12 and first["prompt_id"].is_unique().all()
    counts = dict(first.group_by("source").len().iter_rows())
    # each of the samples' helpsteer prompts is also an ultrafeedback prompt, which comes first in the mixture and
    # so owns it: helpsteer has none fresh, and its share of 12 is handed on in proportion (0.5 : 0.25 -> 8 : 4)
    assert counts == {"ultrafeedback": 8, "ultrainteract_pair": 4}
    other_seed = draw_prompts(curated_lake, 1, DrawSettings(m=12, mixture=MIX, seed=7))
    assert set(other_seed["prompt_id"]) != set(first["prompt_id"])


def test_prompts_of_earlier_iterations_are_not_drawn_again(curated_lake: Lake, tmp_path) -> None:
    import shutil

    from prefhouse.quality.guard import append_responses

    lake = Lake(str(tmp_path / "lake"))
    shutil.copytree(curated_lake.uri, lake.uri)
    first = draw_prompts(lake, 1, DrawSettings(m=6, mixture=MIX))
    responses = pl.DataFrame([
        {"response_id": f"{p}-{k}", "prompt_id": p, "iteration": 1, "sample_index": k, "prompt": prompt, "response": f"r{k}",
         "n_tokens": 2, "finish_reason": "stop", "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 42,
         "engine": "transformers", "policy_model_id": "p0", "run_id": "t", "created_at": None, "executor": "local", "worker": "test"}
        for p, prompt in zip(first["prompt_id"], first["prompt"]) for k in range(2)
    ])
    append_responses(lake, responses, iteration=1, n=2)
    second = draw_prompts(lake, 2, DrawSettings(m=6, mixture=MIX))
    assert set(second["prompt_id"]).isdisjoint(set(first["prompt_id"]))
    assert draw_prompts(lake, 1, DrawSettings(m=6, mixture=MIX)).equals(first)  # re-drawing iteration 1 gives the same prompts


def test_evaluation_splits_are_not_drawn(lake: Lake) -> None:
    """By default only training-split prompts are drawn, never one that also appears in an evaluation split."""
    def row(text: str, split: str) -> dict:
        return {"prompt_id": f"id-{text}", "source": "hh_rlhf", "split": split, "raw_key": f"{split}#0",
                "prompt": [{"role": "user", "content": text}], "prompt_text": text, "n_turns": 1, "run_id": "t", "created_at": None}
    rows = [row("a", "helpful-base/train"), row("b", "helpful-base/train"), row("c", "helpful-base/test"),
            row("b", "harmless-base/test"), row("d", "train_prefs"), row("e", "test_prefs")]
    lake.create(S.PROMPTS, S.PROMPT_SCHEMA, ["source"])
    lake.append(S.PROMPTS, pl.DataFrame(rows).to_arrow().cast(S.PROMPT_SCHEMA), ["source"])
    only_train = draw_prompts(lake, 1, DrawSettings(m=2, mixture={"hh_rlhf": 1.0}))
    assert sorted(only_train["prompt_text"]) == ["a", "d"]  # b is also a test prompt, c and e are test prompts
    with pytest.raises(ValueError, match="only 2 fresh prompts"):
        draw_prompts(lake, 1, DrawSettings(m=3, mixture={"hh_rlhf": 1.0}))
    every = draw_prompts(lake, 1, DrawSettings(m=5, mixture={"hh_rlhf": 1.0}, splits="all"))
    assert sorted(every["prompt_text"]) == ["a", "b", "c", "d", "e"]
