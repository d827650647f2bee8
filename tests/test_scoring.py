"""The reward-scoring API on a tiny randomly initialised Llama with SmolLM2's real tokenizer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[dev]')")
pytest.importorskip("transformers")


PROMPTS = [[{"role": "user", "content": f"Question {i}: " + "why? " * (i % 7)}] for i in range(24)]
RESPONSES = [("Because. " * (1 + (i * 5) % 11)).strip() for i in range(24)]


def test_batched_scores_equal_one_by_one_scores(tiny_model: str) -> None:
    from prefhouse.training.scoring import RewardScorer

    scorer = RewardScorer(tiny_model, batch_tokens=512, max_batch=8)
    batched = scorer.score(PROMPTS, RESPONSES, progress=False)
    single = scorer.score(PROMPTS, RESPONSES, progress=False, bucketed=False)
    assert batched.shape == (24,)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)  # padding never changes a score
    assert len(np.unique(np.round(batched, 6))) > 20  # distinct inputs, distinct scores (the pad = EOS bug made them equal)
    np.testing.assert_array_equal(batched, scorer.score(PROMPTS, RESPONSES, progress=False))  # deterministic


def test_batches_respect_the_token_budget(tiny_model: str) -> None:
    from prefhouse.training.scoring import RewardScorer

    scorer = RewardScorer(tiny_model, batch_tokens=100, max_batch=4)
    lengths = [10, 50, 20, 30, 5, 45, 12]
    groups = scorer.batches(lengths)
    assert sorted(i for g in groups for i in g) == list(range(7))
    for g in groups:
        assert max(lengths[i] for i in g) * len(g) <= 100 or len(g) == 1
        assert len(g) <= 4


def test_default_is_the_embedded_model_materialised_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``default`` resolves to the embedded checkpoint; a complete one is reused without reading the GGUF again, and
    a crash's remnant (config without weights) is not mistaken for one. (The conversion itself runs the real
    135M model: the main job and the benchmarks exercise it, not the tests.)"""
    import prefhouse.training.models as models

    class ReadTheGguf(Exception):
        pass

    def gguf_file():
        raise ReadTheGguf

    monkeypatch.setattr(models, "gguf_file", gguf_file)
    target = tmp_path / models.DEFAULT_NAME
    target.mkdir()
    (target / "config.json").write_text("{}")
    with pytest.raises(ReadTheGguf):  # a checkpoint without weights is materialised again
        models.resolve("default", tmp_path)
    (target / "model.safetensors").write_bytes(b"")
    assert models.resolve("default", tmp_path) == str(target)  # complete: reused, the GGUF is not read
    assert models.resolve("some-org/some-model", tmp_path) == "some-org/some-model"


def test_fit_to_length_cuts_the_prompt_from_the_left_after_bos() -> None:
    from prefhouse.training.scoring import fit_to_length

    ids = [1, 10, 11, 12, 13, 20, 21]  # BOS, four prompt tokens, two response tokens
    assert fit_to_length(ids, 5, 7, bos=1) == (ids, "none")
    assert fit_to_length(ids, 5, 5, bos=1) == ([1, 12, 13, 20, 21], "prompt")
    assert fit_to_length(ids, 5, 3, bos=1) == ([1, 20, 21], "prompt")
    assert fit_to_length(ids, 5, 2, bos=1) == ([1, 10], "response")  # the response alone does not fit
    assert fit_to_length([10, 11, 20], 2, 2, bos=None) == ([11, 20], "prompt")


def test_an_over_long_prompt_keeps_every_response_whole(tiny_model: str) -> None:
    """The reference scorer cut from the right: n responses to a prompt over the limit read as the same prefix, one
    score, a silent tie. Here the prompt loses its start, each response is read whole, and the cut is reported."""
    from prefhouse.training.scoring import RewardScorer

    scorer = RewardScorer(tiny_model, max_length=64)
    long_prompt = [{"role": "user", "content": "Tell me everything. " * 40}]
    responses = ["Yes.", "No, not at all.", "Perhaps tomorrow, after lunch."]
    scores, cuts = scorer.score_with_truncation([long_prompt] * 3, responses, progress=False)
    assert cuts == ["prompt"] * 3
    assert len(set(np.round(scores, 6))) == 3
    ids, _ = scorer.encode([long_prompt], [responses[2]])
    full = scorer.tokenizer.apply_chat_template(long_prompt + [{"role": "assistant", "content": responses[2]}], tokenize=False)
    whole = scorer.tokenizer(full, add_special_tokens=False)["input_ids"]
    assert len(ids[0]) == 64 and ids[0][-20:] == whole[-20:]  # the end of the conversation, response included, is kept
    short = scorer.score_with_truncation([[{"role": "user", "content": "Hi"}]], ["word " * 200], progress=False)[1]
    assert short == ["response"]  # a response longer than the limit on its own: scored on its start, and said so
    assert scorer.score_with_truncation(PROMPTS[:2], RESPONSES[:2], progress=False)[1] == ["none", "none"]
