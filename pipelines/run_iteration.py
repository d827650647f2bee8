"""One online iteration of the recipe (RECIPE §3): prompts → generate → score → select → report → train.

    python pipelines/run_iteration.py --iter 1                       # cpu preset, embedded models
    python pipelines/run_iteration.py --iter 2 --preset paper --engine vllm --set generate.n=4
    python pipelines/run_iteration.py --iter 2 --dry-run             # the plan: prompts, models, snapshot versions

Every stage reads its inputs from the lake and appends its outputs through the quality gates, keyed by
deterministic ids, and logs ``started`` / ``done`` / ``failed`` in the ``iterations`` table. A crash or kill
anywhere leaves only whole commits behind; the same command then skips the stages that are done and, inside
an interrupted stage, the work whose rows already landed (generation and scoring commit prompt by chunk), so
the result is the rows an uninterrupted run would have written. ``--from-stage S`` re-runs S and what follows
(rows already present are not written again); ``--force`` re-runs every stage. A second run while one holds
the iteration lock fails at once.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: the process is set up and a --help answered here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.process import start
    from prefhouse.pipelines.parsers import iterate_parser

    start(iterate_parser)

import time
from pathlib import Path

from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.config import layers_from_args
from prefhouse.pipelines.core.errors import run as run_job
from prefhouse.pipelines.core.lake import Lake, LakeError
from prefhouse.pipelines.online.draw_prompts import draw_prompts
from prefhouse.pipelines.online.generate import pick_engine
from prefhouse.pipelines.online.iterations import STAGES, IterationOrderError, pending_stages, require_previous_complete, stage_states
from prefhouse.pipelines.online.stages import Iteration, IterationConfig
from prefhouse.pipelines.parsers import iterate_parser as build_parser
from prefhouse.training import models

__all__ = ["Iteration", "IterationConfig", "main", "plan", "run_iteration"]


def plan(lake: Lake, it: Iteration, stages: list[str]) -> str:
    """What a run would do, without doing it."""
    lines = [f"iteration {it.n_iter}: stages to run: {', '.join(stages) or 'none (done)'}"]
    states = stage_states(lake, it.n_iter)
    lines.append("stage states: " + ", ".join(f"{s}={states.get(s, 'not started')}" for s in STAGES))
    try:
        lines.append("policy: %s (%s)" % it.policy())
    except IterationOrderError as exc:
        lines.append(f"policy: unavailable: {exc}")
    try:
        lines.append("reward model: %s (%s)" % it.reward_model())
    except LakeError as exc:
        lines.append(f"reward model: unavailable: {exc}")
    drawn = it.drawn()
    if drawn.height == 0 and lake.exists(S.PROMPTS):
        drawn = draw_prompts(lake, it.n_iter, it.config.prompts)
        lines.append(f"prompts (would draw {drawn.height}):")
    else:
        lines.append(f"prompts (drawn: {drawn.height}):")
    for source, n in drawn.group_by("source").len().sort("source").iter_rows():
        lines.append(f"  {source}: {n}")
    lines += [f"  {p}: {t[:80]!r}" for p, t in drawn.select("prompt_id", "prompt_text").head(5).iter_rows()]
    lines.append(f"lake versions: {lake.versions([S.PAIRS, S.PROMPTS, S.RESPONSES, S.SCORES])}")
    dpo = it.config.dpo
    lines.append(f"DPO: reference={dpo.reference}, pairs={dpo.pairs}, sources={list(dpo.sources) or dpo.mixture}, beta={dpo.beta}, "
                 f"lr={dpo.learning_rate}, epochs={dpo.epochs}")
    g = it.config.generate
    lines.append(f"generate: engine={pick_engine(g.engine)}, n={g.n}, temperatures={list(g.temperatures)}, max_new_tokens={g.max_new_tokens}, "
                 f"executor={g.executor} x{g.replicas}; score: executor={it.config.score.executor} x{it.config.score.replicas}")
    return "\n".join(lines)


def run_iteration(lake: Lake, iteration: int, config: IterationConfig, from_stage: str | None = None, force: bool = False,
                  models_dir: Path = models.DEFAULT_DIR, reports_dir: Path | None = None, override_quality: bool = False,
                  progress: bool = True, until: str | None = None) -> tuple[dict, dict]:
    """Run what is left of ``iteration`` (up to and including ``until``); returns (seconds per stage, summary)."""
    require_previous_complete(lake, iteration)
    with lake.lock("iteration"):
        it = Iteration(lake, iteration, config, models_dir, reports_dir, override_quality, progress)
        stages = pending_stages(lake, iteration, from_stage, force, until)
        if "score" in stages:
            it.reward_model()  # a missing reward model fails now, not after generation
        timings = it.run(stages)
        return timings, it.summary()


def main(argv: list[str] | None = None) -> int:
    """Exit codes as every job's (:mod:`prefhouse.pipelines.core.errors`): 0 done, 1 a gate or the report refused, 2 usage."""
    return run_job(_iterate_command, argv)


def _iterate_command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    lake = Lake(args.lake)
    config = IterationConfig.from_layers(layers_from_args(args))
    if args.dry_run:
        require_previous_complete(lake, args.iteration)
        it = Iteration(lake, args.iteration, config, args.models_dir, args.reports_dir)
        print(plan(lake, it, pending_stages(lake, args.iteration, args.from_stage, args.force, args.until)))
        return 0
    t0 = time.perf_counter()
    timings, summary = run_iteration(lake, args.iteration, config, args.from_stage, args.force, args.models_dir, args.reports_dir,
                                     args.override_quality, until=args.until)
    print(f"\niteration {args.iteration} finished in {time.perf_counter() - t0:.0f} s")
    print("time per stage: " + (", ".join(f"{s} {t:.1f} s" for s, t in timings.items()) or "nothing left to run"))
    for key, value in summary.items():
        print(f"  {key}: {round(value, 3) if isinstance(value, float) else value}")
    return 0


if __name__ == "__main__":
    from prefhouse.pipelines.core.process import finish

    finish(main())
