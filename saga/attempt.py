"""The types one attempt of a step passes around: its claim, the queue's record, test hooks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from redis.client import Pipeline

from saga.definition import Saga, Step, StepContext
from saga.records import SagaRecord, StepRecord
from saga.status import SagaStatus


class JobBookkeeping(Protocol):
    """The queue's own record of a job, written inside the engine's transactions.

    A worker that passes one to `SagaEngine.run` gets the job's started and
    finished (or failed) marks committed together with the step's claim and
    result: fewer round trips, and the two records can never disagree.
    """

    def started(self, pipe: Pipeline) -> None:
        """Queue the writes that mark the job as running."""

    def finished(self, pipe: Pipeline) -> None:
        """Queue the writes that mark the job as done."""

    def failed(self, pipe: Pipeline, reason: str) -> None:
        """Queue the writes that mark the job as failed, with the traceback in `reason`."""


Checkpoint = Callable[[str, StepContext], None]
"""Called at `before_call`, `after_call` and `after_record` of every attempt (crash tests)."""


@dataclass(frozen=True)
class Started:
    """The answer to `SagaEngine.start`: which saga, whether this call created it, and
    (when it did) the record as written."""

    saga_id: str
    created: bool
    record: SagaRecord | None = None


@dataclass(frozen=True)
class Claim:
    """What an attempt learns when it takes ownership of its step."""

    saga_id: str
    saga: Saga
    step: Step
    record: StepRecord
    data: dict[str, Any]
    saga_error: str | None
    failed_compensations: tuple[str, ...]
    status: SagaStatus = SagaStatus.RUNNING
    created: float = 0.0  # epoch seconds: the saga's score in the status indexes
    cancel: str | None = None  # an operator asked to stop it, saying why
    undo_queue: tuple[str, ...] | None = None  # an operator's retry: the compensations left to redo
    callback_url: str | None = None
