"""What the reward-model and DPO jobs share: optimisation settings, model ids, crash-safe output, resumption.

A job's model id is a hash of everything that decides its weights (kind, base model, snapshot, settings),
so running the same job twice finds the first run's registered model and returns it instead of training
again, and a job killed mid-way leaves only a hidden staging folder, never a half checkpoint under its id.
DeepSpeed runs through the Hugging Face Trainer: pass a JSON config (``training/deepspeed/``) as
``deepspeed``, single process here, or launch with ``accelerate launch --config_file training/accelerate/…``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pyarrow.compute as pc
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.settings import setting
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

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.epochs <= 0 or self.per_device_batch_size < 1 or self.gradient_accumulation_steps < 1:
            raise ValueError("learning_rate and epochs must be positive, batch sizes at least 1")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        if self.deepspeed:
            deepspeed_config(self.deepspeed)  # fails now, not after the data is read

    def selection(self, iterations: str = "offline", max_iteration: int = 0) -> Selection:
        choice = {f.name: getattr(self, f.name) for f in fields(PairChoice)}
        return Selection(**choice, iterations=iterations, max_iteration=max_iteration, seed=self.seed)

    def resolved_precision(self) -> str:
        """``bf16`` or ``fp32``: what the Trainer computes in (and so what stored reference log-probs were computed in)."""
        if self.precision != "auto":
            return self.precision
        import torch

        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"

    def trainer_kwargs(self, output_dir: Path) -> dict:
        """Keyword arguments common to TRL's RewardConfig and DPOConfig."""
        import torch

        kwargs = dict(
            output_dir=str(output_dir), learning_rate=self.learning_rate, num_train_epochs=self.epochs,
            per_device_train_batch_size=self.per_device_batch_size, per_device_eval_batch_size=self.per_device_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps, max_length=self.max_length,
            warmup_steps=self.warmup_ratio, lr_scheduler_type=self.lr_scheduler, seed=self.seed, data_seed=self.seed,
            report_to=self.report_to, save_strategy="no", logging_steps=1, use_cpu=not torch.cuda.is_available(),
            bf16=self.resolved_precision() == "bf16", gradient_checkpointing=self.gradient_checkpointing, dataset_num_proc=None,
        )
        if self.deepspeed:
            kwargs["deepspeed"] = str(deepspeed_config(self.deepspeed))
            single_process_env()
        return kwargs


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


NOT_WEIGHTS = ("report_to", "gradient_checkpointing")  # settings that do not change the weights, so not the model's id either


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
    """A hidden folder to save into; renamed to ``models_dir/model_id`` only when the block succeeds."""
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / model_id
    stage = Path(tempfile.mkdtemp(prefix=f".{model_id}-", dir=models_dir))
    try:
        yield stage
        shutil.rmtree(stage / "trainer", ignore_errors=True)  # the Trainer's output_dir: nothing kept with save_strategy="no"
        if target.exists():  # an earlier run saved but died before registering: replace it
            shutil.rmtree(target)
        stage.rename(target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def pair_rows(lake: Lake, snapshot, split: str = "train") -> list[dict]:
    """Texts of a snapshot split, in the snapshot's order, as TRL's conversational preference rows."""
    import polars as pl
    from prefhouse.pipelines.core.sql import connect

    ids = (snapshot.train if split == "train" else snapshot.eval).select(["pair_id", "source"])
    if ids.num_rows == 0:
        return []
    spec = ",".join(f"{t}={v}" for t, v in sorted(snapshot.versions.items()))
    con, _ = connect(lake, as_of=spec)
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


def add_job_arguments(parser) -> None:
    """The flag both training jobs take beyond their settings: where models go."""
    from prefhouse.training import models

    parser.add_argument("--models-dir", type=Path, default=models.DEFAULT_DIR, help=f"where models are saved (default: {models.DEFAULT_DIR})")
