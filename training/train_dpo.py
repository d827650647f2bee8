"""DPO on a lake snapshot of historical pairs with TRL, behind the quality report's gate; registers the policy.

    python training/train_dpo.py --iter 0 --preset cpu                       # offline pairs only, embedded SmolLM2
    python training/train_dpo.py --iter 2 --policy data/models/dpo-… --set dpo.reference=previous --set dpo.pairs=latest
    python training/train_dpo.py --iter 2 --preset paper-8gpu                # dpo.launcher = accelerate: 8 processes
    accelerate launch --config_file training/accelerate/deepspeed_zero2.yaml training/train_dpo.py --iter 2 --preset paper

The recipe's two variants are settings (RECIPE §3): ``dpo.reference`` = ``initial`` (π0 stays the fixed
reference, the paper) or ``previous`` (the policy being trained is its own reference, the public scripts);
``dpo.pairs`` = ``all`` (every historical pair up to iteration N, the paper) or ``latest`` (iteration N's
own pairs). The job first builds the quality report for the snapshot and refuses to train on a failed one
unless ``--override-quality`` is given; the override is recorded with the model and in the run log.
Reference log-probabilities come from the lake when this (pair, reference, encoding) was seen before
(``training.reference_logps``); only missing ones are computed, and then stored. With ``dpo.save_steps`` the
job checkpoints, and the same command after a kill resumes from the last checkpoint to the same model id.
"""

from __future__ import annotations

if __name__ == "__main__":  # run as a script: the process is set up and a --help answered here, before the imports below load polars, DuckDB, torch…
    from prefhouse.pipelines.core.process import start
    from prefhouse.training.settings import train_dpo_parser

    start(train_dpo_parser)

import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

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
    shared_dataset,
    staged_output,
)
from prefhouse.training.lineage import register_model
from prefhouse.training.settings import DPOSettings
from prefhouse.training.settings import train_dpo_parser as build_parser
from prefhouse.training.snapshot import Snapshot, resolve


def quality_gate(lake: Lake, iteration: int, override: bool, snapshot: Snapshot, report=None, reports_dir: Path | None = None) -> dict:
    """Build (or take) the report on exactly this snapshot and refuse a failed one unless overridden; what to record.

    A report built earlier (the iteration's report stage) is taken only if it describes this snapshot.
    """
    from prefhouse.quality.report import DEFAULT_OUT, ReportScope, build_report, require_passing

    if report is None or report.snapshot_hash != snapshot.snapshot_hash:
        report = build_report(lake, iteration, reports_dir or DEFAULT_OUT, scope=ReportScope.of(snapshot))
    if report.failed and override:
        print(f"WARNING: training on a snapshot whose quality report FAILED (--override-quality): {report.html_path}", file=sys.stderr)
        for failure in report.failures:
            print(f"  - {failure}", file=sys.stderr)
    return require_passing(report, override)


def train_dpo(
    lake: Lake, settings: DPOSettings, iteration: int, policy: str = models.DEFAULT, initial: str = models.DEFAULT,
    models_dir: Path = models.DEFAULT_DIR, override_quality: bool = False, report=None, reports_dir: Path | None = None,
    progress: bool = True,
) -> dict:
    """Train the policy for iteration ``iteration + 1`` (or find it if this exact job ran); returns its models row."""
    import torch
    from prefhouse.training.reference_logps import LakeDPOTrainer, ReferenceStore, encoding_key
    from transformers import AutoConfig, AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    policy_path, initial_path = on_main(models.resolve, policy, models_dir), on_main(models.resolve, initial, models_dir)
    reference_path = initial_path if settings.reference == "initial" else policy_path
    snapshot = resolve(lake, settings.selection(iterations=settings.pairs, max_iteration=iteration))
    model_id = job_model_id("dpo", policy=model_key(policy_path, models_dir), reference=model_key(reference_path, models_dir),
                            pairs_table=lake.table_id(S.PAIRS), snapshot=snapshot.snapshot_hash, settings=settings)
    done = finished_model(lake, model_id)
    if done:  # trained before (here, or by a launched or cluster job with the same inputs), behind a report that passed then
        print(f"policy {model_id} already trained on this snapshot: {done['output_path']}", file=sys.stderr)
        return done
    quality = on_main(quality_gate, lake, iteration, override_quality, snapshot, report, reports_dir)
    if settings.launcher == "accelerate" and world_size() == 1:  # this job again, once per process; then its registered model
        return launch_job("prefhouse.training.train_dpo", "dpo", settings, lake, models_dir, model_id, "--iter", str(iteration),
                          "--policy", policy_path, "--initial", initial_path, *(["--override-quality"] if override_quality else []),
                          *(["--reports-dir", str(reports_dir)] if reports_dir else []))
    train_rows, eval_rows = pair_rows(lake, snapshot, "train"), pair_rows(lake, snapshot, "eval")
    if not train_rows:
        raise ValueError(f"the snapshot {snapshot.snapshot_hash} has no training pairs: {snapshot.describe()}")
    run = RunRecord("train_dpo", {"iteration": iteration, "policy": policy_path, "reference": reference_path, "settings": asdict(settings),
                                  "override_quality": override_quality, "quality": quality, "processes": world_size()})
    run.versions_before = snapshot.versions
    t0 = time.perf_counter()
    with run.logged(lake) if is_main() else nullcontext():
        tokenizer = models.load_tokenizer(policy_path)
        store = ReferenceStore(lake, model_key(reference_path, models_dir), encoding_key(tokenizer, settings.max_length, settings.truncation_mode,
                                                                                             settings.resolved_precision()), run.run_id)
        all_ids = [r["pair_id"] for r in train_rows + eval_rows]
        # the reference model is loaded only when it differs from the policy and some of its numbers are missing
        needs_reference = reference_path != policy_path and (not settings.store_reference_logps or store.missing(all_ids))
        load = lambda path: models.fit_embeddings(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), tokenizer)  # noqa: E731
        ref_model = load(reference_path) if needs_reference else None
        with staged_output(models_dir, model_id) as out:
            as_rows = lambda rows, name: shared_dataset([{k: r[k] for k in ("pair_id", "prompt", "chosen", "rejected")} for r in rows],  # noqa: E731
                                                        out / "trainer" / "datasets" / name)
            train_set, eval_set = as_rows(train_rows, "train"), (as_rows(eval_rows, "eval") if eval_rows else None)
            config = DPOConfig(**settings.trainer_kwargs(
                out / "trainer", beta=settings.beta, loss_type=settings.loss_type, label_smoothing=settings.label_smoothing,
                truncation_mode=settings.truncation_mode, precompute_ref_log_probs=settings.store_reference_logps,
                precompute_ref_batch_size=settings.precompute_batch_size, disable_tqdm=not progress, model_init_kwargs={"dtype": torch.float32},
            ))
            # a policy whose tokenizer gained a pad (a Llama-3 style π0) is loaded here to embed it; otherwise TRL loads
            # it, after the config exists, so that ZeRO-3 can shard it while it loads
            policy = policy_path
            if models.needs_new_embeddings(AutoConfig.from_pretrained(policy_path), tokenizer):
                config.model_init_kwargs = None
                policy = load(policy_path)
            common = dict(model=policy, ref_model=ref_model, args=config, train_dataset=train_set, eval_dataset=eval_set, processing_class=tokenizer)
            trainer = LakeDPOTrainer(**common, reference_store=store) if settings.store_reference_logps else DPOTrainer(**common)
            unused = {r["pair_id"] for r in train_rows} - set(trainer.train_dataset["pair_id"])  # prompt alone over max_length
            prepared = time.perf_counter()
            checkpoint = last_checkpoint(out)
            result = trainer.train(resume_from_checkpoint=checkpoint)
            train_seconds = time.perf_counter() - prepared
            metrics = {"train_loss": result.training_loss, "train_seconds": train_seconds, "seconds_per_epoch": train_seconds / settings.epochs,
                       "prepare_seconds": prepared - t0, "train_pairs": len(train_rows), "train_pairs_unused": len(unused), "reference_logps_computed": store.computed,
                       "reference_logps_reused": store.reused, "resumed_from_step": resumed_step(checkpoint), "processes": world_size()}
            log_history = list(trainer.state.log_history)
            last = [h for h in log_history if "rewards/accuracies" in h]
            if last:
                metrics.update({f"train_{k}": v for k, v in last[-1].items() if k.startswith(("rewards/", "logps/"))})
            if eval_set is not None:
                metrics.update({k: v for k, v in trainer.evaluate().items() if k.startswith("eval_")})
                log_history = list(trainer.state.log_history)  # with the evaluation's entry
            trainer.save_model(str(out))  # every process: ZeRO-3 gathers the full weights on save (stage3_gather_16bit_weights_on_model_save)
            if is_main():
                tokenizer.save_pretrained(str(out))
            del trainer
        output = models_dir / model_id
        run.timings = {"train": train_seconds, "total": time.perf_counter() - t0}
        run.rows_in = len(train_rows)
        hyper = {**asdict(settings), "iteration": iteration, "override_quality": override_quality}
        if is_main():
            register_model(lake, model_id, "dpo", policy_path, snapshot, hyper, metrics, str(output), "succeeded", run.run_id,
                           reference_model=model_key(reference_path, models_dir), quality=quality, unused=unused, log_history=log_history)
    return finished_model(lake, model_id) or {"model_id": model_id, "output_path": str(output), "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layers = layers_from_args(args)
    settings = build(DPOSettings, layers, "dpo")
    row = train_dpo(Lake(args.lake), settings, args.iteration, args.policy, args.initial, args.models_dir, args.override_quality,
                    reports_dir=args.reports_dir)  # a failed report raises ReportFailed: exit 1 (errors.run)
    if not is_main():
        return 0
    print(f"policy {row['model_id']}: {row['output_path']}")
    print(f"metrics: {row['metrics']}")
    return 0


if __name__ == "__main__":
    from prefhouse.pipelines.core.errors import run
    from prefhouse.pipelines.core.process import finish

    finish(run(main))
