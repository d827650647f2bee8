"""The online iteration's stages over one lake, in their fixed order: prompts → generate → score → select → report → train → evaluate.

Each stage is a method of :class:`Iteration`, the context the stages share (lake, iteration number,
settings, models and reports folders, run id); :data:`STAGE_ORDER` names them in order. Every stage reads
its inputs from the lake and appends its outputs through the quality gates, keyed by deterministic ids,
so a stage re-run after a crash writes only what is missing (``pipelines/run_iteration.py`` drives them).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import polars as pl
import pyarrow.dataset as pads
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake, LakeError
from prefhouse.pipelines.core.runlog import new_run_id
from prefhouse.pipelines.online.draw_prompts import draw_prompts
from prefhouse.pipelines.online.evaluate import eval_prompt_set, evaluate
from prefhouse.pipelines.online.executors import run_shards
from prefhouse.pipelines.online.generate import GenerateReplica, pick_engine
from prefhouse.pipelines.online.iterations import IterationOrderError, latest_event, record
from prefhouse.pipelines.online.select_pairs import online_pairs, select_pairs
from prefhouse.pipelines.online.settings import IterationConfig
from prefhouse.quality.guard import append_pairs, append_responses, append_scores
from prefhouse.training import models
from prefhouse.training.jobs import model_key


def local_model(spec: str, models_dir: Path) -> tuple[str, str]:
    """(model id, path) of ``default`` (the embedded model, materialised once), a local path or a hub id."""
    path = models.resolve(spec, models_dir)
    return model_key(path, models_dir), path


def find_model(lake: Lake, spec: str, kind: str) -> tuple[str, str]:
    """(model id, path) for ``latest`` (the newest succeeded model of ``kind``), a registered id, or a path / hub id."""
    rows = [r for r in (lake.read(S.MODELS).to_pylist() if lake.exists(S.MODELS) else []) if r["status"] == "succeeded"]
    if spec == "latest":
        mine = sorted((r for r in rows if r["job_kind"] == kind), key=lambda r: r["created_at"])
        if not mine:
            raise LakeError(f"no {kind} is registered in {lake.uri}: train one first (python training/train_rm.py --preset cpu)")
        return mine[-1]["model_id"], mine[-1]["output_path"]
    named = [r for r in rows if r["model_id"] == spec]
    if named:
        return spec, named[-1]["output_path"]
    return spec, spec


def _read(lake: Lake, table: str, iteration: int, columns: list[str] | None = None) -> pl.DataFrame:
    schema = S.CORE_TABLES[table][0]
    if not lake.exists(table):
        return pl.from_arrow(schema.empty_table().select(columns or schema.names))
    return pl.from_arrow(lake.read(table, columns=columns, filter=pads.field("iteration") == iteration))


class Iteration:
    """Iteration N's stages over one lake; each stage method returns the counts it logs."""

    def __init__(self, lake: Lake, iteration: int, config: IterationConfig, models_dir: Path = models.DEFAULT_DIR,
                 reports_dir: Path | None = None, override_quality: bool = False, progress: bool = True):
        self.lake, self.n_iter, self.config = lake, iteration, config
        self.models_dir, self.reports_dir, self.override_quality, self.progress = models_dir, reports_dir, override_quality, progress
        self.run_id = new_run_id(f"iteration-{iteration}", datetime.now(UTC))
        self.report = None

    # ------------------------------------------------------------------ models
    def policy(self) -> tuple[str, str]:
        """Iteration 1: π0. Iteration N: the policy iteration N-1's train stage produced."""
        if self.n_iter == 1:
            return self.initial_policy()
        done = latest_event(self.lake, self.n_iter - 1, "train", "done")
        if done is None:
            raise IterationOrderError(f"iteration {self.n_iter - 1} produced no policy; run: python pipelines/run_iteration.py --iter {self.n_iter - 1}")
        counts = json.loads(done["counts"])
        return counts["new_policy_id"], counts["new_policy_path"]

    def reward_model(self) -> tuple[str, str]:
        """The reward model this iteration scores with: the one its score stage already used, else the config's.

        ``latest`` is resolved once, by iteration 1: later iterations score with the model iteration 1 used, as
        the paper's fixed proxy reward model, even when a newer one has been registered since.
        """
        spec = self.config.iteration.reward_model
        for iteration, status in ((self.n_iter, "done"), (self.n_iter, "started")) + (((1, "done"),) if spec == "latest" else ()):
            event = latest_event(self.lake, iteration, "score", status)
            if event and event["reward_model_id"]:
                return find_model(self.lake, event["reward_model_id"], "reward_model")
        return find_model(self.lake, spec, "reward_model")

    # ------------------------------------------------------------------ stages
    def drawn(self) -> pl.DataFrame:
        return _read(self.lake, S.DRAWN_PROMPTS, self.n_iter).sort("draw_rank")

    def stage_prompts(self) -> dict:
        existing = self.drawn()
        if existing.height:
            return {"prompts": existing.height, "reused": True}
        if self.config.evaluate.enabled:  # the evaluation set first, so that no iteration can draw one of its prompts
            eval_prompt_set(self.lake, self.config.evaluate, list(self.config.prompts.mixture), self.run_id)
        drawn = draw_prompts(self.lake, self.n_iter, self.config.prompts)
        rows = drawn.with_columns(
            pl.lit(self.n_iter, pl.Int32).alias("iteration"), pl.int_range(pl.len(), dtype=pl.Int32).alias("draw_rank"),
            pl.lit(self.config.prompts.seed, pl.Int64).alias("seed"), pl.lit(self.run_id).alias("run_id"),
            pl.lit(datetime.now(UTC), pl.Datetime("us", "UTC")).alias("created_at"),
        ).select(S.DRAWN_PROMPT_SCHEMA.names)
        self.lake.create(S.DRAWN_PROMPTS, S.DRAWN_PROMPT_SCHEMA, ["iteration"])
        self.lake.append(S.DRAWN_PROMPTS, rows.to_arrow().cast(S.DRAWN_PROMPT_SCHEMA), ["iteration"])
        return {"prompts": rows.height, "by_source": dict(drawn.group_by("source").len().sort("source").iter_rows())}

    def stage_generate(self) -> dict:
        """Generate chunk by chunk over fixed chunks of the draw order, each committed whole; done chunks are skipped."""
        prompts = self.drawn()
        done = set(_read(self.lake, S.RESPONSES, self.n_iter, ["prompt_id"])["prompt_id"].to_list())
        settings = self.config.generate
        size = settings.chunk_prompts
        chunks = [prompts.slice(i, size).filter(~pl.col("prompt_id").is_in(list(done))) for i in range(0, prompts.height, size)]
        chunks = [c for c in chunks if c.height]
        todo = sum(c.height for c in chunks)
        policy_id, policy_path = self.policy()
        counts = {"prompts": prompts.height, "already_generated": prompts.height - todo, "engine": pick_engine(settings.engine),
                  "executor": settings.executor, "replicas": settings.replicas}
        if not chunks:
            return counts
        replica = partial(GenerateReplica, settings.engine, policy_path, settings.sampling(), self.n_iter, policy_id, self.run_id,
                          settings.vllm_options(), self.progress and settings.executor == "local")
        tokens, t0 = 0, time.perf_counter()
        for responses in run_shards(settings, chunks, replica, "generate", self.progress):
            append_responses(self.lake, responses, self.n_iter, settings.n)
            tokens += int(responses["n_tokens"].sum())
        seconds = time.perf_counter() - t0
        return {**counts, "generated_prompts": todo, "new_tokens": tokens, "tokens_per_s": tokens / seconds if seconds else None}

    def stage_score(self) -> dict:
        from prefhouse.training.scoring import ScoreReplica

        responses = _read(self.lake, S.RESPONSES, self.n_iter)
        scored = set(_read(self.lake, S.SCORES, self.n_iter, ["response_id"])["response_id"].to_list())
        todo = responses.filter(~pl.col("response_id").is_in(list(scored))).sort("prompt_id", "sample_index")
        rm_id, rm_path = self.reward_model()
        n = self.config.generate.n
        settings = self.config.score
        prompt_ids = todo["prompt_id"].unique(maintain_order=True).to_list()
        chunk = self.config.generate.chunk_prompts
        shards = [todo.filter(pl.col("prompt_id").is_in(prompt_ids[start:start + chunk])) for start in range(0, len(prompt_ids), chunk)]
        replica = partial(ScoreReplica, rm_path, rm_id, self.run_id, settings.max_length, settings.batch_tokens,
                          self.progress and settings.executor == "local")
        for scores in run_shards(settings, shards, replica, "score", self.progress):
            append_scores(self.lake, scores, self.n_iter, n)
        scores = _read(self.lake, S.SCORES, self.n_iter, ["response_id", "truncation"])
        if scores.height != responses.height:
            raise RuntimeError(f"iteration {self.n_iter}: {responses.height} responses but {scores.height} scores; refusing to select")
        cuts = dict(scores.group_by("truncation").len().iter_rows())
        return {"responses": responses.height, "scored_now": todo.height, "reward_model_id": rm_id,
                "scored_prompt_truncated": cuts.get("prompt", 0), "scored_too_long": cuts.get("response", 0)}

    def stage_select(self) -> dict:
        responses = _read(self.lake, S.RESPONSES, self.n_iter, ["response_id", "prompt_id", "prompt", "response", "policy_model_id", "finish_reason"])
        cut = responses.filter(pl.col("finish_reason") == "length").height
        short_prompts = 0
        if not self.config.generate.keep_truncated:  # left out: the cut responses, then prompts with fewer than two others
            before = responses["prompt_id"].n_unique()
            responses = responses.filter(pl.col("finish_reason") != "length").filter(pl.len().over("prompt_id") >= 2)
            short_prompts = before - responses["prompt_id"].n_unique()
        scores = _read(self.lake, S.SCORES, self.n_iter, ["response_id", "reward", "reward_model_id"])
        scored = responses.join(scores, on="response_id", how="inner")
        settings = self.config.select
        chosen = select_pairs(scored.select("prompt_id", "response_id", "response", "reward"), settings)
        rm_id = scores["reward_model_id"][0] if scores.height else None
        policy_id = responses["policy_model_id"][0] if responses.height else None
        pairs = online_pairs(chosen, scored.unique("prompt_id").select("prompt_id", "prompt"), self.n_iter, settings, rm_id, policy_id, self.run_id)
        landed = _read(self.lake, S.PAIRS, self.n_iter, ["pair_id", "rule_version"])
        # other selection settings than the pairs in the lake were made with: the new selection replaces them, in one commit
        reselect = landed.height > 0 and pairs.height > 0 and set(landed["rule_version"]) != set(pairs["rule_version"])
        new = pairs if reselect else pairs.filter(~pl.col("pair_id").is_in(landed["pair_id"].implode()))
        counts = {"prompts": chosen.prompts, "pairs": pairs.height, "ties_dropped": chosen.ties, "identical_dropped": chosen.identical,
                  "already_present": pairs.height - new.height, "replaced": landed.height if reselect else 0,
                  "strategy": settings.strategy, "length_penalty": settings.length_penalty,
                  "responses_cut_at_max_new_tokens": cut, "cut_responses_left_out": 0 if self.config.generate.keep_truncated else cut,
                  "prompts_without_two_whole_responses": short_prompts}
        if new.height:
            run_counts = (("online", "pair", "kept", None, new.height), ("online", "pair", "filtered", "tie", chosen.ties),
                          ("online", "pair", "filtered", "identical", chosen.identical),
                          ("online", "response", "filtered", "cut_at_max_new_tokens", counts["cut_responses_left_out"]))
            result = append_pairs(self.lake, new, self.n_iter, pipeline="select", counts=run_counts, replace=reselect)
            counts.update(landed=result.landed, quarantined=result.quarantined)
        return counts

    def stage_report(self) -> dict:
        from prefhouse.quality.report import DEFAULT_OUT, ReportScope, build_report
        from prefhouse.training.snapshot import resolve

        dpo = self.config.dpo  # the report describes exactly the snapshot the train stage will read
        snapshot = resolve(self.lake, dpo.selection(iterations=dpo.pairs, max_iteration=self.n_iter))
        self.report = build_report(self.lake, self.n_iter, self.reports_dir or DEFAULT_OUT, scope=ReportScope.of(snapshot))
        for line in [f"FAILED: {f}" for f in self.report.failures] + [f"WARNING: {w}" for w in self.report.warnings]:
            print(f"  report: {line}", file=sys.stderr)
        return {"status": self.report.status, "snapshot_hash": self.report.snapshot_hash, "failures": self.report.failures, "warnings": self.report.warnings,
                "html": str(self.report.html_path), "markdown": str(self.report.markdown_path)}

    def stage_train(self) -> dict:
        from prefhouse.training.train_dpo import train_dpo

        policy_id, policy_path = self.policy()
        row = train_dpo(self.lake, self.config.dpo, self.n_iter, policy_path, self.initial_policy()[1], self.models_dir, self.override_quality,
                        report=self.report, reports_dir=self.reports_dir, progress=self.progress)
        return {"new_policy_id": row["model_id"], "new_policy_path": row["output_path"], "trained_from": policy_id,
                "train_pairs": row["train_pairs"], "snapshot_hash": row["snapshot_hash"]}

    def initial_policy(self) -> tuple[str, str]:
        return local_model(self.config.iteration.initial_policy, self.models_dir)

    def second_judge(self) -> tuple[str, str] | None:
        """The judge DPO never optimised against: a reward model trained by the ``[judge]`` section (once), or the one named."""
        spec = self.config.evaluate.judge
        if spec == "none":
            return None
        if spec == "train":
            from prefhouse.training.train_rm import train_reward_model

            row = train_reward_model(self.lake, self.config.judge, self.models_dir, progress=self.progress, job_kind="judge")
            return row["model_id"], row["output_path"]
        return find_model(self.lake, spec, "judge")

    def stage_evaluate(self) -> dict:
        """π_N (this iteration's DPO output) against π_{N-1} and π0 on the evaluation set, under the proxy and the second judge."""
        settings = self.config.evaluate
        if not settings.enabled:
            return {"skipped": "evaluate.enabled = false"}
        done = latest_event(self.lake, self.n_iter, "train", "done")
        if done is None:
            raise IterationOrderError(f"iteration {self.n_iter} has trained no policy yet: run its train stage first")
        counts = json.loads(done["counts"])
        new = (counts["new_policy_id"], counts["new_policy_path"])
        initial = self.initial_policy()
        judges = {"proxy": self.reward_model()}
        second = self.second_judge()
        if second is not None:
            judges["second"] = second
        return evaluate(self.lake, self.n_iter, new, {"previous": self.policy(), "initial": initial}, initial, judges, settings,
                        list(self.config.prompts.mixture), self.config.generate.engine, self.run_id, self.progress,
                        self.config.generate.stop_token_ids)

    # ------------------------------------------------------------------ driver
    def stage(self, name: str) -> Callable[[], dict]:
        """The method that runs stage ``name`` (one of STAGES, in STAGE_ORDER)."""
        return {"prompts": self.stage_prompts, "generate": self.stage_generate, "score": self.stage_score,
                "select": self.stage_select, "report": self.stage_report, "train": self.stage_train, "evaluate": self.stage_evaluate}[name]

    def run(self, stages: list[str]) -> dict[str, float]:
        """Run ``stages`` in order, logging each; returns seconds per stage."""
        timings = {}
        for stage in stages:
            print(f"[iteration {self.n_iter}] {stage} …", file=sys.stderr, flush=True)
            fields = self._model_fields(stage)
            before = self.lake.versions(list(S.CORE_TABLES))
            record(self.lake, self.n_iter, stage, "started", self.run_id, versions_read=before, **fields)
            t0 = time.perf_counter()
            try:
                counts = self.stage(stage)()
            except BaseException as exc:
                record(self.lake, self.n_iter, stage, "failed", self.run_id, seconds=time.perf_counter() - t0,
                       error=f"{type(exc).__name__}: {exc}", **fields)
                raise
            timings[stage] = time.perf_counter() - t0
            after = self.lake.versions(list(S.CORE_TABLES))
            written = {t: v for t, v in after.items() if before.get(t) != v and t != S.ITERATIONS}
            record(self.lake, self.n_iter, stage, "done", self.run_id, versions_read=before, versions_written=written, counts=counts,
                   seconds=timings[stage], **fields)
            print(f"[iteration {self.n_iter}] {stage} done in {timings[stage]:.1f} s: {_short(counts)}", file=sys.stderr, flush=True)
        return timings

    def _model_fields(self, stage: str) -> dict:
        fields = {}
        if stage in ("generate", "train"):
            fields["policy_model_id"] = self.policy()[0]
        if stage in ("score", "evaluate"):
            fields["reward_model_id"] = self.reward_model()[0]
        return fields

    def summary(self) -> dict:
        """What the iteration made: pairs, drops, mean reward and length of chosen vs rejected."""
        pairs = _read(self.lake, S.PAIRS, self.n_iter, ["chosen_score", "rejected_score", "chosen", "rejected"])
        select = latest_event(self.lake, self.n_iter, "select", "done")
        train = latest_event(self.lake, self.n_iter, "train", "done")
        report = latest_event(self.lake, self.n_iter, "report", "done")
        loads = lambda e: json.loads(e["counts"]) if e else {}  # noqa: E731
        stats = pairs.select(
            pl.len().alias("pairs"), pl.col("chosen_score").mean().alias("mean_reward_chosen"), pl.col("rejected_score").mean().alias("mean_reward_rejected"),
            pl.col("chosen").list.last().struct.field("content").str.len_chars().mean().alias("mean_chars_chosen"),
            pl.col("rejected").list.last().struct.field("content").str.len_chars().mean().alias("mean_chars_rejected"),
        ).row(0, named=True)
        return {**stats, "ties_dropped": loads(select).get("ties_dropped"), "identical_dropped": loads(select).get("identical_dropped"),
                "report": loads(report).get("html"), "report_status": loads(report).get("status"), "new_policy": loads(train).get("new_policy_path")}


def _short(counts: dict) -> str:
    return ", ".join(f"{k}={v if not isinstance(v, float) else round(v, 3)}" for k, v in counts.items() if not isinstance(v, (list, dict)))


