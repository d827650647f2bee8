"""Helpers only the tests and benchmarks use: a tiny random model, a one-shot generation, a whole-folder read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.online.generate import TransformersEngine
from prefhouse.pipelines.sources.reading import InputReport, RawBatch, check_local, read_files


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
