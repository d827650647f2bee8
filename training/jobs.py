"""What the reward-model and DPO jobs share: optimisation settings, model ids, crash-safe output, resumption.

A job's model id is a hash of everything that decides its weights (kind, base model, snapshot, settings),
so running the same job twice finds the first run's registered model and returns it instead of training
again, and a job killed mid-way leaves only a hidden staging folder, never a half checkpoint under its id:
with ``save_steps``, that folder holds the Trainer's last checkpoint, and the same job resumes from it.
DeepSpeed runs through the Hugging Face Trainer: pass a JSON config (``training/deepspeed/``) as
``deepspeed``, single process here, or several processes with ``launcher = "accelerate"`` (or ``accelerate
launch --config_file training/accelerate/…`` yourself); only the main process writes (``training.distributed``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import pyarrow.compute as pc
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.settings import setting
from prefhouse.training.distributed import config_path, is_main, launch, wait_for_everyone, world_size
from prefhouse.training.snapshot import PairChoice, Selection

DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"


@dataclass(frozen=True)
class Optimisation(PairChoice):
    """Trainer settings both jobs take, after the pairs they choose (the recipe's values live in the presets)."""

    learning_rate: float = setting(5e-7, "peak learning rate")
    epochs: float = setting(1.0, "passes over the training pairs")
    per_device_batch_size: int = setting(8, "pairs per device per step")
    gradient_accumulation_steps: int = setting(1, "steps accumulated per optimiser update")
    max_length: int = setting(2048, "longest prompt + response, in tokens")
    warmup_ratio: float = setting(0.03, "share of steps spent warming up the learning rate")
    lr_scheduler: str = setting("cosine", "transformers' scheduler name")
    seed: int = setting(42, "training and data seed")
    deepspeed: str | None = setting(None, "zero2 | zero3 (training/deepspeed/) | a DeepSpeed JSON config path")
    precision: str = setting("auto", "auto: bf16 on a GPU that supports it, else fp32 | bf16 | fp32")
    gradient_checkpointing: bool = setting(True, "recompute activations in the backward pass: less memory, more time (TRL's default)")
    report_to: str = setting("none", "experiment tracker of the Trainer: none | trackio (runs kept locally) | wandb | tensorboard; "
                                     "every logged step also lands in the lake's training_logs table whatever this says")
    save_steps: int = setting(0, "save a checkpoint every this many optimiser steps (0: none); the same job after a kill resumes "
                                 "from the last one, in the model's hidden staging folder")
    launcher: str = setting("inprocess", "inprocess: train in this process | accelerate: under accelerate launch, num_processes "
                                         "processes (the iteration's train stage and the job's own command alike)")
    num_processes: int = setting(1, "processes of accelerate launch (one per GPU); global batch = per_device x accumulation x this")
    accelerate_config: str | None = setting(None, "accelerate config file (a path, or deepspeed_zero2 | deepspeed_zero3 of training/accelerate/); "
                                                  "default: DeepSpeed ZeRO-3 on GPUs, gloo processes on CPU")
    trainer: dict = setting(help="raw options of TRL's config (DPOConfig for [dpo], RewardConfig for [reward_model]), checked by "
                                 "its fields and passed last: a TOML table [dpo.trainer], or --set dpo.trainer.max_grad_norm=0.5", factory=dict)

    TRAINER_CONFIG: ClassVar[str] = "RewardConfig"  # the TRL config class whose fields ``trainer`` may set
    JOB_OWNS: ClassVar[tuple[str, ...]] = ("output_dir", "resume_from_checkpoint")

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.epochs <= 0 or self.per_device_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("learning_rate and epochs must be positive, batch sizes at least 1")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.deepspeed:
            deepspeed_config(self.deepspeed)  # fails now, not after the data is read
        if self.save_steps < 0 or self.num_processes < 1:
            raise ValueError("save_steps must be 0 or more, num_processes at least 1")
        if self.launcher not in ("inprocess", "accelerate"):
            raise ValueError(f"launcher must be inprocess or accelerate, not {self.launcher!r}")
        if self.accelerate_config:
            config_path(self.accelerate_config)
        if self.trainer:
            object.__setattr__(self, "trainer", check_trainer_options(self.TRAINER_CONFIG, self.trainer, self.JOB_OWNS))

    def selection(self, iterations: str = "offline", max_iteration: int = 0) -> Selection:
        choice = {f.name: getattr(self, f.name) for f in fields(PairChoice)}
        return Selection(**choice, iterations=iterations, max_iteration=max_iteration, seed=self.seed)

    def resolved_precision(self) -> str:
        """``bf16`` or ``fp32``: what the Trainer computes in (and so what stored reference log-probs were computed in)."""
        if self.precision != "auto":
            return self.precision
        import torch

        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"

    def trainer_kwargs(self, output_dir: Path, **job: Any) -> dict:
        """Keyword arguments of TRL's RewardConfig / DPOConfig: the common ones, then the job's own (``job``), then the
        raw ``trainer`` table, which wins over both."""
        import torch

        kwargs = dict(
            output_dir=str(output_dir), learning_rate=self.learning_rate, num_train_epochs=self.epochs,
            per_device_train_batch_size=self.per_device_batch_size, per_device_eval_batch_size=self.per_device_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps, max_length=self.max_length,
            warmup_steps=self.warmup_ratio, lr_scheduler_type=self.lr_scheduler, seed=self.seed, data_seed=self.seed,
            report_to=self.report_to, logging_steps=1, use_cpu=not torch.cuda.is_available(),
            bf16=self.resolved_precision() == "bf16", gradient_checkpointing=self.gradient_checkpointing, dataset_num_proc=None,
            save_strategy="steps" if self.save_steps else "no", save_steps=self.save_steps or 500, save_total_limit=1,
        )
        if self.deepspeed:
            kwargs["deepspeed"] = str(deepspeed_config(self.deepspeed))
            single_process_env()
        return {**kwargs, **job, **self.trainer}


def _literal(value: Any) -> Any:
    """A ``--set`` text as the JSON value it spells (``0.5``, ``true``, ``[1, 2]``), else the text itself; other values as given."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def check_trainer_options(config_class: str, options: dict, job_owns: tuple[str, ...]) -> dict:
    """``options`` with their values parsed, if every key is a field of TRL's ``config_class`` the job does not set itself."""
    import dataclasses

    import trl

    known = {f.name for f in dataclasses.fields(getattr(trl, config_class)) if f.init}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"trainer option(s) {', '.join(unknown)} are not fields of trl.{config_class}")
    owned = sorted(set(options) & set(job_owns))
    if owned:
        raise ValueError(f"trainer option(s) {', '.join(owned)} are set by the job itself")
    return {k: _literal(v) for k, v in sorted(options.items())}


def deepspeed_config(name: str) -> Path:
    path = DEEPSPEED_DIR / f"{name}.json" if name in ("zero2", "zero3") else Path(name)
    if not path.exists():
        raise ValueError(f"DeepSpeed config {name!r} not found (zero2, zero3 or a JSON path)")
    json.loads(path.read_text())
    return path


def single_process_env() -> None:
    """The torch.distributed variables a launcher would set, for a single process (kept when already set)."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)


def model_key(path: str, models_dir: Path) -> str:
    """The id a model is known by: its folder name for models of ours, else the path or hub id as given."""
    p = Path(path)
    if p.exists() and p.resolve().parent == models_dir.resolve():
        return p.name
    return str(p.resolve()) if p.exists() else path


# settings that do not change the weights, so not the model's id either: a job launched on a cluster and the
# iteration's train stage that finds its model must agree on the id whatever launched it
NOT_WEIGHTS = ("report_to", "gradient_checkpointing", "save_steps", "launcher", "num_processes", "accelerate_config")


def job_model_id(kind: str, **inputs) -> str:
    """The id of a job's model: a hash of what decides its weights."""
    as_dict = lambda o: {k: v for k, v in asdict(o).items() if k not in NOT_WEIGHTS}  # noqa: E731
    spec = json.dumps(inputs, sort_keys=True, default=lambda o: as_dict(o) if hasattr(o, "__dataclass_fields__") else str(o))
    return f"{kind}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def finished_model(lake: Lake, model_id: str) -> dict | None:
    """The registered row of ``model_id`` if it finished and its weights are still there (then the job is done)."""
    if not lake.exists(S.MODELS):
        return None
    rows = lake.read(S.MODELS).filter(pc.equal(pc.field("model_id"), model_id)).to_pylist()
    done = [r for r in rows if r["status"] == "succeeded" and Path(r["output_path"], "config.json").exists()]
    return done[-1] if done else None


@contextmanager
def staged_output(models_dir: Path, model_id: str) -> Iterator[Path]:
    """The hidden folder ``models_dir/.model_id.staging`` to save into; renamed to ``models_dir/model_id`` when the block succeeds.

    A failed or killed job leaves it, with the Trainer's checkpoints under ``trainer/``: the same job (same id)
    resumes from the last one (:func:`last_checkpoint`). Under several processes every one saves its part, and the
    main one renames the folder once all have.
    """
    target, stage = models_dir / model_id, models_dir / f".{model_id}.staging"
    if is_main():
        stage.mkdir(parents=True, exist_ok=True)
    wait_for_everyone()
    yield stage
    wait_for_everyone()
    if is_main():
        shutil.rmtree(stage / "trainer", ignore_errors=True)  # checkpoints: the finished model replaces them
        if target.exists():  # an earlier run saved but died before registering: replace it
            shutil.rmtree(target)
        stage.rename(target)


def last_checkpoint(stage: Path) -> str | None:
    """The newest ``checkpoint-N`` folder a killed run of this job left in its staging folder, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    folder = stage / "trainer"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def shared_dataset(rows: list[dict], folder: Path):
    """``rows`` as a ``datasets.Dataset``; under several processes, saved once by the main process and opened from disk by all.

    TRL caches precomputed reference log-probs next to a dataset's files and reads them back on every process:
    an in-memory dataset has its cache in each process's own temporary folder, where the others cannot find it.
    """
    from datasets import Dataset, load_from_disk

    if world_size() == 1:
        return Dataset.from_list(rows)
    if is_main():
        shutil.rmtree(folder, ignore_errors=True)
        Dataset.from_list(rows).save_to_disk(str(folder))
    wait_for_everyone()
    return load_from_disk(str(folder))


def resumed_step(checkpoint: str | None) -> int:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else 0


def pair_rows(lake: Lake, snapshot, split: str = "train") -> list[dict]:
    """Texts of a snapshot split, in the snapshot's order, as TRL's conversational preference rows."""
    import polars as pl
    from prefhouse.pipelines.core.sql import connect

    ids = (snapshot.train if split == "train" else snapshot.eval).select(["pair_id", "source"])
    if ids.num_rows == 0:
        return []
    spec = ",".join(f"{t}={v}" for t, v in sorted(snapshot.versions.items()))
    con, _ = connect(lake, as_of=spec, direct=True)
    try:
        con.register("wanted", ids)
        texts = pl.from_arrow(con.sql(
            "SELECT w.pair_id, w.source, p.prompt, p.chosen, p.rejected FROM wanted w "
            "JOIN (SELECT DISTINCT ON (pair_id) pair_id, prompt, chosen, rejected FROM pairs) p USING (pair_id)").to_arrow_table())
    finally:
        con.close()
    by_id = {r["pair_id"]: r for r in texts.iter_rows(named=True)}
    return [{"pair_id": p, "source": by_id[p]["source"], "prompt": by_id[p]["prompt"], "chosen": by_id[p]["chosen"][-1:],
             "rejected": by_id[p]["rejected"][-1:]} for p in ids.column("pair_id").to_pylist()]


def launch_job(module: str, section: str, settings: Optimisation, lake: Lake, models_dir: Path, model_id: str, *args: str) -> dict:
    """The job ``module`` under ``accelerate launch`` with exactly ``settings`` (a JSON layer; its launcher set to inprocess);
    returns the model ``model_id`` it registered, and fails if it registered none."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        settings_file = Path(tmp, "settings.json")
        settings_file.write_text(json.dumps({section: asdict(replace(settings, launcher="inprocess"))}))
        argv = ["--lake", lake.uri, "--models-dir", str(models_dir), "--config", str(settings_file), *args]
        launch(module, argv, settings.num_processes, settings.accelerate_config)
    done = finished_model(lake, model_id)
    if done is None:
        raise RuntimeError(f"the launched job ended without registering {model_id}")
    return done


def add_job_arguments(parser) -> None:
    """The flag both training jobs take beyond their settings: where models go."""
    from prefhouse.training import models

    parser.add_argument("--models-dir", type=Path, default=models.DEFAULT_DIR, help=f"where models are saved (default: {models.DEFAULT_DIR})")
