"""Generation: the vLLM engine vs the transformers engine, same model, same prompts, same n and max tokens.

    python tests/benchmarks/bench_generation.py --prompts 16 --n 4 --max-new-tokens 128

The embedded SmolLM2-135M-Instruct (materialised on first use), prompts drawn from the bundled samples'
prompt pool, the recipe's sampling (temperatures 1.0 / 0.7, no top-k / top-p). Both engines run in this
process, one after the other. Prints new tokens/s of each, with and without vLLM's start-up, and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefhouse.pipelines.online.draw_prompts import DrawSettings, draw_prompts  # noqa: E402
from prefhouse.pipelines.online.generate import SamplingSettings, TransformersEngine, VllmEngine  # noqa: E402
from prefhouse.training.models import materialise_default  # noqa: E402
from samples import samples_lake  # noqa: E402


def timed(engine_cls, model: str, prompts, settings: SamplingSettings) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    engine = engine_cls(model)
    loaded = time.perf_counter()
    rows = engine.generate(prompts, 1, settings, "bench", "bench", progress=False)
    done = time.perf_counter()
    engine.close()
    return loaded - t0, done - loaded, int(rows["n_tokens"].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    model = str(materialise_default(REPO / "data" / "models"))
    with samples_lake() as (lake, _):
        prompts = draw_prompts(lake, 1, DrawSettings(m=args.prompts))
    settings = SamplingSettings(n=args.n, max_new_tokens=args.max_new_tokens)
    results = {name: timed(cls, model, prompts, settings) for name, cls in (("vllm", VllmEngine), ("transformers", TransformersEngine))}
    print(f"{args.prompts} prompts x n={args.n}, max {args.max_new_tokens} new tokens, SmolLM2-135M fp32, CPU")
    for name, (load, gen, tokens) in results.items():
        print(f"{name:13s}: start-up {load:6.1f} s, generation {gen:7.1f} s, {tokens:6d} new tokens, "
              f"{tokens / gen:6.1f} tokens/s ({tokens / (load + gen):6.1f} with start-up)")
    (vl, vg, vt), (tl, tg, tt) = results["vllm"], results["transformers"]
    print(f"vLLM / transformers tokens/s: {(vt / vg) / (tt / tg):.2f}x generation only, {(vt / (vl + vg)) / (tt / (tl + tg)):.2f}x with start-up")


if __name__ == "__main__":
    main()
