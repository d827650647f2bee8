"""UltraInteract pairs: a multi-turn trajectory (the prompt) and a correct vs an incorrect next action."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.sources.base import (
    Adapter,
    Candidates,
    concat_rejects,
    conform_candidates,
)


class UltraInteractPair(Adapter):
    name = "ultrainteract_pair"
    hub_id = "openbmb/UltraInteract_pair"
    hub_revision = None  # none pinned yet: the commit resolved at load time is logged
    raw_schema = pa.schema(
        [
            ("task", pa.string()), ("dataset", pa.string()),
            ("trajectory", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
            ("chosen", pa.string()), ("rejected", pa.string()), ("id", pa.string()), ("parent_id", pa.string()),
        ]
    )
    score_kind = None  # correctness of the action, no score

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        prompt = pl.col("trajectory").list.eval(
            pl.struct(pl.element().struct.field("from").alias("role"), pl.element().struct.field("value").alias("content"))
        )
        pairs = rows.select(
            pl.concat_list([pl.col("_raw_key")]).alias("raw_keys"),
            pl.col("_split").alias("split"),
            prompt.alias("prompt"),
            pl.col("chosen").alias("chosen_reply"),
            pl.col("rejected").alias("rejected_reply"),
        )
        return Candidates(conform_candidates(pairs), concat_rejects([]))
