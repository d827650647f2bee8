"""The Ray executor against the local one, on the same shards: generation and scoring throughput with 1 and 2 replicas.

    python tests/benchmarks/bench_ray.py --prompts 16 --n 4 --max-new-tokens 48
    python tests/benchmarks/bench_ray.py --engine vllm --prompts 8 --n 2 --max-new-tokens 16   # vLLM's CPU build in the actors

Same process, same inputs, the embedded SmolLM2-135M (materialised on first use) as the policy and, with a
scalar head, as the reward model: prompts of the bundled samples, cut into shards of ``--shard`` prompts as
the iteration cuts them. Runs: local (this process, torch on every core), then Ray with 1 and 2 replicas
(one CPU each: Ray gives an actor as many torch threads as CPUs). A local Ray is started once, before the
timed runs; each Ray run includes starting its actors and loading the model in them, as a stage does.
Prints seconds, responses/s and tokens/s of each and the ratios; checks that every run made the same rows.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl  # noqa: E402
from prefhouse.pipelines.online.executors import ExecutorSettings, run_shards  # noqa: E402
from prefhouse.pipelines.online.generate import GenerateReplica, SamplingSettings  # noqa: E402
from prefhouse.training.models import materialise_default  # noqa: E402
from prefhouse.training.scoring import ScoreReplica  # noqa: E402
from samples import samples_lake  # noqa: E402


def timed(settings: ExecutorSettings, shards: list[pl.DataFrame], replica) -> tuple[float, pl.DataFrame]:
    t0 = time.perf_counter()
    rows = pl.concat(list(run_shards(settings, shards, replica, "bench", progress=False)))
    return time.perf_counter() - t0, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--shard", type=int, default=4, help="prompts per shard (generate.chunk_prompts)")
    parser.add_argument("--engine", default="transformers", choices=("transformers", "vllm"), help="vllm: its CPU build inside the actors")
    args = parser.parse_args()
    import ray

    model = str(materialise_default(REPO / "data" / "models"))
    with samples_lake() as (lake, _):
        prompts = pl.from_arrow(lake.read("prompts", columns=["prompt_id", "prompt"])).unique("prompt_id").sort("prompt_id").head(args.prompts)
    shards = [prompts.slice(i, args.shard) for i in range(0, prompts.height, args.shard)]
    sampling = SamplingSettings(n=args.n, max_new_tokens=args.max_new_tokens, seed=1)
    generate = partial(GenerateReplica, args.engine, model, sampling, 1, "policy", "bench", {}, False)
    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    print(f"Ray started in {time.perf_counter() - t0:.1f} s (not in the runs below); {prompts.height} prompts x {args.n}, "
          f"{args.max_new_tokens} new tokens, {len(shards)} shards, {args.engine}, SmolLM2-135M fp32 on {int(ray.cluster_resources()['CPU'])} CPUs")
    runs = {"local": ExecutorSettings(), "ray x1": ExecutorSettings(executor="ray", replicas=1),
            "ray x2": ExecutorSettings(executor="ray", replicas=2)}
    results: dict[str, dict[str, float]] = {}
    responses = None
    for stage in ("generate", "score"):
        seconds = {}
        for name, settings in runs.items():
            if stage == "generate":
                s, rows = timed(settings, shards, generate)
                responses = rows if responses is None else responses
                same = rows.sort("response_id")["response"].equals(responses.sort("response_id")["response"])
                work = rows["n_tokens"].sum()
            else:
                score_shards = [responses.filter(pl.col("prompt_id").is_in(s["prompt_id"].implode())) for s in shards]
                s, rows = timed(settings, score_shards, partial(ScoreReplica, model, "rm", "bench", 1024, 16384, False))
                same = rows.height == responses.height
                work = rows.height
            seconds[name] = s
            unit = "new tokens/s" if stage == "generate" else "responses/s"
            print(f"{stage:8} {name:7}: {s:7.1f} s  {work / s:8.1f} {unit}  same rows as local: {same}")
        results[stage] = seconds
        print(f"{stage:8} ratios: ray x1 / local {seconds['local'] / seconds['ray x1']:.2f}x (overhead {seconds['ray x1'] / seconds['local'] - 1:+.0%}), "
              f"ray x2 / ray x1 {seconds['ray x1'] / seconds['ray x2']:.2f}x, ray x2 / local {seconds['local'] / seconds['ray x2']:.2f}x")
    ray.shutdown()


if __name__ == "__main__":  # vLLM spawns its engine process: the guard is required
    main()
