"""The reward-scoring API the online iteration uses: score many (prompt, response) pairs, fast and exactly.

Texts are rendered with the reward model's own chat template and tokenised once; pairs are sorted by
length and cut into batches under a token budget, each padded only to its own longest member (dynamic
padding), then the scores are put back in the input order. Batching must not change a score, so the pad
token is distinct from EOS (the reference code's pad = EOS made every score equal) and the model is told
which token pads; a test checks that batched and one-by-one scores agree. Inference is deterministic on
CPU; nothing is sampled.

A sequence over ``score.max_length`` keeps its response: the prompt is cut from the left (after BOS), so
the reward model reads the end of the conversation it judges. A response that alone exceeds the limit is
scored on its first tokens; each row says which happened (``truncation``: none | prompt | response), and the
iteration counts both, so an over-long prompt never turns n different responses into n equal scores unseen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prefhouse.pipelines.core.runlog import worker_name
from prefhouse.training.models import fit_embeddings, inference_tokenizer
from tqdm import tqdm

NOT_TRUNCATED, PROMPT_TRUNCATED, RESPONSE_TRUNCATED = "none", "prompt", "response"


def fit_to_length(ids: list[int], prompt_tokens: int, max_length: int, bos: int | None) -> tuple[list[int], str]:
    """``ids`` (prompt then response) cut to ``max_length``: the prompt loses tokens from its left, after BOS;
    when the response alone does not fit, the sequence keeps its first ``max_length`` tokens. Returns (ids, truncation)."""
    excess = len(ids) - max_length
    if excess <= 0:
        return ids, NOT_TRUNCATED
    keep = 1 if bos is not None and ids and ids[0] == bos else 0
    if excess <= prompt_tokens - keep:
        return ids[:keep] + ids[keep + excess:], PROMPT_TRUNCATED
    return ids[:max_length], RESPONSE_TRUNCATED


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
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = inference_tokenizer(model_path)
        self.model = fit_embeddings(AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype=torch.float32),
                                    self.tokenizer).eval()
        self.model_id = model_path
        self.max_length, self.batch_tokens, self.max_batch = max_length, batch_tokens, max_batch

    def encode(self, prompts: Sequence[list[dict]], responses: Sequence[str]) -> tuple[list[list[int]], list[str]]:
        """Token ids of each (prompt, response) in the reward model's chat template, fitted to ``max_length``; and how each was cut."""
        tok = self.tokenizer
        texts = [tok.apply_chat_template(list(p) + [{"role": "assistant", "content": r}], tokenize=False)
                 for p, r in zip(prompts, responses, strict=True)]
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        cuts = [NOT_TRUNCATED] * len(ids)
        long = [i for i, x in enumerate(ids) if len(x) > self.max_length]
        if long:  # the prompt's share of the tokens: its template with the assistant header (chat templates render it as a prefix)
            heads = [tok.apply_chat_template(list(prompts[i]), add_generation_prompt=True, tokenize=False) for i in long]
            for i, head in zip(long, tok(heads, add_special_tokens=False)["input_ids"], strict=True):
                ids[i], cuts[i] = fit_to_length(ids[i], len(head), self.max_length, tok.bos_token_id)
        return ids, cuts

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        return length_batches(lengths, self.batch_tokens, self.max_batch)

    def score(self, prompts: Sequence[list[dict]], responses: Sequence[str], progress: bool = True, bucketed: bool = True) -> np.ndarray:
        """One float per (prompt, response), in input order. ``bucketed=False`` scores one pair at a time."""
        return self.score_with_truncation(prompts, responses, progress, bucketed)[0]

    def score_with_truncation(self, prompts: Sequence[list[dict]], responses: Sequence[str], progress: bool = True,
                              bucketed: bool = True) -> tuple[np.ndarray, list[str]]:
        """The scores, and for each how its sequence was fitted to ``max_length`` (none | prompt | response)."""
        import torch

        ids, cuts = self.encode(prompts, responses)
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
        return out, cuts


def score_responses(scorer: RewardScorer, responses, reward_model_id: str, run_id: str, progress: bool = True):
    """Rows of the ``scores`` table for rows of the ``responses`` table: one reward per response, same order."""
    from datetime import UTC, datetime

    import polars as pl

    rewards, cuts = scorer.score_with_truncation(responses["prompt"].to_list(), responses["response"].to_list(), progress=progress)
    return responses.select("response_id", "prompt_id", "iteration").with_columns(
        pl.Series("reward", rewards, dtype=pl.Float64), pl.Series("truncation", cuts, dtype=pl.String), pl.lit(reward_model_id).alias("reward_model_id"),
        pl.lit(run_id).alias("run_id"), pl.lit(datetime.now(UTC), pl.Datetime("us", "UTC")).alias("created_at"),
        pl.lit("local").alias("executor"), pl.lit(worker_name()).alias("worker"),
    )


@dataclass
class ScoreReplica:
    """Scoring as an executor's replica: the reward model loaded once per process (on first use), one shard of responses per call."""

    model_path: str
    reward_model_id: str
    run_id: str
    max_length: int
    batch_tokens: int
    progress: bool = True

    def __call__(self, responses):
        if getattr(self, "_scorer", None) is None:
            self._scorer = RewardScorer(self.model_path, max_length=self.max_length, batch_tokens=self.batch_tokens)
        return score_responses(self._scorer, responses, self.reward_model_id, self.run_id, self.progress)


class SequenceLogProbs:
    """Log-probability of each response given its prompt under a causal LM: the sum over the response's tokens.

    The response is re-tokenised from its text (the engines return text), followed by EOS when the sampler
    stopped on it; batches are length-bucketed and right-padded, so padding never enters a sum.
    """

    def __init__(self, model_path: str, batch_tokens: int = 8_192, max_batch: int = 32):
        import torch
        from transformers import AutoModelForCausalLM

        self.tokenizer = inference_tokenizer(model_path)
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
