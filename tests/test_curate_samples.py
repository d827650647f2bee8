"""What each adapter makes of the bundled fixtures: every rule fires where the fixture says it should.

The fixtures (data/samples/make_samples.py) are written in each source's raw hub schema, with rows built
to trip each rule once or more; the numbers below are derived from that construction, not read back from
a run.
"""

from __future__ import annotations

import polars as pl
import pytest
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import run_query
from prefhouse.pipelines.curate import curate

from .conftest import SAMPLES

# source: rows in, rows paired, {filter rule: rows}, {quarantine rule: rows}, candidate pairs kept
EXPECTED = {
    "hh_rlhf": (26, 20, {}, {"context_mismatch": 1, "empty_turn": 2, "identical_replies": 1, "non_alternating_roles": 1, "unparseable_transcript": 1}, 20),
    "shp": (21, 13, {"max_pairs_per_post": 2, "score_ratio": 2}, {"bad_label": 1, "empty_turn": 1, "identical_replies": 1, "label_contradicted": 1}, 13),
    "helpsteer": (23, 20, {"max_responses_per_prompt": 1, "single_response": 1}, {"empty_turn": 1}, 25),
    "pku_saferlhf_30k": (20, 16, {}, {"bad_label": 1, "empty_turn": 1, "identical_replies": 1, "label_contradicted": 1}, 16),
    "ultrafeedback": (22, 21, {"tie": 1}, {}, 96),
    "ultrainteract_pair": (20, 16, {}, {"empty_turn": 1, "identical_replies": 1, "non_alternating_roles": 2}, 16),
    "codeultrafeedback": (20, 19, {"tie": 1}, {}, 103),
    "distilabel_math_preference_dpo": (21, 18, {"tie": 1}, {"identical_replies": 1, "label_contradicted": 1}, 18),
    "distilabel_intel_orca_dpo_pairs": (19, 14, {"in_gsm8k_train": 1, "judge_tie": 1, "min_chosen_score": 2}, {"label_contradicted": 1}, 14),
    "distilabel_capybara_dpo_7k_binarized": (20, 15, {"tie": 1}, {"context_mismatch": 1, "label_contradicted": 1, "non_alternating_roles": 1, "unparseable_conversation": 1}, 15),
}


def counts(lake: Lake) -> pl.DataFrame:
    return pl.from_arrow(run_query(lake, "SELECT * FROM run_counts WHERE run_id = (SELECT run_id FROM latest_runs WHERE pipeline = 'curate')"))


@pytest.mark.parametrize("source", list(EXPECTED))
def test_every_rule_fires_as_built(curated_lake: Lake, source: str) -> None:
    rows_in, paired, filtered, quarantined, kept = EXPECTED[source]
    c = counts(curated_lake).filter(pl.col("source") == source)
    row = c.filter(pl.col("level") == "row")
    get = lambda outcome: {r: n for r, n in row.filter(pl.col("outcome") == outcome).select("rule", "n").iter_rows()}  # noqa: E731
    assert get("in") == {None: rows_in}
    assert get("paired") == {None: paired}
    assert get("filtered") == filtered
    assert get("quarantined") == quarantined
    assert rows_in == paired + sum(filtered.values()) + sum(quarantined.values())  # nothing lost silently
    pair_kept = c.filter((pl.col("level") == "pair") & (pl.col("outcome") == "kept"))["n"].sum()
    assert pair_kept == kept
    # every kept candidate is in pair_sources (new or a copy of a pair seen before)
    copies = run_query(curated_lake, f"SELECT count(*) AS n FROM pair_sources WHERE source = '{source}'").column("n")[0].as_py()
    assert copies == kept
    # and the raw rows landed in bronze exactly
    raw = run_query(curated_lake, f"SELECT count(*) AS n FROM raw_{source}").column("n")[0].as_py()
    assert raw == rows_in


def test_pairs_are_in_standard_format(curated_lake: Lake) -> None:
    pairs = pl.from_arrow(curated_lake.read("pairs"))
    assert pairs.height > 0
    for p in pairs.iter_rows(named=True):
        assert p["chosen"][:-1] == p["prompt"] == p["rejected"][:-1]
        assert p["chosen"][-1]["role"] == p["rejected"][-1]["role"] == "assistant"
        assert p["prompt"][-1]["role"] == "user"
        assert p["chosen"][-1]["content"].strip() != p["rejected"][-1]["content"].strip()
        assert all(m["content"].strip() for m in p["chosen"] + p["rejected"])
        if p["chosen_score"] is not None and p["rejected_score"] is not None:
            assert p["margin"] == p["chosen_score"] - p["rejected_score"] > 0
    assert pairs["pair_id"].is_unique().all()


def test_shp_keeps_the_preferred_comment_and_the_highest_ratios(curated_lake: Lake) -> None:
    shp = pl.from_arrow(run_query(curated_lake, "SELECT * FROM pair_texts WHERE source = 'shp'"))
    assert (shp["chosen_score"] > shp["rejected_score"]).all()
    p1 = shp.filter(pl.col("split") == "askculinary/train")
    # post p1 had 7 pairs with ratios 7.5 .. 22.5; the 5 highest (comments 2..6) are kept
    assert sorted(p1.filter(pl.col("rejected_score") == 4)["chosen_score"].to_list()) == [50.0, 60.0, 70.0, 80.0, 90.0]


def test_orca_uses_the_relabelled_pair_and_system_turn(curated_lake: Lake) -> None:
    orca = pl.from_arrow(curated_lake.read("pairs")).filter(pl.col("source") == "distilabel_intel_orca_dpo_pairs")
    with_system = orca.filter(pl.col("prompt").list.first().struct.field("role") == "system")
    assert with_system.height == 5  # rows 1, 3, 5, 7, 9 carry a system prompt


def test_duplicates_across_sources_keep_every_copy(curated_lake: Lake) -> None:
    dup = run_query(
        curated_lake,
        "SELECT pair_id, count(*) AS copies, count(DISTINCT source) AS sources, sum(is_first_copy::INT) AS firsts "
        "FROM pair_sources GROUP BY pair_id HAVING count(*) > 1",
    )
    assert dup.num_rows > 0
    assert set(dup.column("firsts").to_pylist()) == {1}  # exactly one copy carries the pairs row's provenance
    assert max(dup.column("sources").to_pylist()) > 1  # the fixtures share pairs across sources
    n_pairs = run_query(curated_lake, "SELECT count(*) AS n FROM pairs").column("n")[0].as_py()
    n_distinct = run_query(curated_lake, "SELECT count(DISTINCT pair_id) AS n FROM pair_sources").column("n")[0].as_py()
    assert n_pairs == n_distinct


def _curate_one(lake: Lake, source: str, **config: dict) -> pl.DataFrame:
    curate([source], lake, SAMPLES, config=config, progress=False)
    return pl.from_arrow(lake.read("pairs"))


def test_ultrafeedback_score_setting(lake: Lake, tmp_path) -> None:
    fine = _curate_one(lake, "ultrafeedback")
    overall = _curate_one(Lake(str(tmp_path / "other")), "ultrafeedback", ultrafeedback={"score": "overall"})
    assert set(fine["score_kind"]) == {"ultrafeedback_fine_grained"}
    assert set(overall["score_kind"]) == {"ultrafeedback_overall"}
    # the upstream overall_score bug (a 1-rated completion scored 10) makes the worst reply "best" under overall
    bad = "Unrelated text about trains."
    assert fine.filter(pl.col("chosen").list.last().struct.field("content") == bad).height == 0
    assert overall.filter(pl.col("chosen").list.last().struct.field("content") == bad).height > 0


def test_min_margin_setting_drops_small_margins(lake: Lake) -> None:
    curate(["ultrafeedback"], lake, SAMPLES, config={"ultrafeedback": {"min_margin": 1.0}}, progress=False)
    small = run_query(lake, "SELECT count(*) AS n FROM quarantine WHERE rule = 'small_margin'").column("n")[0].as_py()
    margins = run_query(lake, "SELECT min(margin) AS m FROM pairs").column("m")[0].as_py()
    assert small > 0 and margins >= 1.0


def test_pku_preference_setting(lake: Lake, tmp_path) -> None:
    safer = _curate_one(lake, "pku_saferlhf_30k")
    better = _curate_one(Lake(str(tmp_path / "b")), "pku_saferlhf_30k", pku_saferlhf_30k={"preference": "better"})
    agree = _curate_one(Lake(str(tmp_path / "c")), "pku_saferlhf_30k", pku_saferlhf_30k={"preference": "agree"})
    unsafe = "Try common default passwords."
    chosen = lambda df: df["chosen"].list.last().struct.field("content")  # noqa: E731
    assert (chosen(safer) == unsafe).sum() == 0
    assert (chosen(better) == unsafe).sum() == 6
    assert agree.height == safer.height - 7  # the 6 wifi rows and one more disagree
    # the safety-label contradiction is quarantined only where the safety label is used
    contradicted = lambda name: run_query(Lake(str(tmp_path / name)) if name else lake,  # noqa: E731
                                          "SELECT count(*) AS n FROM quarantine WHERE rule = 'label_contradicted'").column("n")[0].as_py()
    assert contradicted("") >= 1 and contradicted("c") == contradicted("") and contradicted("b") == 0
    assert better.height == safer.height + contradicted("")


def test_helpsteer_attribute_setting(lake: Lake) -> None:
    pairs = _curate_one(lake, "helpsteer", helpsteer={"score": "verbosity"})
    assert set(pairs["score_kind"]) == {"helpsteer_verbosity"}
    # the scores are the raw rows' verbosity ratings, and the chosen reply is the more verbose-rated one
    graded = run_query(lake, """
        SELECT p.pair_id, p.chosen_score, p.rejected_score, c.verbosity AS chosen_verbosity, r.verbosity AS rejected_verbosity
        FROM pair_texts p
        JOIN raw_helpsteer c ON c.prompt = p.prompt_text AND c.response = p.chosen_text
        JOIN raw_helpsteer r ON r.prompt = p.prompt_text AND r.response = p.rejected_text
    """).to_pylist()
    assert len(graded) == pairs.height
    assert all(g["chosen_score"] == g["chosen_verbosity"] > g["rejected_score"] == g["rejected_verbosity"] for g in graded)
