"""Evaluate any policy on the lake's fixed evaluation set: against π0 and any other policies, under both judges.

    prefhouse evaluate --model dpo-0892d1f42230                       # against π0
    prefhouse evaluate --model dpo-0892d1f42230 --against dpo-9712609780b9 --set evaluate.temperature=0.7

The same machinery as every iteration's evaluate stage (``pipelines/online/evaluate.py``): the policies answer
the evaluation prompts once (answers are reused across calls and iterations), the proxy reward model and the
second judge score them, and the metrics land in ``evaluations`` (partition ``iteration = --iter``, 0 by
default for a standalone evaluation) and are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefhouse.pipelines.core.config import add_config_arguments, layers_from_args
from prefhouse.pipelines.core.lake import DEFAULT_LAKE, Lake
from prefhouse.pipelines.online.evaluate import evaluate
from prefhouse.pipelines.online.stages import Iteration, IterationConfig, find_model, local_model
from prefhouse.training import models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prefhouse evaluate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--model", required=True, help="the policy to evaluate: a registered model id, a path or a hub id")
    parser.add_argument("--against", action="append", default=[], help="another policy to compare with (repeatable); π0 always is")
    parser.add_argument("--iter", dest="iteration", type=int, default=0, help="the evaluations partition to record under (default 0: standalone)")
    parser.add_argument("--models-dir", type=Path, default=models.DEFAULT_DIR)
    add_config_arguments(parser, IterationConfig.SECTIONS, DEFAULT_LAKE, aliases={"--engine": "generate.engine"})
    args = parser.parse_args(argv)
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

    sys.exit(run(main))
