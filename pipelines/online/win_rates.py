"""Head-to-head statistics of two policies over the same prompts, with bootstrap intervals over prompts.

Pure functions of per-prompt numbers (one reward and one length per policy and prompt), so they are
tested on their own and shared by the evaluate stage and ``prefhouse evaluate``:

* **win rate**: the share of prompts where policy A's answer has the higher reward, a tie counting half
  (AlpacaEval's convention); the tie rate is reported apart. Rewards within ``TIE`` are a tie (the same
  text gets the same reward).
* **length-controlled win rate**: AlpacaEval 2's idea, in its simplest form: a logistic regression of the
  outcome (1 win, ½ tie, 0 loss) on ``tanh(Δlength / sd(Δlength))``, and the win rate it predicts at equal
  lengths, ``sigmoid(intercept)``. AlpacaEval's GLM also has an instruction-difficulty term fitted over many
  models; with two policies there is nothing to fit it on, so it is left out.
* **intervals**: percentile bootstrap over prompts (``resamples`` draws of the prompts with replacement,
  the statistic recomputed on each), the 2.5th and 97.5th percentiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TIE = 1e-6


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    n: int


def outcomes(rewards_a: np.ndarray, rewards_b: np.ndarray) -> np.ndarray:
    """Per prompt: 1 where A's reward is higher, 0 where lower, 0.5 for a tie."""
    diff = np.asarray(rewards_a, dtype=float) - np.asarray(rewards_b, dtype=float)
    return np.where(np.abs(diff) <= TIE, 0.5, (diff > 0).astype(float))


def length_controlled(outcome: np.ndarray, length_diff: np.ndarray, ridge: float = 1.0, steps: int = 50) -> float:
    """``sigmoid(intercept)`` of a logistic regression of ``outcome`` on ``tanh(Δlength / sd)`` (Newton's method).

    A ridge penalty (a unit Gaussian prior on both weights) keeps it finite when the outcome is separable by
    length (e.g. every longer answer won).
    """
    y = np.asarray(outcome, dtype=float)
    d = np.asarray(length_diff, dtype=float)
    scale = d.std()
    x = np.tanh(d / scale) if scale > 0 else np.zeros_like(d)
    features = np.column_stack([np.ones_like(x), x])
    w = np.zeros(2)
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-features @ w))
        gradient = features.T @ (y - p) - ridge * w
        hessian = (features * (p * (1 - p))[:, None]).T @ features + ridge * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return float(1.0 / (1.0 + np.exp(-w[0])))


def bootstrap(statistic: Callable[[np.ndarray], float], n: int, resamples: int, seed: int) -> tuple[float, float, float]:
    """(value on all prompts, 2.5th, 97.5th percentile over resampled prompt index sets)."""
    rng = np.random.default_rng(seed)
    everything = np.arange(n)
    value = statistic(everything)
    draws = [statistic(rng.integers(0, n, n)) for _ in range(resamples)]
    return value, float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def head_to_head(rewards_a: np.ndarray, rewards_b: np.ndarray, lengths_a: np.ndarray, lengths_b: np.ndarray,
                 resamples: int = 1000, seed: int = 0) -> dict[str, Estimate]:
    """Win rate, tie rate and length-controlled win rate of A against B (each in [0, 1]) with intervals."""
    outcome = outcomes(rewards_a, rewards_b)
    length_diff = np.asarray(lengths_a, dtype=float) - np.asarray(lengths_b, dtype=float)
    n = len(outcome)
    if n == 0:
        raise ValueError("no prompt answered by both policies")
    stats = {
        "win_rate": lambda i: float(outcome[i].mean()),
        "tie_rate": lambda i: float((outcome[i] == 0.5).mean()),
        "lc_win_rate": lambda i: length_controlled(outcome[i], length_diff[i]),
    }
    return {name: Estimate(*bootstrap(f, n, resamples, seed), n) for name, f in stats.items()}


def mean_with_interval(values: np.ndarray, resamples: int = 1000, seed: int = 0) -> Estimate:
    """The mean of per-prompt values with a bootstrap interval over prompts."""
    v = np.asarray(values, dtype=float)
    if not len(v):
        raise ValueError("no values")
    return Estimate(*bootstrap(lambda i: float(v[i].mean()), len(v), resamples, seed), len(v))
