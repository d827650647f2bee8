"""CodeUltraFeedback: one coding instruction, four responses, each rated by an LLM judge (rating is a string)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pyarrow as pa

from pipelines.sources.base import INVALID, Adapter, Candidates, concat_rejects, conform_candidates, parse_number, rejects, user_prompt
from pipelines.sources.multi_response import all_comparisons


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

    @dataclass(frozen=True)
    class Settings:
        pass

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        responses = (
            rows.select("_raw_key", "_split", "instruction", "responses")
            .with_columns(pl.int_ranges(0, pl.col("responses").list.len()).alias("response_index"))
            .explode("responses", "response_index")
            .filter(pl.col("responses").is_not_null())
            .unnest("responses")
        )
        ratings = (
            rows.select("_raw_key", "annotations")
            .explode("annotations")
            .filter(pl.col("annotations").is_not_null())
            .unnest("annotations")
            .unique(["_raw_key", "model"], keep="first", maintain_order=True)
            .select("_raw_key", "model", parse_number(pl.col("rating")).alias("score"), pl.col("rating").alias("_rating"))
        )
        rated = responses.join(ratings, on=["_raw_key", "model"], how="left", maintain_order="left")
        unrated = rated.filter(pl.col("score").is_null() | pl.col("score").is_nan()).with_columns(
            pl.format("response {}", pl.col("response_index")).alias("item")
        )
        valid = rated.filter(pl.col("score").is_not_null() & ~pl.col("score").is_nan()).select(
            pl.col("_raw_key").alias("group"),
            "response_index",
            pl.col("_raw_key").alias("raw_key"),
            pl.col("_split").alias("split"),
            user_prompt(pl.col("instruction")).alias("prompt"),
            pl.col("response").alias("reply"),
            "score",
            "model",
        )
        pairs = all_comparisons(valid, keys_from_both=False)
        return Candidates(
            conform_candidates(pairs),
            concat_rejects(
                [
                    rejects(
                        unrated, "response", INVALID, "non_numeric_rating",
                        pl.format("response of {} has rating {}", pl.col("model"), pl.col("_rating").fill_null("(none)")),
                    )
                ]
            ),
        )
