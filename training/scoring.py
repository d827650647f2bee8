"""The reward-scoring API the online iteration uses: score many (prompt, response) pairs, fast and exactly.

Texts are rendered with the reward model's own chat template and tokenised once; pairs are sorted by
length and cut into batches under a token budget, each padded only to its own longest member (dynamic
padding), then the scores are put back in the input order. Batching must not change a score, so the pad
token is distinct from EOS (the reference code's pad = EOS made every score equal) and the model is told
which token pads; a test checks that batched and one-by-one scores agree. Inference is deterministic on
CPU; nothing is sampled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from prefhouse.training.models import with_distinct_pad
from tqdm import tqdm


class RewardScorer:
    """A scalar-head sequence classifier (``num_labels = 1``) over a chat model's checkpoint."""

    def __init__(self, model_path: str, max_length: int = 2048, batch_tokens: int = 16_384, max_batch: int = 64):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = with_distinct_pad(AutoTokenizer.from_pretrained(model_path))
        self.model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype=torch.float32)
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self.model_id = model_path
        self.max_length, self.batch_tokens, self.max_batch = max_length, batch_tokens, max_batch

    def encode(self, prompts: Sequence[list[dict]], responses: Sequence[str]) -> list[list[int]]:
        texts = [
            self.tokenizer.apply_chat_template(list(p) + [{"role": "assistant", "content": r}], tokenize=False)
            for p, r in zip(prompts, responses, strict=True)
        ]
        return self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped into length-sorted batches whose padded size stays under the token budget."""
        order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
        groups, current = [], []
        for i in order:
            longest = max([lengths[j] for j in current] + [lengths[i]])
            if current and (longest * (len(current) + 1) > self.batch_tokens or len(current) >= self.max_batch):
                groups.append(current)
                current = []
            current.append(i)
        if current:
            groups.append(current)
        return groups

    def score(self, prompts: Sequence[list[dict]], responses: Sequence[str], progress: bool = True, bucketed: bool = True) -> np.ndarray:
        """One float per (prompt, response), in input order. ``bucketed=False`` scores one pair at a time."""
        import torch

        ids = self.encode(prompts, responses)
        groups = self.batches([len(x) for x in ids]) if bucketed else [[i] for i in range(len(ids))]
        out = np.empty(len(ids), dtype=np.float64)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            for group in tqdm(groups, desc="score", unit=" batches", disable=not progress, leave=False):
                width = max(len(ids[i]) for i in group)
                input_ids = torch.full((len(group), width), pad, dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                for row, i in enumerate(group):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0]
                out[group] = logits.double().numpy()
        return out


def score_responses(scorer: RewardScorer, responses, reward_model_id: str, run_id: str, progress: bool = True):
    """Rows of the ``scores`` table for rows of the ``responses`` table: one reward per response, same order."""
    from datetime import UTC, datetime

    import polars as pl

    rewards = scorer.score(responses["prompt"].to_list(), responses["response"].to_list(), progress=progress)
    return responses.select("response_id", "prompt_id", "iteration").with_columns(
        pl.Series("reward", rewards, dtype=pl.Float64), pl.lit(reward_model_id).alias("reward_model_id"),
        pl.lit(run_id).alias("run_id"), pl.lit(datetime.now(UTC), pl.Datetime("us", "UTC")).alias("created_at"),
    )
