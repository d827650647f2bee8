"""Any chat model as policy or reward-model base: a Llama-3 style tokenizer (no pad, no unk) works end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[dev]')")

from prefhouse.pipelines.core.lake import Lake  # noqa: E402
from prefhouse.pipelines.curate import curate  # noqa: E402

from .conftest import SAMPLES  # noqa: E402
from .helpers import llama3_style_tokenizer, tiny_llama  # noqa: E402


@pytest.fixture(scope="module")
def llama3_like(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Llama saved with a tokenizer that has no pad and no unk (as the hub's Llama-3 ships)."""
    tokenizer = llama3_style_tokenizer()
    assert tokenizer.pad_token is None and tokenizer.unk_token is None
    return str(tiny_llama(tmp_path_factory.mktemp("llama3-like"), tokenizer))


def test_a_pad_is_added_distinct_from_every_end_token(llama3_like: str) -> None:
    from prefhouse.training.models import ADDED_PAD_TOKEN, with_distinct_pad
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(llama3_like)
    tokenizer = with_distinct_pad(AutoTokenizer.from_pretrained(llama3_like))
    assert tokenizer.pad_token == ADDED_PAD_TOKEN and len(tokenizer) == len(raw) + 1
    assert tokenizer.pad_token_id not in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|eot_id|>"))


def test_generation_and_scoring_pad_with_the_added_token(llama3_like: str) -> None:
    from prefhouse.pipelines.online.generate import SamplingSettings, TransformersEngine
    from prefhouse.training.scoring import RewardScorer

    prompts = pl.DataFrame({"prompt_id": ["a", "b"], "prompt": [[{"role": "user", "content": "hi"}],
                                                                 [{"role": "user", "content": "a much longer question, padded"}]]})
    out = TransformersEngine(llama3_like).generate(prompts, 1, SamplingSettings(n=2, max_new_tokens=6), "p", "r", progress=False)
    assert out.height == 4 and (out["n_tokens"] <= 6).all()
    scorer = RewardScorer(llama3_like, batch_tokens=4096)
    texts = ["short", "a longer reply that needs padding in a batch", "mid length reply"]
    batched = scorer.score([[{"role": "user", "content": "q"}]] * 3, texts, progress=False)
    single = scorer.score([[{"role": "user", "content": "q"}]] * 3, texts, progress=False, bucketed=False)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    assert len(np.unique(np.round(batched, 6))) == 3


def test_reward_model_and_dpo_train_and_save_the_pad(llama3_like: str, tmp_path: Path) -> None:
    from prefhouse.training.train_dpo import DPOSettings, train_dpo
    from prefhouse.training.train_rm import RewardModelSettings, train_reward_model
    from transformers import AutoConfig, AutoTokenizer

    lake = Lake(str(tmp_path / "lake"))
    curate(["distilabel_math_preference_dpo"], lake, SAMPLES, progress=False)
    rm = train_reward_model(lake, RewardModelSettings(base_model=llama3_like, max_length=512, size_matched=8, eval_fraction=0.3), tmp_path,
                            progress=False)
    assert json.loads(rm["metrics"])["distinct_scores"] > 1
    dpo = train_dpo(lake, DPOSettings(max_length=512, size_matched=4, epochs=1, per_device_batch_size=2, pairs="offline"), 0, llama3_like,
                    llama3_like, tmp_path, reports_dir=tmp_path / "reports", progress=False)
    for saved in (rm["output_path"], dpo["output_path"]):
        tokenizer, config = AutoTokenizer.from_pretrained(saved), AutoConfig.from_pretrained(saved)
        assert tokenizer.pad_token_id == config.pad_token_id and config.vocab_size == len(tokenizer)  # the pad is embedded and recorded


def test_a_turn_ends_at_any_stop_id(llama3_like: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Llama-3 chat turn ends with <|eot_id|> while EOS is <|end_of_text|>: with generate.stop_token_ids naming it (or the
    model's generation_config listing it), the response is cut there and counted as stopped, not as cut at the length limit."""
    import torch
    from prefhouse.pipelines.online.generate import SamplingSettings, TransformersEngine, stop_ids

    engine = TransformersEngine(llama3_like)
    tok = engine.tokenizer
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    said = tok("yes", add_special_tokens=False)["input_ids"]

    def says_yes_then_eot(input_ids, num_return_sequences, **kwargs):
        assert eot in kwargs["eos_token_id"]  # the model is told to stop there too
        tail = torch.tensor(said + [eot] + tok("junk", add_special_tokens=False)["input_ids"])
        return torch.stack([torch.cat([ids, tail]) for ids in input_ids for _ in range(num_return_sequences)])

    monkeypatch.setattr(engine.model, "generate", says_yes_then_eot)
    prompts = pl.DataFrame({"prompt_id": ["a"], "prompt": [[{"role": "user", "content": "ok?"}]]})
    out = engine.generate(prompts, 1, SamplingSettings(n=2, max_new_tokens=16, stop_token_ids=(eot,)), "p", "r", progress=False)
    assert out["response"].to_list() == ["yes", "yes"] and set(out["finish_reason"]) == {"stop"}
    assert stop_ids(llama3_like, tok) == [tok.eos_token_id]  # without the setting: EOS (its generation_config names no other)


def test_the_engines_tokenizer_loads_once_until_its_folder_changes(llama3_like: str, tmp_path: Path) -> None:
    import shutil

    from prefhouse.training.models import ADDED_PAD_TOKEN, inference_tokenizer

    folder = shutil.copytree(llama3_like, tmp_path / "model")
    first = inference_tokenizer(str(folder))
    assert inference_tokenizer(str(folder)) is first and first.pad_token == ADDED_PAD_TOKEN  # loaded once, with its distinct pad
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 77}))  # the folder changed: loaded anew
    again = inference_tokenizer(str(folder))
    assert again is not first and again.model_max_length == 77 and again.pad_token == ADDED_PAD_TOKEN
