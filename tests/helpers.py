"""Helpers only the tests and benchmarks use: a tiny random model, a one-shot generation, a whole-folder read."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.online.generate import TransformersEngine
from prefhouse.pipelines.sources.reading import InputReport, RawBatch, check_local, read_files
from prefhouse.training.settings import RewardModelSettings


def copy_lake(lake: Lake, to: Path) -> Lake:
    """A private copy of ``lake`` at ``to``, for a test that writes: a shared lake is never written (no test may see another's writes)."""
    shutil.copytree(lake.uri, to)
    return Lake(str(to))


def rm_settings(tiny_model: str) -> RewardModelSettings:
    """The tiny reward model the iteration tests score with."""
    return RewardModelSettings(base_model=tiny_model, max_length=128, size_matched=2, eval_fraction=0.3)


def tiny_llama(directory: Path, tokenizer, seed: int = 0) -> Path:
    """A randomly initialised Llama of the default's architecture, a few hundred thousand weights (tests)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=32,  # vLLM CPU: head_dim >= 32
        num_key_value_heads=1, max_position_embeddings=2048, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def generate_transformers(model_path: str, prompts: pl.DataFrame, *args, **kwargs) -> pl.DataFrame:
    """One-shot helper: load the transformers engine, generate, free it."""
    return TransformersEngine(model_path).generate(prompts, *args, **kwargs)


def read_local(source: str, source_dir: Path, schema: pa.Schema, report: InputReport) -> Iterator[RawBatch]:
    """Raw batches of every file below ``source_dir`` (checked for columns first, all of them)."""
    return read_files(source, source_dir, check_local(source, source_dir, schema, report), schema)


def llama3_style_tokenizer():
    """A stand-in for a Llama-3 tokenizer: no pad, no unk, EOS <|end_of_text|> while a chat turn ends with <|eot_id|>,
    a header-style chat template. Byte-level, one token per byte, so it needs no download."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # one token per byte: any text encodes, no unk needed
    backend = Tokenizer(models.WordLevel({c: i for i, c in enumerate(alphabet)}, unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
                                                     pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")])
    backend.decoder = decoders.ByteLevel()
    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    backend.add_special_tokens(special)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                        additional_special_tokens=special[2:])
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    )
    return tokenizer
