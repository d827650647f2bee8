"""The ``prefhouse`` command: one entry point, a subcommand per job, one meaning for every exit code.

    prefhouse curate --sources all          prefhouse iterate --iter 2          prefhouse loop
    prefhouse train-rm --preset cpu         prefhouse train-dpo --iter 1 …      prefhouse sql table1
    prefhouse report --iter 1               prefhouse export --out DIR …        prefhouse maintain vacuum
    prefhouse evaluate --model ID

Each subcommand is the job's own command line (``prefhouse curate --help`` lists every setting with its
default); the scripts of the card keep working (``python pipelines/run_iteration.py --iter 2``, ``python -m
pipelines.sql …``) and answer with the same exit codes: 0 done, 1 a quality gate or report refused the
work, 2 a usage, configuration, input or lake-state error, each with one line on standard error (``--debug``
shows the traceback). A job's module is imported only when it runs: ``prefhouse --help`` imports no job, and
``prefhouse <job> --help`` only the job's parser (``pipelines/parsers.py``), which imports no data library.
"""

from __future__ import annotations

import importlib
import sys

from prefhouse.pipelines.core.errors import OK, USAGE, run
from prefhouse.pipelines.core.process import finish, start
from prefhouse.pipelines.parsers import PARSERS

JOBS: dict[str, tuple[str, str]] = {  # subcommand: (module with main(argv), what it does)
    "curate": ("prefhouse.pipelines.curate", "raw source files -> the lake's pairs, prompts, quarantine and run log"),
    "iterate": ("prefhouse.pipelines.run_iteration", "one online iteration: prompts, generate, score, select, report, train, evaluate"),
    "evaluate": ("prefhouse.pipelines.evaluate_policy", "a policy against π0 (and others) on the fixed evaluation set, under two judges"),
    "loop": ("prefhouse.pipelines.run_loop", "the main job: curate, reward model, iterations 1..K, SQL summary"),
    "train-rm": ("prefhouse.training.train_rm", "train the reward model on a lake snapshot"),
    "train-dpo": ("prefhouse.training.train_dpo", "DPO on a lake snapshot, behind the quality report"),
    "sql": ("prefhouse.pipelines.sql", "read-only SQL over the lake (named queries, files or SELECT text)"),
    "report": ("prefhouse.quality.report", "the data-quality report before DPO round N"),
    "export": ("prefhouse.training.export", "a snapshot as Parquet in TRL's preference layout, with a dataset card"),
    "maintain": ("prefhouse.pipelines.maintain", "optimize (compact, z-order) or vacuum lake tables"),
}

# jobs of seconds judged by quality gates: their Great Expectations worker (quality.gx_worker) starts with the process, so
# that GX's import (~1.7 s of CPU) runs beside the job's own imports and lake set-up (~1 s on one core, the other idle)
# instead of competing with its first batches (0.98x wall, paired); the others' minutes of training and generation leave
# its start at their first gate
GATES_FROM_THE_START = frozenset({"curate"})


def usage() -> str:
    width = max(map(len, JOBS))
    lines = ["usage: prefhouse <job> [options]    (prefhouse <job> --help: the job's options and settings)", "", "jobs:"]
    lines += [f"  {name:{width}}  {what}" for name, (_, what) in JOBS.items()]
    lines += ["", "exit codes: 0 done, 1 a quality gate or report refused the work, 2 a usage, configuration, input or lake error"]
    return "\n".join(lines)


def start_process(job: str, argv: list[str]) -> None:
    """The job's process set up (:func:`~prefhouse.pipelines.core.process.start`: a ``--help`` answered from its parser
    alone, nothing of the job imported), then, for a job of :data:`GATES_FROM_THE_START`, its GX worker started."""
    start(PARSERS[job], argv)
    if job in GATES_FROM_THE_START:
        from prefhouse.quality.gx_worker import worker

        worker()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return OK if argv else USAGE
    job, rest = argv[0], argv[1:]
    if job not in JOBS:
        print(f"error: unknown job {job!r}\n\n{usage()}", file=sys.stderr)
        return USAGE
    sys.argv[0] = f"prefhouse {job}"
    start_process(job, rest)
    module = importlib.import_module(JOBS[job][0])
    return run(module.main, rest)


def entry() -> None:
    """The ``prefhouse`` console script: :func:`main` as the whole life of the process."""
    finish(main())


if __name__ == "__main__":
    entry()
