"""Selecting one pair per prompt from n scored responses: strategies, length penalty, ties, determinism."""

from __future__ import annotations

import polars as pl
import pytest
from prefhouse.pipelines.online.select_pairs import SelectSettings, select_pairs


def scored() -> pl.DataFrame:
    rows = []
    # p1: distinct rewards; the longest answer scores best
    for k, (text, reward) in enumerate([("short", 0.1), ("a medium answer", 0.5), ("a much longer and detailed answer " * 3, 0.9), ("ok", 0.3)]):
        rows.append({"prompt_id": "p1", "response_id": f"p1-{k}", "response": text, "reward": reward})
    rows += [{"prompt_id": "p2", "response_id": f"p2-{k}", "response": f"answer {k}", "reward": 1.0} for k in range(4)]  # all tie
    rows += [{"prompt_id": "p3", "response_id": f"p3-{k}", "response": "same", "reward": float(k)} for k in range(4)]  # identical
    return pl.DataFrame(rows)


def test_max_min_is_best_vs_worst_and_counts_ties() -> None:
    sel = select_pairs(scored())
    assert sel.prompts == 3 and sel.ties == 1 and sel.identical == 1
    [pair] = sel.pairs.to_dicts()
    assert (pair["chosen_response_id"], pair["rejected_response_id"]) == ("p1-2", "p1-0")


def test_length_penalty_prefers_concise_answers() -> None:
    sel = select_pairs(scored(), SelectSettings(length_penalty=0.01))
    [pair] = sel.pairs.to_dicts()
    assert pair["chosen_response_id"] == "p1-1"  # 0.5 - 0.15 beats 0.9 - 1.02
    assert pair["chosen_rank_score"] == pytest.approx(0.5 - 0.01 * len("a medium answer"))


@pytest.mark.parametrize("strategy", ["max_random", "max_max", "random"])
def test_other_strategies_are_deterministic(strategy: str) -> None:
    first = select_pairs(scored(), SelectSettings(strategy=strategy))
    again = select_pairs(scored().reverse(), SelectSettings(strategy=strategy))
    assert first.pairs.equals(again.pairs)  # input order does not matter
    [pair] = first.pairs.to_dicts()  # p2 ties and p3's texts are identical whatever the strategy
    expected_chosen = {"max_random": {"p1-2"}, "max_max": {"p1-2"}, "random": {"p1-0", "p1-1", "p1-2", "p1-3"}}[strategy]
    assert pair["chosen_response_id"] in expected_chosen and pair["rejected_response_id"] != pair["chosen_response_id"]
    if strategy == "max_max":
        assert pair["rejected_response_id"] == "p1-1"  # the second best
    if strategy == "random":  # two random responses, oriented by reward
        assert pair["chosen_reward"] > pair["rejected_reward"]


def test_bad_settings_fail_early() -> None:
    with pytest.raises(ValueError, match="strategy"):
        SelectSettings(strategy="best")
