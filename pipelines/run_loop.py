"""The main job: the whole recipe on the embedded default, end to end, in one command.

    python pipelines/run_loop.py                      # cpu preset: curate → reward model → iterations 1, 2 → SQL summary
    python pipelines/run_loop.py --iterations 3 --preset paper --engine vllm

1. curate the bundled samples of the ten sources into the lake (idempotent: a second run appends nothing);
2. train the reward model on a snapshot of the curated pairs (skipped when this exact job already ran);
3. run online iterations 1..K (``pipelines/run_iteration.py``; each resumes where it stopped), each ending by
   evaluating its new policy against the previous one and π0;
4. print every historical pair summarised by iteration (``sql/pairs_by_iteration.sql``) and the evaluation
   table (``sql/evaluations.sql``).
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: the process is set up and a --help answered here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.process import start
    from prefhouse.pipelines.parsers import loop_parser

    start(loop_parser)

import sys
import time

from prefhouse.pipelines.core.config import build, layers_from_args
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.sql import format_table, run_query
from prefhouse.pipelines.curate import curate, format_summary
from prefhouse.pipelines.parsers import loop_parser as build_parser
from prefhouse.pipelines.run_iteration import IterationConfig, run_iteration
from prefhouse.pipelines.sources.settings import resolve_sources
from prefhouse.training import models
from prefhouse.training.train_rm import RewardModelSettings, train_reward_model


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layers = layers_from_args(args)  # every setting checked before any work
    config = IterationConfig.from_layers(layers)
    rm_settings = build(RewardModelSettings, layers, "reward_model")
    lake = Lake(args.lake)
    timings = {}

    t0 = time.perf_counter()
    print("== 1/4 curate the ten sources", file=sys.stderr, flush=True)
    run, curated = curate(resolve_sources(args.sources), lake, args.data_dir)
    print(f"curation run {run.run_id}: {run.rows_in} raw rows, {run.rows_out} new pairs\n{format_summary(curated)}", file=sys.stderr)
    timings["curate"] = time.perf_counter() - t0

    t = time.perf_counter()
    print("== 2/4 reward model", file=sys.stderr, flush=True)
    models.materialise_default(args.models_dir)
    rm = train_reward_model(lake, rm_settings, args.models_dir)
    metrics = rm["metrics"]
    print(f"reward model {rm['model_id']}: {metrics}", file=sys.stderr)
    timings["reward_model"] = time.perf_counter() - t

    summaries = {}
    for n in range(1, args.iterations + 1):
        t = time.perf_counter()
        print(f"== 3/4 online iteration {n} of {args.iterations}", file=sys.stderr, flush=True)
        stage_times, summaries[n] = run_iteration(lake, n, config, models_dir=args.models_dir, reports_dir=args.reports_dir)
        timings[f"iteration_{n}"] = time.perf_counter() - t
        print(f"iteration {n}: " + ", ".join(f"{s} {v:.0f} s" for s, v in stage_times.items()), file=sys.stderr)

    print("== 4/4 every historical pair, by iteration (sql/pairs_by_iteration.sql)", file=sys.stderr, flush=True)
    print(format_table(run_query(lake, "pairs_by_iteration")))
    for n, summary in summaries.items():
        print(f"\niteration {n}: " + ", ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in summary.items()))
    if config.evaluate.enabled:
        print("\ndid the policy get better? (sql/evaluations.sql: π_t against π_t-1 and π0 on the fixed evaluation set)")
        print(format_table(run_query(lake, "evaluations")))
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()) + f", total {time.perf_counter() - t0:.0f}")
    return 0


if __name__ == "__main__":
    from prefhouse.pipelines.core.errors import run
    from prefhouse.pipelines.core.process import finish

    finish(run(main))
