"""Per-stage wall time of one online iteration with the embedded models, and where the time goes.

    python tests/benchmarks/bench_iteration.py --m 256 --n 8 --max-new-tokens 64 --engine vllm

The bundled samples are scaled (tests/benchmarks/scale.py, distinct prompts) so the prompt pool has enough
fresh prompts, curated into a temporary lake; the reward model is trained with the cpu preset; then
iteration 1 runs with the cpu preset and the given m, n, max new tokens and engine. Prints seconds per stage,
their shares, and each stage's own counters (tokens/s, responses scored, DPO pairs and epoch time).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
sys.path.insert(0, str(REPO))

import polars as pl  # noqa: E402
import scale  # noqa: E402
from prefhouse.pipelines.core import schema as S  # noqa: E402
from prefhouse.pipelines.core.config import build, load_layers  # noqa: E402
from prefhouse.pipelines.core.lake import Lake  # noqa: E402
from prefhouse.pipelines.curate import curate  # noqa: E402
from prefhouse.pipelines.run_iteration import IterationConfig, run_iteration  # noqa: E402
from prefhouse.pipelines.sources.settings import resolve_sources  # noqa: E402
from prefhouse.training.models import materialise_default  # noqa: E402
from prefhouse.training.train_rm import RewardModelSettings, train_reward_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--engine", default="vllm", choices=["vllm", "transformers"])
    parser.add_argument("--raw-rows", type=int, default=4000, help="scaled raw rows to curate (the prompt pool)")
    args = parser.parse_args()
    models_dir = REPO / "data" / "models"
    materialise_default(models_dir)
    overrides = [f"prompts.m={args.m}", f"generate.n={args.n}", f"generate.max_new_tokens={args.max_new_tokens}", f"generate.engine={args.engine}",
                 f"generate.chunk_prompts={args.m}"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scale.generate(args.raw_rows, tmp / "raw", pad=0)
        lake = Lake(str(tmp / "lake"))
        t0 = time.perf_counter()
        curate(resolve_sources("all"), lake, tmp / "raw", progress=False)
        curate_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        train_reward_model(lake, build(RewardModelSettings, load_layers("cpu"), "reward_model"), models_dir, progress=False)
        rm_s = time.perf_counter() - t0
        config = IterationConfig.load("cpu", overrides=overrides)
        t0 = time.perf_counter()
        timings, summary = run_iteration(lake, 1, config, models_dir=models_dir, reports_dir=tmp / "reports")
        total = time.perf_counter() - t0
        events = pl.from_arrow(lake.read(S.ITERATIONS)).filter(pl.col("status") == "done")
        counts = {stage: json.loads(c) for stage, c in events.select("stage", "counts").iter_rows()}
        dpo = [m for m in lake.read(S.MODELS).to_pylist() if m["job_kind"] == "dpo"][-1]
    print(f"iteration 1: m={args.m} prompts x n={args.n}, max {args.max_new_tokens} new tokens, engine {args.engine}, "
          f"SmolLM2-135M policy and reward model (fp32, CPU); cpu preset otherwise")
    print(f"(before: curation of {args.raw_rows} scaled raw rows {curate_s:.0f} s, reward model {rm_s:.0f} s)")
    for stage, seconds in timings.items():
        print(f"  {stage:9s} {seconds:8.1f} s  {seconds / total:6.1%}")
    print(f"  {'total':9s} {total:8.1f} s")
    g, sc, se = counts["generate"], counts["score"], counts["select"]
    metrics = json.loads(dpo["metrics"])
    print(f"generate: {g.get('new_tokens')} new tokens, {g.get('tokens_per_s') or 0:.1f} tokens/s (engine start-up excluded)")
    print(f"score: {sc['responses']} responses, {sc['responses'] / timings['score']:.1f} responses/s")
    print(f"select: {se['pairs']} pairs, {se['ties_dropped']} ties and {se['identical_dropped']} identical dropped")
    print(f"train: {dpo['train_pairs']} pairs, {metrics['seconds_per_epoch']:.1f} s/epoch, {metrics['prepare_seconds']:.1f} s before training "
          f"(model load, tokenisation, {metrics['reference_logps_computed']} reference log-probs computed)")
    print(f"summary: {summary}")


if __name__ == "__main__":
    main()
