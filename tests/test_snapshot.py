"""Snapshots for training: pinned, deterministic, mixtures, caps, size matching, held-out prompts."""

from __future__ import annotations

import polars as pl
import pytest
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.curate import curate
from prefhouse.training.snapshot import Selection, resolve

from .conftest import SAMPLES


def frame(table) -> pl.DataFrame:
    return pl.from_arrow(table)


def test_same_snapshot_same_rows_same_order(curated_lake: Lake) -> None:
    a = resolve(curated_lake, Selection(eval_fraction=0.2))
    b = resolve(curated_lake, Selection(eval_fraction=0.2))
    assert a.train.equals(b.train) and a.eval.equals(b.eval)
    assert a.snapshot_hash == b.snapshot_hash
    assert a.snapshot_hash != resolve(curated_lake, Selection(eval_fraction=0.2, seed=7)).snapshot_hash
    assert frame(a.train)["pair_id"].to_list() != frame(resolve(curated_lake, Selection(eval_fraction=0.2, seed=7)).train)["pair_id"].to_list()


def test_mixtures_and_held_out_prompts(curated_lake: Lake) -> None:
    all_pairs = curated_lake.read(S.PAIRS).num_rows
    mix2 = resolve(curated_lake, Selection(mixture="mix2", eval_fraction=0.25, splits="all"))
    assert mix2.train.num_rows + mix2.eval.num_rows == all_pairs
    assert mix2.eval.num_rows > 0
    train_prompts = set(frame(mix2.train)["prompt_id"])
    assert train_prompts.isdisjoint(set(frame(mix2.eval)["prompt_id"]))  # no prompt on both sides
    mix1 = resolve(curated_lake, Selection(mixture="mix1"))
    assert set(frame(mix1.train)["source"]) == {"hh_rlhf", "shp", "ultrafeedback"}


def test_snapshots_train_on_training_splits_by_default(curated_lake: Lake) -> None:
    """Evaluation splits (HH-RLHF harmless-base/test, SHP validation, HelpSteer validation) never train a model unless asked."""
    pairs = pl.from_arrow(curated_lake.read(S.PAIRS, columns=["pair_id", "split"]))
    evaluation = {"harmless-base/test", "askscience/validation", "validation"} & set(pairs["split"])  # evaluation splits, named by hand
    assert {"harmless-base/test", "askscience/validation"} <= evaluation
    held = set(pairs.filter(pl.col("split").is_in(list(evaluation)))["pair_id"])
    ids = lambda snap: set(frame(snap.train)["pair_id"]) | set(frame(snap.eval)["pair_id"])  # noqa: E731
    train = ids(resolve(curated_lake, Selection(mixture="all", eval_fraction=0.2)))
    assert train.isdisjoint(held) and len(train) == pairs.height - len(held)
    assert ids(resolve(curated_lake, Selection(mixture="all", splits="eval"))) == held
    assert len(ids(resolve(curated_lake, Selection(mixture="all", splits="all")))) == pairs.height
    with pytest.raises(ValueError, match="splits must be"):
        Selection(splits="test")


def test_caps_fractions_size_matching_and_filters(curated_lake: Lake) -> None:
    counts = lambda snap: frame(snap.train).group_by("source").len().sort("source").to_dict(as_series=False)  # noqa: E731
    capped = dict(zip(*counts(resolve(curated_lake, Selection(caps={"codeultrafeedback": 10}, fractions={"ultrafeedback": 0.5}))).values()))
    assert capped["codeultrafeedback"] == 10 and capped["ultrafeedback"] == 38 and capped["shp"] == 7  # 13 less its 6 validation pairs
    matched = dict(zip(*counts(resolve(curated_lake, Selection(size_matched=12))).values()))
    assert set(matched.values()) == {7, 8, 12}  # every source at 12; capybara has only 8, shp 7 training pairs
    filtered = resolve(curated_lake, Selection(where="margin > 1"))
    assert frame(filtered.train)["source"].is_in(["shp", "codeultrafeedback", "ultrafeedback", "helpsteer", "distilabel_math_preference_dpo", "distilabel_capybara_dpo_7k_binarized"]).all()
    with pytest.raises(ValueError, match="single SQL condition"):
        Selection(where="true; COPY pairs TO '/tmp/x'")


def test_a_snapshot_is_pinned(lake: Lake) -> None:
    curate(["shp"], lake, SAMPLES, progress=False)
    pinned = resolve(lake, Selection(mixture="all"))
    curate(["helpsteer"], lake, SAMPLES, progress=False)
    again = resolve(lake, Selection(mixture="all"), versions=pinned.versions)
    assert again.train.equals(pinned.train) and again.snapshot_hash == pinned.snapshot_hash
    assert resolve(lake, Selection(mixture="all")).train.num_rows > pinned.train.num_rows


def test_online_iterations_in_snapshots(lake: Lake) -> None:
    from prefhouse.quality.guard import append_pairs

    curate(["ultrafeedback"], lake, SAMPLES, progress=False)
    offline = pl.from_arrow(lake.read(S.PAIRS)).unique("prompt_id", keep="first", maintain_order=True)
    online = lambda df, it: df.with_columns(pl.lit(it, pl.Int32).alias("iteration"), pl.lit("online").alias("origin"),  # noqa: E731
                                            pl.lit("online").alias("source"))
    append_pairs(lake, online(offline.slice(0, 4), 1), iteration=1)
    append_pairs(lake, online(offline.slice(4, 3), 2), iteration=2)
    n_offline = lake.read(S.PAIRS, columns=["iteration"]).num_rows - 7
    count = lambda **kw: resolve(lake, Selection(mixture="all", **kw)).train.num_rows  # noqa: E731
    assert count(iterations="all", max_iteration=2) == n_offline + 7  # the paper: all historical pairs
    assert count(iterations="all", max_iteration=1) == n_offline + 4
    assert count(iterations="latest", max_iteration=2) == 3  # public scripts: this iteration's pairs only
    assert count(iterations="offline") == n_offline


def test_lineage_answers_both_questions_in_sql(curated_lake: Lake, tmp_path) -> None:
    import shutil

    from prefhouse.pipelines.core.sql import run_query
    from prefhouse.training.lineage import register_model

    lake = Lake(str(tmp_path / "lake"))
    shutil.copytree(curated_lake.uri, lake.uri)
    snap = resolve(lake, Selection(mixture="mix1", eval_fraction=0.2))
    register_model(lake, "rm-1", "reward_model", "base", snap, {"lr": 1e-5}, {"accuracy": 0.5}, "/models/rm-1", "succeeded", "run-1")
    trained = run_query(lake, "model_pairs", params={"model_id": "rm-1"})
    assert trained.num_rows == snap.train.num_rows + snap.eval.num_rows
    assert set(trained.column("source").to_pylist()) <= {"hh_rlhf", "shp", "ultrafeedback"}
    pair = snap.train.column("pair_id")[0].as_py()
    used = run_query(lake, "pair_models", params={"pair_id": pair}).to_pylist()
    assert [(u["model_id"], u["split"], u["snapshot_hash"]) for u in used] == [("rm-1", "train", snap.snapshot_hash)]
