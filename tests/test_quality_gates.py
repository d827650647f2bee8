"""Quality gates on every append: each kind of bad data fails the right expectation, lands nowhere."""

from __future__ import annotations

import polars as pl
import pytest
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import run_query
from prefhouse.quality.gates import GateError
from prefhouse.quality.guard import append_pairs


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
    assert set(v["table_name"]) == {"pairs", "prompts", "raw"}  # the ten bronze tables are judged together
    assert v["success"].all()  # the adapters' rules already keep bad rows out of the bundled samples
    pairs_version = curated_lake.version(S.PAIRS)
    assert set(v.filter(pl.col("table_name") == "pairs")["table_version"]) == {pairs_version}


# ------------------------------------------------------------------------------- responses and scores
def responses(iteration: int = 1, n: int = 4, prompts: tuple[str, ...] = ("p1", "p2", "p3")) -> pl.DataFrame:
    rows = [
        {"response_id": f"{p}-{iteration}-{k}", "prompt_id": p, "iteration": iteration, "sample_index": k,
         "prompt": [{"role": "user", "content": f"question {p}"}], "response": f"answer {k} to {p}", "n_tokens": 5,
         "finish_reason": "stop", "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 64, "seed": 42, "engine": "transformers",
         "policy_model_id": "policy-0", "run_id": "test", "created_at": None}
        for p in prompts for k in range(n)
    ]
    return pl.DataFrame(rows, schema=pl.from_arrow(S.RESPONSE_SCHEMA.empty_table()).schema)


def scores_for(resp: pl.DataFrame) -> pl.DataFrame:
    return resp.select("response_id", "prompt_id", "iteration", (pl.col("sample_index") * 0.5).cast(pl.Float64).alias("reward"),
                       pl.lit("rm-0").alias("reward_model_id"), pl.lit("test").alias("run_id"), pl.col("created_at"))


def test_responses_and_scores_land_when_whole(lake: Lake) -> None:
    from prefhouse.quality.guard import append_responses, append_scores

    resp = responses()
    assert append_responses(lake, resp, iteration=1, n=4).landed == 12
    assert append_scores(lake, scores_for(resp), iteration=1, n=4).landed == 12
    assert lake.read(S.SCORES).num_rows == 12


@pytest.mark.parametrize(
    ("damage", "gate"),
    [
        (lambda r: r.filter(pl.col("response_id") != "p2-1-3"), "exactly_n_responses_per_prompt"),
        (lambda r: pl.concat([r, r.head(1)]), "response_id_unique"),
        (lambda r: r.with_columns(pl.lit(3, pl.Int32).alias("iteration")), "iteration_partition_matches_run"),
    ],
    ids=["wrong_n", "duplicated_response", "wrong_partition"],
)
def test_bad_responses_never_land(lake: Lake, damage, gate: str) -> None:
    from prefhouse.quality.guard import append_responses

    with pytest.raises(GateError) as err:
        append_responses(lake, damage(responses()), iteration=1, n=4)
    assert gate in err.value.gates
    assert lake.read(S.RESPONSES).num_rows == 0


def test_responses_for_a_prompt_used_before_are_refused(lake: Lake) -> None:
    from prefhouse.quality.guard import append_responses

    append_responses(lake, responses(1), iteration=1, n=4)
    with pytest.raises(GateError, match="no_prompt_reused_across_iterations"):
        append_responses(lake, responses(2, prompts=("p3", "p4")), iteration=2, n=4)
    assert run_query(lake, "SELECT count(*) AS n FROM responses WHERE iteration = 2").column("n")[0].as_py() == 0


@pytest.mark.parametrize(
    ("damage", "gate"),
    [
        (lambda s: s.with_columns(pl.when(pl.col("response_id") == "p1-1-2").then(float("nan")).otherwise(pl.col("reward")).alias("reward")), "reward_finite"),
        (lambda s: s.filter(pl.col("response_id") != "p3-1-0"), "exactly_n_scores_per_prompt"),
        (lambda s: s.with_columns(pl.when(pl.col("response_id") == "p1-1-0").then(pl.lit("ghost")).otherwise(pl.col("response_id")).alias("response_id")), "score_has_response"),
    ],
    ids=["nan_reward", "count_mismatch", "score_without_response"],
)
def test_bad_scores_never_land(lake: Lake, damage, gate: str) -> None:
    from prefhouse.quality.guard import append_responses, append_scores

    resp = responses()
    append_responses(lake, resp, iteration=1, n=4)
    with pytest.raises(GateError) as err:
        append_scores(lake, damage(scores_for(resp)), iteration=1, n=4)
    assert gate in err.value.gates
    assert lake.read(S.SCORES).num_rows == 0


def test_a_gate_that_cannot_be_evaluated_refuses_the_batch(good: pl.DataFrame) -> None:
    from prefhouse.quality.checks import pair_facts
    from prefhouse.quality.gates import judge
    from prefhouse.quality.suites import GateContext

    facts = pair_facts(good).drop("shares_context").with_row_index("_row")
    verdict = judge("pairs", "pairs", facts, GateContext((1,), ("online",)), "test")
    assert not verdict.success
    assert [g for g, why in verdict.batch_failures if "could not be evaluated" in why] == ["chosen_rejected_share_context"]
