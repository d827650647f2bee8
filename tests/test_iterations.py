"""The online iteration's stage log: order between iterations, resuming, --from-stage and --force."""

from __future__ import annotations

import pytest
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.online.iterations import (
    STAGES,
    IterationOrderError,
    pending_stages,
    record,
    require_previous_complete,
    stage_states,
)


def test_iteration_two_needs_iteration_one_finished(lake: Lake) -> None:
    require_previous_complete(lake, 1)
    with pytest.raises(IterationOrderError, match="run: python pipelines/run_iteration.py --iter 1"):
        require_previous_complete(lake, 2)
    for stage in STAGES[: STAGES.index("train")]:
        record(lake, 1, stage, "started", "r1")
        record(lake, 1, stage, "done", "r1")
    with pytest.raises(IterationOrderError, match="stages done: prompts, generate, score, select, report"):
        require_previous_complete(lake, 2)
    record(lake, 1, "train", "done", "r1", policy_model_id="policy-2")
    require_previous_complete(lake, 2)  # the policy exists: iteration 2 may start before iteration 1's evaluation


def test_a_crashed_stage_is_resumed_and_done_stages_are_skipped(lake: Lake) -> None:
    record(lake, 1, "prompts", "started", "r1")
    record(lake, 1, "prompts", "done", "r1", counts={"prompts": 16})
    record(lake, 1, "generate", "started", "r1")  # then the process died
    assert stage_states(lake, 1) == {"prompts": "done", "generate": "started"}
    assert pending_stages(lake, 1) == list(STAGES[1:])
    assert pending_stages(lake, 1, from_stage="score") == ["score", "select", "report", "train", "evaluate"]
    assert pending_stages(lake, 1, force=True) == list(STAGES)
    with pytest.raises(ValueError, match="--from-stage"):
        pending_stages(lake, 1, from_stage="dance")
