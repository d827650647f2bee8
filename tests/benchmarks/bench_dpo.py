"""DPO time per epoch: reference log-probs stored in the lake vs computed on the fly, same run.

    python tests/benchmarks/bench_dpo.py --pairs 32 --epochs 2 --max-length 256

The embedded SmolLM2-135M-Instruct as policy and as reference (π0, the paper's setting), pairs of the bundled
samples curated into a temporary lake. Three jobs in this process on the same snapshot:
1. on the fly: the reference model runs on every batch of every epoch (TRL without precompute);
2. first stored run: the reference runs once per pair, the numbers go to the lake;
3. a later run (another iteration or epoch count with the same reference): everything read from the lake.
Prints seconds per epoch and the ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prefhouse.training.models import materialise_default  # noqa: E402
from prefhouse.training.train_dpo import DPOSettings, train_dpo  # noqa: E402
from samples import samples_lake  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    model = str(materialise_default(REPO / "data" / "models"))
    with samples_lake() as (lake, tmp):
        base = dict(pairs="offline", max_length=args.max_length, epochs=args.epochs, per_device_batch_size=4, gradient_accumulation_steps=2,
                    where=f"pair_id IN (SELECT pair_id FROM pairs ORDER BY pair_id LIMIT {args.pairs})")
        runs = {}
        for name, settings in (
            ("on the fly", DPOSettings(**base, store_reference_logps=False)),
            ("stored, first run", DPOSettings(**base, seed=1)),
            ("stored, reused", DPOSettings(**base, seed=2)),
        ):
            row = train_dpo(lake, settings, 0, model, model, tmp / "models", reports_dir=tmp / "reports", progress=False)
            runs[name] = json.loads(row["metrics"])
    print(f"{runs['on the fly']['train_pairs']} pairs x {args.epochs:g} epochs, max_length {args.max_length}, SmolLM2-135M fp32, CPU")
    for name, m in runs.items():
        print(f"{name:18s}: {m['seconds_per_epoch']:7.1f} s/epoch (+ {m['prepare_seconds']:5.1f} s before training), "
              f"reference log-probs computed {m['reference_logps_computed']}, reused {m['reference_logps_reused']}")
    fly = runs["on the fly"]
    for name in ("stored, first run", "stored, reused"):
        m = runs[name]
        total = lambda r: r["seconds_per_epoch"] * args.epochs + r["prepare_seconds"]  # noqa: E731
        print(f"on the fly / {name}: {fly['seconds_per_epoch'] / m['seconds_per_epoch']:.2f}x per epoch, {total(fly) / total(m):.2f}x whole job")


if __name__ == "__main__":
    main()
