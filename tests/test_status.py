"""The transition table: every listed move is allowed, every other one refused."""

from __future__ import annotations

import itertools

import pytest

from saga.errors import IllegalTransition
from saga.status import (
    SAGA_MOVES,
    STEP_MOVES,
    SagaStatus,
    StepStatus,
    check_saga_move,
    check_step_move,
)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(StepStatus, StepStatus)))
def test_step_moves(current: StepStatus, target: StepStatus) -> None:
    if target in STEP_MOVES[current]:
        check_step_move(current, target)
    else:
        with pytest.raises(IllegalTransition, match=f"from '{current.value}' to '{target.value}'"):
            check_step_move(current, target)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(SagaStatus, SagaStatus)))
def test_saga_moves(current: SagaStatus, target: SagaStatus) -> None:
    if target in SAGA_MOVES[current]:
        check_saga_move(current, target)
    else:
        with pytest.raises(IllegalTransition):
            check_saga_move(current, target)


def test_finished_states_have_no_way_out_but_an_operators() -> None:
    assert {s for s in SagaStatus if s.finished} == {
        SagaStatus.COMPLETED,
        SagaStatus.COMPENSATED,
        SagaStatus.FAILED,
        SagaStatus.RESOLVED,
    }
    # A failed saga is reopened only by an operator's retry, or closed by hand.
    assert {s: SAGA_MOVES[s] for s in SagaStatus if s.finished and SAGA_MOVES[s]} == {
        SagaStatus.FAILED: {SagaStatus.COMPENSATING, SagaStatus.RESOLVED}
    }
