"""The limits the quality gates check on every append, the report's warning thresholds, and the report's command line.

Plain dataclasses and a parser, apart from the checks and the report (which import polars and pyarrow), so
that ``prefhouse report --help`` shows their defaults without loading a data library.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from prefhouse.pipelines.core.config import job_summary
from prefhouse.pipelines.core.names import DEFAULT_LAKE, DEFAULT_REPORTS


@dataclass(frozen=True)
class Bounds:
    """Configured limits checked on every append (characters; generous defaults, tighten per project)."""

    min_chars: int = 1
    max_prompt_chars: int = 200_000
    max_reply_chars: int = 100_000


@dataclass(frozen=True)
class ReportSettings:
    """Thresholds of the report's warnings."""

    max_mean_length_correlation: float = 0.2  # paper Fig. 5: 0.06 for their RM, 0.19 for UltraRM-13B
    min_responses_for_correlation: int = 3
    mixture: dict[str, float] | None = None  # intended share per source; None: no drift check
    share_tolerance: float = 0.05  # absolute difference in share that raises a warning
    bounds: Bounds = Bounds()


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m quality.report", description=job_summary("prefhouse.quality.report"))
    parser.add_argument("--iter", dest="iteration", type=int, required=True, help="the DPO round: the snapshot is every pair with iteration <= N")
    parser.add_argument("--lake", default=DEFAULT_LAKE)
    parser.add_argument("--out", type=Path, default=DEFAULT_REPORTS, help=f"folder for the report (default: {DEFAULT_REPORTS}/iteration-N/)")
    parser.add_argument("--max-length-correlation", type=float, default=ReportSettings.max_mean_length_correlation)
    parser.add_argument("--mixture", help="intended shares, e.g. hh_rlhf=0.3,shp=0.2 (warns when a source drifts)")
    parser.add_argument("--share-tolerance", type=float, default=ReportSettings.share_tolerance)
    return parser
