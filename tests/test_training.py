"""The training jobs with a tiny model: reward model, DPO, stored reference log-probs, the quality gate, DeepSpeed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.config import build, load_layers
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.core.settings import SettingsError
from prefhouse.pipelines.core.sql import run_query
from prefhouse.pipelines.curate import curate
from prefhouse.quality.report import ReportFailed
from prefhouse.training.train_dpo import DPOSettings, train_dpo
from prefhouse.training.train_rm import CATEGORIES, RewardModelSettings, train_reward_model

from .conftest import REPO, SAMPLES
from .helpers import copy_lake


@pytest.fixture
def training_lake(curated_lake: Lake) -> Lake:
    """The session's curated lake, never written: each test that trains takes its own copy (:func:`own_copy`)."""
    return curated_lake


def own_copy(lake: Lake, tmp_path: Path) -> Lake:
    return copy_lake(lake, tmp_path / "own-lake")


def moved_from(trained: str, base: str) -> list[str]:
    """The parameters trained and base share (same name and shape) whose values differ: empty if training did nothing."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(Path(trained, "model.safetensors"))), load_file(str(Path(base, "model.safetensors")))
    shared = [k for k in a if k in b and a[k].shape == b[k].shape]
    assert shared, "no parameter in common: not the same architecture"
    return [k for k in shared if not torch.equal(a[k], b[k])]


def test_presets_build_and_reject_unknown_keys() -> None:
    for preset in ("paper", "cpu"):
        layers = load_layers(preset)
        assert build(DPOSettings, layers, "dpo").beta == 0.1
        assert build(RewardModelSettings, layers, "reward_model").epochs == 1.0
    paper = build(DPOSettings, load_layers("paper"), "dpo")
    assert (paper.learning_rate, paper.epochs, paper.reference, paper.pairs) == (5e-7, 2.0, "initial", "all")
    assert build(DPOSettings, load_layers("cpu", overrides=["dpo.beta=0.2", "dpo.caps={\"shp\": 3}"]), "dpo").caps == {"shp": 3}
    with pytest.raises(SettingsError, match="dpo.betta"):
        build(DPOSettings, load_layers("cpu", overrides=["dpo.betta=0.2"]), "dpo")
    with pytest.raises(SettingsError, match="reference must be"):
        build(DPOSettings, load_layers("cpu", overrides=["dpo.reference=sft"]), "dpo")


def test_reward_model_trains_evaluates_and_registers(training_lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    training_lake = own_copy(training_lake, tmp_path)
    settings = RewardModelSettings(base_model=tiny_model, max_length=128, size_matched=4, eval_fraction=0.3)
    row = train_reward_model(training_lake, settings, tmp_path, progress=False)
    metrics = json.loads(row["metrics"])
    assert row["job_kind"] == "reward_model" and Path(row["output_path"], "config.json").exists()
    assert moved_from(row["output_path"], tiny_model)  # the backbone was trained, not only saved
    correct = sum(round(v["accuracy"] * v["pairs"]) for v in metrics["accuracy_by_source"].values())
    assert metrics["eval_pairs"] > 0 and metrics["accuracy"] == pytest.approx(correct / metrics["eval_pairs"])
    assert set(metrics["accuracy_by_category"]) <= set(CATEGORIES.values())
    assert sum(v["pairs"] for v in metrics["accuracy_by_source"].values()) == metrics["eval_pairs"]
    assert metrics["distinct_scores"] > 1  # pad != EOS: scores differ between inputs
    assert "mean" in metrics["length_correlation"]
    # lineage in SQL: the pairs that trained it are exactly the snapshot's train split, none of its eval prompts
    used = run_query(training_lake, "model_pairs", params={"model_id": row["model_id"]}).to_pylist()
    assert {"train", "eval"} <= {u["split"] for u in used} <= {"train", "eval", "train_unused"}
    assert len(used) == row["train_pairs"] + row["eval_pairs"]
    # the same job again finds the registered model instead of training
    assert train_reward_model(training_lake, settings, tmp_path, progress=False)["created_at"] == row["created_at"]


@pytest.mark.heavy
def test_dpo_stores_reference_logps_once_and_reuses_them(training_lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    training_lake = own_copy(training_lake, tmp_path)
    settings = DPOSettings(max_length=128, size_matched=2, epochs=1, per_device_batch_size=4, pairs="offline")
    first = train_dpo(training_lake, settings, 0, tiny_model, tiny_model, tmp_path, reports_dir=tmp_path / "reports", progress=False)
    m1 = json.loads(first["metrics"])
    assert m1["reference_logps_computed"] == first["train_pairs"] and m1["reference_logps_reused"] == 0
    stored = training_lake.read(S.REFERENCE_LOGPS)
    assert stored.num_rows == first["train_pairs"] and all(v < 0 for v in stored.column("chosen_logp").to_pylist())
    # another job (two epochs) with the same reference and encoding: nothing recomputed
    again = train_dpo(training_lake, DPOSettings(**{**settings.__dict__, "epochs": 2.0}), 0, tiny_model, tiny_model, tmp_path,
                      reports_dir=tmp_path / "reports", progress=False)
    m2 = json.loads(again["metrics"])
    assert again["model_id"] != first["model_id"] and m2["reference_logps_computed"] == 0 and m2["reference_logps_reused"] == first["train_pairs"]
    assert training_lake.read(S.REFERENCE_LOGPS).num_rows == first["train_pairs"]
    # the trained policy moved away from its reference and is registered with its reference and quality report
    assert moved_from(again["output_path"], tiny_model) and moved_from(first["output_path"], tiny_model)
    assert json.loads(again["quality"])["quality_status"] == "passed" and again["reference_model"] == Path(tiny_model).resolve().as_posix()
    # the same job again is found, not retrained
    assert train_dpo(training_lake, settings, 0, tiny_model, tiny_model, tmp_path, reports_dir=tmp_path / "reports", progress=False)["created_at"] == first["created_at"]


def test_dpo_refuses_a_failed_report_unless_overridden(lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    curate(["distilabel_math_preference_dpo"], lake, SAMPLES, progress=False)
    lake.append(S.PAIRS, lake.read(S.PAIRS).slice(0, 1), S.PAIR_PARTITIONS)  # a duplicate slipped past the gates
    settings = DPOSettings(max_length=128, epochs=1, per_device_batch_size=4, pairs="offline")
    with pytest.raises(ReportFailed, match="pair_id_unique"):
        train_dpo(lake, settings, 0, tiny_model, tiny_model, tmp_path, reports_dir=tmp_path / "reports", progress=False)
    assert lake.read(S.MODELS).num_rows == 0
    row = train_dpo(lake, settings, 0, tiny_model, tiny_model, tmp_path, override_quality=True, reports_dir=tmp_path / "reports", progress=False)
    quality = json.loads(row["quality"])
    assert quality["quality_override"] is True and any(f.startswith("pair_id_unique") for f in quality["quality_failures"])
    runs = lake.read(S.RUNS).to_pylist()
    assert json.loads([r for r in runs if r["pipeline"] == "train_dpo"][-1]["args"])["override_quality"] is True


@pytest.mark.heavy
def test_deepspeed_zero2_step_and_zero3_loadable_save(training_lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    """The CLI entry point under DeepSpeed on CPU (single process): ZeRO-2 trains, ZeRO-3 saves full weights."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed")
    from safetensors.torch import load_file

    training_lake = own_copy(training_lake, tmp_path)
    base = load_file(next(Path(tiny_model).glob("*.safetensors")))
    for stage in ("zero2", "zero3"):
        out = tmp_path / stage
        proc = subprocess.run(
            [sys.executable, "training/train_dpo.py", "--iter", "0", "--policy", tiny_model, "--initial", tiny_model, "--lake", training_lake.uri,
             "--models-dir", str(out), "--reports-dir", str(tmp_path / "reports"), "--deepspeed", stage, "--set", "dpo.pairs=offline",
             "--set", "dpo.size_matched=1", "--set", "dpo.max_length=128", "--set", "dpo.reference=previous"],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (saved,) = [p for p in out.iterdir() if p.name.startswith("dpo-")]
        weights = load_file(next(saved.glob("*.safetensors")))
        assert all(weights[k].shape == v.shape and weights[k].abs().sum() > 0 for k, v in base.items())  # ZeRO-3 saved full, non-empty weights
        assert json.loads(next(r for r in training_lake.read(S.MODELS).to_pylist() if r["output_path"] == str(saved))["hyperparameters"])["deepspeed"] == stage
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(saved)


def test_pairs_trl_drops_for_length_are_lineage_train_unused(training_lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    """With a max_length shorter than some pairs, TRL drops them: "which pairs trained this model" must not list them as train."""
    training_lake = own_copy(training_lake, tmp_path)
    settings = RewardModelSettings(base_model=tiny_model, max_length=64, size_matched=6, eval_fraction=0.3)
    row = train_reward_model(training_lake, settings, tmp_path, progress=False)
    unused = json.loads(row["metrics"])["train_pairs_unused"]
    lineage = run_query(training_lake, "model_pairs", params={"model_id": row["model_id"]}).to_pylist()
    splits = [u["split"] for u in lineage]
    assert 0 < unused < row["train_pairs"] and splits.count("train_unused") == unused
    assert splits.count("train") + unused == row["train_pairs"]


def test_trainer_options_reach_the_trainer_and_precision_keys_the_reference_logps(tmp_path: Path) -> None:
    from prefhouse.training.reference_logps import encoding_key

    from .helpers import llama3_style_tokenizer

    settings = DPOSettings(loss_type="ipo", label_smoothing=0.1, precision="fp32", gradient_checkpointing=False)
    kwargs = settings.trainer_kwargs(tmp_path)
    assert kwargs["bf16"] is False and kwargs["gradient_checkpointing"] is False and settings.resolved_precision() == "fp32"
    with pytest.raises(ValueError, match="label_smoothing"):
        DPOSettings(label_smoothing=0.5)
    with pytest.raises(ValueError, match="precision"):
        DPOSettings(precision="fp16")
    tokenizer = llama3_style_tokenizer()
    assert encoding_key(tokenizer, 256, "keep_start", "fp32") != encoding_key(tokenizer, 256, "keep_start", "bf16")


@pytest.mark.heavy
def test_two_processes_under_accelerate_write_once(training_lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    """``launcher = accelerate`` with 2 CPU processes (gloo): both train, one writes — one registered model, one run row, one
    set of lineage and reference rows, one checkpoint folder that loads. RM through its command line, DPO through
    ``train_dpo`` as the iteration's train stage calls it."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    lake = own_copy(training_lake, tmp_path)
    models_dir = tmp_path / "models"
    proc = subprocess.run(
        [sys.executable, "training/train_rm.py", "--lake", lake.uri, "--models-dir", str(models_dir), "--set", f"reward_model.base_model={tiny_model}",
         "--set", "reward_model.max_length=128", "--set", "reward_model.size_matched=4", "--set", "reward_model.launcher=accelerate",
         "--set", "reward_model.num_processes=2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    settings = DPOSettings(max_length=128, size_matched=2, per_device_batch_size=2, pairs="offline", reference="previous", launcher="accelerate",
                           num_processes=2)
    dpo = train_dpo(lake, settings, 0, tiny_model, tiny_model, models_dir, reports_dir=tmp_path / "reports", progress=False)
    models = {m["job_kind"]: m for m in lake.read(S.MODELS).to_pylist()}
    assert sorted(m["job_kind"] for m in lake.read(S.MODELS).to_pylist()) == ["dpo", "reward_model"]
    assert all(json.loads(m["metrics"])["processes"] == 2 for m in models.values())  # two processes did train
    runs = [r["pipeline"] for r in lake.read(S.RUNS).to_pylist()]
    assert runs.count("train_rm") == 1 and runs.count("train_dpo") == 1
    for model in models.values():
        lineage = run_query(lake, "model_pairs", params={"model_id": model["model_id"]}).to_pylist()
        assert len(lineage) == len({u["pair_id"] for u in lineage}) == model["train_pairs"] + model["eval_pairs"]
    assert lake.read(S.REFERENCE_LOGPS).num_rows == dpo["train_pairs"] + dpo["eval_pairs"]
    assert sorted(p.name for p in models_dir.iterdir()) == sorted(m["model_id"] for m in models.values())  # no staging folder left
    AutoModelForSequenceClassification.from_pretrained(models["reward_model"]["output_path"], num_labels=1)
    assert moved_from(AutoModelForCausalLM.from_pretrained(dpo["output_path"]) and dpo["output_path"], tiny_model)


KILLED_AFTER_FIRST_CHECKPOINT = """
import os, signal
from pathlib import Path
from transformers import Trainer
from prefhouse.pipelines.core.lake import Lake
from prefhouse.training.train_dpo import DPOSettings, train_dpo
real = Trainer._save_checkpoint
def killed_after_the_first_checkpoint(self, *args, **kwargs):
    real(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
Trainer._save_checkpoint = killed_after_the_first_checkpoint
train_dpo(Lake({lake!r}), DPOSettings(**{settings!r}), 0, {model!r}, {model!r}, Path({models!r}), reports_dir=Path({reports!r}), progress=False)
"""


@pytest.mark.heavy
def test_a_dpo_job_killed_after_a_checkpoint_resumes_from_it(training_lake: Lake, tiny_model: str, tmp_path: Path) -> None:
    """``save_steps = 1``: the job is killed (SIGKILL) right after its first checkpoint; the same job resumes at step 1,
    under the same model id, and ends with the weights of a run that was never interrupted."""
    lake = own_copy(training_lake, tmp_path)
    settings = DPOSettings(max_length=128, size_matched=2, per_device_batch_size=4, pairs="offline", save_steps=1, gradient_checkpointing=False)
    clean = own_copy(training_lake, tmp_path / "clean")  # the same job, never interrupted, in a lake of its own
    uninterrupted = train_dpo(clean, DPOSettings(**{**settings.__dict__, "save_steps": 0}), 0, tiny_model, tiny_model, tmp_path / "clean",
                              reports_dir=tmp_path / "reports", progress=False)
    models_dir = tmp_path / "models"
    code = KILLED_AFTER_FIRST_CHECKPOINT.format(lake=lake.uri, settings=settings.__dict__, model=tiny_model, models=str(models_dir),
                                                reports=str(tmp_path / "reports"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    (staging,) = models_dir.iterdir()
    assert staging.name == f".{uninterrupted['model_id']}.staging" and (staging / "trainer" / "checkpoint-1").is_dir()
    resumed = train_dpo(lake, settings, 0, tiny_model, tiny_model, models_dir, reports_dir=tmp_path / "reports", progress=False)
    assert json.loads(resumed["metrics"])["resumed_from_step"] == 1 and resumed["model_id"] == uninterrupted["model_id"]
    assert [p.name for p in models_dir.iterdir()] == [resumed["model_id"]]
    assert not moved_from(resumed["output_path"], uninterrupted["output_path"])  # the same weights as the uninterrupted run


def test_raw_trainer_tables_reach_trls_config_and_unknown_keys_fail_first(tmp_path: Path) -> None:
    config = tmp_path / "mine.toml"
    config.write_text('[dpo.trainer]\nmax_grad_norm = 0.3\nadam_beta2 = 0.95\n[reward_model.trainer]\nweight_decay = 0.01\n')
    layers = load_layers("cpu", config, ["dpo.trainer.max_grad_norm=0.5", "dpo.trainer.optim=adamw_torch"])
    dpo = build(DPOSettings, layers, "dpo")
    assert dpo.trainer == {"adam_beta2": 0.95, "max_grad_norm": 0.5, "optim": "adamw_torch"}  # --set wins key by key, the table stays
    kwargs = dpo.trainer_kwargs(tmp_path)
    assert (kwargs["max_grad_norm"], kwargs["adam_beta2"], kwargs["optim"]) == (0.5, 0.95, "adamw_torch")
    assert build(RewardModelSettings, layers, "reward_model").trainer_kwargs(tmp_path)["weight_decay"] == 0.01
    quiet = build(DPOSettings, load_layers("cpu", overrides=["dpo.trainer.disable_tqdm=true"]), "dpo")
    assert quiet.trainer_kwargs(tmp_path, disable_tqdm=False)["disable_tqdm"] is True  # the table wins over the job's own keys, once
    with pytest.raises(SettingsError, match="max_grad_nrom"):
        build(DPOSettings, load_layers("cpu", overrides=["dpo.trainer.max_grad_nrom=1"]), "dpo")
    with pytest.raises(SettingsError, match="beta.*RewardConfig"):  # a DPO option is not a reward model's
        build(RewardModelSettings, load_layers("cpu", overrides=["reward_model.trainer.beta=0.2"]), "reward_model")
    with pytest.raises(SettingsError, match="output_dir.*set by the job"):
        build(DPOSettings, load_layers("cpu", overrides=["dpo.trainer.output_dir=/tmp/x"]), "dpo")
    with pytest.raises(SettingsError, match="launcher"):
        build(DPOSettings, load_layers("cpu", overrides=["dpo.launcher=slurm"]), "dpo")


def test_the_paper_8gpu_preset_is_the_paper_at_its_scale() -> None:
    """Built and checked here, never run (hub ids and GPUs): the paper preset's numbers with 8 processes of ZeRO-3."""
    from prefhouse.pipelines.online.stages import IterationConfig

    config = IterationConfig.load("paper-8gpu")
    paper = IterationConfig.load("paper")
    assert (config.dpo.launcher, config.dpo.num_processes, config.dpo.deepspeed, config.dpo.precision) == ("accelerate", 8, "zero3", "bf16")
    assert config.dpo.per_device_batch_size * config.dpo.gradient_accumulation_steps * config.dpo.num_processes == 128
    rm = build(RewardModelSettings, load_layers("paper-8gpu"), "reward_model")
    assert rm.per_device_batch_size * rm.gradient_accumulation_steps * rm.num_processes == 512 and rm.learning_rate == 2e-6
    assert (config.dpo.beta, config.dpo.learning_rate, config.dpo.epochs, config.generate.n, config.prompts.m) == (0.1, 5e-7, 2.0, 8, 20000)
    assert config.prompts == paper.prompts and config.select == paper.select  # inherited, not copied
    assert config.iteration.initial_policy == "RLHFlow/LLaMA3-SFT" and config.generate.stop_token_ids == (128009,)
    assert (config.generate.executor, config.generate.replicas, config.score.executor, config.score.replicas) == ("ray", 8, "ray", 8)
