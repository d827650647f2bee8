"""Train the Bradley-Terry reward model on a lake snapshot with TRL's RewardTrainer, evaluate it, register it.

    python training/train_rm.py --preset cpu                    # a few minutes here, embedded SmolLM2 + scalar head
    python training/train_rm.py --preset paper --set reward_model.base_model=PATH_OR_HUB_ID
    python training/train_rm.py --preset cpu --set reward_model.launcher=accelerate --set reward_model.num_processes=2
    accelerate launch --config_file training/accelerate/deepspeed_zero3.yaml training/train_rm.py --preset paper

The model is the base chat model with a scalar head (``num_labels = 1``), loss −log σ(r(x, a_w) − r(x, a_l))
(RECIPE §2). Its pad token is distinct from EOS and set on the model config: the reference code's pad = EOS
made the last-token pooling read the wrong position and every score come out equal. Evaluation runs on the
snapshot's held-out prompts: accuracy overall, per source and per recipe category (mapping below), and the
per-prompt reward/length Pearson correlation of the paper's Figure 5. Metrics are stored with the model row.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: the process is set up and a --help answered here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.process import start
    from prefhouse.training.settings import train_rm_parser

    start(train_rm_parser)

import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.config import build, layers_from_args
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.runlog import RunRecord
from prefhouse.training import models
from prefhouse.training.distributed import is_main, on_main, world_size
from prefhouse.training.jobs import (
    finished_model,
    job_model_id,
    last_checkpoint,
    launch_job,
    model_key,
    pair_rows,
    resumed_step,
    staged_output,
)
from prefhouse.training.lineage import register_model
from prefhouse.training.settings import RewardModelSettings
from prefhouse.training.settings import train_rm_parser as build_parser
from prefhouse.training.snapshot import Snapshot, resolve

# RewardBench-style categories of RECIPE §2 for our sources. Stated, not measured: chat = general helpfulness
# with human or strong-model labels; chat-hard = fine-grained aspect-scored data whose two replies are often
# close (UltraFeedback, HelpSteer); safety = PKU-SafeRLHF; reasoning = code and maths.
CATEGORIES = {
    "hh_rlhf": "chat", "shp": "chat", "distilabel_capybara_dpo_7k_binarized": "chat", "distilabel_intel_orca_dpo_pairs": "chat",
    "ultrafeedback": "chat-hard", "helpsteer": "chat-hard", "pku_saferlhf_30k": "safety",
    "ultrainteract_pair": "reasoning", "codeultrafeedback": "reasoning", "distilabel_math_preference_dpo": "reasoning",
    "online": "online",
}


def evaluate(scorer, rows: list[dict], min_responses: int = 3, progress: bool = True) -> dict:
    """Accuracy (chosen scored above rejected) overall / per source / per category, and length correlation."""
    if not rows:
        return {"eval_pairs": 0}
    prompts = [r["prompt"] for r in rows]
    chosen = scorer.score(prompts + prompts, [r["chosen"][-1]["content"] for r in rows] + [r["rejected"][-1]["content"] for r in rows], progress=progress)
    r_chosen, r_rejected = chosen[: len(rows)], chosen[len(rows):]
    correct = r_chosen > r_rejected
    metrics: dict = {"eval_pairs": len(rows), "accuracy": float(correct.mean()), "mean_margin": float((r_chosen - r_rejected).mean()),
                     "distinct_scores": int(len(np.unique(np.round(chosen, 6))))}
    for key, name in (("source", lambda r: r["source"]), ("category", lambda r: CATEGORIES.get(r["source"], "other"))):
        groups: dict[str, list[bool]] = {}
        for row, ok in zip(rows, correct, strict=True):
            groups.setdefault(name(row), []).append(bool(ok))
        metrics[f"accuracy_by_{key}"] = {g: {"accuracy": float(np.mean(v)), "pairs": len(v)} for g, v in sorted(groups.items())}
    # Figure 5: per prompt, Pearson(reward, length) over its distinct responses (both sides of every pair)
    by_prompt: dict[str, dict[str, float]] = {}
    for row, rc, rr in zip(rows, r_chosen, r_rejected, strict=True):
        key = repr(row["prompt"])
        by_prompt.setdefault(key, {})[row["chosen"][-1]["content"]] = float(rc)
        by_prompt.setdefault(key, {})[row["rejected"][-1]["content"]] = float(rr)
    corrs = []
    for responses in by_prompt.values():
        if len(responses) >= min_responses:
            lengths = np.array([len(t) for t in responses], dtype=float)
            rewards = np.array(list(responses.values()))
            if lengths.std() > 0 and rewards.std() > 0:
                corrs.append(float(np.corrcoef(rewards, lengths)[0, 1]))
    metrics["length_correlation"] = {"mean": float(np.mean(corrs)) if corrs else None, "prompts": len(corrs), "min_responses": min_responses}
    return metrics


def train_reward_model(lake: Lake, settings: RewardModelSettings, models_dir: Path = models.DEFAULT_DIR,
                       snapshot: Snapshot | None = None, progress: bool = True, job_kind: str = "reward_model") -> dict:
    """Train (or find, if this exact job already ran) the reward model; returns its ``models`` row.

    ``job_kind``: ``reward_model`` (the proxy the iterations score with) or ``judge`` (the evaluation's
    second judge: registered apart so that ``reward_model = "latest"`` never picks it).
    """
    from datasets import Dataset
    from prefhouse.training.scoring import RewardScorer
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    snapshot = snapshot or resolve(lake, settings.selection(), columns="pair_id, prompt_id, source, iteration")
    base_path = on_main(models.resolve, settings.base_model, models_dir)
    model_id = job_model_id("rm" if job_kind == "reward_model" else job_kind, base=model_key(base_path, models_dir), pairs_table=lake.table_id(S.PAIRS), snapshot=snapshot.snapshot_hash,
                            settings=settings)
    done = finished_model(lake, model_id)
    if done:
        print(f"reward model {model_id} already trained on this snapshot: {done['output_path']}", file=sys.stderr)
        return done
    if settings.launcher == "accelerate" and world_size() == 1:  # this job again, once per process; then its registered model
        return launch_job("prefhouse.training.train_rm", "reward_model", settings, lake, models_dir, model_id, "--job-kind", job_kind)
    train_rows = pair_rows(lake, snapshot, "train")
    if not train_rows:
        raise ValueError(f"the snapshot {snapshot.snapshot_hash} has no training pairs: {snapshot.describe()}")
    run = RunRecord("train_rm", {"settings": asdict(settings), "base_model": base_path, "processes": world_size()})
    run.versions_before = snapshot.versions
    t0 = time.perf_counter()
    with run.logged(lake) if is_main() else nullcontext():
        tokenizer = models.load_tokenizer(base_path)
        set_seed(settings.seed)  # the scalar head is initialised here, before the Trainer seeds anything
        model = models.fit_embeddings(AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1), tokenizer)
        dataset = Dataset.from_list([{"pair_id": r["pair_id"], "chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}
                                     for r in train_rows])
        with staged_output(models_dir, model_id) as out:
            args = RewardConfig(**settings.trainer_kwargs(out / "trainer", disable_tqdm=not progress))
            trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
            unused = {r["pair_id"] for r in train_rows} - set(trainer.train_dataset["pair_id"])  # longer than max_length: dropped by TRL
            checkpoint = last_checkpoint(out)
            result = trainer.train(resume_from_checkpoint=checkpoint)
            trainer.save_model(str(out))  # every process: under ZeRO-3 this gathers the full weights (stage3_gather_16bit_weights_on_model_save)
            train_seconds = time.perf_counter() - t0
            metrics = {"train_loss": result.training_loss, "train_seconds": train_seconds, "train_pairs": len(train_rows), "train_pairs_unused": len(unused),
                       "resumed_from_step": resumed_step(checkpoint), "processes": world_size()}
            log_history = list(trainer.state.log_history)
            history = [h for h in log_history if "accuracy" in h]
            if history:
                metrics["train_accuracy_last_step"] = history[-1]["accuracy"]
            del trainer, model
            if is_main():
                tokenizer.save_pretrained(str(out))
        output = models_dir / model_id
        run.timings = {"train": train_seconds, "total": time.perf_counter() - t0}
        run.rows_in = len(train_rows)
        if is_main():  # the held-out evaluation, by one process with the scorer the iterations use, while the others end
            scorer = RewardScorer(str(output), max_length=settings.max_length)
            metrics.update(evaluate(scorer, pair_rows(lake, snapshot, "eval"), settings.min_responses_for_correlation, progress))
            metrics["evaluated_on"] = f"held-out prompts ({settings.eval_fraction:.0%} of prompts) of the selection's {settings.splits} splits"
            register_model(lake, model_id, job_kind, base_path, snapshot, asdict(settings), metrics, str(output), "succeeded", run.run_id,
                           unused=unused, log_history=log_history)
    return finished_model(lake, model_id) or {"model_id": model_id, "output_path": str(output), "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layers = layers_from_args(args)
    settings = build(RewardModelSettings, layers, "reward_model")
    row = train_reward_model(Lake(args.lake), settings, args.models_dir, job_kind=args.job_kind)
    if not is_main():
        return 0
    print(f"reward model {row['model_id']}: {row['output_path']}")
    print(f"metrics: {row['metrics']}")
    return 0


if __name__ == "__main__":
    from prefhouse.pipelines.core.errors import run
    from prefhouse.pipelines.core.process import finish

    finish(run(main))
