"""Saga definitions: validation of names and policies, and backoff arithmetic."""

from __future__ import annotations

import pytest

from saga import RetryPolicy, Saga, Step, StepContext
from saga.errors import InvalidDefinition


def noop(ctx: StepContext) -> None:
    return None


def step(name: str, **kwargs: object) -> Step:
    return Step(name=name, action=noop, compensate=noop, compensation_name=f"undo_{name}", **kwargs)  # type: ignore[arg-type]


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    policy = RetryPolicy(max_attempts=6, initial_delay=1, multiplier=2, max_delay=10, jitter=0.5)
    for attempt, base in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (6, 10)]:
        delays = [policy.delay_after(attempt) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert len(set(delays)) > 1  # jittered, so retries of many sagas do not arrive together


def test_no_jitter_gives_exact_delays() -> None:
    policy = RetryPolicy(initial_delay=0.5, jitter=0)
    assert [policy.delay_after(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_exhausted_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3)] == [False, False, True]


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"initial_delay": -1}, {"multiplier": 0.5}, {"jitter": 2}]
)
def test_bad_retry_policy_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidDefinition):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_bad_step_and_saga_definitions_are_refused() -> None:
    with pytest.raises(InvalidDefinition, match="name"):
        step("Book Slot")
    with pytest.raises(InvalidDefinition, match="timeout"):
        step("book", timeout=0)
    with pytest.raises(InvalidDefinition, match="no steps"):
        Saga("empty", ())
    with pytest.raises(InvalidDefinition, match="repeats"):
        Saga("twice", (step("a"), step("a")))


def test_neighbours() -> None:
    saga = Saga("s", (step("a"), step("b"), step("c")))
    assert saga.after("a") == saga.step("b") and saga.after("c") is None
    assert saga.before("c") == saga.step("b") and saga.before("a") is None


def test_permanent_errors_are_matched_by_type() -> None:
    s = step("a", permanent=(KeyError,))
    assert s.is_permanent(KeyError("x"))
    assert not s.is_permanent(ValueError("x"))
