"""The training jobs' settings: which pairs (:class:`Selection`), how to optimise, and the two jobs' own.

They are the ``[reward_model]``, ``[dpo]`` and ``[judge]`` sections of a preset, and every field is a flag
of the jobs' commands, whose parsers (and export's) are here too. They live apart from the jobs, which import
pyarrow, DuckDB and the lake, so that a command's ``--help`` lists them without loading any of those; a value
that does not fit fails here, before any work (TRL is imported only to check a ``trainer`` table, when one is given).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from prefhouse.pipelines.core.config import add_config_arguments, add_dataclass_flags, job_summary
from prefhouse.pipelines.core.names import DEFAULT_LAKE, OFFLINE_SOURCES
from prefhouse.pipelines.core.settings import setting
from prefhouse.pipelines.sources.settings import MIXTURES
from prefhouse.training import models
from prefhouse.training.distributed import config_path

DEEPSPEED_DIR = Path(__file__).resolve().parent / "deepspeed"


@dataclass(frozen=True)
class PairChoice:
    """Which sources, and how many of each one's pairs: what a training job's settings choose ([reward_model], [dpo])."""

    mixture: str = setting("mix2", "offline sources: mix1 | mix2 (RECIPE §1) | all")
    sources: tuple[str, ...] = setting((), "explicit sources instead of the mixture (comma-separated; online for online pairs)")
    caps: dict[str, int] = setting(help="at most this many pairs of a source (JSON object)", factory=dict)
    fractions: dict[str, float] = setting(help="keep this share of a source's pairs (JSON object)", factory=dict)
    size_matched: int | None = setting(None, "keep this many pairs of every offline source (Tulu 2.5: 60,908); online pairs are never sub-sampled")
    where: str | None = setting(None, "a SQL condition over pairs")
    eval_fraction: float = setting(0.0, "share of prompts held out for evaluation (a prompt's pairs are all train or all eval)")
    splits: str = setting("train", "train: only the sources' training splits (RewardBench's prior sets overlap their test splits) | eval: "
                                   "only their evaluation splits (test, validation, dev…) | all")


@dataclass(frozen=True)
class Selection(PairChoice):
    """Which pairs of the pinned lake a job trains and evaluates on: a :class:`PairChoice` plus which iterations.

    mixture: ``mix1`` / ``mix2`` (RECIPE §1) or ``all``; ``sources`` overrides it when given. Online pairs
    (source ``online``) are included per ``iterations``.
    iterations: ``all`` (the selected offline pairs and every online pair up to ``max_iteration``; the paper's
    DPO trains on the online pairs of every iteration so far, which is ``all`` with ``sources = online``, as the
    paper preset sets), ``latest`` (public scripts: only iteration ``max_iteration``'s online pairs), or ``offline``.
    caps / fractions: per-source maximum pair count / share kept. size_matched: keep this many pairs of
    every offline source (Tulu 2.5 sub-samples each dataset to 60,908; online pairs are never sub-sampled). where: a SQL condition over ``pairs``.
    eval_fraction: share of prompts held out for evaluation; a prompt's pairs are all train or all eval.
    """

    iterations: str = setting("all", "all (the offline selection and every online pair so far; paper, with sources = online) | latest (that iteration's only) | offline")
    max_iteration: int = setting(0, "the last iteration whose online pairs are read")
    seed: int = setting(42, "seed of every random choice (sub-sampling, held-out prompts)")

    def __post_init__(self) -> None:
        if self.mixture not in (*MIXTURES, "all"):
            raise ValueError(f"mixture must be one of {', '.join(MIXTURES)}, all; not {self.mixture!r}")
        if self.iterations not in ("all", "latest", "offline"):
            raise ValueError(f"iterations must be all, latest or offline; not {self.iterations!r}")
        if self.splits not in ("train", "eval", "all"):
            raise ValueError(f"splits must be train, eval or all; not {self.splits!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("eval_fraction must be in [0, 1)")
        if self.where and re.search(r";|\b(copy|attach|install|load|pragma|set)\b", self.where, re.I):
            raise ValueError("where must be a single SQL condition")

    def offline_sources(self) -> list[str]:
        if self.sources:
            return [s for s in self.sources if s != "online"]
        return list(OFFLINE_SOURCES) if self.mixture == "all" else MIXTURES[self.mixture]


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
            from prefhouse.training.distributed import single_process_env

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


@dataclass(frozen=True)
class DPOSettings(Optimisation):
    learning_rate: float = setting(5e-7, "peak learning rate (RECIPE §4: 5e-7)")
    epochs: float = setting(2.0, "passes over the pairs (RECIPE §4: 2)")
    beta: float = setting(0.1, "DPO's β, the KL strength")
    loss_type: str = setting("sigmoid", "TRL's DPO loss: sigmoid (DPO, the paper) | ipo | hinge | robust | … (DPOConfig.loss_type)")
    label_smoothing: float = setting(0.0, "assumed share of flipped labels (cDPO / robust DPO); 0: plain DPO")
    reference: str = setting("initial", "initial: π0 fixed (paper) | previous: the policy being trained (public scripts)")
    pairs: str = setting("all", "all: every historical pair (paper) | latest: only iteration N's | offline")
    truncation_mode: str = setting("keep_start", "how TRL cuts a pair over max_length: keep_start | keep_end")
    store_reference_logps: bool = setting(True, "reuse the reference log-probs stored in the lake; false: the reference model runs on every batch")
    precompute_batch_size: int = setting(8, "pairs per batch when computing reference log-probs")

    TRAINER_CONFIG: ClassVar[str] = "DPOConfig"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.reference not in ("initial", "previous"):
            raise ValueError(f"reference must be initial or previous, not {self.reference!r}")
        if self.pairs not in ("all", "latest", "offline"):
            raise ValueError(f"pairs must be all, latest or offline, not {self.pairs!r}")
        if self.beta <= 0:
            raise ValueError("beta must be positive")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError("label_smoothing must be in [0, 0.5)")


@dataclass(frozen=True)
class RewardModelSettings(Optimisation):
    base_model: str = setting(models.DEFAULT, "the model given a scalar head (a path or hub id)")
    learning_rate: float = setting(1e-5, "peak learning rate (RECIPE §2: 2e-6, or 1e-5 for small models)")
    eval_fraction: float = setting(0.1, "share of prompts held out to measure accuracy")
    min_responses_for_correlation: int = setting(3, "responses a prompt needs to enter the reward/length correlation")


# ---------------------------------------------------------------------------------------------- command lines
def _models_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, default=models.DEFAULT_DIR, help=f"where models are saved (default: {models.DEFAULT_DIR})")


def train_rm_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python training/train_rm.py", description=job_summary("prefhouse.training.train_rm"))
    add_config_arguments(parser, {"reward_model": RewardModelSettings}, DEFAULT_LAKE, aliases={"--deepspeed": "reward_model.deepspeed"})
    _models_dir_flag(parser)
    parser.add_argument("--job-kind", choices=("reward_model", "judge"), default="reward_model",
                        help="reward_model: the proxy the iterations score with | judge: the evaluation's second judge")
    return parser


def train_dpo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python training/train_dpo.py", description=job_summary("prefhouse.training.train_dpo"))
    parser.add_argument("--iter", dest="iteration", type=int, required=True, help="train on pairs up to this iteration (0: offline only)")
    parser.add_argument("--policy", default=models.DEFAULT, help="the model to train (default: the embedded SmolLM2)")
    parser.add_argument("--initial", default=models.DEFAULT, help="π0, the reference when dpo.reference=initial")
    parser.add_argument("--override-quality", action="store_true", help="train even if the quality report failed (recorded)")
    parser.add_argument("--reports-dir", type=Path, default=None)
    add_config_arguments(parser, {"dpo": DPOSettings}, DEFAULT_LAKE, aliases={"--deepspeed": "dpo.deepspeed"})
    _models_dir_flag(parser)
    return parser


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prefhouse export", description=job_summary("prefhouse.training.export"))
    parser.add_argument("--out", type=Path, required=True, help="folder to write train.parquet, eval.parquet and README.md into")
    parser.add_argument("--lake", default=DEFAULT_LAKE, help=f"lake URI (default: {DEFAULT_LAKE})")
    parser.add_argument("--pairs-version", type=int, help="read pairs at this version (default: the latest)")
    parser.add_argument("--push-to-hub", metavar="REPO", help="also upload to this hub dataset repository, revision = snapshot hash (needs network)")
    add_dataclass_flags(parser, Selection, "selection", prefixed=False)
    return parser
