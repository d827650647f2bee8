"""Anthropic HH-RLHF: two transcripts per row, ``\\n\\nHuman: …\\n\\nAssistant: …``, differing in the last turn."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.schema import INVALID
from prefhouse.pipelines.sources.base import Adapter, Candidates, concat_rejects, conform_candidates, rejects

TURN, ROLE = "\x1e", "\x1f"


def transcript_turns(text: pl.Expr) -> pl.Expr:
    """Parse a transcript into a list of {role, content}; element 0 of the split is the text before turn 1."""
    marked = text.str.replace_all(r"\n\nHuman: ?", f"{TURN}user{ROLE}").str.replace_all(
        r"\n\nAssistant: ?", f"{TURN}assistant{ROLE}"
    )
    return marked.str.split(TURN)


def _turns(parts: pl.Expr) -> pl.Expr:
    return parts.list.slice(1).list.eval(
        pl.element()
        .str.split_exact(ROLE, 1)
        .struct.rename_fields(["role", "content"])
        .struct.with_fields(pl.field("content").str.strip_chars())
    )


class HHRLHF(Adapter):
    name = "hh_rlhf"
    hub_id = "Anthropic/hh-rlhf"
    hub_revision = None  # none pinned yet: the commit resolved at load time is logged
    hub_data_dirs = ["harmless-base", "helpful-base", "helpful-online", "helpful-rejection-sampled"]
    raw_schema = pa.schema([("chosen", pa.string()), ("rejected", pa.string())])
    score_kind = None  # human preference label only

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        parsed = rows.with_columns(
            transcript_turns(pl.col("chosen")).alias("_c"), transcript_turns(pl.col("rejected")).alias("_r")
        ).with_columns(_turns(pl.col("_c")).alias("_ct"), _turns(pl.col("_r")).alias("_rt"))
        lead = (pl.col("_c").list.first().str.strip_chars() != "") | (pl.col("_r").list.first().str.strip_chars() != "")
        last_not_assistant = (pl.col("_ct").list.last().struct.field("role") != "assistant") | (
            pl.col("_rt").list.last().struct.field("role") != "assistant"
        )
        unparseable = (pl.col("_ct").list.len() == 0) | (pl.col("_rt").list.len() == 0) | lead | last_not_assistant
        bad = parsed.filter(unparseable.fill_null(True))
        ok = parsed.filter(~unparseable.fill_null(True)).with_columns(
            pl.col("_ct").list.head(pl.col("_ct").list.len() - 1).alias("prompt"),
            pl.col("_rt").list.head(pl.col("_rt").list.len() - 1).alias("_rctx"),
        )
        ctx_key = lambda c: c.list.eval(pl.element().struct.field("role") + ROLE + pl.element().struct.field("content")).list.join(TURN)  # noqa: E731
        mismatch = ctx_key(pl.col("prompt")) != ctx_key(pl.col("_rctx"))
        # the dataset's "Assistant: Human: …" artefact: an assistant turn whose text starts with the other speaker's tag,
        # i.e. a mislabelled turn; kept verbatim it teaches a model to answer as the user, so the row is quarantined
        speaker_tag = lambda c: c.list.eval(  # noqa: E731
            (pl.element().struct.field("role") == "assistant") & pl.element().struct.field("content").str.strip_chars_start().str.starts_with("Human:")
        ).list.any()
        tagged = (speaker_tag(pl.col("_ct")) | speaker_tag(pl.col("_rt"))).fill_null(False) & ~mismatch.fill_null(True)
        pairs = ok.filter(~mismatch & ~tagged).select(
            pl.concat_list([pl.col("_raw_key")]).alias("raw_keys"),
            pl.col("_split").alias("split"),
            "prompt",
            pl.col("_ct").list.last().struct.field("content").alias("chosen_reply"),
            pl.col("_rt").list.last().struct.field("content").alias("rejected_reply"),
        )
        return Candidates(
            conform_candidates(pairs),
            concat_rejects(
                [
                    rejects(bad, "row", INVALID, "unparseable_transcript", "text before the first turn, no turns, or a final turn that is not the assistant's"),
                    rejects(ok.filter(mismatch), "row", INVALID, "context_mismatch", "chosen and rejected differ before the final assistant turn"),
                    rejects(ok.filter(tagged), "row", INVALID, "speaker_tag_in_turn",
                            "an assistant turn starts with 'Human:' (the dataset's 'Assistant: Human:' artefact)"),
                ]
            ),
        )
