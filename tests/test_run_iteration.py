"""The online iteration end to end with tiny models: two iterations, both engines, resume after a crash, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.dataset as pads
import pytest
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import run_query
from prefhouse.pipelines.online.iterations import IterationOrderError
from prefhouse.pipelines.run_iteration import IterationConfig, main, run_iteration
from prefhouse.quality.gates import GateError
from prefhouse.training.train_rm import RewardModelSettings, train_reward_model

from .conftest import REPO
from .helpers import copy_lake, rm_settings


def small_overrides(tiny_model: str, engine: str = "transformers") -> list[str]:
    return [f"iteration.initial_policy={tiny_model}", "prompts.m=4", "generate.max_new_tokens=8", f"generate.engine={engine}",
            "generate.chunk_prompts=2", "dpo.max_length=128", "dpo.size_matched=1", "evaluate.enabled=false"]


def evaluation_overrides(tiny_model: str) -> list[str]:
    """The evaluate stage on, small: 8 prompts, 8 new tokens, a tiny second judge."""
    return ["evaluate.enabled=true", "evaluate.prompts=8", "evaluate.max_new_tokens=8", "evaluate.bootstrap=200",
            f"judge.base_model={tiny_model}", "judge.max_length=128", "judge.size_matched=2"]


def small_config(tiny_model: str, engine: str = "transformers", *extra: str) -> IterationConfig:
    return IterationConfig.load("cpu", overrides=[*small_overrides(tiny_model, engine), *extra])


def run(lake: Lake, n: int, config: IterationConfig, tmp_path: Path, **kw):
    return run_iteration(lake, n, config, models_dir=tmp_path / "models", reports_dir=tmp_path / "reports", progress=False, **kw)


def lake_rows(lake: Lake) -> dict[str, list]:
    """What the iterations wrote, every row in id order (a duplicate shows): what an interrupted and an uninterrupted run must agree on."""
    return {
        "responses": sorted(zip(*(lake.read(S.RESPONSES).column(c).to_pylist() for c in ("response_id", "response")))),
        "scores": sorted(zip(*(lake.read(S.SCORES).column(c).to_pylist() for c in ("response_id", "reward")))),
        "pairs": sorted(lake.read(S.PAIRS, filter=pads.field("iteration") > 0).column("pair_id").to_pylist()),
    }


KILLED_ON_SECOND_CHUNK = """
import os, signal
from pathlib import Path
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.online import generate as G
from prefhouse.pipelines.run_iteration import IterationConfig, run_iteration
real, calls = G.TransformersEngine.generate, [0]
def killed_on_second_chunk(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *args, **kwargs)
G.TransformersEngine.generate = killed_on_second_chunk
config = IterationConfig.load("cpu", overrides={overrides!r})
run_iteration(Lake({lake!r}), 1, config, models_dir=Path({out!r}) / "models", reports_dir=Path({out!r}) / "reports", progress=False)
"""


@pytest.mark.heavy
@pytest.mark.parametrize("engine", ["transformers", "vllm"])
def test_two_iterations_end_to_end(ready_lake: Lake, tiny_model: str, tmp_path: Path, engine: str) -> None:
    if engine == "vllm":
        pytest.importorskip("vllm", reason="vLLM cannot be imported here (pip install -e '.[cpu]' or '.[gpu]')")
    evaluated = engine == "transformers"  # the evaluate stage once, on the cheaper engine
    config = small_config(tiny_model, engine, *(evaluation_overrides(tiny_model) if evaluated else []))
    for n in (1, 2):
        if n == 2:  # a newer reward model registered between iterations: "latest" stays the one iteration 1 scored with
            newer = train_reward_model(ready_lake, RewardModelSettings(base_model=tiny_model, max_length=128, size_matched=2, eval_fraction=0.4),
                                       tmp_path / "models", progress=False)
        timings, summary = run(ready_lake, n, config, tmp_path)
        assert list(timings) == ["prompts", "generate", "score", "select", "report", "train", "evaluate"]
        assert summary["pairs"] + summary["ties_dropped"] + summary["identical_dropped"] == 4
        assert Path(summary["report"]).exists() and Path(summary["new_policy"], "config.json").exists()
    responses = pl.from_arrow(ready_lake.read(S.RESPONSES))
    rm_used = pl.from_arrow(ready_lake.read(S.SCORES))["reward_model_id"].unique().to_list()
    assert len(rm_used) == 1 and rm_used != [newer["model_id"]]
    assert responses.group_by("iteration", "prompt_id").len()["len"].to_list() == [4] * 8 and set(responses["engine"]) == {engine}
    assert responses.filter(pl.col("iteration") == 1)["prompt_id"].is_in(responses.filter(pl.col("iteration") == 2)["prompt_id"].implode()).sum() == 0
    # iteration 2 generated with the policy iteration 1 trained, which DPO registered with its lineage
    events = pl.from_arrow(ready_lake.read(S.ITERATIONS))
    trained = json.loads(events.filter((pl.col("iteration") == 1) & (pl.col("stage") == "train") & (pl.col("status") == "done"))["counts"][0])
    assert set(responses.filter(pl.col("iteration") == 2)["policy_model_id"]) == {trained["new_policy_id"]}
    model = [m for m in ready_lake.read(S.MODELS).to_pylist() if m["model_id"] == trained["new_policy_id"]][0]
    assert model["job_kind"] == "dpo" and json.loads(model["quality"])["quality_status"] == "passed"
    # the online pairs sit in the historical pairs table, and SQL sees them by iteration
    by_iteration = run_query(ready_lake, "pairs_by_iteration").to_pylist()
    assert [r["iteration"] for r in by_iteration] == [0, 1, 2]
    # an online pair's provenance leads to its two responses, their sampling settings, policy, rewards and the selection
    online_pair = ready_lake.read(S.PAIRS, filter=pads.field("iteration") == 2).to_pylist()[0]
    prov = run_query(ready_lake, "pair_provenance", params={"pair_id": online_pair["pair_id"]}).to_pylist()
    assert [p["role"] for p in prov] == ["chosen", "rejected"] and [p["raw_key"] for p in prov] == online_pair["raw_keys"]
    made = [json.loads(p["raw_row"]) for p in prov]
    assert {m["policy_model_id"] for m in made} == {trained["new_policy_id"]} and {m["reward_model_id"] for m in made} == {online_pair["reward_model_id"]}
    assert made[0]["reward"] >= made[1]["reward"] and {m["engine"] for m in made} == {engine} and made[0]["max_new_tokens"] == 8
    assert json.loads(prov[0]["rule_settings"])["strategy"] == "max_min" and prov[0]["code_version"]
    # nothing left to do: a second run runs no stage and writes nothing; the reward model job, re-run after the online
    # iterations added pairs, still reads the same offline pairs and finds its model (the main job re-run)
    before = ready_lake.versions(list(S.CORE_TABLES))
    assert run(ready_lake, 2, config, tmp_path)[0] == {}
    train_reward_model(ready_lake, rm_settings(tiny_model), tmp_path / "models", progress=False)
    assert ready_lake.versions(list(S.CORE_TABLES)) == before
    if evaluated:
        check_evaluations(ready_lake, tiny_model, tmp_path, config, trained["new_policy_id"])


def check_evaluations(lake: Lake, tiny_model: str, tmp_path: Path, config: IterationConfig, policy_1: str) -> None:
    """What the evaluate stages of iterations 1 and 2 left: a fixed set no iteration drew, answers made once, two
    judges, the metrics' shape, and a re-run that adds nothing."""
    drawn = set(lake.read(S.DRAWN_PROMPTS, columns=["prompt_id"]).column("prompt_id").to_pylist())
    eval_set = set(lake.read(S.EVAL_PROMPTS, columns=["prompt_id"]).column("prompt_id").to_pylist())
    assert len(eval_set) == 8 and eval_set.isdisjoint(drawn)
    answers = pl.from_arrow(lake.read(S.EVAL_RESPONSES))
    assert answers.group_by("policy_model_id").len()["len"].to_list() == [8, 8, 8]  # π0, π1, π2: each answered every prompt once
    own_reference = answers.filter(pl.col("policy_model_id") == pl.col("reference_model_id"))
    assert answers["logp"].is_finite().all() and own_reference.height == 8 and (own_reference["logp"] == own_reference["reference_logp"]).all()
    judges = pl.from_arrow(lake.read(S.EVAL_SCORES)).group_by("judge_role").agg(pl.col("judge_model_id").n_unique(), pl.len()).sort("judge_role")
    assert judges.rows() == [("proxy", 1, 24), ("second", 1, 24)]
    kinds = {r["model_id"]: r["job_kind"] for r in run_query(lake, "SELECT model_id, job_kind FROM models").to_pylist()}
    scored_by = pl.from_arrow(lake.read(S.EVAL_SCORES)).group_by("judge_role").agg(pl.col("judge_model_id").first())
    assert {r: kinds[m] for r, m in scored_by.iter_rows()} == {"proxy": "reward_model", "second": "judge"}
    evaluations = pl.from_arrow(lake.read(S.EVALUATIONS))
    for iteration in (1, 2):
        rows = evaluations.filter(pl.col("iteration") == iteration)
        assert rows.height == 17  # 3 rates x 2 opponents x 2 judges, a mean reward per judge, length in chars and tokens, KL
        rates = rows.filter(pl.col("metric").is_in(["win_rate", "tie_rate", "lc_win_rate"]))
        assert set(rates["opponent"]) == {"previous", "initial"} and set(rates["judge"]) == {"proxy", "second"}
        assert (rows["ci_low"] <= rows["value"] + 1e-12).all() and (rows["value"] <= rows["ci_high"] + 1e-12).all() and set(rows["n_prompts"]) == {8}
    # the intervals repeat exactly: recomputed from the lake, they are the stored ones
    from prefhouse.pipelines.online.evaluate import evaluation_rows

    stored = evaluations.filter(pl.col("iteration") == 2)
    opponents = dict(stored.filter(pl.col("opponent").is_not_null()).select("opponent", "opponent_model_id").unique().iter_rows())
    judge_ids = dict(stored.filter(pl.col("judge").is_not_null()).select("judge", "judge_model_id").unique().iter_rows())
    again = evaluation_rows(lake, 2, stored["policy_model_id"][0], opponents, judge_ids, config.evaluate, "again")
    key = ["metric", "opponent", "judge"]
    assert again.sort(key, nulls_last=True).select(*key, "value", "ci_low", "ci_high").equals(
        stored.sort(key, nulls_last=True).select(*key, "value", "ci_low", "ci_high"))
    pi0 = own_reference["policy_model_id"][0]
    assert set(evaluations.filter((pl.col("iteration") == 1) & (pl.col("metric") == "win_rate"))["opponent_model_id"]) == {pi0}  # π_{0} twice
    # every training run's curves are in the lake, and iteration 2's report shows iteration 1's evaluation and the curves
    curves = run_query(lake, "SELECT DISTINCT job_kind FROM training_logs WHERE metric = 'loss'").column("job_kind").to_pylist()
    assert sorted(curves) == ["dpo", "judge", "reward_model"]
    report = tmp_path / "reports" / "iteration-2"
    so_far = report.joinpath("report.md").read_text().split("## So far", 1)[1].split("\n## ", 1)[0]
    assert "| 1 | win_rate | previous | proxy |" in so_far and "| 2 |" not in so_far
    assert report.joinpath("so_far.png").stat().st_size > 5_000 and report.joinpath("training_curves.png").stat().st_size > 5_000
    # resuming the stage, or evaluating again, adds nothing; a policy against itself: 50%, every prompt a tie
    before = lake.versions([S.EVAL_RESPONSES, S.EVAL_SCORES, S.EVALUATIONS])
    run(lake, 2, config, tmp_path, from_stage="evaluate")
    assert lake.versions([S.EVAL_RESPONSES, S.EVAL_SCORES, S.EVALUATIONS]) == before
    from prefhouse.pipelines.evaluate_policy import main as evaluate_main

    sets = [x for o in small_overrides(tiny_model) + evaluation_overrides(tiny_model) for x in ("--set", o)]
    assert evaluate_main(["--model", policy_1, "--against", policy_1, "--lake", lake.uri, "--models-dir", str(tmp_path / "models"), *sets]) == 0
    itself = pl.from_arrow(lake.read(S.EVALUATIONS)).filter((pl.col("iteration") == 0) & (pl.col("opponent") == f"against:{policy_1}"))
    assert itself.filter(pl.col("metric") == "win_rate")["value"].to_list() == [0.5, 0.5]
    assert itself.filter(pl.col("metric") == "tie_rate")["value"].to_list() == [1.0, 1.0]
    assert lake.versions([S.EVAL_RESPONSES, S.EVAL_SCORES]) == {t: v for t, v in before.items() if t != S.EVALUATIONS}  # nothing answered again


@pytest.mark.heavy
def test_kill_9_mid_stage_then_the_same_command_gives_the_uninterrupted_rows(ready_template: Lake, tiny_model: str, tmp_path: Path,
                                                                           monkeypatch) -> None:
    import signal

    config = small_config(tiny_model)
    clean = tmp_path / "clean"
    clean_lake = copy_lake(ready_template, clean / "lake")
    run(clean_lake, 1, config, clean)

    crashed = tmp_path / "crashed"
    lake = copy_lake(ready_template, crashed / "lake")
    # the iteration in its own process, killed (SIGKILL: no handler, no finally) as it starts the second chunk
    script = KILLED_ON_SECOND_CHUNK.format(overrides=small_overrides(tiny_model), lake=lake.uri, out=str(crashed))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert lake.read(S.RESPONSES).num_rows == 8  # the first chunk (2 prompts x 4) landed, the second did not
    states = pl.from_arrow(lake.read(S.ITERATIONS)).filter(pl.col("stage") == "generate").sort("at")["status"].to_list()
    assert states == ["started"]  # a killed process logs nothing more
    from prefhouse.pipelines.online import generate as G

    real, generated = G.TransformersEngine.generate, []

    def counting(self, prompts, *args, **kwargs):
        generated.extend(prompts["prompt_id"].to_list())
        return real(self, prompts, *args, **kwargs)

    monkeypatch.setattr(G.TransformersEngine, "generate", counting)
    kept = set(lake.read(S.RESPONSES).column("prompt_id").to_pylist())
    timings, _ = run(lake, 1, config, crashed)
    assert list(timings) == ["generate", "score", "select", "report", "train", "evaluate"]
    assert len(generated) == 2 and kept.isdisjoint(generated)  # the resume kept the landed chunk's responses, generated the rest
    assert lake_rows(lake) == lake_rows(clean_lake)
    # --force re-runs every stage and writes no duplicate
    run(lake, 1, config, crashed, force=True)
    assert lake.read(S.RESPONSES).num_rows == 16 and lake.read(S.PAIRS).num_rows == clean_lake.read(S.PAIRS).num_rows


def test_order_config_and_concurrency_errors(ready_lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    with pytest.raises(IterationOrderError, match="run: python pipelines/run_iteration.py --iter 1"):
        run(ready_lake, 2, small_config(tiny_model), tmp_path)
    common = ["--lake", ready_lake.uri, "--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    assert main(["--iter", "2", *common]) == 2
    assert main(["--iter", "1", *common, "--set", "generate.n=1"]) == 2  # bad configuration: refused before any work
    assert main(["--iter", "1", *common, "--set", "dpo.nonsense=1"]) == 2
    assert ready_lake.read(S.ITERATIONS).num_rows == 0
    with ready_lake.lock("iteration"):  # another run holds the iteration
        assert main(["--iter", "1", *common, "--set", f"iteration.initial_policy={tiny_model}"]) == 2
    assert ready_lake.read(S.ITERATIONS).num_rows == 0


def test_dry_run_prints_the_plan_and_writes_nothing(ready_lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    before = ready_lake.versions(list(S.CORE_TABLES))
    proc = subprocess.run(
        [sys.executable, "pipelines/run_iteration.py", "--iter", "1", "--dry-run", "--lake", ready_lake.uri, "--models-dir", str(tmp_path / "models"),
         "--set", f"iteration.initial_policy={tiny_model}", "--set", "prompts.m=4"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for expected in ("stages to run: prompts, generate, score, select, report, train", "policy: ", "reward model: rm-", "would draw 4",
                     "lake versions", "DPO: reference=initial"):
        assert expected in proc.stdout
    assert ready_lake.versions(list(S.CORE_TABLES)) == before


def test_a_score_count_mismatch_is_an_error(ready_lake: Lake, tiny_model: str, tmp_path: Path, monkeypatch) -> None:
    import prefhouse.training.scoring as scoring

    real = scoring.score_responses
    monkeypatch.setattr(scoring, "score_responses", lambda *a, **k: real(*a, **k).head(-1))  # one response silently unscored
    with pytest.raises(GateError, match="exactly_n_scores_per_prompt"):
        run(ready_lake, 1, small_config(tiny_model), tmp_path)
    assert not ready_lake.exists(S.PAIRS) or ready_lake.read(S.PAIRS, filter=pads.field("iteration") == 1).num_rows == 0


def test_train_stage_refuses_a_failed_report_until_overridden(ready_lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    from prefhouse.quality.report import ReportFailed

    from prefhouse.training.snapshot import resolve

    config = small_config(tiny_model)
    # a duplicate that skipped the gates, of the first pair DPO's snapshot takes from its source (so both copies are in it)
    dpo = config.dpo
    first = resolve(ready_lake, dpo.selection(iterations=dpo.pairs, max_iteration=1)).train.column("pair_id")[0].as_py()
    ready_lake.append(S.PAIRS, ready_lake.read(S.PAIRS, filter=pads.field("pair_id") == first), S.PAIR_PARTITIONS)
    with pytest.raises(ReportFailed, match="pair_id_unique"):
        run(ready_lake, 1, config, tmp_path)
    events = pl.from_arrow(ready_lake.read(S.ITERATIONS)).sort("at")
    assert events.filter(pl.col("stage") == "report")["status"].to_list() == ["started", "done"]
    assert events.filter(pl.col("stage") == "train")["status"].to_list() == ["started", "failed"]
    timings, summary = run(ready_lake, 1, config, tmp_path, override_quality=True)
    assert list(timings) == ["train", "evaluate"] and summary["report_status"] == "failed"
    model = [m for m in ready_lake.read(S.MODELS).to_pylist() if m["job_kind"] == "dpo"][-1]
    assert json.loads(model["quality"])["quality_override"] is True


def test_reselecting_with_other_settings_replaces_the_iterations_pairs(ready_lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    """One pair per prompt per iteration in the lake, whatever is re-run: a new strategy replaces the pairs in one commit."""
    from prefhouse.pipelines.online.stages import Iteration
    from prefhouse.training.snapshot import Selection, resolve

    def through_select(config: IterationConfig, stages: list[str]) -> None:
        Iteration(ready_lake, 1, config, tmp_path / "models", tmp_path / "reports", progress=False).run(stages)

    through_select(small_config(tiny_model), ["prompts", "generate", "score", "select"])
    first = pl.from_arrow(ready_lake.read(S.PAIRS, filter=pads.field("iteration") == 1))
    version = ready_lake.version(S.PAIRS)
    through_select(small_config(tiny_model), ["select"])  # the same settings again: nothing to write
    assert ready_lake.version(S.PAIRS) == version
    # the user's command: --from-stage select with another strategy re-runs select, report, train (and evaluate, off here)
    sets = [x for o in small_overrides(tiny_model) + ["select.strategy=max_random", "select.seed=3"] for x in ("--set", o)]
    assert main(["--iter", "1", "--lake", ready_lake.uri, "--preset", "cpu", "--from-stage", "select", *sets,
                 "--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]) == 0
    events = pl.from_arrow(ready_lake.read(S.ITERATIONS)).filter(pl.col("status") == "done").sort("at")["stage"].to_list()
    assert events[-4:] == ["select", "report", "train", "evaluate"] and events.count("train") == 1
    second = pl.from_arrow(ready_lake.read(S.PAIRS, filter=pads.field("iteration") == 1))
    assert ready_lake.version(S.PAIRS) == version + 1  # one commit: old pairs out, new pairs in
    assert second["prompt_id"].is_unique().all() and set(second["rule"]) == {"select.max_random"}
    assert second["prompt_id"].n_unique() == first["prompt_id"].n_unique()
    assert pl.from_arrow(ready_lake.read(S.PAIRS, version=version, filter=pads.field("iteration") == 1))["rule"].unique().to_list() == ["select.max_min"]
    snap = resolve(ready_lake, Selection(sources=("online",), iterations="all", max_iteration=1))
    online = pl.from_arrow(snap.train)
    assert online["prompt_id"].is_unique().all() and online.height == second.height  # what training reads: one pair per prompt


def test_until_report_then_dpo_elsewhere_then_the_same_command_goes_on(ready_lake: Lake, tiny_model: str, tmp_path: Path, monkeypatch) -> None:
    """``--until report`` stops before DPO; a DPO job run apart (a cluster's) registers the model; the same command without
    ``--until`` finds it and marks the train stage done. On the way: responses cut at max_new_tokens are counted and, with
    ``generate.keep_truncated = false``, never paired; prompts over ``score.max_length`` are cut from the left and counted."""
    from prefhouse.pipelines.online import generate as G
    from prefhouse.training.train_dpo import train_dpo

    real = G.TransformersEngine.generate

    def two_whole_responses_of_four(self, *args, **kwargs):  # a random tiny model nearly never stops: make samples 0-1 whole
        out = real(self, *args, **kwargs)
        return out.with_columns(pl.when(pl.col("sample_index") < 2).then(pl.lit("stop")).otherwise(pl.lit("length")).alias("finish_reason"))

    monkeypatch.setattr(G.TransformersEngine, "generate", two_whole_responses_of_four)
    sets = [x for o in small_overrides(tiny_model) + ["generate.keep_truncated=false", "score.max_length=40"] for x in ("--set", o)]
    common = ["--iter", "1", "--lake", ready_lake.uri, *sets, "--models-dir", str(tmp_path / "models"), "--reports-dir", str(tmp_path / "reports")]
    assert main([*common, "--until", "report"]) == 0
    events = pl.from_arrow(ready_lake.read(S.ITERATIONS)).filter(pl.col("status") == "done").sort("at")
    assert events["stage"].to_list() == ["prompts", "generate", "score", "select", "report"]
    counts = {s: json.loads(c) for s, c in events.select("stage", "counts").iter_rows()}
    responses = pl.from_arrow(ready_lake.read(S.RESPONSES))
    assert counts["select"]["responses_cut_at_max_new_tokens"] == counts["select"]["cut_responses_left_out"] == 8
    pairs = pl.from_arrow(ready_lake.read(S.PAIRS, filter=pads.field("iteration") == 1))
    paired = set(pairs["raw_keys"].explode().to_list())
    assert paired and paired <= set(responses.filter(pl.col("finish_reason") == "stop")["response_id"])  # only whole responses
    scores = pl.from_arrow(ready_lake.read(S.SCORES))
    assert counts["score"]["scored_prompt_truncated"] == scores.filter(pl.col("truncation") == "prompt").height > 0
    report = (tmp_path / "reports" / "iteration-1" / "report.md").read_text().split("## Online responses cut short", 1)[1].split("\n## ", 1)[0]
    assert f"| 1 | 16 | 8 | {counts['score']['scored_prompt_truncated']} |" in report

    config = small_config(tiny_model, "transformers", "generate.keep_truncated=false", "score.max_length=40")
    elsewhere = train_dpo(ready_lake, config.dpo, 1, tiny_model, tiny_model, tmp_path / "models", progress=False)  # e.g. on a cluster
    assert main(common) == 0
    train = json.loads(pl.from_arrow(ready_lake.read(S.ITERATIONS)).filter((pl.col("stage") == "train") & (pl.col("status") == "done"))["counts"][0])
    assert train["new_policy_id"] == elsewhere["model_id"]
    assert [m["job_kind"] for m in ready_lake.read(S.MODELS).to_pylist()].count("dpo") == 1  # found, not trained again
