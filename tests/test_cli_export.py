"""The ``prefhouse`` command (one entry point, one meaning per exit code) and ``prefhouse export`` (TRL's layout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from prefhouse.pipelines import cli
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.lake import Lake

from .conftest import REPO


def test_prefhouse_dispatches_every_job_and_its_help(curated_lake: Lake, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["sql", "table1", "--lake", curated_lake.uri, "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("source,n_prompts")
    assert cli.main(["no-such-job"]) == 2 and "unknown job" in capsys.readouterr().err
    for job in cli.JOBS:
        with pytest.raises(SystemExit) as done:
            cli.main([job, "--help"])
        assert done.value.code == 0, job
        assert "usage:" in capsys.readouterr().out, job


def test_exit_codes_mean_the_same_everywhere(curated_lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = str(tmp_path / "empty")
    cases = [
        (["train-rm", "--set", "reward_model.nonsense=1", "--lake", empty], 2, "unknown setting"),
        (["train-dpo", "--iter", "1", "--set", "dpo.beta=high", "--lake", empty], 2, "dpo.beta: expected float"),
        (["iterate", "--iter", "2", "--lake", empty], 2, "iteration 1"),
        (["maintain", "vacuum", "--lake", empty], 2, "does not exist"),
        (["report", "--iter", "0", "--lake", empty, "--out", str(tmp_path / "r")], 1, ""),
        (["curate", "--sources", "nope", "--lake", empty], 2, "unknown source"),
    ]
    for argv, code, text in cases:
        assert cli.main(argv) == code, argv
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err, (argv, err)


def test_console_script_and_module_entry_points(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "prefhouse"
    proc = subprocess.run([str(script), "export", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--eval-fraction" in proc.stdout and "Default 'mix2'" in proc.stdout
    proc = subprocess.run([sys.executable, "pipelines/run_iteration.py", "--iter", "2", "--lake", str(tmp_path / "l")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr


def test_a_job_process_is_set_up_before_polars_loads_and_ends_with_the_job_code() -> None:
    """``start`` names polars' allocator settings before anything imports polars, which puts them after its own defaults
    (the last setting wins; a user's own stay); ``finish`` ends the process with the job's exit code."""
    from prefhouse.pipelines.core.process import JEMALLOC_CONF

    probe = ("import os, sys\nfrom prefhouse.pipelines.core.process import finish, start\nfrom prefhouse.pipelines.parsers import PARSERS\n"
             "start(PARSERS['sql'], [])\nassert 'polars' not in sys.modules\nimport polars\nprint(os.environ['_RJEM_MALLOC_CONF'])\nfinish(3)\n")
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    for own, expected in ((None, JEMALLOC_CONF), ("dirty_decay_ms:0", "dirty_decay_ms:0")):
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                              env=env if own is None else {**env, "_RJEM_MALLOC_CONF": own})
        assert proc.returncode == 3 and proc.stdout.strip().endswith("," + expected), (proc.stdout, proc.stderr)
    # curation's start also starts the Great Expectations worker, before the job's imports: GX never enters this process
    assert cli.GATES_FROM_THE_START == {"curate"}
    probe = ("import sys\nfrom prefhouse.pipelines.cli import start_process\nfrom prefhouse.pipelines.core.process import finish\n"
             "start_process('curate', [])\nfrom prefhouse.quality import gx_worker\n"
             "assert gx_worker._worker.process.poll() is None and not {'polars', 'great_expectations'} & sys.modules.keys()\n"
             "gx_worker._worker.wait_ready()\nassert gx_worker._worker._ready\nfinish(0)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "validating in this process" not in proc.stderr, proc.stderr
    # a job that loaded torch or triton ends with the last collection: frozen, triton's objects would make nanobind print leak reports
    # (and GX's import, which freezes what it built, does not freeze them either)
    probe = "import triton.language\nfrom prefhouse.quality.gx_import import import_gx\nimport_gx()\nfrom prefhouse.pipelines.core.process import finish\nfinish(0)\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "leaked" not in proc.stderr, proc.stderr


def test_export_is_trl_conversational_and_traceable(curated_lake: Lake, tmp_path: Path, tiny_model: str) -> None:
    import datasets

    out = tmp_path / "export"
    assert cli.main(["export", "--out", str(out), "--lake", curated_lake.uri, "--mixture", "mix1", "--eval-fraction", "0.2"]) == 0
    card = (out / "README.md").read_text()
    loaded = datasets.load_dataset("parquet", data_files={"train": str(out / "train.parquet"), "eval": str(out / "eval.parquet")})
    train = loaded["train"]
    assert set(train.column_names) >= {"prompt", "chosen", "rejected", "pair_id", "source", "iteration", "split"}
    assert set(train["source"]) <= {"hh_rlhf", "shp", "ultrafeedback"} and len(loaded["eval"]) > 0
    lake_pairs = pl.from_arrow(curated_lake.read(S.PAIRS)).filter(pl.col("pair_id").is_in(train["pair_id"]))
    assert lake_pairs.height == len(train)
    row = train[0]
    lake_row = lake_pairs.filter(pl.col("pair_id") == row["pair_id"]).row(0, named=True)
    assert row["prompt"] == lake_row["prompt"]  # the prompt turns, as the lake has them
    assert row["chosen"] == [lake_row["chosen"][-1]] and row["chosen"][0]["role"] == "assistant"  # the completion only
    assert row["rejected"] == [lake_row["rejected"][-1]]
    from prefhouse.training.snapshot import Selection, resolve

    snapshot = resolve(curated_lake, Selection(mixture="mix1", eval_fraction=0.2))
    assert snapshot.snapshot_hash in card and f'"pairs": {curated_lake.version(S.PAIRS)}' in card
    assert train["pair_id"] == snapshot.train.column("pair_id").to_pylist()  # the rows a training job reads, in its order

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, max_length=128, report_to=[],
                     save_strategy="no", use_cpu=True)
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, train_dataset=train.select(range(4)),
                         processing_class=AutoTokenizer.from_pretrained(tiny_model))
    assert trainer.train().global_step == 1


def test_one_configuration_path_defaults_preset_config_set_flag(tmp_path: Path) -> None:
    """Later layers win: dataclass default < preset < --config < --set < the setting's own flag; one coercion for all."""
    import argparse

    from prefhouse.pipelines.core.config import add_config_arguments, build, layers_from_args
    from prefhouse.pipelines.core.settings import SettingsError
    from prefhouse.training.train_dpo import DPOSettings

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, {"dpo": DPOSettings}, "lake", aliases={"--deepspeed": "dpo.deepspeed"})
    config = tmp_path / "mine.toml"
    config.write_text("[dpo]\nbeta = 0.3\nepochs = 3\n")
    settle = lambda *argv: build(DPOSettings, layers_from_args(parser.parse_args(list(argv))), "dpo")  # noqa: E731
    assert settle().beta == 0.1 and settle().learning_rate == 5e-6  # the cpu preset's learning rate over the default
    assert settle("--preset", "paper").per_device_batch_size == 2
    assert settle("--config", str(config)).beta == 0.3
    assert settle("--config", str(config), "--set", "dpo.beta=0.4").beta == 0.4
    mine = settle("--config", str(config), "--set", "dpo.beta=0.4", "--dpo.beta", "0.5", "--dpo.sources", "shp,online")
    assert (mine.beta, mine.epochs, mine.sources) == (0.5, 3.0, ("shp", "online"))
    assert settle("--deepspeed", "zero2").deepspeed == "zero2"
    for bad, text in ((["--dpo.beta", "high"], "dpo.beta: expected float"), (["--set", "dpo.nonsense=1"], "unknown setting"),
                      (["--set", "nosection.x=1"], "unknown config section"), (["--dpo.reference", "other"], "reference must be")):
        with pytest.raises(SettingsError, match=text):
            settle(*bad)
