"""The reconciler: finds sagas that stopped moving and drives them on.

A saga stops moving when the job that should move it is gone: its worker was
SIGKILLed (RQ notices only minutes later), or Redis lost a write in a restart.
Each pass looks at sagas whose expected next move is overdue and either
re-enqueues the attempt they wait for (same job id, same idempotency key) or,
for an attempt that was running and went silent, records it as failed with an
unknown outcome, which retries or compensates. Every action is fenced like a
worker's, so two passes at once, or a pass racing the real job, do no harm.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from saga import keys
from saga.definition import Direction
from saga.engine import SagaEngine
from saga.errors import SagaNotFound
from saga.records import StepRecord
from saga.status import SagaStatus, StepStatus

log = logging.getLogger("saga.reconcile")

LOCK_TTL = 10  # seconds

_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True)
class Repair:
    """What one pass did for one saga."""

    saga_id: str
    action: str  # requeued | failed_attempt | waiting | untouched
    detail: str


def _expected(rec: StepRecord, status: SagaStatus) -> tuple[str, int, bool] | None:
    """(direction, attempt, running) of the attempt the step is waiting for or running."""
    if status == SagaStatus.WAITING:
        if rec.status == StepStatus.WAITING:
            return Direction.DO, 1, False  # the gate's timeout job
    elif status == SagaStatus.RUNNING:
        if rec.status == StepStatus.PENDING:
            return Direction.DO, rec.attempts + 1, False
        if rec.status == StepStatus.RUNNING:
            return Direction.DO, rec.attempts, True
    elif status == SagaStatus.COMPENSATING:
        if rec.status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
            return Direction.UNDO, 1, False
        if rec.status == StepStatus.COMPENSATING:
            if rec.claimed:
                return Direction.UNDO, rec.claimed, True
            return Direction.UNDO, rec.compensation_attempts + 1, False
    return None


class Reconciler:
    """One pass over overdue sagas; safe to run from several processes at once."""

    def __init__(self, engine: SagaEngine, batch: int = 200) -> None:
        self.engine = engine
        self.batch = batch
        self._release = engine.redis.register_script(_RELEASE)

    def run(self) -> list[Repair]:
        """Repair every overdue saga (up to `batch`); returns what was done."""
        token = uuid.uuid4().hex
        # Short: a pass that dies (its worker killed) must not block the next one for
        # long. A slow pass overlapping the next is harmless; every repair is fenced.
        if not self.engine.redis.set(keys.RECONCILER_LOCK, token, nx=True, ex=LOCK_TTL):
            return []  # another pass is running; it covers the same sagas
        try:
            now = self.engine.store.clock()
            self.engine.overview.prune(now - self.engine.settle.retention)
            return [self.repair(saga_id) for saga_id in self.engine.store.due(now, self.batch)]
        finally:
            self._release(keys=[keys.RECONCILER_LOCK], args=[token])

    def repair(self, saga_id: str) -> Repair:
        """Look at one saga and move it on if its job was lost."""
        engine = self.engine
        try:
            record = engine.get(saga_id)
        except SagaNotFound:  # expired: nothing left to drive
            engine.redis.zrem(keys.ACTIVE, saga_id)
            return Repair(saga_id, "untouched", "saga record is gone")
        current = record.current_step or record.steps[0].name
        rec = record.step(current)
        expected = _expected(rec, record.status)
        if expected is None:
            engine.store.recheck_at(saga_id, engine.store.clock() + engine.stall_grace)
            return Repair(saga_id, "untouched", f"step {current} is {rec.status.value}")
        direction, attempt, running = expected
        job_id = keys.job_id(saga_id, current, direction, attempt)
        extra = {"saga_id": saga_id, "step": current, "attempt": attempt}
        if running:
            reason = f"no progress since {record.updated_at}: worker presumed dead; outcome unknown"
            if engine.report_failure(saga_id, current, direction, attempt, reason):
                log.warning("attempt presumed lost, failure recorded", extra=extra)
                return Repair(saga_id, "failed_attempt", job_id)
            return Repair(saga_id, "untouched", f"{job_id} moved meanwhile")
        if engine.queue.waiting(job_id, overdue_after=engine.stall_grace):
            engine.store.recheck_at(saga_id, engine.store.clock() + engine.stall_grace)
            return Repair(saga_id, "waiting", f"{job_id} is still queued")
        if engine.requeue(saga_id, current, direction, attempt, "its job was lost"):
            log.warning("lost job requeued", extra=extra)
            return Repair(saga_id, "requeued", job_id)
        return Repair(saga_id, "untouched", f"{job_id} moved meanwhile")
