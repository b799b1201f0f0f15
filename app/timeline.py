"""A saga record drawn as the operator's page shows it: a forward lane and a compensation lane.

Pure functions of a `SagaRecord`, so the page template only lays things out.
A step's record holds one status for both ways; once it is being undone, how
its action ended is read back from the history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from saga import Direction, SagaRecord, StepRecord, StepStatus, keys

UNDOING = frozenset({StepStatus.COMPENSATING, StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED})


@dataclass(frozen=True)
class Job:
    """One attempt's RQ job, for the link to rq-dashboard."""

    attempt: int
    id: str


@dataclass(frozen=True)
class Cell:
    """One step, one way: what the lane shows for it."""

    name: str
    status: str
    attempts: int
    started_at: str | None
    finished_at: str | None
    duration: str | None
    error: str | None
    provider_id: str | None
    provider_status: str | None
    next_attempt_at: str | None
    jobs: list[Job]


@dataclass(frozen=True)
class Lanes:
    """Steps in order; `undo[i]` is None when step i was never compensated."""

    forward: list[Cell]
    undo: list[Cell | None]


def lanes(record: SagaRecord) -> Lanes:
    """Both lanes of `record`, one column per step."""
    return Lanes(
        forward=[_forward(record, step) for step in record.steps],
        undo=[_undo(record.id, step) for step in record.steps],
    )


def duration(started_at: str | None, finished_at: str | None) -> str | None:
    """How long from start to finish, readable ("8 ms", "1.25 s", "3 min 4 s"); None if unfinished."""
    if not started_at or not finished_at:
        return None
    seconds = (datetime.fromisoformat(finished_at) - datetime.fromisoformat(started_at)).total_seconds()
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _forward(record: SagaRecord, step: StepRecord) -> Cell:
    return Cell(
        name=step.name,
        status=_forward_status(record, step),
        attempts=step.attempts,
        started_at=step.started_at,
        finished_at=step.finished_at,
        duration=duration(step.started_at, step.finished_at),
        error=step.error,
        provider_id=step.ref,
        provider_status=step.provider_status,
        next_attempt_at=step.next_attempt_at if step.status not in UNDOING else None,
        jobs=_jobs(record.id, step.name, Direction.DO, step.attempts),
    )


def _forward_status(record: SagaRecord, step: StepRecord) -> str:
    """The step's own status, or, once it is being undone, where its last forward move took it."""
    if step.status not in UNDOING:
        return step.status.value
    moves = [t.target for t in record.history if t.step == step.name and t.direction == Direction.DO]
    if moves:
        return moves[-1]
    return StepStatus.FAILED.value if step.error else StepStatus.SUCCEEDED.value


def _undo(saga_id: str, step: StepRecord) -> Cell | None:
    if step.status not in UNDOING and step.compensation_attempts == 0:
        return None
    return Cell(
        name=step.compensation_name,
        status=step.status.value,
        attempts=step.compensation_attempts,
        started_at=step.compensation_started_at,
        finished_at=step.compensation_finished_at,
        duration=duration(step.compensation_started_at, step.compensation_finished_at),
        error=step.compensation_error,
        provider_id=step.compensation_ref,
        provider_status=step.compensation_provider_status,
        next_attempt_at=step.next_attempt_at if step.status == StepStatus.COMPENSATING else None,
        jobs=_jobs(saga_id, step.name, Direction.UNDO, step.compensation_attempts),
    )


def _jobs(saga_id: str, step_name: str, direction: str, attempts: int) -> list[Job]:
    return [Job(n, keys.job_id(saga_id, step_name, direction, n)) for n in range(1, attempts + 1)]
