"""Saga Relay's engine: sagas as code, run as RQ jobs, with state in Redis.

No web framework in here: the API, the workers and the tests all drive the
same `SagaEngine`.
"""

from saga.attempt import Started
from saga.definition import Approval, Direction, RetryPolicy, Saga, Step, StepContext
from saga.engine import SagaEngine
from saga.errors import SagaError, SagaNotFound, StaleAttempt, StepTimedOut
from saga.records import SagaRecord, StepRecord, Transition
from saga.status import SagaStatus, StepStatus

__all__ = [
    "Approval",
    "Direction",
    "RetryPolicy",
    "Saga",
    "SagaEngine",
    "SagaError",
    "SagaNotFound",
    "SagaRecord",
    "SagaStatus",
    "StaleAttempt",
    "Started",
    "Step",
    "StepContext",
    "StepRecord",
    "StepStatus",
    "StepTimedOut",
    "Transition",
]
