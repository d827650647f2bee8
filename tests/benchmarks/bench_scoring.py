"""Reward scoring throughput: length-bucketed batches vs batch size 1 (what the reference annotation script does).

    python tests/benchmarks/bench_scoring.py --pairs 256

Same process, same inputs, the embedded SmolLM2-135M with a scalar head (materialised on first use): the
chosen and rejected replies of curated pairs from the bundled samples (curated into a temporary lake).
Prints pairs/s of each and the ratio (target >= 5x on this 2-core machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from prefhouse.training.models import materialise_default  # noqa: E402
from prefhouse.training.scoring import RewardScorer  # noqa: E402
from samples import samples_lake  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=256, help="(prompt, response) pairs to score")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--batch-tokens", type=int, default=8192)
    args = parser.parse_args()
    model = str(materialise_default(REPO / "data" / "models"))
    with samples_lake() as (lake, _):
        pairs = pl.from_arrow(lake.read("pairs", columns=["prompt", "chosen", "rejected"]))
    prompts, responses = [], []
    for p, c, r in pairs.iter_rows():
        for side in (c, r):
            prompts.append(p)
            responses.append(side[-1]["content"])
    reps = -(-args.pairs // len(responses))
    prompts, responses = (prompts * reps)[: args.pairs], (responses * reps)[: args.pairs]
    scorer = RewardScorer(model, max_length=args.max_length, batch_tokens=args.batch_tokens)
    lengths = [len(x) for x in scorer.encode(prompts, responses)[0]]
    t0 = time.perf_counter()
    bucketed = scorer.score(prompts, responses)
    bucketed_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = scorer.score(prompts, responses, bucketed=False)
    single_s = time.perf_counter() - t0
    tokens = sum(lengths)
    print(f"{args.pairs} (prompt, response) pairs, {tokens:,} tokens (mean {np.mean(lengths):.0f}, max {max(lengths)}), "
          f"SmolLM2-135M + scalar head, fp32, CPU")
    print(f"length-bucketed batches : {bucketed_s:7.2f} s  {args.pairs / bucketed_s:7.1f} responses/s  {tokens / bucketed_s:7.0f} tokens/s")
    print(f"batch size 1            : {single_s:7.2f} s  {args.pairs / single_s:7.1f} responses/s  {tokens / single_s:7.0f} tokens/s")
    print(f"speed-up: {single_s / bucketed_s:.1f}x (target >= 5x); max |difference| {np.max(np.abs(bucketed - single)):.2e}")


if __name__ == "__main__":
    main()
