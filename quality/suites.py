"""Expectation suites, kept as code and versioned with the project: one per lake table a writer appends to.

Each gate is a named Great Expectations expectation over a derived fact column (:mod:`quality.checks`)
and a level: ``row`` gates quarantine the rows that fail them (with the gate's name as the rule) and let
the rest land; ``batch`` gates abort the commit, because a failure means the batch as a whole is wrong
(a duplicated id, a partition that is not the run's, a prompt used twice in one iteration).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prefhouse.quality.settings import Bounds

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

SUITE_VERSION = "1"
ROW, BATCH = "row", "batch"
UNIQUE = "ExpectColumnValuesToBeUnique"  # judged on the repeats tally; every other expectation on the values tally


@dataclass(frozen=True)
class ExpectationSpec:
    """A gate's Great Expectations expectation as plain data: its class and arguments.

    The writer's process tallies the facts from it and the expectation object is built only where Great Expectations
    runs (:mod:`quality.gx_worker`, a process of its own): GX's import (~1.5 s of a cold curation) then never holds the
    writer's interpreter while it stages.
    """

    type: str  # the expectation's class in ``great_expectations.expectations``
    column: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def tally(self) -> str:
        """Which tally of the facts it is judged on (:func:`quality.gates.tallies`): a uniqueness gate on the repeats,
        every other gate on the values."""
        return "repeats" if self.type == UNIQUE else "values"

    def build(self) -> Expectation:
        from prefhouse.quality.gx_import import import_gx

        return getattr(import_gx().expectations, self.type)(column=self.column, **self.kwargs)


@dataclass(frozen=True)
class Gate:
    name: str
    level: str
    make: Callable[["GateContext"], ExpectationSpec]


@dataclass(frozen=True)
class GateContext:
    """What a suite needs to know about the append it guards."""

    iterations: tuple[int, ...]  # partition values the run may write
    sources: tuple[str, ...] = ()
    bounds: Bounds = Bounds()
    n: int = 0  # responses per prompt the online iteration samples


def _in_set(column: str, values) -> Callable[[GateContext], ExpectationSpec]:
    return lambda ctx: ExpectationSpec("ExpectColumnValuesToBeInSet", column, {"value_set": values(ctx) if callable(values) else values})


def _not_null(column: str) -> Callable[[GateContext], ExpectationSpec]:
    return lambda ctx: ExpectationSpec("ExpectColumnValuesToNotBeNull", column)


def _unique(column: str) -> Callable[[GateContext], ExpectationSpec]:
    return lambda ctx: ExpectationSpec(UNIQUE, column)


def _between(column: str, low, high=None, strict_min: bool = False) -> Callable[[GateContext], ExpectationSpec]:
    return lambda ctx: ExpectationSpec("ExpectColumnValuesToBeBetween", column, {
        "min_value": low(ctx) if callable(low) else low, "max_value": high(ctx) if callable(high) else high, "strict_min": strict_min,
    })


PAIRS_SUITE: list[Gate] = [
    Gate("pair_id_present", ROW, _not_null("pair_id")),
    Gate("prompt_id_present", ROW, _not_null("prompt_id")),
    Gate("source_present", ROW, _not_null("source")),
    Gate("chosen_rejected_share_context", ROW, _in_set("shares_context", [True])),
    Gate("final_turns_differ", ROW, _in_set("final_turns_differ", [True])),
    Gate("roles_alternate", ROW, _in_set("roles_alternate", [True])),
    Gate("no_empty_turn", ROW, _in_set("no_empty_turn", [True])),
    Gate("scores_finite", ROW, _in_set("scores_finite", [True])),
    Gate("margin_positive_where_scored", ROW, _between("margin_where_scored", 0, strict_min=True)),
    Gate("prompt_length_in_bounds", ROW, _between("prompt_chars", lambda c: c.bounds.min_chars, lambda c: c.bounds.max_prompt_chars)),
    Gate("chosen_length_in_bounds", ROW, _between("chosen_chars", lambda c: c.bounds.min_chars, lambda c: c.bounds.max_reply_chars)),
    Gate("rejected_length_in_bounds", ROW, _between("rejected_chars", lambda c: c.bounds.min_chars, lambda c: c.bounds.max_reply_chars)),
    Gate("pair_id_unique", BATCH, _unique("pair_id")),
    Gate("iteration_partition_matches_run", BATCH, _in_set("iteration", lambda c: list(c.iterations))),
    Gate("source_partition_matches_run", BATCH, _in_set("source", lambda c: list(c.sources))),
    Gate("one_pair_per_prompt_per_iteration", BATCH, _unique("online_prompt_in_iteration")),
    Gate("no_prompt_reused_across_iterations", BATCH, _in_set("prompt_reused", [False])),
]

RAW_SUITE: list[Gate] = [
    Gate("raw_key_present", BATCH, _not_null("_raw_key")),
    Gate("raw_key_unique", BATCH, _unique("raw_row")),
    Gate("split_present", BATCH, _not_null("_split")),
]

PROMPTS_SUITE: list[Gate] = [
    Gate("prompt_id_present", ROW, _not_null("prompt_id")),
    Gate("prompt_text_not_empty", ROW, _between("prompt_text_chars", 1)),
    Gate("no_empty_turn", ROW, _in_set("no_empty_turn", [True])),
    Gate("prompt_unique_per_source_split", BATCH, _unique("prompt_in_source_split")),
    Gate("source_partition_matches_run", BATCH, _in_set("source", lambda c: list(c.sources))),
]

def _exactly_n(column: str) -> Callable[[GateContext], ExpectationSpec]:
    return lambda ctx: ExpectationSpec("ExpectColumnValuesToBeBetween", column, {"min_value": ctx.n, "max_value": ctx.n})


# What every table of sampled responses must hold (the online iteration's, and the evaluation's answers).
SAMPLED_RESPONSE_GATES: list[Gate] = [
    Gate("response_id_present", BATCH, _not_null("response_id")),
    Gate("response_id_unique", BATCH, _unique("response_id")),
    Gate("exactly_n_responses_per_prompt", BATCH, _exactly_n("responses_for_prompt")),
    Gate("iteration_partition_matches_run", BATCH, _in_set("iteration", lambda c: list(c.iterations))),
    Gate("response_has_text", BATCH, _in_set("has_text", [True])),
]

RESPONSES_SUITE: list[Gate] = SAMPLED_RESPONSE_GATES + [
    Gate("n_distinct_samples_per_prompt", BATCH, _exactly_n("distinct_samples_for_prompt")),
    Gate("no_prompt_reused_across_iterations", BATCH, _in_set("prompt_reused", [False])),
]

SCORES_SUITE: list[Gate] = [
    Gate("response_id_unique", BATCH, _unique("response_id")),
    Gate("reward_finite", BATCH, _in_set("reward_finite", [True])),
    Gate("score_has_response", BATCH, _in_set("has_response", [True])),
    Gate("exactly_n_scores_per_prompt", BATCH, _exactly_n("scores_for_prompt")),
    Gate("iteration_partition_matches_run", BATCH, _in_set("iteration", lambda c: list(c.iterations))),
]

EVAL_RESPONSES_SUITE: list[Gate] = SAMPLED_RESPONSE_GATES + [
    Gate("logps_finite", BATCH, _in_set("logps_finite", [True])),
]

EVAL_SCORES_SUITE: list[Gate] = [
    Gate("score_id_unique", BATCH, _unique("score_id")),
    Gate("reward_finite", BATCH, _in_set("reward_finite", [True])),
    Gate("score_has_response", BATCH, _in_set("has_response", [True])),
    Gate("iteration_partition_matches_run", BATCH, _in_set("iteration", lambda c: list(c.iterations))),
]

SUITES: dict[str, list[Gate]] = {
    "pairs": PAIRS_SUITE, "raw": RAW_SUITE, "prompts": PROMPTS_SUITE, "responses": RESPONSES_SUITE, "scores": SCORES_SUITE,
    "eval_responses": EVAL_RESPONSES_SUITE, "eval_scores": EVAL_SCORES_SUITE,
}
