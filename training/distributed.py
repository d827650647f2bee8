"""A training job as several processes (``accelerate launch``): which process writes, how the others wait, how to launch.

Every process trains; only the main one (rank 0) builds the quality report, logs the run, saves the
tokenizer, renames the staging folder and registers the model — after every process has saved its part of
the weights (ZeRO-3 gathers them on save). One process without a launcher is the main one, and waiting is a
no-op, so the jobs read the same either way. ``launch`` starts a job's own command line under ``accelerate
launch``: the iteration's train stage and ``train_dpo.py`` / ``train_rm.py`` with ``launcher = accelerate``
use it alike.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ACCELERATE_DIR = Path(__file__).resolve().parent / "accelerate"


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process may write: rank 0 of a launched job, or a job run without a launcher."""
    return int(os.environ.get("RANK", "0")) == 0


def _distributed() -> bool:
    """Whether this is one of several processes; joins their process group (gloo on CPU, NCCL on GPUs) if not yet joined."""
    if world_size() == 1:
        return False
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()  # the group the launcher's environment describes; the Trainer later finds it initialised
    return True


def wait_for_everyone() -> None:
    if _distributed():
        import torch.distributed as dist

        dist.barrier()


def on_main(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn``'s result on every process, computed by the main one only; its error raised on every process."""
    if not _distributed():
        return fn(*args, **kwargs)
    import torch.distributed as dist

    box: list = [None]
    if is_main():
        try:
            box = [("ok", fn(*args, **kwargs))]
        except Exception as exc:
            dist.broadcast_object_list([("error", f"{type(exc).__name__}: {exc}")], src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise RuntimeError(f"the main process failed: {value}")
    return value


def accelerate_command(num_processes: int, config_file: str | None) -> list[str]:
    """``accelerate launch`` for ``num_processes`` processes on this machine.

    ``config_file``: an accelerate config (e.g. ``training/accelerate/deepspeed_zero3.yaml``, whose relative
    DeepSpeed path is resolved against the repository). Without one: DeepSpeed ZeRO-3 on GPUs, as that file
    says, and plain processes over gloo on a CPU machine.
    """
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no"]
    if config_file:
        return cmd + ["--config_file", config_file]
    if torch.cuda.is_available():
        return cmd + ["--use_deepspeed", "--deepspeed_config_file", str(ACCELERATE_DIR.parent / "deepspeed" / "zero3.json"),
                      "--zero3_init_flag", "true"]
    return cmd + ["--multi_gpu"] if num_processes > 1 else cmd + ["--cpu"]  # torchrun processes; on a CPU machine they join over gloo


def config_path(name: str) -> str:
    """An accelerate config as given, or one of the repository's (``deepspeed_zero3`` or ``training/accelerate/….yaml``)."""
    for path in (Path(name), ACCELERATE_DIR / name, ACCELERATE_DIR / f"{name}.yaml", ACCELERATE_DIR.parent.parent / name):
        if path.is_file():
            return str(path.resolve())
    raise ValueError(f"accelerate config {name!r} not found (a YAML path, or one of {sorted(p.stem for p in ACCELERATE_DIR.glob('*.yaml'))})")


def launch(module: str, argv: list[str], num_processes: int, config_file: str | None) -> None:
    """Run ``python -m module *argv`` under ``accelerate launch``; a failed process fails the call, with the end of its output."""
    cmd = [*accelerate_command(num_processes, config_path(config_file) if config_file else None), "--module", module, *argv]
    print(f"  launching {num_processes} processes: accelerate launch {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True)
    sys.stderr.write(proc.stderr[-4000:])
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"{module} under accelerate launch exited with {proc.returncode}:\n{tail}")


def single_process_env() -> None:
    """The torch.distributed variables a launcher would set, for a single process (kept when already set)."""
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
