"""CodeUltraFeedback: one coding instruction, four responses, each rated by an LLM judge (rating is a string)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.sources.base import Adapter, Candidates, parse_number
from prefhouse.pipelines.sources.multi_response import compare_scored, explode_responses


class CodeUltraFeedback(Adapter):
    name = "codeultrafeedback"
    hub_id = "coseal/CodeUltraFeedback"
    hub_revision = "2f4ced783997f4dc4ef58c3eca490af04c7f1b79"
    raw_schema = pa.schema(
        [
            ("instruction", pa.string()), ("preference", pa.string()), ("models", pa.list_(pa.string())),
            ("responses", pa.list_(pa.struct([("model", pa.string()), ("response", pa.string())]))),
            ("annotations", pa.list_(pa.struct([("model", pa.string()), ("rating", pa.string()), ("rationale", pa.string())]))),
        ]
    )
    score_kind = "codeultrafeedback_rating"

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        responses = explode_responses(rows, "responses", ["_raw_key", "_split", "instruction"])
        ratings = (
            explode_responses(rows, "annotations", ["_raw_key"])
            .unique(["_raw_key", "model"], keep="first", maintain_order=True)
            .select("_raw_key", "model", parse_number(pl.col("rating")).alias("score"), pl.col("rating").alias("_rating"))
        )
        rated = responses.join(ratings, on=["_raw_key", "model"], how="left", maintain_order="left")
        reason = pl.format("response of {} has rating {}", pl.col("model"), pl.col("_rating").fill_null("(none)"))
        return compare_scored(rated, "response", reason)
