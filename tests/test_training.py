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
from prefhouse.pipelines.sources.settings import resolve_sources
from prefhouse.quality.report import ReportFailed
from prefhouse.training.train_dpo import DPOSettings, train_dpo
from prefhouse.training.train_rm import CATEGORIES, RewardModelSettings, train_reward_model

from .conftest import REPO, SAMPLES


@pytest.fixture(scope="module")
def training_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Curated once per module and never written: each test that trains takes its own copy (:func:`own_copy`)."""
    lake = Lake(str(tmp_path_factory.mktemp("training") / "lake"))
    curate(resolve_sources("all"), lake, SAMPLES, progress=False)
    return lake


def own_copy(lake: Lake, tmp_path: Path) -> Lake:
    """A private copy of the module's curated lake, for a test that writes to it (no test may see another's writes)."""
    import shutil

    shutil.copytree(lake.uri, tmp_path / "own-lake")
    return Lake(str(tmp_path / "own-lake"))


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
