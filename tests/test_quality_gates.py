"""Quality gates on every append: each kind of bad data fails the right expectation, lands nowhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import polars as pl
import pytest
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import run_query
from prefhouse.quality.checks import eval_response_facts, eval_score_facts, pair_facts, prompt_facts, raw_facts, shares_context
from prefhouse.quality.gates import GateError, judge
from prefhouse.quality.guard import append_pairs
from prefhouse.quality.settings import Bounds
from prefhouse.quality.suites import SUITES, GateContext


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
    values[row] = list(values[row][:-1]) + [{"role": "assistant", "content": text}]
    return df.with_columns(pl.Series(column, values, dtype=df.schema[column]))


def set_row(df: pl.DataFrame, row: int, column: str, value) -> pl.DataFrame:
    values = df[column].to_list()
    values[row] = value
    return df.with_columns(pl.Series(column, values, dtype=df.schema[column]))


def with_context_changed(df: pl.DataFrame, row: int, column: str) -> pl.DataFrame:
    values = df[column].to_list()
    values[row] = [{"role": values[row][0]["role"], "content": values[row][0]["content"] + " (edited)"}] + values[row][1:]
    return df.with_columns(pl.Series(column, values, dtype=df.schema[column]))


def with_prompt(df: pl.DataFrame, row: int, prompt: list[dict]) -> pl.DataFrame:
    """Row ``row`` with another prompt, its chosen and rejected conversations still sharing it."""
    df = set_row(df, row, "prompt", prompt)
    for column in ("chosen", "rejected"):
        df = set_row(df, row, column, prompt + df[column][row].to_list()[-1:])
    return df


def validations(lake: Lake) -> pl.DataFrame:
    return pl.from_arrow(run_query(lake, "SELECT * FROM validations"))


def test_clean_batch_lands_and_every_gate_is_recorded(lake: Lake, good: pl.DataFrame) -> None:
    result = append_pairs(lake, good, iteration=1)
    assert result.landed == 6 and result.quarantined == 0
    v = validations(lake)
    assert v["success"].all() and v.height == 17
    assert set(v["table_version"]) == {lake.version(S.PAIRS)}


PAIR_ROW_DAMAGE = [
    (lambda df: set_last_reply(df, 2, "rejected", df["chosen"][2][-1]["content"]), "final_turns_differ"),
    (lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(float("nan")).otherwise(pl.col("chosen_score")).alias("chosen_score")), "scores_finite"),
    (lambda df: set_last_reply(df, 2, "chosen", "   "), "no_empty_turn"),
    (lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(-1.0).otherwise(pl.col("margin")).alias("margin")), "margin_positive_where_scored"),
    (lambda df: set_last_reply(df, 2, "chosen", "x" * 200_001), "chosen_length_in_bounds"),
    (lambda df: set_last_reply(df, 2, "rejected", "y" * 100_001), "rejected_length_in_bounds"),
    (lambda df: with_prompt(df, 2, [{"role": "user", "content": "p" * 200_001}]), "prompt_length_in_bounds"),
    (lambda df: with_context_changed(df, 2, "rejected"), "chosen_rejected_share_context"),
    (lambda df: set_row(df, 2, "chosen", df["chosen"][2].to_list()[:-1] + [{"role": "user", "content": "not the assistant"}]), "roles_alternate"),
    (lambda df: set_row(df, 2, "prompt_id", None), "prompt_id_present"),
    (lambda df: set_row(df, 2, "pair_id", None), "pair_id_present"),
    (lambda df: set_row(df, 2, "source", None), "source_present"),
]


@pytest.mark.parametrize(("damage", "gate"), PAIR_ROW_DAMAGE, ids=[g for _, g in PAIR_ROW_DAMAGE])
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


def test_shares_context_compares_turn_by_turn() -> None:
    u = lambda text, role="user": {"role": role, "content": text}  # noqa: E731
    reply = u("the reply", "assistant")
    cases = [  # (prompt, chosen, rejected, shares)
        ([u("hi")], [u(" hi "), reply], [u("hi"), reply], True),  # texts compared trimmed
        ([], [reply], [reply], True),
        ([u("hi")], [u("hi"), reply], [u("hi!"), reply], False),
        ([u("hi")], [u("hi", "system"), reply], [u("hi"), reply], False),
        ([u("hi")], [u("hi"), reply], [reply], False),  # rejected does not continue the prompt
        ([u("hi"), u("more")], [u("hi"), reply], [u("hi"), u("more"), reply], False),
        ([u(None)], [u(None), reply], [u(None), reply], True),  # a null text equals only a null
        ([u(None)], [u(""), reply], [u(None), reply], False),
        # a turn without a role vanished from the key strings this replaced, which called this pair sharing its context
        ([{"role": None, "content": "a"}], [{"role": None, "content": "a"}, reply], [], False),
        (None, [reply], [reply], False),
        # prompts of several turns are compared turn by turn too, not only their first turn
        (three := [u("hi"), u("ok", "assistant"), u("more")], [*three, reply], [u("hi "), u("ok", "assistant"), u("more"), reply], True),
        (three, [*three, reply], [u("hi"), u("OK", "assistant"), u("more"), reply], False),
    ]
    messages = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
    pairs = pl.DataFrame([{"prompt": p, "chosen": c, "rejected": r} for p, c, r, _ in cases],
                         schema={"prompt": messages, "chosen": messages, "rejected": messages})
    assert shares_context(pairs).to_list() == [shares for *_, shares in cases]


def test_same_up_to_whitespace_answers_each_row_in_place() -> None:
    from prefhouse.pipelines.core.text import PREFIX_CHARS, same_up_to_whitespace

    cases = [("a", "b", False), ("a b", "ab", True), ("a  z", "a y z", False), (" x\n", "x", True), (None, None, False),
             (None, "x", False), ("ab", "a b c", False), ("q\tr s", "qrs ", True),
             ("éa" + " " * (PREFIX_CHARS + 8) + "b c", "éab  c", True),  # the whitespace reaches past the compared prefix
             ("é" + "x" * (PREFIX_CHARS + 8) + "c", "é" + "x" * (PREFIX_CHARS + 7) + "yc", False)]  # they differ past it
    replies = pl.DataFrame({"c": [c for c, _, _ in cases], "r": [r for _, r, _ in cases]}, schema={"c": pl.String, "r": pl.String})
    assert same_up_to_whitespace(replies, "c", "r").to_list() == [same for *_, same in cases]


def test_is_blank_is_the_whole_trim_leaving_nothing() -> None:
    """Trimming the start alone must call blank exactly the texts a whole trim empties: Unicode whitespace counts,
    zero-width and control characters that are not whitespace do not."""
    from prefhouse.pipelines.core.text import is_blank

    texts = pl.Series("t", [None, "", " ", "\t\n\r\x0b\x0c", "\u00a0", "\u3000\u2028", "\x85", "\u200b", "\ufeff", "\x1f", " a ", "a  ",
                            "  \u00a0b", "x"], dtype=pl.String)
    expected = [True, True, True, True, True, True, True, False, False, False, False, False, False, False]
    assert pl.select(is_blank(pl.lit(texts))).to_series().to_list() == expected
    assert pl.select(pl.lit(texts).is_null() | (pl.lit(texts).str.strip_chars() == "")).to_series().to_list() == expected


def test_roles_alternate_answers_as_matching_the_role_pattern() -> None:
    """One-turn lists take a shortcut (their one role is "user"); every list must get the answer the role pattern gives."""
    from prefhouse.pipelines.core.text import PROMPT_ROLES, role_pattern, roles_alternate

    t = lambda role: {"role": role, "content": "x"}  # noqa: E731
    lists = [[t("user")], [t("assistant")], [t("system")], [t(None)], [t("User")], [], None, [t("user"), t("assistant"), t("user")],
             [t("system"), t("user")], [t("user"), t("user")], [t("system"), t("user"), t("assistant"), t("user")], [t("user"), t("assistant")],
             [t("user")], [t(None), t("user")]]
    expected = [True, False, False, False, False, False, None, True, True, False, True, False, True, False]
    messages = pl.Series("prompt", lists, dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String})))
    assert roles_alternate(messages).to_list() == expected
    assert pl.select(role_pattern(pl.lit(messages)).str.contains(PROMPT_ROLES)).to_series().to_list() == expected  # the pattern's own answer


PAIR_BATCH_DAMAGE = [
    (lambda df: pl.concat([df, df.head(1)]), "pair_id_unique"),
    (lambda df: df.with_columns(pl.lit(2, pl.Int32).alias("iteration")), "iteration_partition_matches_run"),
    (lambda df: pl.concat([df, df.head(1).with_columns(pl.lit("another").alias("pair_id"))]), "one_pair_per_prompt_per_iteration"),
]


def _every_row_with_gx(facts: pl.DataFrame, context: GateContext) -> dict[str, dict]:
    """The pairs suite run by Great Expectations over every row of the facts (what the gates did before they judged
    tallies): per gate, its success, counts, first unexpected values and failing rows."""
    import great_expectations as gx
    import pandas as pd
    from great_expectations.validator.v1_validator import Validator
    from prefhouse.quality import gx_worker
    from prefhouse.quality.gates import _pandas

    ctx = gx_worker.context()
    source = ctx.data_sources.add_pandas("every-row")
    try:
        validator = Validator(batch_definition=source.add_dataframe_asset("every-row").add_batch_definition_whole_dataframe("every-row"),
                              batch_parameters={"dataframe": _pandas(facts)},
                              result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]})
        suite = gx.ExpectationSuite(name="every-row")
        for gate in SUITES["pairs"]:
            expectation = gate.make(context).build()
            expectation.meta = {"gate": gate.name}
            suite.add_expectation_configuration(expectation.configuration)
        results = validator.validate_expectation_suite(suite).results
    finally:
        ctx.data_sources.delete("every-row")
    return {r.expectation_config.meta["gate"]: {
        "success": r.success, "element_count": r.result["element_count"], "unexpected_count": r.result["unexpected_count"],
        "examples": [str(None if pd.isna(v) else v) for v in r.result["partial_unexpected_list"][:3]],  # (pandas shows a null as NaN)
        "rows": sorted(i["_row"] for i in r.result["unexpected_index_list"]),
    } for r in results}


def test_judging_tallies_records_what_great_expectations_finds_over_every_row(good: pl.DataFrame) -> None:
    """The gates hand Great Expectations each column's distinct (or repeated) values, not every row: every gate's
    success, element and unexpected counts and examples, and the rows rejected, are those of GX over every row."""
    # each row damage on a copy of its own (a null pair id stays null), two repeated pairs, a second null pair id
    damaged = [damage(good).slice(2, 1).with_columns(pl.format("{}-{}", "pair_id", pl.lit(i)).alias("pair_id"))
               for i, (damage, _) in enumerate(PAIR_ROW_DAMAGE)]
    pairs = pl.concat([good, *damaged, good.slice(0, 2), set_row(good, 3, "pair_id", None).slice(3, 1)], how="vertical_relaxed")
    pairs = pairs.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(pl.lit(2, pl.Int32)).otherwise("iteration").alias("iteration"))
    facts = pair_facts(pairs).with_row_index("_row")
    context = GateContext((1,), ("online",))
    reference = _every_row_with_gx(facts, context)
    verdict = judge("pairs", "pairs", facts, context, "test")
    failed = {g for g, r in reference.items() if not r["success"]}
    assert failed >= {g for _, g in PAIR_ROW_DAMAGE} | {"pair_id_unique", "one_pair_per_prompt_per_iteration", "iteration_partition_matches_run"}
    for row in verdict.results:
        expected = reference[row["gate"]]
        assert (row["success"], row["element_count"], row["unexpected_count"]) == (expected["success"], expected["element_count"], expected["unexpected_count"]), row["gate"]
        if not row["success"]:
            assert [str(v) for v in json.loads(row["observed_value"])["examples"]] == expected["examples"], row["gate"]
    first_failed = {}
    for gate in SUITES["pairs"]:
        if gate.level == "row":
            for index in reference[gate.name]["rows"]:
                first_failed.setdefault(index, gate.name)
    assert dict(verdict.rejected.select("_row", "gate").iter_rows()) == first_failed
    assert {g for g, _ in verdict.batch_failures} == {g.name for g in SUITES["pairs"] if g.level == "batch" and g.name in failed}


def test_an_expectations_configuration_is_kept_only_inside_a_gates_validation() -> None:
    """The gates keep each expectation's configuration for the length of one of their validations (GX rebuilds it on
    every read); anywhere else the property must still reflect the expectation as it is now."""
    import great_expectations as gx
    from prefhouse.quality.gx_worker import _gx, _validating

    _gx()  # (installs the kept property)
    expectation = gx.expectations.ExpectColumnValuesToBeInSet(column="s", value_set=["x"])
    first = expectation.configuration
    expectation.value_set = ["x", "y"]
    assert expectation.configuration.kwargs["value_set"] == ["x", "y"] and first.kwargs["value_set"] == ["x"]
    _validating.configurations = {}
    try:  # as inside a validation: built once, the same object on every read
        assert expectation.configuration is expectation.configuration
    finally:
        del _validating.configurations
    assert expectation.configuration is not expectation.configuration


@pytest.mark.parametrize(("damage", "gate"), PAIR_BATCH_DAMAGE, ids=[g for _, g in PAIR_BATCH_DAMAGE])
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
                       pl.lit("rm-0").alias("reward_model_id"), pl.lit("test").alias("run_id"), pl.col("created_at"), pl.lit("none").alias("truncation"),
                       pl.lit("local").alias("executor"), pl.lit("test").alias("worker"))


def test_responses_and_scores_land_when_whole(lake: Lake) -> None:
    from prefhouse.quality.guard import append_responses, append_scores

    resp = responses()
    assert append_responses(lake, resp, iteration=1, n=4).landed == 12
    assert append_scores(lake, scores_for(resp), iteration=1, n=4).landed == 12
    assert lake.read(S.SCORES).num_rows == 12


RESPONSE_DAMAGE = [
    (lambda r: r.filter(pl.col("response_id") != "p2-1-3"), "exactly_n_responses_per_prompt"),
    (lambda r: pl.concat([r, r.head(1)]), "response_id_unique"),
    (lambda r: r.with_columns(pl.lit(3, pl.Int32).alias("iteration")), "iteration_partition_matches_run"),
    (lambda r: set_row(r, 5, "response_id", None), "response_id_present"),
    (lambda r: set_row(r, 5, "sample_index", 0), "n_distinct_samples_per_prompt"),  # p2's samples 0, 0, 2, 3: four rows, three samples
    (lambda r: set_row(r, 5, "response", None), "response_has_text"),
]


@pytest.mark.parametrize(("damage", "gate"), RESPONSE_DAMAGE, ids=[g for _, g in RESPONSE_DAMAGE])
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


SCORE_DAMAGE = [
    (lambda s: s.with_columns(pl.when(pl.col("response_id") == "p1-1-2").then(float("nan")).otherwise(pl.col("reward")).alias("reward")), "reward_finite"),
    (lambda s: s.filter(pl.col("response_id") != "p3-1-0"), "exactly_n_scores_per_prompt"),
    (lambda s: s.with_columns(pl.when(pl.col("response_id") == "p1-1-0").then(pl.lit("ghost")).otherwise(pl.col("response_id")).alias("response_id")), "score_has_response"),
    (lambda s: pl.concat([s.filter(pl.col("response_id") != "p1-1-3"), s.filter(pl.col("response_id") == "p1-1-2")]), "response_id_unique"),
    (lambda s: s.with_columns(pl.lit(2, pl.Int32).alias("iteration")), "iteration_partition_matches_run"),
]


@pytest.mark.parametrize(("damage", "gate"), SCORE_DAMAGE, ids=[g for _, g in SCORE_DAMAGE])
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
    # judged in chunks, a uniqueness gate's missing column is the same refusal (not a crash of the cross-chunk check)
    _, chunked = _observe_in_batches(pair_facts(good).drop("pair_id"), chunk_rows=3)
    assert {g for g, why in chunked.batch_failures if "could not be evaluated" in why} >= {"pair_id_present", "pair_id_unique"}


# ------------------------------------------------------------------- gates no public writer can reach
def prompt_rows(curated_lake: Lake) -> pl.DataFrame:
    return pl.from_arrow(curated_lake.read(S.PROMPTS)).filter(pl.col("source") == "shp").head(5)


def eval_answers() -> pl.DataFrame:
    """Two policies' answers to three evaluation prompts (n = 1), with their log-probabilities."""
    return pl.DataFrame([
        {"response_id": f"{pol}-{p}", "prompt_id": p, "iteration": 1, "policy_model_id": pol, "eval_key": "k", "response": f"answer {p}",
         "logp": -3.0, "reference_logp": -3.5}
        for pol in ("pi0", "pi1") for p in ("p1", "p2", "p3")
    ])


def eval_rewards() -> pl.DataFrame:
    return eval_answers().select(("s-" + pl.col("response_id")).alias("score_id"), "response_id", "iteration", pl.lit(0.25).alias("reward"))


def raw_rows() -> pl.DataFrame:
    return pl.DataFrame({"_raw_key": [f"train#{i}" for i in range(5)], "_split": ["train"] * 5})


# (suite, gate, rows to judge from the curated lake or from nothing, their facts, the appended run's context):
# gates whose failure the writers' own code rules out (a writer derives the partition it may write from the
# rows; the reader numbers raw rows itself), so a bug upstream is the only way to fire them. Judged directly.
DIRECT_CASES = [
    ("pairs", "source_partition_matches_run", lambda lake: good_pairs(lake), lambda df: pair_facts(df), GateContext((0,), ("another",))),
    ("raw", "raw_key_present", lambda lake: set_row(raw_rows(), 2, "_raw_key", None), lambda df: raw_facts(df, "raw_shp"), GateContext((0,))),
    ("raw", "raw_key_unique", lambda lake: set_row(raw_rows(), 2, "_raw_key", "train#1"), lambda df: raw_facts(df, "raw_shp"), GateContext((0,))),
    ("raw", "split_present", lambda lake: set_row(raw_rows(), 2, "_split", None), lambda df: raw_facts(df, "raw_shp"), GateContext((0,))),
    ("prompts", "prompt_id_present", lambda lake: set_row(prompt_rows(lake), 2, "prompt_id", None), prompt_facts, GateContext((0,), ("shp",))),
    ("prompts", "prompt_text_not_empty", lambda lake: set_row(prompt_rows(lake), 2, "prompt_text", "  "), prompt_facts, GateContext((0,), ("shp",))),
    ("prompts", "no_empty_turn", lambda lake: set_row(prompt_rows(lake), 2, "prompt", [{"role": "system", "content": " "}, {"role": "user", "content": "q"}]),
     prompt_facts, GateContext((0,), ("shp",))),
    ("prompts", "prompt_unique_per_source_split", lambda lake: pl.concat([prompt_rows(lake), prompt_rows(lake).head(1)]), prompt_facts, GateContext((0,), ("shp",))),
    ("prompts", "source_partition_matches_run", lambda lake: prompt_rows(lake), prompt_facts, GateContext((0,), ("hh_rlhf",))),
    ("eval_responses", "response_id_present", lambda lake: set_row(eval_answers(), 2, "response_id", None), lambda df: eval_response_facts(df, 1), GateContext((1,), n=1)),
    ("eval_responses", "response_id_unique", lambda lake: set_row(eval_answers(), 2, "response_id", "pi0-p1"), lambda df: eval_response_facts(df, 1), GateContext((1,), n=1)),
    ("eval_responses", "exactly_n_responses_per_prompt", lambda lake: pl.concat([eval_answers(), eval_answers().head(1).with_columns(pl.lit("x").alias("response_id"))]),
     lambda df: eval_response_facts(df, 1), GateContext((1,), n=1)),
    ("eval_responses", "iteration_partition_matches_run", lambda lake: eval_answers(), lambda df: eval_response_facts(df, 1), GateContext((2,), n=1)),
    ("eval_responses", "response_has_text", lambda lake: set_row(eval_answers(), 2, "response", None), lambda df: eval_response_facts(df, 1), GateContext((1,), n=1)),
    ("eval_responses", "logps_finite", lambda lake: set_row(eval_answers(), 2, "logp", float("nan")), lambda df: eval_response_facts(df, 1), GateContext((1,), n=1)),
    ("eval_scores", "score_id_unique", lambda lake: set_row(eval_rewards(), 2, "score_id", "s-pi0-p1"), lambda df: eval_score_facts(df, eval_answers()["response_id"]), GateContext((1,))),
    ("eval_scores", "reward_finite", lambda lake: set_row(eval_rewards(), 2, "reward", float("inf")), lambda df: eval_score_facts(df, eval_answers()["response_id"]), GateContext((1,))),
    ("eval_scores", "score_has_response", lambda lake: set_row(eval_rewards(), 2, "response_id", "ghost"), lambda df: eval_score_facts(df, eval_answers()["response_id"]), GateContext((1,))),
    ("eval_scores", "iteration_partition_matches_run", lambda lake: eval_rewards(), lambda df: eval_score_facts(df, eval_answers()["response_id"]), GateContext((3,))),
]


def good_pairs(curated_lake: Lake) -> pl.DataFrame:
    return pl.from_arrow(curated_lake.read(S.PAIRS)).filter(pl.col("source") == "ultrafeedback").unique("prompt_id", keep="first", maintain_order=True).head(6)


@pytest.mark.parametrize(("suite", "gate", "rows", "facts", "context"), DIRECT_CASES, ids=[f"{c[0]}.{c[1]}" for c in DIRECT_CASES])
def test_gate_fires_on_the_damage_it_names(curated_lake: Lake, suite: str, gate: str, rows, facts, context) -> None:
    """The damaged batch fails exactly the named gate (row gates on the damaged row), and no other gate."""
    verdict = judge(suite, suite, facts(rows(curated_lake)).with_row_index("_row"), context, "test")
    failed = {r["gate"] for r in verdict.results if not r["success"]}
    assert failed == {gate}
    level = next(g.level for g in SUITES[suite] if g.name == gate)
    if level == "row":
        assert verdict.rejected["_row"].to_list() == [2] and verdict.rejected["gate"].to_list() == [gate] and not verdict.batch_failures
    else:
        assert [g for g, _ in verdict.batch_failures] == [gate]


def test_every_gate_has_a_test_that_makes_it_fire() -> None:
    """Adding a gate without a case that fires it fails here."""
    fired = {("pairs", g) for _, g in PAIR_ROW_DAMAGE + PAIR_BATCH_DAMAGE} | {("responses", g) for _, g in RESPONSE_DAMAGE}
    fired |= {("scores", g) for _, g in SCORE_DAMAGE} | {(c[0], c[1]) for c in DIRECT_CASES}
    fired |= {("pairs", "no_prompt_reused_across_iterations"), ("responses", "no_prompt_reused_across_iterations")}  # their own tests above
    every = {(suite, g.name) for suite, gates in SUITES.items() for g in gates}
    assert every - fired == set()


def _observe_in_batches(facts: pl.DataFrame, chunk_rows: int, batch: int = 2):
    from prefhouse.quality.gates import Gatekeeper

    keeper = Gatekeeper(GateContext((0,), ("ultrafeedback",)), "test", chunk_rows=chunk_rows)
    for start in range(0, facts.height, batch):
        keeper.observe(S.PAIRS, "pairs", facts.slice(start, batch))
    return keeper, keeper.judge(S.PAIRS)


def test_gates_judged_in_chunks_record_what_one_judgement_records(curated_lake: Lake) -> None:
    """Facts judged a chunk at a time (a run's memory bounded by the chunk) give one result per gate with the
    counts of judging them all at once, and reject the same rows."""
    pairs = good_pairs(curated_lake)
    damaged = pl.concat([pairs, set_last_reply(pairs.head(2), 1, "rejected", pairs["chosen"][1].to_list()[-1]["content"])
                         .with_columns(pl.col("pair_id") + "-copy")])  # row 7: final turns the same (a row gate)
    facts = pair_facts(damaged)
    keeper, chunked = _observe_in_batches(facts, chunk_rows=3)
    _, whole = _observe_in_batches(facts, chunk_rows=10**9)
    assert not keeper.facts and not keeper.judged  # let go once judged
    drop = lambda rows: [{k: v for k, v in r.items() if k != "validated_at"} for r in rows]  # noqa: E731
    assert drop(chunked.results) == drop(whole.results) and len(chunked.results) == len(SUITES["pairs"])
    assert {r["gate"]: r["element_count"] for r in chunked.results}["final_turns_differ"] == 8
    assert chunked.rejected["pair_id"].to_list() == whole.rejected["pair_id"].to_list() == [damaged["pair_id"][7]]
    assert chunked.batch_failures == whole.batch_failures == []


def test_great_expectations_keeps_only_the_last_tally_of_each_kind(curated_lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GX data source's execution engine caches every batch it loads and never evicts one; the gates load every
    judgement's tallies under the same batch ids, so the cache holds the last tally of each kind, not one per judgement
    (memory would grow with the worker's input). Judged in this process, to look inside GX's context."""
    import types

    from prefhouse.quality import gates, gx_worker

    monkeypatch.setattr(gates, "worker", lambda: types.SimpleNamespace(validate=gx_worker.validate_tallies))

    def cached() -> int:
        return sum(len(source.get_execution_engine().batch_manager.batch_data_cache) for source in gx_worker.context().data_sources.all().values())

    pairs = good_pairs(curated_lake)
    judge(S.PAIRS, "pairs", pair_facts(pairs).with_row_index("_row"), GateContext((0,), ("ultrafeedback",)), "test")
    after_one = cached()
    for n in (3, 4, 5):
        judge(S.PAIRS, "pairs", pair_facts(pairs.head(n)).with_row_index("_row"), GateContext((0,), ("ultrafeedback",)), "test")
    assert cached() == after_one == 2  # the values and the repeats


def test_a_duplicate_in_another_chunk_fails_its_uniqueness_gate(curated_lake: Lake) -> None:
    """Uniqueness holds across chunks: a pair id whose copies fell in different chunks fails pair_id_unique,
    though each chunk alone is unique."""
    pairs = good_pairs(curated_lake)
    facts = pair_facts(pl.concat([pairs, pairs.slice(1, 1)]))  # row 6 repeats row 1, two chunks later
    _, verdict = _observe_in_batches(facts, chunk_rows=3)
    assert [g for g, _ in verdict.batch_failures] == ["pair_id_unique"]
    unique = next(r for r in verdict.results if r["gate"] == "pair_id_unique")
    assert not unique["success"] and unique["unexpected_count"] == 1 and pairs["pair_id"][1] in unique["observed_value"]
    assert [r["gate"] for r in verdict.results if not r["success"]] == ["pair_id_unique"]


# ------------------------------------------------------------------- curation's drop-and-quarantine path
def test_curation_drops_and_quarantines_what_a_pair_gate_rejects(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pair failing a row gate during curation lands in no table but quarantine (rule gx.<gate>), with its copies,
    and the run's row accounting moves its raw rows from paired to quarantined."""
    import functools

    import prefhouse.pipelines.curate as curate_module
    from prefhouse.pipelines.curate import curate

    from tests.conftest import SAMPLES

    curate(["shp"], lake, SAMPLES, progress=False)
    baseline = pl.from_arrow(lake.read(S.PAIRS))
    reply_chars = lambda c: pl.col(c).list.last().struct.field("content").str.len_chars()  # noqa: E731
    limit = int(baseline.select(reply_chars("chosen")).to_series().median())
    long_ids = set(baseline.filter((reply_chars("chosen") > limit) | (reply_chars("rejected") > limit))["pair_id"])
    assert 0 < len(long_ids) < baseline.height

    strict = Lake(lake.uri + "-strict")
    monkeypatch.setattr(curate_module, "GateContext", functools.partial(GateContext, bounds=Bounds(max_reply_chars=limit)))
    run, _ = curate(["shp"], strict, SAMPLES, progress=False)
    landed = set(strict.read(S.PAIRS, columns=["pair_id"]).column("pair_id").to_pylist())
    assert landed == set(baseline["pair_id"]) - long_ids
    assert long_ids.isdisjoint(strict.read(S.PAIR_SOURCES, columns=["pair_id"]).column("pair_id").to_pylist())
    q = run_query(strict, "SELECT rule, level, count(*) AS n FROM quarantine WHERE rule LIKE 'gx.%' GROUP BY ALL").to_pylist()
    assert {r["rule"] for r in q} <= {"gx.chosen_length_in_bounds", "gx.rejected_length_in_bounds"} and {r["level"] for r in q} == {"pair"}
    assert sum(r["n"] for r in q) == len(long_ids)
    counts = run_query(strict, f"SELECT outcome, sum(n) AS n FROM run_counts WHERE run_id = '{run.run_id}' AND level = 'row' GROUP BY ALL").to_pylist()
    before = run_query(lake, "SELECT outcome, sum(n) AS n FROM run_counts WHERE level = 'row' GROUP BY ALL").to_pylist()
    as_dict = lambda rows: {r["outcome"]: r["n"] for r in rows}  # noqa: E731
    assert as_dict(counts)["paired"] < as_dict(before)["paired"]
    assert sum(as_dict(counts).values()) == sum(as_dict(before).values())  # every raw row still has exactly one outcome


def test_curation_drops_and_quarantines_what_a_prompt_gate_rejects(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool admits only valid prompts; should one slip past (here: the check is switched off), the prompts
    suite drops it and quarantines it with its origin, and the rest of the run lands."""
    import prefhouse.pipelines.curate as curate_module
    from prefhouse.pipelines.curate import curate

    from tests.conftest import SAMPLES

    monkeypatch.setattr(curate_module, "prompt_is_valid", lambda prompt: pl.lit(True))
    curate(["shp"], lake, SAMPLES, progress=False)
    q = run_query(lake, "SELECT rule, level, split, raw_keys FROM quarantine WHERE rule LIKE 'gx.%'").to_pylist()
    # SHP's blank post fails the first of the two prompt gates that see it
    assert [(r["rule"], r["level"]) for r in q] == [("gx.prompt_text_not_empty", "prompt")]
    assert q[0]["split"] and len(q[0]["raw_keys"]) == 1
    blank = run_query(lake, "SELECT count(*) AS n FROM prompts WHERE len(list_filter(prompt, lambda m: trim(m.content) = '')) > 0")
    assert blank.column("n")[0].as_py() == 0 and lake.read(S.PAIRS).num_rows > 0


def test_great_expectations_is_imported_without_scipy_stats_and_altair_until_they_are_used() -> None:
    """The stand-ins keep 0.85 s of GX's import off every gated command, and forward to the real modules on first use."""
    code = """
import sys
from prefhouse.quality.gx_import import import_gx
import_gx()
assert "scipy.stats" not in sys.modules and "altair" not in sys.modules, "imported with great_expectations"
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
assert kl.stats.entropy([0.5, 0.5]) > 0 and kl.alt.Chart.__name__ == "Chart"
import altair, scipy.stats
assert kl.stats.entropy is scipy.stats.entropy and type(sys.modules["scipy.stats"]).__name__ == "module"
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_great_expectations_runs_in_a_worker_that_ends_with_the_writers_process() -> None:
    """A Gatekeeper starts GX's worker process; the writer judges through it and never imports GX itself; a writer
    that ends early (an input error) exits with its own code, its worker ended with it."""
    code = """
import sys
import polars as pl
from prefhouse.quality.gates import Gatekeeper
from prefhouse.quality.suites import GateContext
keeper = Gatekeeper(GateContext(iterations=(0,), sources=("hh_rlhf",)), "run-1")
from prefhouse.quality.gx_worker import worker
print("worker pid:", worker().process.pid)
keeper.observe("raw_x", "raw", pl.DataFrame({"_raw_key": ["a", "b", "b"], "_split": ["s", "s", "s"], "raw_row": ["a", "b", "b"]}))
print("failed:", [g for g, _ in keeper.judge("raw_x").batch_failures])
print("great_expectations imported here:", "great_expectations" in sys.modules)
sys.exit(3)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "failed: ['raw_key_unique']" in done.stdout and "great_expectations imported here: False" in done.stdout, done.stdout
    pid = int(done.stdout.split("worker pid:")[1].split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_judgement_made_after_the_worker_died_is_made_here_with_the_same_results() -> None:
    """A worker killed mid-run (out of memory, a signal) costs the run nothing: the next judgement runs in the writer's
    process, gives the same verdict, and says so on stderr."""
    code = """
import polars as pl
from prefhouse.quality.gates import judge
from prefhouse.quality.gx_worker import worker
from prefhouse.quality.suites import GateContext
facts = pl.DataFrame({"_raw_key": ["a", None, "b", "b"], "_split": ["s", "s", None, "s"], "raw_row": ["a", "c", "b", "b"]}).with_row_index("_row")
verdict = lambda: [(r["gate"], r["success"], r["unexpected_count"], r["observed_value"]) for r in judge("raw_x", "raw", facts, GateContext((0,), ("x",)), "r").results]
in_worker = verdict()
worker().process.kill()
assert verdict() == in_worker, (verdict(), in_worker)
print("ok", in_worker)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok") and "('raw_key_unique', False, 2" in done.stdout, done.stdout
    assert "the Great Expectations worker" in done.stderr and "validating in this process" in done.stderr, done.stderr[-2000:]
