"""Evaluate any policy on the lake's fixed evaluation set: against π0 and any other policies, under both judges.

    prefhouse evaluate --model dpo-0892d1f42230                       # against π0
    prefhouse evaluate --model dpo-0892d1f42230 --against dpo-9712609780b9 --set evaluate.temperature=0.7

The same machinery as every iteration's evaluate stage (``pipelines/online/evaluate.py``): the policies answer
the evaluation prompts once (answers are reused across calls and iterations), the proxy reward model and the
second judge score them, and the metrics land in ``evaluations`` (partition ``iteration = --iter``, 0 by
default for a standalone evaluation) and are printed.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: the process is set up and a --help answered here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.process import start
    from prefhouse.pipelines.parsers import evaluate_parser

    start(evaluate_parser)

from prefhouse.pipelines.core.config import layers_from_args
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.online.evaluate import evaluate
from prefhouse.pipelines.online.stages import Iteration, IterationConfig, find_model, local_model
from prefhouse.pipelines.parsers import evaluate_parser as build_parser
from prefhouse.training import models


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = IterationConfig.from_layers(layers_from_args(args))
    lake = Lake(args.lake)
    context = Iteration(lake, max(args.iteration, 1), config, args.models_dir)
    initial = context.initial_policy()

    def policy(spec: str) -> tuple[str, str]:  # latest: the newest DPO policy
        return local_model(spec, args.models_dir) if spec == models.DEFAULT else find_model(lake, spec, "dpo")

    opponents = {"initial": initial, **{f"against:{spec}": policy(spec) for spec in args.against}}
    judges = {"proxy": context.reward_model()}
    second = context.second_judge()
    if second is not None:
        judges["second"] = second
    counts = evaluate(lake, args.iteration, policy(args.model), opponents, initial, judges, config.evaluate,
                      list(config.prompts.mixture), config.generate.engine, context.run_id, stop_token_ids=config.generate.stop_token_ids)
    print(", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    from prefhouse.pipelines.core.errors import run
    from prefhouse.pipelines.core.process import finish

    finish(run(main))
