"""The three argilla distilabel preference sets: math, Intel Orca and Capybara (GPT-4 judged, already paired)."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from prefhouse.pipelines.core.schema import FILTER, INVALID
from prefhouse.pipelines.sources.base import MSG, Adapter, Candidates, concat_rejects, conform_candidates, rejects, row_prompts, user_prompt
from prefhouse.pipelines.sources.settings import OrcaRules

CHAT = pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))


def _pair(rows: pl.DataFrame, prompt: pl.Expr, chosen: pl.Expr, rejected: pl.Expr, **scores: pl.Expr) -> pl.DataFrame:
    return rows.select(
        pl.concat_list([pl.col("_raw_key")]).alias("raw_keys"),
        pl.col("_split").alias("split"),
        prompt.alias("prompt"),
        chosen.alias("chosen_reply"),
        rejected.alias("rejected_reply"),
        *[expr.alias(name) for name, expr in scores.items()],
    )


class DistilabelMath(Adapter):
    name = "distilabel_math_preference_dpo"
    hub_id = "argilla/distilabel-math-preference-dpo"
    hub_revision = "440a59870da94a4c252c8f0031e7412cd1dfe3f2"
    # ratings were int64 in the first upload and float64 now: both parse into float64
    raw_schema = pa.schema(
        [
            ("metadata", pa.string()), ("instruction", pa.string()),
            ("chosen_response", pa.string()), ("chosen_rating", pa.float64()),
            ("rejected_response", pa.string()), ("rejected_rating", pa.float64()),
        ]
    )
    score_kind = "gpt4_rating"

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        pairs = _pair(
            rows, user_prompt(pl.col("instruction")), pl.col("chosen_response"), pl.col("rejected_response"),
            chosen_score=pl.col("chosen_rating"), rejected_score=pl.col("rejected_rating"),
        )
        return Candidates(conform_candidates(pairs), concat_rejects([]))


class DistilabelOrca(Adapter):
    """``chosen``/``rejected`` are after GPT-4 relabelling; ``status`` says whether it kept or swapped the originals."""

    name = "distilabel_intel_orca_dpo_pairs"
    settings: OrcaRules  # its rules (sources/settings.py)
    hub_id = "argilla/distilabel-intel-orca-dpo-pairs"
    hub_revision = "0b10ec0df32c919f95126b203c8f5962b6875896"
    raw_schema = pa.schema(
        [
            ("system", pa.string()), ("input", pa.string()), ("chosen", pa.string()), ("rejected", pa.string()),
            ("generations", pa.list_(pa.string())), ("order", pa.list_(pa.string())),
            ("labelling_model", pa.string()), ("labelling_prompt", CHAT), ("raw_labelling_response", pa.string()),
            ("rating", pa.list_(pa.float64())), ("rationale", pa.string()), ("status", pa.string()),
            ("original_chosen", pa.string()), ("original_rejected", pa.string()),
            ("chosen_score", pa.float64()), ("in_gsm8k_train", pa.bool_()),
        ]
    )
    # where GPT-4's labelling failed the hub leaves its outputs null; the adapter filters those rows by rule
    nullable_columns = frozenset({"rating", "rationale", "raw_labelling_response", "chosen_score", "status"})
    score_kind = "gpt4_rating"

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        s = self.settings
        status = pl.col("status")
        contradicted = (
            ((status == "unchanged") & (pl.col("chosen") != pl.col("original_chosen")))
            | ((status == "swapped") & (pl.col("chosen") != pl.col("original_rejected")))
        ).fill_null(False)
        tie = (status == "tie").fill_null(False) & pl.lit(s.drop_ties)
        gsm = pl.col("in_gsm8k_train").fill_null(False) & pl.lit(s.drop_gsm8k_train)
        low = pl.col("chosen_score").is_null() | (pl.col("chosen_score") < s.min_chosen_score)
        steps = [
            (contradicted, INVALID, "label_contradicted", pl.format("status {} but chosen is not the matching original", status)),
            (tie, FILTER, "judge_tie", pl.lit("GPT-4 rated both responses equally")),
            (gsm, FILTER, "in_gsm8k_train", pl.lit("prompt is in the GSM8K train set")),
            (low, FILTER, "min_chosen_score", pl.format("chosen_score {} < " + str(s.min_chosen_score), pl.col("chosen_score").cast(pl.String).fill_null("missing"))),
        ]
        dropped, rest = [], rows
        for cond, kind, rule, why in steps:
            dropped.append(rejects(rest.filter(cond), "row", kind, rule, why))
            rest = rest.filter(~cond)
        prompt = user_prompt(pl.col("input"), system=pl.col("system"))
        pairs = _pair(rest, prompt, pl.col("chosen"), pl.col("rejected"))
        return Candidates(conform_candidates(pairs), concat_rejects(dropped), row_prompts(rows, prompt))


class DistilabelCapybara(Adapter):
    """Multi-turn: ``chosen``/``rejected`` are whole conversations that must share every turn but the last."""

    name = "distilabel_capybara_dpo_7k_binarized"
    hub_id = "argilla/distilabel-capybara-dpo-7k-binarized"
    hub_revision = None  # none pinned yet: the commit resolved at load time is logged
    raw_schema = pa.schema(
        [
            ("source", pa.string()),
            ("conversation", pa.list_(pa.struct([("input", pa.string()), ("output", pa.string())]))),
            ("original_response", pa.string()), ("generation_prompt", pa.list_(pa.string())),
            ("raw_generation_responses", pa.list_(pa.string())), ("new_generations", pa.list_(pa.string())),
            ("prompt", pa.string()), ("chosen", CHAT), ("rejected", CHAT),
            ("rating_chosen", pa.int64()), ("rating_rejected", pa.int64()),
            ("chosen_model", pa.string()), ("rejected_model", pa.string()),
        ]
    )
    score_kind = "gpt4_rating"

    def candidates(self, rows: pl.DataFrame) -> Candidates:
        as_msgs = lambda c: pl.col(c).list.eval(pl.struct(pl.element().struct.field("role"), pl.element().struct.field("content"))).cast(pl.List(MSG))  # noqa: E731
        context = lambda c: c.list.head(c.list.len() - 1)  # noqa: E731
        key = lambda c: c.list.eval(pl.element().struct.field("role") + "\x1f" + pl.element().struct.field("content")).list.join("\x1e")  # noqa: E731
        df = rows.with_columns(as_msgs("chosen").alias("_c"), as_msgs("rejected").alias("_r"))
        last_role = lambda c: pl.col(c).list.last().struct.field("role")  # noqa: E731
        malformed = ((pl.col("_c").list.len() < 2) | (pl.col("_r").list.len() < 2) | (last_role("_c") != "assistant") | (last_role("_r") != "assistant")).fill_null(True)
        bad = df.filter(malformed)
        ok = df.filter(~malformed)
        mismatch = key(context(pl.col("_c"))) != key(context(pl.col("_r")))
        good = ok.filter(~mismatch)
        pairs = _pair(
            good, context(pl.col("_c")),
            pl.col("_c").list.last().struct.field("content"), pl.col("_r").list.last().struct.field("content"),
            chosen_score=pl.col("rating_chosen").cast(pl.Float64), rejected_score=pl.col("rating_rejected").cast(pl.Float64),
            chosen_model=pl.col("chosen_model"), rejected_model=pl.col("rejected_model"),
        )
        return Candidates(
            conform_candidates(pairs),
            concat_rejects(
                [
                    rejects(bad, "row", INVALID, "unparseable_conversation", "fewer than two turns or a final turn that is not the assistant's"),
                    rejects(ok.filter(mismatch), "row", INVALID, "context_mismatch", "chosen and rejected differ before the final assistant turn"),
                ]
            ),
        )
