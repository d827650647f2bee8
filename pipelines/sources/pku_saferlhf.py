"""PKU-SafeRLHF-30K: two responses, a helpfulness preference and a harmlessness (safety) preference.

Which preference decides is a setting (the paper merges the two signals without publishing how):
``safer`` (default: the pair teaches safety, the reason the source is in mix2), ``better`` (helpfulness), or
``agree`` (keep only rows where both preferences pick the same response). A row whose safety preference
contradicts its own per-response safety flags (the "safer" response is flagged unsafe, the other safe) is
quarantined as contradicted by the dataset's own fields.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.schema import FILTER, INVALID
from prefhouse.pipelines.sources.base import Adapter, Candidates, concat_rejects, conform_candidates, rejects, row_prompts, user_prompt
from prefhouse.pipelines.sources.settings import PKUSafeRLHFRules


class PKUSafeRLHF30K(Adapter):
    name = "pku_saferlhf_30k"
    settings: PKUSafeRLHFRules  # its rules (sources/settings.py)
    hub_id = "PKU-Alignment/PKU-SafeRLHF-30K"
    hub_revision = None  # none pinned yet: the commit resolved at load time is logged
    raw_schema = pa.schema(
        [
            ("prompt", pa.string()), ("response_0", pa.string()), ("response_1", pa.string()),
            ("is_response_0_safe", pa.bool_()), ("is_response_1_safe", pa.bool_()),
            ("better_response_id", pa.int64()), ("safer_response_id", pa.int64()),
        ]
    )
    score_kind = None

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        safer, better = pl.col("safer_response_id"), pl.col("better_response_id")
        bad_id = ~(safer.is_in([0, 1]) & better.is_in([0, 1])).fill_null(False)
        safe_of = lambda i: pl.when(i == 0).then(pl.col("is_response_0_safe")).otherwise(pl.col("is_response_1_safe"))  # noqa: E731
        # the safety label contradicts the flags: it matters where the safety label is used (safer, agree), not for "better"
        contradicted = (~safe_of(safer) & safe_of(1 - safer)).fill_null(False) & pl.lit(self.settings.preference != "better")
        disagree = safer != better
        winner = better if self.settings.preference == "better" else safer
        bad = rows.filter(bad_id)
        ok = rows.filter(~bad_id)
        contra = ok.filter(contradicted)
        ok = ok.filter(~contradicted)
        filtered = ok.filter(disagree) if self.settings.preference == "agree" else ok.clear()
        ok = ok.filter(~disagree) if self.settings.preference == "agree" else ok
        pick = lambda w: pl.when(w == 0).then(pl.col("response_0")).otherwise(pl.col("response_1"))  # noqa: E731
        pairs = ok.select(
            pl.concat_list([pl.col("_raw_key")]).alias("raw_keys"),
            pl.col("_split").alias("split"),
            user_prompt(pl.col("prompt")).alias("prompt"),
            pick(winner).alias("chosen_reply"),
            pick(1 - winner).alias("rejected_reply"),
        )
        return Candidates(
            conform_candidates(pairs),
            concat_rejects(
                [
                    rejects(bad, "row", INVALID, "bad_label", "better_response_id / safer_response_id not 0 or 1"),
                    rejects(contra, "row", INVALID, "label_contradicted", "the safer response is flagged unsafe and the other safe"),
                    rejects(filtered, "row", FILTER, "preferences_disagree", "helpfulness and safety preferences pick different responses"),
                ]
            ),
            row_prompts(rows, user_prompt(pl.col("prompt"))),
        )
