"""The engine's errors: flat, named, and each message says what to do next."""

from __future__ import annotations


class SagaError(Exception):
    """Base class for every error the engine raises on purpose."""


class SagaNotFound(SagaError):
    """No saga with this id exists (never started, or expired after its retention)."""

    def __init__(self, saga_id: str) -> None:
        super().__init__(f"saga {saga_id!r} not found: it never existed or expired after its retention")
        self.saga_id = saga_id


class IdempotencyKeyReused(SagaError):
    """An idempotency key already started a saga from a different request."""

    def __init__(self, saga_id: str) -> None:
        super().__init__(
            f"this idempotency key already started saga {saga_id} with a different request; "
            "use a new key for a new booking"
        )
        self.saga_id = saga_id


class UnknownSaga(SagaError):
    """A saga record names a definition this process was not given."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no saga definition named {name!r}: register it with SagaEngine(sagas=[...])")
        self.name = name


class InvalidDefinition(SagaError):
    """A `Saga` or `Step` was declared in a way the engine cannot run."""


class IllegalTransition(SagaError):
    """A state change outside the transition table: a bug, or a stale writer."""

    def __init__(self, what: str, current: str, target: str) -> None:
        super().__init__(f"{what}: cannot move from {current!r} to {target!r}")
        self.current = current
        self.target = target


class StaleAttempt(SagaError):
    """A result or failure report from an attempt that no longer owns the step.

    Raised when a late worker (timed out, presumed dead, or duplicated) tries to
    write; the write is refused so the current attempt's record stands.
    """

    def __init__(self, saga_id: str, step: str, attempt: int, reason: str) -> None:
        super().__init__(f"saga {saga_id} step {step} attempt {attempt}: refused, {reason}")
        self.saga_id = saga_id
        self.step = step
        self.attempt = attempt


class StepTimedOut(SagaError):
    """A step outlived its timeout; whether its side effect happened is unknown."""

    def __init__(self, step: str, timeout: float) -> None:
        super().__init__(f"step {step} did not finish within {timeout:g}s; outcome unknown")
        self.step = step
        self.timeout = timeout


class AttemptFailed(SagaError):
    """Raised out of an RQ job after the engine recorded the failure.

    It makes the attempt show as failed in rq-dashboard with its cause chained;
    the failure callback recognises it and does nothing more.
    """

    def __init__(self, saga_id: str, step: str, attempt: int, outcome: str) -> None:
        super().__init__(f"saga {saga_id} step {step} attempt {attempt} failed: {outcome}")
        self.saga_id = saga_id
        self.step = step


class EngineNotBound(SagaError):
    """A saga job ran in a process that did not bind an engine."""

    def __init__(self) -> None:
        super().__init__(
            "no SagaEngine is bound to this worker: run saga jobs with saga.worker.SagaWorker "
            "(python worker.py), not a plain `rq worker`"
        )


class UnknownSignal(SagaError):
    """No gate of this saga waits for a signal by that name."""

    def __init__(self, saga_id: str, signal: str, known: list[str]) -> None:
        hint = f"its gates wait for {', '.join(known)}" if known else "it has no gates"
        super().__init__(f"saga {saga_id} has no gate for signal {signal!r}: {hint}")
        self.saga_id = saga_id
        self.signal = signal


class ActionRefused(SagaError):
    """An operator's action (signal, cancel, retry, resolve) does not apply to the saga as it stands."""

    def __init__(self, saga_id: str, action: str, reason: str) -> None:
        super().__init__(f"cannot {action} saga {saga_id}: {reason}")
        self.saga_id = saga_id
        self.action = action
