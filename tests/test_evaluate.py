"""Evaluation statistics: win rates with ties as half, length control, bootstrap intervals over prompts."""

from __future__ import annotations

import numpy as np
import pytest
from prefhouse.pipelines.online.win_rates import head_to_head, length_controlled, mean_with_interval, outcomes


def test_outcomes_count_ties_as_half() -> None:
    assert outcomes(np.array([1.0, 0.0, 2.0]), np.array([0.5, 0.5, 2.0])).tolist() == [1.0, 0.0, 0.5]


def test_a_policy_against_itself_scores_fifty_percent() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 200, 64)
    same = head_to_head(np.arange(64.0), np.arange(64.0), lengths, lengths, resamples=200)
    assert same["win_rate"].value == 0.5 and same["tie_rate"].value == 1.0 and (same["win_rate"].ci_low, same["win_rate"].ci_high) == (0.5, 0.5)
    # two independent samples of the same policy: 50% inside the interval, and the interval narrower than ±15 points
    for seed in range(5):
        a, b = np.random.default_rng(seed).normal(size=(2, 64))
        rates = head_to_head(a, b, lengths, rng.permutation(lengths), resamples=500, seed=seed)["win_rate"]
        assert rates.ci_low <= 0.5 <= rates.ci_high and rates.ci_high - rates.ci_low < 0.30 and rates.n == 64


def test_length_control_removes_a_length_preference() -> None:
    """The judge prefers the longer answer (P = sigmoid(3 tanh(Δ/sd))) and A is longer on 80% of prompts: a raw win
    rate well above 50%, a controlled one near 50% (no preference at equal length)."""
    rng = np.random.default_rng(1)
    diff = np.where(rng.random(400) < 0.8, 1, -1) * rng.integers(5, 200, 400)
    la, lb = 300 + diff, np.full(400, 300)
    wins = (rng.random(400) < 1 / (1 + np.exp(-3 * np.tanh(diff / diff.std())))).astype(float)
    rates = head_to_head(wins, np.full(400, 0.5), la, lb, resamples=200)
    assert rates["win_rate"].value > 0.65
    assert abs(rates["lc_win_rate"].value - 0.5) < 0.08


def test_length_control_recovers_the_preference_at_equal_length() -> None:
    """Outcomes drawn from sigmoid(1 + 2 x): the controlled win rate is sigmoid(1) = 73%."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-(1 + 2 * np.tanh(x / x.std()))))).astype(float)
    assert length_controlled(y, x) == pytest.approx(1 / (1 + np.exp(-1)), abs=0.03)


def test_mean_interval_covers_the_mean() -> None:
    values = np.random.default_rng(3).normal(2.0, 1.0, 100)
    est = mean_with_interval(values, resamples=500)
    assert est.ci_low < values.mean() < est.ci_high and est.ci_high - est.ci_low < 0.6
    with pytest.raises(ValueError):
        mean_with_interval(np.array([]))


def test_the_evaluation_set_takes_from_the_online_pool_last_and_is_never_drawn(lake) -> None:
    """Evaluation splits first, then sources the online draw does not use, then the draw's own pool; fixed once drawn."""
    import polars as pl
    from prefhouse.pipelines.core import schema as S
    from prefhouse.pipelines.online.draw_prompts import DrawSettings, draw_prompts
    from prefhouse.pipelines.online.evaluate import EvaluateSettings, eval_prompt_set

    def row(text: str, source: str, split: str) -> dict:
        return {"prompt_id": f"id-{text}", "source": source, "split": split, "raw_key": f"{split}#0", "prompt": [{"role": "user", "content": text}],
                "prompt_text": text, "n_turns": 1, "run_id": "t", "created_at": None}
    rows = [row("a", "ultrafeedback", "test_prefs"), row("b", "shp", "askscience/train"), row("c", "shp", "askscience/train"),
            *[row(f"pool{i}", "ultrafeedback", "train_prefs") for i in range(6)]]
    lake.create(S.PROMPTS, S.PROMPT_SCHEMA, ["source"])
    lake.append(S.PROMPTS, pl.DataFrame(rows).to_arrow().cast(S.PROMPT_SCHEMA), ["source"])
    first = eval_prompt_set(lake, EvaluateSettings(prompts=4), ["ultrafeedback"], "r1")
    texts = first["prompt_text"].to_list()
    assert texts[0] == "a" and set(texts[1:3]) == {"b", "c"} and texts[3].startswith("pool")
    assert first["origin"].to_list() == ["evaluation_split", "other_source", "other_source", "held_out"]
    again = eval_prompt_set(lake, EvaluateSettings(prompts=6, seed=99), ["ultrafeedback"], "r2")
    assert again["prompt_id"].to_list() == first["prompt_id"].to_list()  # drawn once: fixed
    online = draw_prompts(lake, 1, DrawSettings(m=5, mixture={"ultrafeedback": 1.0}, splits="all"))
    assert set(online["prompt_id"]).isdisjoint(first["prompt_id"]) and online.height == 5
