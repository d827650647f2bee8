"""Quality gates on every append: each kind of bad data fails the right expectation, lands nowhere."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines import schema as S
from pipelines.guard import append_pairs
from pipelines.lake import Lake
from pipelines.sql import run_query
from quality.gates import GateError


@pytest.fixture
def good(curated_lake: Lake) -> pl.DataFrame:
    """Six valid online pairs for iteration 1 (one per prompt), built from curated UltraFeedback pairs."""
    pairs = pl.from_arrow(curated_lake.read(S.PAIRS)).filter(pl.col("source") == "ultrafeedback")
    return (
        pairs.unique("prompt_id", keep="first", maintain_order=True).head(6)
        .with_columns(pl.lit(1, pl.Int32).alias("iteration"), pl.lit("online").alias("origin"), pl.lit("online").alias("source"),
                      pl.lit("rm-test").alias("reward_model_id"), pl.lit("policy-test").alias("policy_model_id"))
    )


def set_last_reply(df: pl.DataFrame, row: int, column: str, text: str) -> pl.DataFrame:
    values = df[column].to_list()
    values[row] = values[row][:-1] + [{"role": "assistant", "content": text}]
    return df.with_columns(pl.Series(column, values, dtype=df.schema[column]))


def validations(lake: Lake) -> pl.DataFrame:
    return pl.from_arrow(run_query(lake, "SELECT * FROM validations"))


def test_clean_batch_lands_and_every_gate_is_recorded(lake: Lake, good: pl.DataFrame) -> None:
    result = append_pairs(lake, good, iteration=1)
    assert result.landed == 6 and result.quarantined == 0
    v = validations(lake)
    assert v["success"].all() and v.height == 17
    assert set(v["table_version"]) == {lake.version(S.PAIRS)}


@pytest.mark.parametrize(
    ("damage", "gate"),
    [
        (lambda df: set_last_reply(df, 2, "rejected", df["chosen"][2][-1]["content"]), "final_turns_differ"),
        (lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(float("nan")).otherwise(pl.col("chosen_score")).alias("chosen_score")), "scores_finite"),
        (lambda df: set_last_reply(df, 2, "chosen", "   "), "no_empty_turn"),
        (lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(-1.0).otherwise(pl.col("margin")).alias("margin")), "margin_positive_where_scored"),
        (lambda df: set_last_reply(df, 2, "chosen", "x" * 200_001), "chosen_length_in_bounds"),
    ],
    ids=["identical", "nan_reward", "empty_turn", "negative_margin", "too_long"],
)
def test_row_gate_quarantines_only_the_bad_row(lake: Lake, good: pl.DataFrame, damage, gate: str) -> None:
    bad = damage(good)
    bad_id = bad["pair_id"][2]
    result = append_pairs(lake, bad, iteration=1)
    assert result.landed == 5 and result.quarantined == 1
    landed = set(lake.read(S.PAIRS, columns=["pair_id"]).column("pair_id").to_pylist())
    assert bad_id not in landed and len(landed) == 5
    q = run_query(lake, "SELECT rule, kind, level FROM quarantine").to_pylist()
    assert q == [{"rule": f"gx.{gate}", "kind": "invalid", "level": "pair"}]
    v = validations(lake).filter(pl.col("gate") == gate)
    assert v["success"].to_list() == [False] and v["unexpected_count"].to_list() == [1]


@pytest.mark.parametrize(
    ("damage", "gate"),
    [
        (lambda df: pl.concat([df, df.head(1)]), "pair_id_unique"),
        (lambda df: df.with_columns(pl.lit(2, pl.Int32).alias("iteration")), "iteration_partition_matches_run"),
        (lambda df: pl.concat([df, df.head(1).with_columns(pl.lit("another").alias("pair_id"))]), "one_pair_per_prompt_per_iteration"),
    ],
    ids=["duplicated_pair", "wrong_partition", "two_pairs_one_prompt"],
)
def test_batch_gate_aborts_the_commit(lake: Lake, good: pl.DataFrame, damage, gate: str) -> None:
    with pytest.raises(GateError) as err:
        append_pairs(lake, damage(good), iteration=1)
    assert gate in err.value.gates and gate in str(err.value)
    assert lake.read(S.PAIRS).num_rows == 0 and lake.read(S.QUARANTINE).num_rows == 0  # nothing lands
    v = validations(lake).filter(pl.col("gate") == gate)
    assert v["success"].to_list() == [False] and v["table_version"].to_list() == [None]
    assert run_query(lake, "SELECT status FROM runs").column("status").to_pylist() == ["failed"]


def test_prompt_reused_across_iterations_is_refused(lake: Lake, good: pl.DataFrame) -> None:
    append_pairs(lake, good.head(3), iteration=1)
    second = good.head(3).with_columns(pl.lit(2, pl.Int32).alias("iteration"), (pl.col("pair_id") + "-2").alias("pair_id"))
    with pytest.raises(GateError, match="no_prompt_reused_across_iterations"):
        append_pairs(lake, second, iteration=2)
    assert run_query(lake, "SELECT count(*) AS n FROM pairs WHERE iteration = 2").column("n")[0].as_py() == 0
    append_pairs(lake, good.tail(3).with_columns(pl.lit(2, pl.Int32).alias("iteration")), iteration=2)  # fresh prompts pass


def test_curation_records_its_gates(curated_lake: Lake) -> None:
    v = validations(curated_lake)
    assert set(v["table_name"]) >= {"pairs", "prompts", "raw_hh_rlhf"}
    assert v["success"].all()  # the adapters' rules already keep bad rows out of the bundled samples
    pairs_version = curated_lake.version(S.PAIRS)
    assert set(v.filter(pl.col("table_name") == "pairs")["table_version"]) == {pairs_version}
