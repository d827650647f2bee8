"""Generate: n responses per prompt from the current policy (RECIPE §3, stage 2), transformers engine.

The recipe samples with temperatures 1.0 and 0.7 split across the n samples, no top-k or top-p, up to
``max_new_tokens``. Each (prompt, temperature) is generated in one call whose random seed is derived from
the run's seed, the prompt id and the temperature, so a prompt's responses do not depend on which other
prompts share the run: a generation stage resumed after a crash produces exactly the responses an
uninterrupted run would have. Response ids are md5(prompt id, iteration, sample index, policy id).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from tqdm import tqdm

from pipelines import schema as S
from pipelines.ids import with_md5


@dataclass(frozen=True)
class SamplingSettings:
    n: int = 8
    temperatures: tuple[float, ...] = (1.0, 0.7)  # the paper's split; the public loop scripts use 1.0 only
    max_new_tokens: int = 2048
    seed: int = 42

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError("n must be at least 2: a pair needs two responses")
        if not self.temperatures or any(t <= 0 for t in self.temperatures):
            raise ValueError("temperatures must be positive")

    def per_temperature(self) -> list[tuple[float, int]]:
        """How many of the n samples each temperature gets (as even a split as n allows, first ones first)."""
        k = len(self.temperatures)
        return [(t, self.n // k + (1 if i < self.n % k else 0)) for i, t in enumerate(self.temperatures)]


def _seed(seed: int, prompt_id: str, temperature: float) -> int:
    return int(hashlib.md5(f"{seed}|{prompt_id}|{temperature}".encode()).hexdigest()[:8], 16)


def generate_transformers(
    model_path: str, prompts: pl.DataFrame, iteration: int, settings: SamplingSettings, policy_model_id: str, run_id: str, progress: bool = True
) -> pl.DataFrame:
    """``prompts``: prompt_id, prompt (message list). Returns rows in the ``responses`` schema, n per prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.models import with_distinct_pad

    tokenizer = with_distinct_pad(AutoTokenizer.from_pretrained(model_path))
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    now = datetime.now(UTC)
    rows = []
    plan = settings.per_temperature()
    for prompt_id, prompt in tqdm(prompts.select("prompt_id", "prompt").iter_rows(), total=prompts.height, desc="generate",
                                  unit=" prompts", disable=not progress, leave=False):
        input_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
        index = 0
        for temperature, count in plan:
            if count == 0:
                continue
            torch.manual_seed(_seed(settings.seed, prompt_id, temperature))
            with torch.inference_mode():
                out = model.generate(
                    input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                    max_new_tokens=settings.max_new_tokens, num_return_sequences=count, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                )
            for sequence in out[:, input_ids.shape[1]:]:
                tokens = sequence.tolist()
                ended = tokenizer.eos_token_id in tokens
                tokens = tokens[: tokens.index(tokenizer.eos_token_id)] if ended else [t for t in tokens if t != tokenizer.pad_token_id]
                rows.append({
                    "prompt_id": prompt_id, "iteration": iteration, "sample_index": index, "prompt": prompt,
                    "response": tokenizer.decode(tokens, skip_special_tokens=True).strip(), "n_tokens": len(tokens),
                    "finish_reason": "stop" if ended else "length", "temperature": temperature, "top_p": 1.0,
                    "max_new_tokens": settings.max_new_tokens, "seed": settings.seed, "engine": "transformers",
                    "policy_model_id": policy_model_id, "run_id": run_id, "created_at": now,
                })
                index += 1
    frame = pl.DataFrame(rows, schema={k: v for k, v in pl.from_arrow(S.RESPONSE_SCHEMA.empty_table()).schema.items() if k != "response_id"})
    frame = with_md5(frame, "response_id", pl.col("prompt_id"), pl.col("iteration").cast(pl.String), pl.col("sample_index").cast(pl.String),
                     pl.col("policy_model_id"))
    return frame.select(S.RESPONSE_SCHEMA.names)
