"""Stanford Human Preferences: a Reddit post and two top-level comments; ``labels`` 1 means A is preferred."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.schema import FILTER, INVALID
from prefhouse.pipelines.sources.base import REJECT_SCHEMA, Adapter, Candidates, concat_rejects, conform_candidates, rejects, row_prompts, user_prompt
from prefhouse.pipelines.sources.settings import SHPRules


class SHP(Adapter):
    name = "shp"
    settings: SHPRules  # its rules (sources/settings.py)
    hub_id = "stanfordnlp/SHP"
    hub_revision = "e94b5f32602712d78ed494fe79105b1959396686"
    raw_schema = pa.schema(
        [
            ("post_id", pa.string()), ("domain", pa.string()), ("upvote_ratio", pa.float64()),
            ("history", pa.string()), ("c_root_id_A", pa.string()), ("c_root_id_B", pa.string()),
            ("created_at_utc_A", pa.int64()), ("created_at_utc_B", pa.int64()),
            ("score_A", pa.int64()), ("score_B", pa.int64()),
            ("human_ref_A", pa.string()), ("human_ref_B", pa.string()),
            ("labels", pa.int64()), ("seconds_difference", pa.float64()), ("score_ratio", pa.float64()),
        ]
    )
    group_column = "post_id"
    score_kind = "reddit_score"

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        a_preferred = pl.col("labels") == 1
        bad_label = ~pl.col("labels").is_in([0, 1]).fill_null(False)
        low_ratio = pl.col("score_ratio").fill_null(0.0) <= self.settings.min_score_ratio
        keep = rows.filter(~bad_label & ~low_ratio)
        pairs = keep.select(
            pl.concat_list([pl.col("_raw_key")]).alias("raw_keys"),
            pl.col("_split").alias("split"),
            user_prompt(pl.col("history")).alias("prompt"),
            pl.when(a_preferred).then(pl.col("human_ref_A")).otherwise(pl.col("human_ref_B")).alias("chosen_reply"),
            pl.when(a_preferred).then(pl.col("human_ref_B")).otherwise(pl.col("human_ref_A")).alias("rejected_reply"),
            pl.when(a_preferred).then(pl.col("score_A")).otherwise(pl.col("score_B")).cast(pl.Float64).alias("chosen_score"),
            pl.when(a_preferred).then(pl.col("score_B")).otherwise(pl.col("score_A")).cast(pl.Float64).alias("rejected_score"),
            pl.col("post_id").alias("group"),
            pl.col("score_ratio").alias("rank"),
        )
        return Candidates(
            conform_candidates(pairs),
            concat_rejects(
                [
                    rejects(rows.filter(bad_label), "row", INVALID, "bad_label", pl.format("labels = {}", pl.col("labels"))),
                    rejects(
                        rows.filter(~bad_label & low_ratio), "row", FILTER, "score_ratio",
                        pl.format("score_ratio {} <= " + str(self.settings.min_score_ratio), pl.col("score_ratio")),
                    ),
                ]
            ),
            row_prompts(rows, user_prompt(pl.col("history"))),
        )

    def cap(self, kept: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        k = self.settings.max_pairs_per_post
        ranked = kept.with_columns(
            pl.col("rank").rank("ordinal", descending=True).over("group").alias("_n")
        )
        over = ranked.filter(pl.col("_n") > k)
        if over.height == 0:
            return kept, pl.DataFrame(schema=REJECT_SCHEMA)
        dropped = rejects(over, "pair", FILTER, "max_pairs_per_post", f"post already has {k} pairs with higher score ratios")
        return ranked.filter(pl.col("_n") <= k).drop("_n"), dropped
