"""How a job's process starts and ends: what is decided before the data libraries load, and an exit without a last sweep.

Two costs of a large run are not its work, and both are settled outside it (measured on curation, 2 cores):

- polars allocates through its own jemalloc, which its ``__init__`` tells to hand freed pages back to the system
  half a second after they are freed (``dirty_decay_ms:500,muzzy_decay_ms:1000``, pola-rs/polars#18088). A run
  that builds and drops a batch's frames every fraction of a second then faults the same pages in again and
  again: 1.0M minor page faults and ~5 s of system time for the 1M-row benchmark. Kept :data:`JEMALLOC_DECAY_MS`
  instead, freed pages are mostly reused: 0.6M faults, ~4 s, the run 3-5% shorter. The pages kept cost memory:
  at 1M rows peak RSS is the same (1.67-1.71 GB), at 2M it is 1.89 GB instead of 1.75 (1.12x the 1M run; kept
  20 s, 1.98 GB for 0.5M faults: too close to the 1.2x the memory target allows). polars appends a
  ``_RJEM_MALLOC_CONF`` it finds to its own settings (the last one wins) and jemalloc reads them once, as polars
  loads: :func:`start` sets it, unless the user did, before anything imports polars.
- At exit the interpreter runs one last garbage collection over every object still alive (Great Expectations'
  expectation classes, pydantic models, the run's frames): 0.45 s after a 200,000-row curation. :func:`finish`
  freezes them first (``gc.freeze``), which leaves them to be freed without that walk. Not in a job that loaded
  torch or triton (training, generation, evaluation: minutes, where 0.45 s does not count): triton's nanobind
  bindings check at exit that every object of theirs was freed, and print a leak report of hundreds of lines
  when frozen cycles still hold some.

Both are for a process that runs one job and ends: a job called in-process (the tests) goes through neither.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from prefhouse.pipelines.core.config import answer_help

JEMALLOC_DECAY_MS = 5_000
JEMALLOC_CONF = f"dirty_decay_ms:{JEMALLOC_DECAY_MS},muzzy_decay_ms:{JEMALLOC_DECAY_MS}"
MODEL_STACK = frozenset({"torch", "triton"})  # loaded: the process ends with its last collection (see above)


def start(build_parser: Callable[[], argparse.ArgumentParser], argv: list[str] | None = None) -> None:
    """A job's first step as a process: the allocator's settings made, then a ``--help`` answered (and the process
    ended) from the job's parser alone. Called before the job's module imports polars."""
    set_allocator()
    answer_help(build_parser, argv)


def set_allocator() -> None:
    """polars' allocator settings (:data:`JEMALLOC_CONF`; a ``_RJEM_MALLOC_CONF`` the user set is kept): they take effect
    only in a process that has not imported polars yet."""
    os.environ.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)


def finish(code: int) -> NoReturn:
    """End the process with ``code``, without the interpreter's last garbage collection over what is still alive
    (with it, where torch or triton was loaded)."""
    freeze_what_is_alive()
    sys.exit(code)


def freeze_what_is_alive() -> None:
    """Move every object alive now out of the garbage collector's way (``gc.freeze``): it is never walked again, and
    the interpreter's last collection skips it. Not once torch or triton is loaded: what a frozen cycle holds is
    still alive at exit, and triton's bindings report each such object as a leak."""
    if not MODEL_STACK & sys.modules.keys():
        gc.freeze()
