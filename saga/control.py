"""What a person can do to a saga: answer a gate, cancel it, retry or resolve a failed one.

Each action is one WATCH/MULTI/EXEC transaction, checked against the saga as
it stands at commit, exactly like a worker's; so an action racing a worker, or
the same action sent twice, applies at most once and never half.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from redis.client import Pipeline

from saga import keys
from saga.attempt import Claim
from saga.definition import Saga
from saga.errors import ActionRefused, SagaNotFound, StaleAttempt, UnknownSignal
from saga.outcome import redact
from saga.settle import Settlement
from saga.status import SagaStatus, StepStatus
from saga.store import SagaStore

NOTE_LIMIT = 500

Read = Callable[[Pipeline, str, str, int], tuple[Claim, SagaStatus]]


class Controls:
    """Signals and operator actions, applied through the same settlement as attempts."""

    def __init__(
        self, store: SagaStore, settle: Settlement, read: Read, definition: Callable[[str], Saga]
    ) -> None:
        self.store = store
        self.settle = settle
        self.read = read
        self.definition = definition

    def signal(self, saga_id: str, signal: str, approve: bool, note: str = "") -> bool:
        """Deliver a gate's answer. Returns False when that same answer was already applied
        (a sender's retry); raises `ActionRefused` when the gate is not waiting for it."""
        saga = self.definition(self._name(saga_id))
        gate = saga.gate(signal)
        if gate is None:
            known = [s.approval.signal for s in saga.steps if s.approval is not None]
            raise UnknownSignal(saga_id, signal, known)
        decision = "approved" if approve else "rejected"
        note = _clean(note)

        def body(pipe: Pipeline) -> bool:
            claim, status = self._read(pipe, saga_id, gate.name)
            rec = claim.record
            if status == SagaStatus.WAITING and rec.status == StepStatus.WAITING:
                pipe.multi()
                detail = f"{decision} by signal {signal}" + (f": {note}" if note else "")
                self.settle.decided(pipe, claim, approve, detail)
                return True
            if rec.decision == decision:
                return False
            why = f"gate {gate.name} was {rec.decision}" if rec.decision else f"it is {status.value}"
            raise ActionRefused(saga_id, f"{'approve' if approve else 'reject'}", f"{why}, not waiting")

        return self.store.transact([keys.saga(saga_id), keys.step(saga_id, gate.name)], body)

    def cancel(self, saga_id: str, note: str) -> None:
        """Stop a running or waiting saga at the next step boundary and compensate.

        A waiting saga, or one between steps, starts compensating at once; one
        whose step is running stops when that attempt ends. Asking again is harmless.
        """
        note = _clean(note)

        def body(pipe: Pipeline) -> None:
            claim, status = self._read_current(pipe, saga_id)
            rec = claim.record
            if status == SagaStatus.WAITING:
                pipe.multi()
                self.settle.decided(pipe, claim, False, f"cancelled: {note}")
            elif status == SagaStatus.RUNNING and claim.cancel is None:
                pipe.multi()
                if rec.status == StepStatus.RUNNING:
                    self.settle.cancel_requested(pipe, claim, note)
                else:
                    self.settle.cancelled_between_steps(pipe, claim, note)
            elif status != SagaStatus.RUNNING:
                raise ActionRefused(saga_id, "cancel", f"it is already {status.value}")

        self.store.transact([keys.saga(saga_id)], body)

    def retry(self, saga_id: str, note: str) -> list[str]:
        """Run a failed saga's failed compensations again, latest step first; returns their names."""
        note = _clean(note)
        record = self.store.load(saga_id)
        failed = [s for s in reversed(record.steps) if s.status == StepStatus.COMPENSATION_FAILED]
        if record.status != SagaStatus.FAILED or not failed:
            raise ActionRefused(saga_id, "retry", f"it is {record.status.value}; only a failed saga can be")
        first, later = failed[0], [(s.name, s.compensation_attempts) for s in failed[1:]]

        def body(pipe: Pipeline) -> None:
            claim, status = self._read(pipe, saga_id, first.name)
            if status != SagaStatus.FAILED:
                raise ActionRefused(saga_id, "retry", f"it became {status.value} meanwhile")
            pipe.multi()
            self.settle.retried(pipe, claim, later, note)

        self.store.transact([keys.saga(saga_id), keys.step(saga_id, first.name)], body)
        return [first.name, *(name for name, _ in later)]

    def resolve(self, saga_id: str, note: str) -> None:
        """Close a failed saga that a person settled with the providers by hand."""
        note = _clean(note)
        if not note:
            raise ActionRefused(saga_id, "resolve", "say in a note what was done by hand")

        def body(pipe: Pipeline) -> None:
            claim, status = self._read_current(pipe, saga_id)
            if status != SagaStatus.FAILED:
                raise ActionRefused(saga_id, "resolve", f"it is {status.value}; only a failed saga can be")
            pipe.multi()
            self.settle.resolved(pipe, claim, note)

        self.store.transact([keys.saga(saga_id)], body)

    # -- internals -----------------------------------------------------------

    def _name(self, saga_id: str) -> str:
        name = cast(bytes | None, self.store.redis.hget(keys.saga(saga_id), "name"))
        if name is None:
            raise SagaNotFound(saga_id)
        return name.decode()

    def _read(self, pipe: Pipeline, saga_id: str, step: str) -> tuple[Claim, SagaStatus]:
        try:
            return self.read(pipe, saga_id, step, 0)
        except StaleAttempt:  # the saga expired meanwhile
            raise SagaNotFound(saga_id) from None

    def _read_current(self, pipe: Pipeline, saga_id: str) -> tuple[Claim, SagaStatus]:
        """The saga and its current step, watching both (the saga key is watched already)."""
        step = cast(bytes | None, pipe.hget(keys.saga(saga_id), "step"))
        if step is None:
            raise SagaNotFound(saga_id)
        pipe.watch(keys.step(saga_id, step.decode()))
        return self._read(pipe, saga_id, step.decode())


def _clean(note: str) -> str:
    """A person's note as the history keeps it: trimmed, cut, and scrubbed of card and phone numbers."""
    return redact(note.strip())[:NOTE_LIMIT]
