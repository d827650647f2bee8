"""Generation with the transformers engine on a tiny random Llama: n per prompt, the temperature split, determinism."""

from __future__ import annotations

import polars as pl
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[dev]')")

from prefhouse.pipelines.core.lake import Lake  # noqa: E402
from prefhouse.pipelines.online.generate import SamplingSettings  # noqa: E402
from prefhouse.quality.guard import append_responses  # noqa: E402

from .helpers import generate_transformers  # noqa: E402

PROMPTS = pl.DataFrame({
    "prompt_id": ["p1", "p2", "p3"],
    "prompt": [[{"role": "user", "content": q}] for q in ("Name a colour.", "Count to three.", "Say hello.")],
})


def test_n_responses_per_prompt_deterministic_and_accepted_by_the_gates(tiny_model: str, lake: Lake) -> None:
    settings = SamplingSettings(n=4, max_new_tokens=8, seed=3)
    first = generate_transformers(tiny_model, PROMPTS, 1, settings, "tiny-policy", "run-a", progress=False)
    assert first.height == 12
    assert first.group_by("prompt_id").len()["len"].to_list() == [4, 4, 4]
    assert sorted(first.filter(pl.col("prompt_id") == "p1")["temperature"].to_list()) == [0.7, 0.7, 1.0, 1.0]
    assert (first["n_tokens"] <= 8).all() and first["response_id"].is_unique().all()
    # the same prompts in one call give the same responses, whatever the process did before (what resuming relies on)
    torch.manual_seed(12345)
    again = generate_transformers(tiny_model, PROMPTS.reverse(), 1, settings, "tiny-policy", "run-b", progress=False)
    assert again.sort("response_id")["response"].to_list() == first.sort("response_id")["response"].to_list()
    other = generate_transformers(tiny_model, PROMPTS, 1, SamplingSettings(n=4, max_new_tokens=8, seed=4), "tiny-policy", "r", progress=False)
    assert other["response"].to_list() != first["response"].to_list()
    assert append_responses(lake, first, iteration=1, n=4).landed == 12


def test_batched_samples_are_each_their_own_prompts(tiny_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts of different lengths batched with left padding: every sample is credited to the prompt it continued.

    The model is made to echo each row's unpadded prompt as its continuation (a random model's text cannot be
    told apart from another prompt's): a row mixed up between prompts, or padding left in a response, shows.
    """
    from prefhouse.pipelines.online.generate import TransformersEngine

    engine = TransformersEngine(tiny_model, batch_sequences=8)  # n = 4: two prompts per batch, so a batch of 2 and one of 1
    pad, eos = engine.tokenizer.pad_token_id, engine.tokenizer.eos_token_id

    def echo(input_ids, attention_mask, num_return_sequences, **kwargs):
        own = [ids[mask.bool()] for ids, mask in zip(input_ids, attention_mask)]
        rows = [torch.cat([ids, o[o != eos]]) for ids, o in zip(input_ids, own) for _ in range(num_return_sequences)]
        width = max(len(r) for r in rows)
        return torch.stack([torch.cat([r, torch.full((width - len(r),), pad)]) for r in rows])

    monkeypatch.setattr(engine.model, "generate", echo)
    out = engine.generate(PROMPTS, 1, SamplingSettings(n=4, max_new_tokens=8), "tiny-policy", "r", progress=False)
    questions = dict(zip(PROMPTS["prompt_id"], (p[0]["content"] for p in PROMPTS["prompt"])))
    assert out.group_by("prompt_id").len().sort("prompt_id")["len"].to_list() == [4, 4, 4]
    for prompt_id, response in out.select("prompt_id", "response").iter_rows():
        assert questions[prompt_id] in response and all(q not in response for p, q in questions.items() if p != prompt_id)


def test_sampling_settings_split_and_validate() -> None:
    assert SamplingSettings(n=8).per_temperature() == [(1.0, 4), (0.7, 4)]
    assert SamplingSettings(n=5).per_temperature() == [(1.0, 3), (0.7, 2)]
    with pytest.raises(ValueError, match="at least 1"):
        SamplingSettings(n=0)
    from prefhouse.pipelines.online.settings import GenerateSettings

    with pytest.raises(ValueError, match="at least 2"):  # the online iteration's pairs need two responses; evaluation needs one
        GenerateSettings(n=1)


def test_generated_responses_scored_and_appended(tiny_model: str, lake: Lake) -> None:
    from prefhouse.quality.guard import append_scores
    from prefhouse.training.scoring import RewardScorer, score_responses

    responses = generate_transformers(tiny_model, PROMPTS, 1, SamplingSettings(n=2, max_new_tokens=6), "tiny-policy", "r", progress=False)
    append_responses(lake, responses, iteration=1, n=2)
    scores = score_responses(RewardScorer(tiny_model), responses, "tiny-rm", "r", progress=False)
    assert scores["response_id"].to_list() == responses["response_id"].to_list() and scores["reward"].is_finite().all()
    assert append_scores(lake, scores, iteration=1, n=2).landed == 6


@pytest.mark.heavy
def test_vllm_engine_many_seeded_prompts_n_each_repeatable(tiny_model: str) -> None:
    """More prompts than one prefill step holds (vLLM 0.32 on CPU crashed on seeded requests split across steps)."""
    pytest.importorskip("vllm", reason="vLLM cannot be imported here (pip install -e '.[cpu]' or '.[gpu]')")
    from prefhouse.pipelines.online.generate import VllmEngine

    many = pl.DataFrame({"prompt_id": [f"p{i}" for i in range(300)],
                         "prompt": [[{"role": "user", "content": f"Tell me a story about the number {i}. " * 8}] for i in range(300)]})
    engine = VllmEngine(tiny_model)
    try:
        settings = SamplingSettings(n=4, max_new_tokens=4, seed=5)
        first = engine.generate(many, 1, settings, "tiny-policy", "r", progress=False)
        again = engine.generate(many.reverse(), 1, settings, "tiny-policy", "r", progress=False)
    finally:
        engine.close()
    assert first.height == 1200 and set(first.group_by("prompt_id").len()["len"]) == {4} and set(first["engine"]) == {"vllm"}
    assert first.sort("response_id")["response"].to_list() == again.sort("response_id")["response"].to_list()
