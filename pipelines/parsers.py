"""The command line of every job, by ``prefhouse`` job name, and the parsers of the entry points.

A job's parser needs its settings dataclasses, the shared names of ``pipelines/core/names.py`` and the job's
docstring (read from its source, not imported): none of them imports polars, pyarrow, DuckDB, deltalake or
anything heavier, which only the jobs themselves do, so ``prefhouse <job> --help`` and a script's ``--help``
cost an interpreter's start-up (``pipelines/core/config.py::answer_help``). A job below the entry points keeps
its parser with its settings, in its own layer (curation: ``pipelines/sources/settings.py``; the training jobs
and export: ``training/settings.py``; the report: ``quality/settings.py``); the entry points' are here. Each
job's ``main`` parses with the same function (its ``build_parser``), so the help and the job cannot disagree.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from prefhouse.pipelines.core.config import add_config_arguments, job_summary, parser_with_examples
from prefhouse.pipelines.core.names import DEFAULT_LAKE, DEFAULT_MEMORY_LIMIT, DEFAULT_SAMPLES, DEFAULT_TIMEOUT_S, PAIRS, SQL_FORMATS, named_queries
from prefhouse.pipelines.online.settings import STAGES, IterationConfig
from prefhouse.pipelines.sources.settings import curate_parser
from prefhouse.quality.settings import report_parser
from prefhouse.training import models
from prefhouse.training.settings import RewardModelSettings, export_parser, train_dpo_parser, train_rm_parser


def iterate_parser() -> argparse.ArgumentParser:
    parser = parser_with_examples("python pipelines/run_iteration.py", "prefhouse.pipelines.run_iteration")
    parser.add_argument("--iter", dest="iteration", type=int, required=True, help="the iteration to run (1, 2, …)")
    parser.add_argument("--from-stage", choices=STAGES, help="re-run this stage and every later one")
    parser.add_argument("--until", choices=STAGES, help="stop after this stage (e.g. report, then DPO on a cluster; the same command "
                                                        "without --until then finds that model registered and goes on)")
    parser.add_argument("--force", action="store_true", help="re-run every stage (rows already present are not written twice)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--override-quality", action="store_true", help="train even if the quality report failed (recorded)")
    parser.add_argument("--models-dir", type=Path, default=models.DEFAULT_DIR)
    parser.add_argument("--reports-dir", type=Path, default=None)
    add_config_arguments(parser, IterationConfig.SECTIONS, DEFAULT_LAKE, aliases={"--engine": "generate.engine"})
    return parser


def evaluate_parser() -> argparse.ArgumentParser:
    parser = parser_with_examples("prefhouse evaluate", "prefhouse.pipelines.evaluate_policy")
    parser.add_argument("--model", required=True, help="the policy to evaluate: a registered model id, a path or a hub id")
    parser.add_argument("--against", action="append", default=[], help="another policy to compare with (repeatable); π0 always is")
    parser.add_argument("--iter", dest="iteration", type=int, default=0, help="the evaluations partition to record under (default 0: standalone)")
    parser.add_argument("--models-dir", type=Path, default=models.DEFAULT_DIR)
    add_config_arguments(parser, IterationConfig.SECTIONS, DEFAULT_LAKE, aliases={"--engine": "generate.engine"})
    return parser


def loop_parser() -> argparse.ArgumentParser:
    parser = parser_with_examples("python pipelines/run_loop.py", "prefhouse.pipelines.run_loop")
    parser.add_argument("--iterations", type=int, default=2, help="online iterations to run (default 2)")
    parser.add_argument("--sources", default="all", help="sources to curate: all, mix1, mix2 or names (default: all)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_SAMPLES, help="raw files to curate (default: the bundled samples)")
    parser.add_argument("--models-dir", type=Path, default=models.DEFAULT_DIR)
    parser.add_argument("--reports-dir", type=Path, default=None)
    add_config_arguments(parser, {"reward_model": RewardModelSettings, **IterationConfig.SECTIONS}, DEFAULT_LAKE,
                         aliases={"--engine": "generate.engine"})
    return parser


def sql_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.sql",
        description=job_summary("prefhouse.pipelines.sql"),
        epilog=f"Named queries: {', '.join(named_queries())}.",
    )
    parser.add_argument("query", nargs="?", help="a named query, a .sql file, or SQL text")
    parser.add_argument("--lake", default=DEFAULT_LAKE, help=f"lake URI (default: {DEFAULT_LAKE})")
    parser.add_argument("--as-of", help="N (pairs version N, other tables as of its commit), TABLE=V[,…], an ISO timestamp, or run:RUN_ID")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a $NAME parameter of the query (repeatable)")
    parser.add_argument("--format", choices=SQL_FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--output", type=Path, help="write the result to this file instead of standard output (not inside the lake)")
    parser.add_argument("--memory-limit", default=DEFAULT_MEMORY_LIMIT, help=f"DuckDB's memory limit; it spills beyond it (default: {DEFAULT_MEMORY_LIMIT})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help=f"stop a query after this many seconds; 0: never (default: {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--list", action="store_true", help="list the named queries and the lake's tables with their versions")
    return parser


def maintain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.maintain", description=job_summary("prefhouse.pipelines.maintain"))
    parser.add_argument("action", choices=["optimize", "vacuum"])
    parser.add_argument("--lake", default=DEFAULT_LAKE)
    parser.add_argument("--tables", default=PAIRS, help="comma-separated table names (default: pairs)")
    parser.add_argument("--zorder", help="optimize: cluster by these comma-separated columns (e.g. pair_id)")
    parser.add_argument("--retention-hours", type=int, help="vacuum: keep files referenced within this many hours (default: the table's, 168)")
    parser.add_argument("--apply", action="store_true", help="vacuum: delete the files (without it, only list them)")
    return parser


PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {  # prefhouse <job>: its parser
    "curate": curate_parser, "iterate": iterate_parser, "evaluate": evaluate_parser, "loop": loop_parser,
    "train-rm": train_rm_parser, "train-dpo": train_dpo_parser, "sql": sql_parser, "report": report_parser,
    "export": export_parser, "maintain": maintain_parser,
}
