"""The online iteration's settings: the ``[prompts]``, ``[generate]``, ``[score]``, ``[select]``, ``[iteration]``,
``[evaluate]`` sections of a preset (with the training jobs' ``[dpo]`` and ``[judge]``), gathered in :class:`IterationConfig`.

They live apart from the stages, which import polars, pyarrow and the lake, so that ``prefhouse iterate --help``
lists every setting without loading those; a value that does not fit fails when the config is built, before any work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from prefhouse.pipelines.core.config import build, check_sections, load_layers
from prefhouse.pipelines.core.settings import setting
from prefhouse.training import models
from prefhouse.training.settings import DPOSettings, RewardModelSettings

# The stages of an iteration, in their order (the stage log in ``iterations`` names them)
STAGES = ("prompts", "generate", "score", "select", "report", "train", "evaluate")
POLICY_STAGE = "train"  # the stage whose policy the next iteration generates with

# The recipe's prompt pool (DIBT-10K is not among the ten curated sources, so it is not in the default).
DEFAULT_POOL = {
    "ultrafeedback": 0.4, "helpsteer": 0.1, "distilabel_intel_orca_dpo_pairs": 0.15,
    "ultrainteract_pair": 0.2, "distilabel_capybara_dpo_7k_binarized": 0.15,
}


@dataclass(frozen=True)
class DrawSettings:
    m: int = setting(help="prompts to draw for the iteration (paper: 20,000)")
    mixture: dict[str, float] = setting(help="share of the draw per source (JSON object); the default is stated against the paper's prompt sources in the README", factory=lambda: dict(DEFAULT_POOL))
    seed: int = setting(42, "seed of the stratified draw")
    splits: str = setting("train", "train: prompts of the sources' training splits, never one that also appears in an evaluation split | all")

    def __post_init__(self) -> None:
        if self.splits not in ("train", "all"):
            raise ValueError(f"splits must be train or all; not {self.splits!r}")
        if self.m <= 0:
            raise ValueError("m must be positive")
        if not self.mixture or any(v < 0 for v in self.mixture.values()) or sum(self.mixture.values()) <= 0:
            raise ValueError("mixture needs non-negative shares that sum to more than 0")


EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorSettings:
    """Settings every distributable stage shares (the ``[generate]`` and ``[score]`` sections)."""

    executor: str = setting("local", "local: this process | ray: an actor pool on a Ray cluster (one model replica per actor)")
    replicas: int = setting(1, "ray: model replicas (actors); each holds num_gpus GPUs (x tensor_parallel_size for vLLM)")
    ray_address: str | None = setting(None, "ray: the cluster to join (auto | ray://host:10001); none: RAY_ADDRESS, else a new local Ray")
    num_gpus: float = setting(0.0, "ray: GPUs per replica (1 on a GPU node)")
    num_cpus: float = setting(1.0, "ray: CPUs per replica")

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        if self.replicas < 1 or self.num_gpus < 0 or self.num_cpus < 0:
            raise ValueError("replicas must be at least 1, num_gpus and num_cpus at least 0")
        if self.executor == "local" and self.replicas != 1:
            raise ValueError("replicas > 1 needs executor = ray")

    def gpus_per_replica(self) -> float:
        return self.num_gpus


@dataclass(frozen=True)
class SamplingSettings:
    n: int = setting(8, "responses sampled per prompt")
    temperatures: tuple[float, ...] = setting((1.0, 0.7), "temperatures the n samples are split over (paper: 1.0 and 0.7; the public loop scripts use 1.0 only)")
    max_new_tokens: int = setting(2048, "longest response, in tokens")
    seed: int = setting(42, "sampling seed; each prompt's seed derives from it, so a resumed stage reproduces its responses")
    stop_token_ids: tuple[int, ...] = setting((), "token ids that end a response besides the tokenizer's EOS and the model's "
                                                  "generation_config EOS list (Llama-3 chat models end a turn with <|eot_id|>)")

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n must be at least 1")
        if not self.temperatures or any(t <= 0 for t in self.temperatures):
            raise ValueError("temperatures must be positive")

    def per_temperature(self) -> list[tuple[float, int]]:
        """How many of the n samples each temperature gets (as even a split as n allows, first ones first)."""
        k = len(self.temperatures)
        return [(t, self.n // k + (1 if i < self.n % k else 0)) for i, t in enumerate(self.temperatures)]


ENGINES = ("auto", "vllm", "transformers")


def pick_engine(engine: str) -> str:
    """``auto``: vLLM when it can be imported, else transformers."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine != "auto":
        return engine
    import importlib.util

    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


STRATEGIES = ("max_min", "max_random", "max_max", "random")


@dataclass(frozen=True)
class SelectSettings:
    strategy: str = setting("max_min", "max_min (best vs worst, paper) | max_random | max_max | random")
    length_penalty: float = setting(0.0, "λ of the ranking score r - λ·|a| (eq. 8); the paper's concise variant uses 0.001")
    seed: int = setting(42, "seed of the random strategies")

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.length_penalty < 0:
            raise ValueError("length_penalty must be >= 0")


@dataclass(frozen=True)
class EvaluateSettings:
    enabled: bool = setting(True, "run the evaluate stage at the end of every iteration")
    prompts: int = setting(64, "size of the fixed evaluation set, drawn once (64 prompts: a win-rate interval of about ±12 points)")
    samples: int = setting(1, "answers per prompt and policy (a prompt's reward is their mean)")
    temperature: float = setting(1.0, "sampling temperature of the answers (1.0: the KL estimate is of the policy itself)")
    max_new_tokens: int = setting(2048, "longest answer, in tokens")
    seed: int = setting(7, "seed of the evaluation set's draw and of the answers' sampling")
    judge: str = setting("train", "the second judge: train (a reward model by the [judge] section, trained once) | a registered "
                                  "model id, path or hub id | none")
    bootstrap: int = setting(1000, "bootstrap resamples of the prompts for each interval")

    def __post_init__(self) -> None:
        if self.prompts < 1 or self.samples < 1 or self.temperature <= 0 or self.max_new_tokens < 1 or self.bootstrap < 1:
            raise ValueError("evaluate.prompts, samples, max_new_tokens and bootstrap must be positive, temperature above 0")

    def sampling(self, stop_token_ids: tuple[int, ...] = ()) -> SamplingSettings:
        return SamplingSettings(self.samples, (self.temperature,), self.max_new_tokens, self.seed, stop_token_ids)

    @property
    def key(self) -> str:
        """What makes two answers comparable: the sampling settings (not the set size, the judge or the bootstrap)."""
        spec = json.dumps(asdict(self.sampling()), sort_keys=True)
        return hashlib.md5(spec.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class GenerateSettings(SamplingSettings, ExecutorSettings):
    engine: str = setting("auto", "auto | vllm | transformers")
    chunk_prompts: int = setting(32, "prompts per commit of generation and scoring (a shard of the ray executor): what a crash can cost")
    keep_truncated: bool = setting(True, "whether responses cut at max_new_tokens (finish_reason = length) may enter pairs; they are "
                                         "stored and scored either way, and counted (the reference code keeps them)")
    tensor_parallel_size: int = setting(1, "vLLM: GPUs one policy replica is split over (a policy that does not fit one GPU)")
    gpu_memory_utilization: float = setting(0.9, "vLLM: share of each GPU's memory for weights and KV cache")
    max_model_len: int | None = setting(None, "vLLM: longest prompt + response; none: the model's own")

    def __post_init__(self) -> None:
        SamplingSettings.__post_init__(self)
        ExecutorSettings.__post_init__(self)
        if self.n < 2:
            raise ValueError("n must be at least 2: a pair needs two responses")
        pick_engine(self.engine)
        if self.chunk_prompts < 1 or self.tensor_parallel_size < 1 or not 0 < self.gpu_memory_utilization <= 1:
            raise ValueError("chunk_prompts and tensor_parallel_size must be at least 1, gpu_memory_utilization in (0, 1]")

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.n, self.temperatures, self.max_new_tokens, self.seed, self.stop_token_ids)

    def gpus_per_replica(self) -> float:
        return self.num_gpus * self.tensor_parallel_size

    def vllm_options(self) -> dict:
        return {"tensor_parallel_size": self.tensor_parallel_size, "gpu_memory_utilization": self.gpu_memory_utilization,
                "max_model_len": self.max_model_len}


@dataclass(frozen=True)
class ScoreSettings(ExecutorSettings):
    """How the online iteration scores its responses with the reward model (the ``[score]`` section)."""

    max_length: int = setting(2048, "longest prompt + response the reward model reads, in tokens; longer ones lose the start of "
                                     "the prompt, and a response longer on its own is scored on its first tokens (both counted)")
    batch_tokens: int = setting(16_384, "tokens per scoring batch (length-bucketed, padded to the longest)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length < 8 or self.batch_tokens < self.max_length:
            raise ValueError("max_length must be at least 8 and batch_tokens at least max_length")


@dataclass(frozen=True)
class IterationSettings:
    initial_policy: str = setting(models.DEFAULT, "π0: the policy of iteration 1 and the paper's fixed DPO reference (a path or hub id)")
    reward_model: str = setting("latest", "latest: the newest registered reward model when iteration 1 scores, kept for every later "
                                          "iteration (the paper's fixed proxy); or a model id, path or hub id")


@dataclass(frozen=True)
class IterationConfig:
    prompts: DrawSettings
    generate: GenerateSettings
    score: ScoreSettings
    select: SelectSettings
    dpo: DPOSettings
    iteration: IterationSettings
    evaluate: EvaluateSettings
    judge: RewardModelSettings

    SECTIONS: ClassVar[dict[str, type]] = {"prompts": DrawSettings, "generate": GenerateSettings, "score": ScoreSettings,
                                           "select": SelectSettings, "dpo": DPOSettings,
                                           "iteration": IterationSettings, "evaluate": EvaluateSettings, "judge": RewardModelSettings}

    @classmethod
    def load(cls, preset: str = "cpu", config: Path | None = None, overrides: list[str] | None = None) -> IterationConfig:
        """All sections built and checked: a bad value fails here, before any work."""
        layers = load_layers(preset, config, overrides)
        check_sections(layers)
        return cls.from_layers(layers)

    @classmethod
    def from_layers(cls, layers: dict) -> IterationConfig:
        """Every section built from merged layers (:func:`prefhouse.pipelines.core.config.layers_from_args`)."""
        return cls(**{section: build(settings, layers, section) for section, settings in cls.SECTIONS.items()})
