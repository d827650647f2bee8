"""UltraFeedback: one instruction, four completions, each rated by GPT-4 on four aspects (ratings are strings)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.sources.base import Adapter, Candidates, parse_number
from prefhouse.pipelines.sources.multi_response import compare_scored, explode_responses
from prefhouse.pipelines.sources.settings import UltraFeedbackRules

ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
_RATED = pa.struct([("Rating", pa.string()), ("Rationale", pa.string())])
_TYPED = pa.struct(
    [("Type", pa.list_(pa.string())), ("Rationale", pa.string()), ("Rating", pa.string()), ("Rationale For Rating", pa.string())]
)
COMPLETION = pa.struct(
    [
        ("model", pa.string()), ("principle", pa.string()), ("custom_system_prompt", pa.string()),
        ("response", pa.string()), ("critique", pa.string()), ("overall_score", pa.float64()),
        ("fine-grained_score", pa.float64()),
        ("annotations", pa.struct([("instruction_following", _RATED), ("honesty", _RATED), ("truthfulness", _TYPED), ("helpfulness", _TYPED)])),
    ]
)


class UltraFeedback(Adapter):
    name = "ultrafeedback"
    settings: UltraFeedbackRules  # its rules (sources/settings.py)
    hub_id = "openbmb/UltraFeedback"
    hub_revision = "40b436560ca83a8dba36114c22ab3c66e43f6d5e"
    raw_schema = pa.schema(
        [
            ("source", pa.string()), ("instruction", pa.string()), ("models", pa.list_(pa.string())),
            ("completions", pa.list_(COMPLETION)),
            ("correct_answers", pa.list_(pa.string())), ("incorrect_answers", pa.list_(pa.string())),
        ]
    )

    @property
    def score_kind(self) -> str:  # type: ignore[override]
        return f"ultrafeedback_{self.settings.score}"

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        exploded = explode_responses(rows, "completions", ["_raw_key", "_split", "instruction"])
        ratings = [parse_number(pl.col("annotations").struct.field(a).struct.field("Rating")) for a in ASPECTS]
        if self.settings.score == "fine_grained":
            score = pl.when(pl.all_horizontal([r.is_not_null() for r in ratings])).then(pl.mean_horizontal(ratings))
        else:
            score = pl.col("overall_score")
        scored = exploded.with_columns(score.cast(pl.Float64).alias("score"))
        reason = pl.format("completion {} ({}) has no numeric {} score", pl.col("response_index"), pl.col("model"), pl.lit(self.settings.score))
        return compare_scored(scored, "completion", reason)
