"""A saga declared as code: ordered steps, each an action with its compensation."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from saga.errors import InvalidDefinition

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,47}$")


class Direction:
    """Which way a job moves a step: its action, or its compensation."""

    DO = "do"
    UNDO = "undo"


@dataclass(frozen=True)
class StepContext:
    """Everything an action or compensation may use; handed over fresh on each attempt.

    `idempotency_key` is deterministic (saga, step, direction), so every attempt of
    the same action asks the provider for the same thing. `ref` is the provider id
    recorded so far for the step (by a finished or an interrupted attempt). A
    compensation also gets `action_key`; with `ref` None it must look the effect
    up by that key, since the action's outcome may be unknown.
    """

    saga_id: str
    step: str
    direction: str
    attempt: int
    idempotency_key: str
    action_key: str
    ref: str | None
    data: Mapping[str, Any]
    deadline: float  # time.monotonic() value after which the attempt is abandoned
    record_ref: Callable[[str], None] = field(default=lambda ref: None, compare=False, repr=False)
    """Store a provider id now, mid-action (e.g. a PaymentIntent before it is confirmed),
    so a retry after a crash finds it in `ref` instead of guessing."""
    ref_of: Callable[[str], str | None] = field(default=lambda step: None, compare=False, repr=False)
    """The provider id recorded by another step of the same saga (read when asked)."""

    def time_left(self, now: Callable[[], float]) -> float:
        """Seconds until the deadline, never below a small floor for the last call."""
        return max(0.05, self.deadline - now())


Action = Callable[[StepContext], "str | None"]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits about initial * multiplier**(n-1)."""

    max_attempts: int = 5
    initial_delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.5  # up to this fraction of each delay is taken off at random

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidDefinition(f"RetryPolicy.max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise InvalidDefinition("RetryPolicy delays must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise InvalidDefinition(f"RetryPolicy.jitter must be within [0, 1], got {self.jitter}")

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait before the attempt that follows failed attempt `attempt`."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        return base * (1 - self.jitter * random.random())

    def exhausted(self, attempt: int) -> bool:
        """True when `attempt` was the last one allowed."""
        return attempt >= self.max_attempts


@dataclass(frozen=True)
class Step:
    """One local transaction of a saga and the action that undoes it.

    `compensate` must succeed as a no-op when the action never took effect: it
    runs for a failed or timed-out step too, whose outcome may be unknown.
    Exceptions of a type in `permanent` are not retried.
    """

    name: str
    action: Action
    compensate: Action
    compensation_name: str
    timeout: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    compensation_retry: RetryPolicy = field(default_factory=RetryPolicy)
    permanent: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        for label, value in (("name", self.name), ("compensation_name", self.compensation_name)):
            if not _NAME.match(value):
                raise InvalidDefinition(f"Step {label} {value!r} must match {_NAME.pattern}")
        if self.timeout <= 0:
            raise InvalidDefinition(f"Step {self.name}: timeout must be > 0, got {self.timeout}")

    def is_permanent(self, error: BaseException) -> bool:
        """True when `error` is declared final for this step: compensate, do not retry."""
        return isinstance(error, self.permanent)


@dataclass(frozen=True)
class Saga:
    """A named, ordered list of steps; the name is stored with each run."""

    name: str
    steps: tuple[Step, ...]
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InvalidDefinition(f"Saga name {self.name!r} must match {_NAME.pattern}")
        if not self.steps:
            raise InvalidDefinition(f"Saga {self.name} has no steps")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise InvalidDefinition(f"Saga {self.name} repeats a step name: {names}")
        object.__setattr__(self, "_index", {n: i for i, n in enumerate(names)})

    def step(self, name: str) -> Step:
        """The step called `name`; raises KeyError for a name this saga does not have."""
        return self.steps[self._index[name]]

    def index(self, name: str) -> int:
        """Position of step `name`, from 0."""
        return self._index[name]

    def after(self, name: str) -> Step | None:
        """The step that runs after `name`, or None when `name` is the last."""
        i = self._index[name] + 1
        return self.steps[i] if i < len(self.steps) else None

    def before(self, name: str) -> Step | None:
        """The step compensated after `name`'s compensation, or None when `name` is the first."""
        i = self._index[name] - 1
        return self.steps[i] if i >= 0 else None
