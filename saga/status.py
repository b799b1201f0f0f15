"""Saga and step states, and the one table of legal moves between them."""

from __future__ import annotations

from enum import StrEnum

from saga.errors import IllegalTransition


class SagaStatus(StrEnum):
    """Where a whole saga stands."""

    RUNNING = "running"
    WAITING = "waiting"  # parked at a gate until a signal (or its timeout) moves it; no worker held
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"  # a compensation could not be done: a person must act
    RESOLVED = "resolved"  # a person settled a failed saga by hand and said how

    @property
    def finished(self) -> bool:
        """True once no job will move this saga again (an operator still may: failed -> retry)."""
        return self in _FINISHED


class StepStatus(StrEnum):
    """Where one step stands, forward and then backward."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # a gate waiting for its signal
    SKIPPED = "skipped"  # a gate its saga did not need
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


_FINISHED = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED, SagaStatus.RESOLVED})

SAGA_MOVES: dict[SagaStatus, frozenset[SagaStatus]] = {
    SagaStatus.RUNNING: frozenset({SagaStatus.WAITING, SagaStatus.COMPLETED, SagaStatus.COMPENSATING}),
    SagaStatus.WAITING: frozenset({SagaStatus.RUNNING, SagaStatus.COMPENSATING}),
    SagaStatus.COMPENSATING: frozenset({SagaStatus.COMPENSATED, SagaStatus.FAILED}),
    SagaStatus.COMPLETED: frozenset(),
    SagaStatus.COMPENSATED: frozenset(),
    # Only by an operator: retry the failed compensations, or settle it by hand.
    SagaStatus.FAILED: frozenset({SagaStatus.COMPENSATING, SagaStatus.RESOLVED}),
    SagaStatus.RESOLVED: frozenset(),
}

STEP_MOVES: dict[StepStatus, frozenset[StepStatus]] = {
    # PENDING -> FAILED: a saga cancelled while a retry of this step was due.
    StepStatus.PENDING: frozenset(
        {StepStatus.RUNNING, StepStatus.WAITING, StepStatus.SKIPPED, StepStatus.FAILED}
    ),
    # RUNNING -> PENDING is a retry scheduled after a transient failure.
    StepStatus.RUNNING: frozenset({StepStatus.PENDING, StepStatus.SUCCEEDED, StepStatus.FAILED}),
    # A gate: approved, or rejected (or timed out, or cancelled).
    StepStatus.WAITING: frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED}),
    StepStatus.SKIPPED: frozenset(),
    # A failed step is compensated too: its side effect may have happened anyway.
    StepStatus.SUCCEEDED: frozenset({StepStatus.COMPENSATING}),
    StepStatus.FAILED: frozenset({StepStatus.COMPENSATING}),
    StepStatus.COMPENSATING: frozenset({StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED}),
    StepStatus.COMPENSATED: frozenset(),
    # -> COMPENSATING: an operator retries it.
    StepStatus.COMPENSATION_FAILED: frozenset({StepStatus.COMPENSATING}),
}


def check_saga_move(current: SagaStatus, target: SagaStatus) -> None:
    """Raise `IllegalTransition` unless the table allows current -> target."""
    if target not in SAGA_MOVES[current]:
        raise IllegalTransition("saga", current.value, target.value)


def check_step_move(current: StepStatus, target: StepStatus) -> None:
    """Raise `IllegalTransition` unless the table allows current -> target."""
    if target not in STEP_MOVES[current]:
        raise IllegalTransition("step", current.value, target.value)
