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
class Approval:
    """A gate's terms: which signal opens it, how long to wait, and whether a run needs it.

    No answer within `timeout` seconds counts as a rejection. `needed` sees the
    saga's input data; a run that does not need the gate passes it at once.
    """

    signal: str = "approval"
    timeout: float = 3600.0
    needed: Callable[[Mapping[str, Any]], bool] = field(default=lambda data: True, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.signal):
            raise InvalidDefinition(f"Approval signal {self.signal!r} must match {_NAME.pattern}")
        if self.timeout <= 0:
            raise InvalidDefinition(f"Approval timeout must be > 0, got {self.timeout}")


def _never(ctx: StepContext) -> str | None:
    raise InvalidDefinition(f"step {ctx.step} is a gate: it waits for a signal and runs no action")


def _nothing(ctx: StepContext) -> str | None:
    return None


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
    approval: Approval | None = None  # set: a gate, waiting for a signal instead of acting

    @classmethod
    def gate(cls, name: str, approval: Approval) -> Step:
        """A step that holds the saga until a person approves or rejects it.

        It holds no worker while it waits, and there is nothing to undo: a
        rejection compensates the steps before it.
        """
        return cls(name, _never, _nothing, name, timeout=approval.timeout, approval=approval)

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
        if self.steps[0].approval is not None:
            raise InvalidDefinition(
                f"Saga {self.name} starts with gate {self.steps[0].name}: put a gate after the step "
                "whose effect should wait for approval (a booked slot, say)"
            )
        signals = [s.approval.signal for s in self.steps if s.approval is not None]
        if len(set(signals)) != len(signals):
            raise InvalidDefinition(f"Saga {self.name} has two gates for one signal: {signals}")
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
        """The step compensated after `name`'s compensation, or None when `name` is the first.

        Gates are passed over: an approval has nothing to undo.
        """
        for i in range(self._index[name] - 1, -1, -1):
            if self.steps[i].approval is None:
                return self.steps[i]
        return None

    def gate(self, signal: str) -> Step | None:
        """The gate that `signal` opens, or None."""
        return next((s for s in self.steps if s.approval and s.approval.signal == signal), None)
