"""Saga and step states, and the one table of legal moves between them."""

from __future__ import annotations

from enum import StrEnum

from saga.errors import IllegalTransition


class SagaStatus(StrEnum):
    """Where a whole saga stands."""

    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"  # a compensation could not be done: a person must act

    @property
    def finished(self) -> bool:
        """True once no job will move this saga again."""
        return self in _FINISHED


class StepStatus(StrEnum):
    """Where one step stands, forward and then backward."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


_FINISHED = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED})

SAGA_MOVES: dict[SagaStatus, frozenset[SagaStatus]] = {
    SagaStatus.RUNNING: frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATING}),
    SagaStatus.COMPENSATING: frozenset({SagaStatus.COMPENSATED, SagaStatus.FAILED}),
    SagaStatus.COMPLETED: frozenset(),
    SagaStatus.COMPENSATED: frozenset(),
    SagaStatus.FAILED: frozenset(),
}

STEP_MOVES: dict[StepStatus, frozenset[StepStatus]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING}),
    # RUNNING -> PENDING is a retry scheduled after a transient failure.
    StepStatus.RUNNING: frozenset({StepStatus.PENDING, StepStatus.SUCCEEDED, StepStatus.FAILED}),
    # A failed step is compensated too: its side effect may have happened anyway.
    StepStatus.SUCCEEDED: frozenset({StepStatus.COMPENSATING}),
    StepStatus.FAILED: frozenset({StepStatus.COMPENSATING}),
    StepStatus.COMPENSATING: frozenset({StepStatus.COMPENSATED, StepStatus.COMPENSATION_FAILED}),
    StepStatus.COMPENSATED: frozenset(),
    StepStatus.COMPENSATION_FAILED: frozenset(),
}


def check_saga_move(current: SagaStatus, target: SagaStatus) -> None:
    """Raise `IllegalTransition` unless the table allows current -> target."""
    if target not in SAGA_MOVES[current]:
        raise IllegalTransition("saga", current.value, target.value)


def check_step_move(current: StepStatus, target: StepStatus) -> None:
    """Raise `IllegalTransition` unless the table allows current -> target."""
    if target not in STEP_MOVES[current]:
        raise IllegalTransition("step", current.value, target.value)
