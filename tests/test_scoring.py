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
