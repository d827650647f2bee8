"""The stage log of the online iteration: what ``run_iteration.py --iter N`` has done, and what is left.

Each stage of iteration N appends ``started`` then ``done`` (or ``failed``) to the ``iterations`` table,
with the versions it read and wrote, its counts and its time. A stage's state is its latest event, so a
crashed stage (``started`` without ``done``) is simply not done, and the same command resumes there.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.dataset as pads
from prefhouse.pipelines.core import schema as S
from prefhouse.pipelines.core.errors import UsageError
from prefhouse.pipelines.core.lake import Lake
from prefhouse.pipelines.online.settings import POLICY_STAGE, STAGES


class IterationOrderError(UsageError):
    """Iteration N was asked for before iteration N-1 finished."""


def stage_states(lake: Lake, iteration: int) -> dict[str, str]:
    """Latest status of each stage of ``iteration`` that has any event."""
    if not lake.exists(S.ITERATIONS):
        return {}
    events = lake.read(S.ITERATIONS, columns=["stage", "status", "at"], filter=pads.field("iteration") == iteration).sort_by("at")
    return dict(zip(events.column("stage").to_pylist(), events.column("status").to_pylist()))


def latest_event(lake: Lake, iteration: int, stage: str, status: str) -> dict | None:
    """The newest ``status`` event of ``stage`` in ``iteration`` (its counts say what the stage made), if any."""
    if not lake.exists(S.ITERATIONS):
        return None
    rows = lake.read(S.ITERATIONS, filter=(pads.field("iteration") == iteration) & (pads.field("stage") == stage)
                     & (pads.field("status") == status)).to_pylist()
    return max(rows, key=lambda r: r["at"]) if rows else None


def require_previous_complete(lake: Lake, iteration: int) -> None:
    """Iteration 1 may always start; iteration N needs N-1's last stage done (it produced the policy N uses)."""
    if iteration < 1:
        raise IterationOrderError("iterations are numbered from 1 (iteration 0 is the curated offline data)")
    if iteration == 1:
        return
    previous = stage_states(lake, iteration - 1)
    if previous.get(POLICY_STAGE) != "done":
        done = [s for s in STAGES if previous.get(s) == "done"]
        raise IterationOrderError(
            f"iteration {iteration - 1} has not finished (stages done: {', '.join(done) or 'none'}); "
            f"run: python pipelines/run_iteration.py --iter {iteration - 1}"
        )


def pending_stages(lake: Lake, iteration: int, from_stage: str | None = None, force: bool = False, until: str | None = None) -> list[str]:
    """Stages still to run: those not done, or all from ``from_stage`` on when forced or named; none after ``until``.

    ``until`` stops the iteration after a stage, e.g. ``report``: DPO can then run elsewhere (a GPU cluster,
    ``accelerate launch training/train_dpo.py``), and the same command without ``--until`` marks the train
    stage done at once when it finds that job's model registered under the same id.
    """
    for flag, name in (("--from-stage", from_stage), ("--until", until)):
        if name is not None and name not in STAGES:
            raise ValueError(f"{flag} must be one of {', '.join(STAGES)}, not {name!r}")
    states = stage_states(lake, iteration)
    start = STAGES.index(from_stage) if from_stage else 0
    stop = STAGES.index(until) if until else len(STAGES) - 1
    return [s for i, s in enumerate(STAGES) if start <= i <= stop and (force or from_stage or states.get(s) != "done")]


def record(lake: Lake, iteration: int, stage: str, status: str, run_id: str, **fields) -> None:
    """Append one stage event."""
    if stage not in STAGES or status not in ("started", "done", "failed"):
        raise ValueError(f"unknown stage or status: {stage!r}, {status!r}")
    dumps = lambda v: None if v is None else json.dumps(v, sort_keys=True, default=str)  # noqa: E731
    row = {
        "iteration": iteration, "stage": stage, "status": status, "run_id": run_id,
        "policy_model_id": fields.get("policy_model_id"), "reward_model_id": fields.get("reward_model_id"),
        "versions_read": dumps(fields.get("versions_read")), "versions_written": dumps(fields.get("versions_written")),
        "counts": dumps(fields.get("counts")), "seconds": fields.get("seconds"), "error": fields.get("error"),
        "at": datetime.now(UTC),
    }
    lake.append(S.ITERATIONS, pa.Table.from_pylist([row], schema=S.ITERATION_SCHEMA))
