"""The names every command shares: the lake's default location, its tables and sources, the SQL folder.

Only the standard library is imported here, so a command's parser (``pipelines/parsers.py``) can show these
defaults in ``--help`` without loading pyarrow, polars, DuckDB or deltalake. The modules that use them at
run time (``core.schema``, ``core.lake``, ``core.sql``) import them from here.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_LAKE = "data/lake"
DEFAULT_SAMPLES = Path(__file__).resolve().parent.parent.parent / "data" / "samples"  # the bundled raw samples of the ten sources
DEFAULT_REPORTS = Path("data/reports")  # where the quality report before each DPO round is written

# The values of the pairs table's ``source`` partition: the ten curated sources (one adapter each, in
# pipelines/sources/, which checks it has exactly these) and "online" for pairs the iterations made.
OFFLINE_SOURCES = (
    "hh_rlhf", "shp", "helpsteer", "pku_saferlhf_30k", "ultrafeedback", "ultrainteract_pair", "codeultrafeedback",
    "distilabel_math_preference_dpo", "distilabel_intel_orca_dpo_pairs", "distilabel_capybara_dpo_7k_binarized",
)
ONLINE_SOURCE = "online"
FILTER, INVALID = "filter", "invalid"  # quarantine kinds: a recipe rule dropped it, or the data is malformed

# A split is an evaluation split when its last path part is (or starts with) test, validation, valid, eval or dev:
# HH-RLHF's harmless-base/test, SHP's askscience/validation, HelpSteer's validation, UltraFeedback's test_prefs.
# Training snapshots and the online prompt draw leave them out by default (RewardBench's prior sets overlap them).
EVAL_SPLIT = r"(^|/)(test|validation|valid|eval|dev)([-_.][^/]*)?$"

PAIRS = "pairs"
PAIR_SOURCES = "pair_sources"
QUARANTINE = "quarantine"
PROMPTS = "prompts"
RUNS = "runs"
RUN_COUNTS = "run_counts"
VALIDATIONS = "validations"
RESPONSES = "responses"
SCORES = "scores"
MODELS = "models"
ITERATIONS = "iterations"
TRAINING_PAIRS = "training_pairs"
REFERENCE_LOGPS = "reference_logps"
DRAWN_PROMPTS = "drawn_prompts"
EVAL_PROMPTS = "eval_prompts"
EVAL_RESPONSES = "eval_responses"
EVAL_SCORES = "eval_scores"
EVALUATIONS = "evaluations"
TRAINING_LOGS = "training_logs"


# The named queries: every file of sql/ but the views every connection defines
SQL_DIR = Path(__file__).resolve().parent.parent.parent / "sql"
VIEWS_FILE = SQL_DIR / "views.sql"
SQL_FORMATS = ("table", "csv", "json", "parquet")
DEFAULT_MEMORY_LIMIT = "4GB"
DEFAULT_TIMEOUT_S = 3600.0


def named_queries() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SQL_DIR.glob("*.sql")) if p.name != VIEWS_FILE.name}
