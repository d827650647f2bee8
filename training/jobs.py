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
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow.compute as pc
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake
from prefhouse.training.distributed import is_main, launch, wait_for_everyone, world_size
from prefhouse.training.settings import Optimisation


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
