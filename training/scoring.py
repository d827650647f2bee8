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
from prefhouse.training.models import fit_embeddings, with_distinct_pad
from tqdm import tqdm


def length_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Indices grouped into length-sorted batches whose padded size stays under the token budget."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    groups, current = [], []
    for i in order:
        longest = max([lengths[j] for j in current] + [lengths[i]])
        if current and (longest * (len(current) + 1) > batch_tokens or len(current) >= max_batch):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


class RewardScorer:
    """A scalar-head sequence classifier (``num_labels = 1``) over a chat model's checkpoint."""

    def __init__(self, model_path: str, max_length: int = 2048, batch_tokens: int = 16_384, max_batch: int = 64):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = with_distinct_pad(AutoTokenizer.from_pretrained(model_path))
        self.model = fit_embeddings(AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype=torch.float32),
                                    self.tokenizer).eval()
        self.model_id = model_path
        self.max_length, self.batch_tokens, self.max_batch = max_length, batch_tokens, max_batch

    def encode(self, prompts: Sequence[list[dict]], responses: Sequence[str]) -> list[list[int]]:
        texts = [
            self.tokenizer.apply_chat_template(list(p) + [{"role": "assistant", "content": r}], tokenize=False)
            for p, r in zip(prompts, responses, strict=True)
        ]
        return self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        return length_batches(lengths, self.batch_tokens, self.max_batch)

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


class SequenceLogProbs:
    """Log-probability of each response given its prompt under a causal LM: the sum over the response's tokens.

    The response is re-tokenised from its text (the engines return text), followed by EOS when the sampler
    stopped on it; batches are length-bucketed and right-padded, so padding never enters a sum.
    """

    def __init__(self, model_path: str, batch_tokens: int = 8_192, max_batch: int = 32):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = with_distinct_pad(AutoTokenizer.from_pretrained(model_path))
        self.model = fit_embeddings(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32), self.tokenizer).eval()
        self.batch_tokens, self.max_batch = batch_tokens, max_batch

    def logps(self, prompts: Sequence[list[dict]], responses: Sequence[str], ended: Sequence[bool], progress: bool = True) -> np.ndarray:
        import torch

        tok = self.tokenizer
        encoded = []
        for prompt, response, stop in zip(prompts, responses, ended, strict=True):
            head = tok.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            tail = tok(response, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if stop else [])
            encoded.append((list(head), tail))
        out = np.zeros(len(encoded), dtype=np.float64)
        groups = length_batches([len(h) + len(t) for h, t in encoded], self.batch_tokens, self.max_batch)
        with torch.inference_mode():
            for group in tqdm(groups, desc="log-probs", unit=" batches", disable=not progress, leave=False):
                width = max(len(encoded[i][0]) + len(encoded[i][1]) for i in group)
                ids = torch.full((len(group), width), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros((len(group), width), dtype=torch.long)
                scored = torch.zeros((len(group), width), dtype=torch.bool)  # positions whose token is a response token
                for row, i in enumerate(group):
                    head, tail = encoded[i]
                    ids[row, : len(head) + len(tail)] = torch.tensor(head + tail)
                    mask[row, : len(head) + len(tail)] = 1
                    scored[row, len(head): len(head) + len(tail)] = True
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
                token_logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
                out[group] = (token_logps * scored[:, 1:]).sum(-1).double().numpy()
        return out
