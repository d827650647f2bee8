"""NVIDIA HelpSteer (v1): one row per response with five 0-4 attributes; pairs are built per prompt."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.schema import FILTER
from prefhouse.pipelines.sources.base import Adapter, Candidates, concat_rejects, conform_candidates, rejects, row_prompts, user_prompt
from prefhouse.pipelines.sources.multi_response import all_comparisons, response_rows
from prefhouse.pipelines.sources.settings import HELPSTEER_ATTRIBUTES as ATTRIBUTES
from prefhouse.pipelines.sources.settings import HelpSteerRules


class HelpSteer(Adapter):
    name = "helpsteer"
    settings: HelpSteerRules  # its rules (sources/settings.py)
    hub_id = "nvidia/HelpSteer"
    hub_revision = None  # none pinned yet: the commit resolved at load time is logged
    raw_schema = pa.schema([("prompt", pa.string()), ("response", pa.string())] + [(a, pa.int32()) for a in ATTRIBUTES])
    group_column = "prompt"

    @property
    def score_kind(self) -> str:  # type: ignore[override]
        return f"helpsteer_{self.settings.score}"

    def _score(self) -> pl.Expr:
        if self.settings.score == "mean_ex_verbosity":
            return pl.mean_horizontal([pl.col(a) for a in ATTRIBUTES if a != "verbosity"]).cast(pl.Float64)
        return pl.col(self.settings.score).cast(pl.Float64)

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        numbered = rows.with_columns(pl.int_range(pl.len()).over("prompt").alias("response_index"))
        surplus = numbered.filter(pl.col("response_index") >= self.settings.max_responses_per_prompt)
        kept = numbered.filter(pl.col("response_index") < self.settings.max_responses_per_prompt)
        responses = response_rows(kept, pl.col("prompt"), "prompt", self._score(), pl.lit(None, dtype=pl.String))
        sizes = responses.group_by("group").len()
        single = responses.join(sizes.filter(pl.col("len") == 1), on="group", how="semi")
        pairs = all_comparisons(responses, keys_from_both=True)
        return Candidates(
            conform_candidates(pairs),
            concat_rejects(
                [
                    rejects(surplus, "row", FILTER, "max_responses_per_prompt", f"beyond the first {self.settings.max_responses_per_prompt} responses of its prompt"),
                    rejects(single.rename({"raw_key": "_raw_key", "split": "_split"}), "row", FILTER, "single_response", "the prompt has no other response to compare with"),
                ]
            ),
            row_prompts(rows, user_prompt(pl.col("prompt"))),
        )
