"""The saga engine: start a run, execute one attempt, settle its outcome.

Every state change is one WATCH/MULTI/EXEC transaction that also enqueues the
job that follows from it, so no crash can leave a recorded step without a
successor. Each attempt is fenced by its number: a result or failure report
from an attempt that no longer owns its step is refused.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline

from saga import keys, log_context
from saga.attempt import Checkpoint, Claim, JobBookkeeping, Started
from saga.callbacks import CallbackPolicy
from saga.control import Controls
from saga.deadline import run_with_deadline
from saga.definition import Direction, Saga, StepContext
from saga.errors import AttemptFailed, IdempotencyKeyReused, StaleAttempt, UnknownSaga
from saga.outcome import describe, redact
from saga.overview import Overview
from saga.queueing import StepQueue
from saga.records import SagaRecord, StepRecord
from saga.settle import Settlement
from saga.status import SagaStatus, StepStatus
from saga.store import SagaStore, epoch

log = logging.getLogger("saga")

DAY = 86400


class SagaEngine:
    """Runs sagas on Redis and RQ; one instance per process, shared by its threads."""

    def __init__(
        self,
        redis: Redis,
        sagas: Iterable[Saga],
        *,
        queue_name: str = "sagas",
        retention: int = 30 * DAY,
        idempotency_ttl: int = 3 * DAY,
        result_ttl: int = 0,
        failure_ttl: int = 7 * DAY,
        stall_grace: float = 60.0,
        rq_timeout_grace: int = 15,
        checkpoint: Checkpoint | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        callbacks: CallbackPolicy | None = None,
    ) -> None:
        self.redis = redis
        self.sagas = {s.name: s for s in sagas}
        self.store = SagaStore(redis, clock)
        self.queue = StepQueue(
            redis, queue_name, result_ttl=result_ttl, failure_ttl=failure_ttl, timeout_grace=rq_timeout_grace
        )
        self.idempotency_ttl = idempotency_ttl
        self.stall_grace = stall_grace
        self.checkpoint = checkpoint
        self.monotonic = monotonic
        self.settle = Settlement(self.store, self.queue, retention, stall_grace)
        self.overview = Overview(redis, self.queue, clock)
        self.controls = Controls(self.store, self.settle, self._read, self.definition)
        # How long an action attempt may run before the reconciler looks (per step name: the
        # one-call claim learns the saga's definition only from what it reads).
        self._action_wait: dict[str, float] = {}
        for definition in self.sagas.values():
            for step in definition.steps:
                if step.approval is None:
                    wait = step.timeout + self.queue.timeout_grace
                    self._action_wait[step.name] = max(wait, self._action_wait.get(step.name, 0.0))
        self.callbacks = callbacks or CallbackPolicy()  # how completion callbacks are signed and retried

    def definition(self, name: str) -> Saga:
        """The saga definition called `name`; raises `UnknownSaga`."""
        try:
            return self.sagas[name]
        except KeyError:
            raise UnknownSaga(name) from None

    def start(
        self,
        name: str,
        data: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        fingerprint: str = "",
        reference: str | None = None,
        callback_url: str | None = None,
    ) -> Started:
        """Record a new saga and enqueue its first step, atomically.

        Claiming the idempotency key, writing the saga and enqueuing its first job
        are one transaction, so a duplicate never sees a half-started saga: it
        gets the first one.

        Args:
            name: a registered saga definition.
            data: the validated input, stored with the saga and handed to every step.
            idempotency_key: the client's key; a second start with it returns the first saga.
            fingerprint: a digest of the request; a second start with the same key
                but another fingerprint is refused.
            reference: the caller's own id for this run (a call id), searchable later.
            callback_url: told the outcome, signed, when the saga ends.

        Returns:
            The saga id and whether this call created it.

        Raises:
            UnknownSaga: no definition is registered under `name`.
            IdempotencyKeyReused: the key already started a saga from a different request.
        """
        saga = self.definition(name)
        saga_id = uuid.uuid4().hex
        idem = keys.idempotency(idempotency_key) if idempotency_key else None

        def body(pipe: Pipeline) -> Started:
            if idem is not None:
                first, seen = cast(list[bytes | None], pipe.hmget(idem, ["saga", "fingerprint"]))
                if first is not None and pipe.exists(keys.saga(first.decode())):
                    if seen is not None and seen.decode() != fingerprint:
                        raise IdempotencyKeyReused(first.decode())
                    return Started(first.decode(), created=False)
            pipe.multi()
            if idem is not None:
                pipe.hset(idem, mapping={"saga": saga_id, "fingerprint": fingerprint})
                pipe.expire(idem, self.idempotency_ttl)
            record = self.store.create(
                pipe,
                saga_id,
                saga,
                data,
                self.store.clock() + self.stall_grace,
                reference=reference,
                callback_url=callback_url,
                reference_ttl=self.settle.retention + DAY,
            )
            first_step = saga.steps[0]
            self.queue.enqueue(
                pipe, saga_name=name, saga_id=saga_id, step=first_step, direction=Direction.DO, attempt=1
            )
            return Started(saga_id, created=True, record=record)

        started = self.store.transact([idem] if idem else [], body)
        if started.created:
            log.info("saga started", extra={"saga_id": saga_id, "saga": name})
        return started

    def get(self, saga_id: str) -> SagaRecord:
        """The saga with its steps and history; raises `SagaNotFound`."""
        return self.store.load(saga_id)

    def run(
        self,
        saga_id: str,
        step_name: str,
        direction: str,
        attempt: int,
        bookkeeping: JobBookkeeping | None = None,
    ) -> None:
        """Execute one attempt of a step's action or compensation, then settle it.

        Args:
            bookkeeping: the worker's record of the job, committed with the claim and the result.

        Raises:
            AttemptFailed: the attempt failed and the engine recorded what follows.
        """
        with log_context.attempt(saga_id, step_name, direction, attempt):  # its ids on every log line
            self._run(saga_id, step_name, direction, attempt, bookkeeping)

    def _run(
        self,
        saga_id: str,
        step_name: str,
        direction: str,
        attempt: int,
        bookkeeping: JobBookkeeping | None,
    ) -> None:
        claim, started = None, False
        if direction == Direction.DO:
            claim, started = self._claim_action(saga_id, step_name, attempt, bookkeeping)
        try:
            if claim is None:
                claim = self.store.transact(
                    [keys.saga(saga_id), keys.step(saga_id, step_name)],
                    lambda pipe: self._claim(
                        pipe, saga_id, step_name, direction, attempt, bookkeeping, started
                    ),
                )
        except StaleAttempt as stale:
            log.warning("%s", stale, extra={"saga_id": saga_id, "step": step_name, "attempt": attempt})
            return
        if claim is None:  # a gate's wait ran out: settled as a rejection, nothing to run
            return
        step = claim.step
        undo = direction == Direction.UNDO
        ctx = StepContext(
            saga_id=saga_id,
            step=step.name,
            direction=direction,
            attempt=attempt,
            idempotency_key=claim.record.compensation_key if undo else claim.record.idempotency_key,
            action_key=claim.record.idempotency_key,
            ref=claim.record.ref,
            data=claim.data,
            deadline=self.monotonic() + step.timeout,
            record_ref=lambda ref: self._record_ref(saga_id, step_name, direction, attempt, ref),
            ref_of=lambda other: self.store.step_ref(saga_id, other),
        )
        work = step.compensate if undo else step.action
        self._checkpoint("before_call", ctx)
        began = self.monotonic()
        try:
            ref = run_with_deadline(lambda: work(ctx), step=step.name, timeout=step.timeout)
        except Exception as exc:
            permanent = step.is_permanent(exc)
            trace = redact(traceback.format_exc())
            seconds = self.monotonic() - began
            reason = describe(exc)
            self._apply(
                saga_id,
                step_name,
                direction,
                attempt,
                lambda pipe, c: self.settle.failure(pipe, c, direction, attempt, reason, permanent, seconds),
                (lambda pipe: bookkeeping.failed(pipe, trace)) if bookkeeping else None,
            )
            raise AttemptFailed(
                saga_id, step.name, attempt, "permanent" if permanent else "retryable"
            ) from exc
        seconds = self.monotonic() - began
        self._checkpoint("after_call", ctx)
        closed = False
        if direction == Direction.DO:
            advanced, closed = self._advance(claim, attempt, ref, seconds, bookkeeping)
            if advanced:
                self._checkpoint("after_record", ctx)
                return
        self._apply(
            saga_id,
            step_name,
            direction,
            attempt,
            lambda pipe, c: self.settle.success(pipe, c, direction, attempt, ref, seconds),
            bookkeeping.finished if bookkeeping and not closed else None,
        )
        self._checkpoint("after_record", ctx)

    def _record_ref(self, saga_id: str, step_name: str, direction: str, attempt: int, ref: str) -> None:
        if not self._apply(
            saga_id, step_name, direction, attempt, lambda pipe, c: self.settle.noted(pipe, c, direction, ref)
        ):
            raise StaleAttempt(saga_id, step_name, attempt, "lost its step before recording a provider id")

    def _checkpoint(self, point: str, ctx: StepContext) -> None:
        if self.checkpoint is not None:
            self.checkpoint(point, ctx)

    def report_failure(self, saga_id: str, step_name: str, direction: str, attempt: int, reason: str) -> bool:
        """Record a failure the job could not report itself (timeout, dead worker).

        The outcome is unknown, so it counts as retryable. Returns False when the
        report is stale: the attempt no longer owns its step (it finished, or a
        newer attempt took over).
        """
        return self._apply(
            saga_id,
            step_name,
            direction,
            attempt,
            lambda pipe, c: self.settle.failure(pipe, c, direction, attempt, reason, permanent=False),
        )

    def record_provider_status(
        self, saga_id: str, step_name: str, direction: str, ref: str, status: str
    ) -> bool:
        """Note what a provider reported later about a step's effect (an SMS delivered or failed).

        Applied only when `ref` is the id the step recorded, so a report about
        another message changes nothing. Returns whether it was recorded.
        """

        def body(pipe: Pipeline) -> bool:
            claim, _ = self._read(pipe, saga_id, step_name, 0)
            own = claim.record.ref if direction == Direction.DO else claim.record.compensation_ref
            if own != ref:
                return False
            pipe.multi()
            self.settle.provider_reported(pipe, claim, direction, status)
            return True

        try:
            return self.store.transact([keys.saga(saga_id), keys.step(saga_id, step_name)], body)
        except (StaleAttempt, KeyError):  # no such saga or step
            return False

    def signal(self, saga_id: str, signal: str, approve: bool, note: str = "") -> bool:
        """Answer the gate waiting for `signal`; see `Controls.signal`."""
        return self.controls.signal(saga_id, signal, approve, note)

    def cancel(self, saga_id: str, note: str) -> None:
        """Stop the saga at the next step boundary and compensate; see `Controls.cancel`."""
        self.controls.cancel(saga_id, note)

    def retry(self, saga_id: str, note: str) -> list[str]:
        """Redo a failed saga's failed compensations; see `Controls.retry`."""
        return self.controls.retry(saga_id, note)

    def resolve(self, saga_id: str, note: str) -> None:
        """Close a failed saga settled by hand; see `Controls.resolve`."""
        self.controls.resolve(saga_id, note)

    def requeue(self, saga_id: str, step_name: str, direction: str, attempt: int, reason: str) -> bool:
        """Enqueue again an attempt whose job was lost, with the same job id and keys.

        Only while the step still waits for exactly that attempt, so a requeue that
        races the real job (or another reconciler) changes nothing.
        """

        def body(pipe: Pipeline) -> bool:
            claim, status = self._read(pipe, saga_id, step_name, attempt)
            if not self._awaits(claim.record, status, direction, attempt):
                return False
            pipe.multi()
            self.settle.requeued(pipe, claim, direction, attempt, reason)
            return True

        return self.store.transact([keys.saga(saga_id), keys.step(saga_id, step_name)], body)

    # -- internals -----------------------------------------------------------

    def _apply(
        self,
        saga_id: str,
        step_name: str,
        direction: str,
        attempt: int,
        change: Callable[[Pipeline, Claim], None],
        also: Callable[[Pipeline], None] | None = None,
    ) -> bool:
        """Run `change` (and `also`, in the same transaction) if attempt `attempt` still owns the step.

        Logs and refuses otherwise, writing nothing.
        """

        def body(pipe: Pipeline) -> None:
            claim = self._owned(pipe, saga_id, step_name, direction, attempt)
            pipe.multi()
            change(pipe, claim)
            if also is not None:
                also(pipe)

        try:
            self.store.transact([keys.saga(saga_id), keys.step(saga_id, step_name)], body)
        except StaleAttempt as stale:
            log.warning("%s", stale, extra={"saga_id": saga_id, "step": step_name, "attempt": attempt})
            return False
        return True

    def _read(self, pipe: Pipeline, saga_id: str, step_name: str, attempt: int) -> tuple[Claim, SagaStatus]:
        header, record, data = self.store.read_saga_and_step(pipe, saga_id, step_name)
        return self._claim_of(saga_id, step_name, attempt, header, record, data)

    def _claim_of(
        self,
        saga_id: str,
        step_name: str,
        attempt: int,
        header: dict[bytes, bytes],
        record: StepRecord | None,
        data: dict[str, Any],
    ) -> tuple[Claim, SagaStatus]:
        """The claim an attempt would hold, from the saga hash, step record and input data."""
        if not header:
            raise StaleAttempt(saga_id, step_name, attempt, "the saga no longer exists")
        saga = self.definition(header[b"name"].decode())
        if record is None:
            raise StaleAttempt(saga_id, step_name, attempt, "the saga has no such step")
        status = SagaStatus(header[b"status"].decode())
        text = {k.decode(): v.decode() for k, v in header.items()}
        undo_queue = text.get("undo_queue")
        claim = Claim(
            saga_id=saga_id,
            saga=saga,
            step=saga.step(step_name),
            record=record,
            data=data,
            saga_error=text.get("cause") or text.get("error") or None,
            failed_compensations=tuple(n for n in text.get("failed_compensations", "").split(",") if n),
            status=status,
            created=epoch(text["created_at"]),
            cancel=text.get("cancel"),
            undo_queue=tuple(n for n in undo_queue.split(",") if n) if undo_queue is not None else None,
            callback_url=text.get("callback_url"),
        )
        return claim, status

    @staticmethod
    def _awaits(rec: StepRecord, status: SagaStatus, direction: str, attempt: int) -> bool:
        """True when the step waits for attempt `attempt` in `direction` to start
        (for a waiting gate: its timeout job)."""
        if status == SagaStatus.WAITING:
            return direction == Direction.DO and rec.status == StepStatus.WAITING and attempt == 1
        if direction == Direction.DO:
            return (
                status == SagaStatus.RUNNING
                and rec.status == StepStatus.PENDING
                and rec.attempts == attempt - 1
            )
        first = attempt == 1 and rec.status in (StepStatus.SUCCEEDED, StepStatus.FAILED)
        again = (
            rec.status == StepStatus.COMPENSATING
            and rec.claimed == 0
            and rec.compensation_attempts == attempt - 1
        )
        return status == SagaStatus.COMPENSATING and (first or again)

    def _claim_action(
        self, saga_id: str, step_name: str, attempt: int, bookkeeping: JobBookkeeping | None
    ) -> tuple[Claim | None, bool]:
        """The common claim, an action attempt, in one round trip: (claim or None, job marked started).

        One script checks and writes what `_claim` would, in a MULTI with the job's
        started mark. None when the script refused: `_claim` then decides, under WATCH,
        what the attempt is (stale, a gate's timeout), knowing the mark is written.
        """
        wait = self._action_wait.get(step_name)
        if wait is None:
            return None, False
        with self.redis.pipeline() as pipe:
            self.store.claim_action(
                pipe, saga_id, step_name, attempt, self.store.clock() + wait + self.stall_grace
            )
            if bookkeeping is not None:
                bookkeeping.started(pipe)
            answer = pipe.execute(raise_on_error=False)[0]
        claimed, header, record, data = self.store.claimed_action(saga_id, answer)
        if not claimed:
            return None, bookkeeping is not None
        return self._claim_of(saga_id, step_name, attempt, header, record, data)[0], True

    def _advance(
        self,
        claim: Claim,
        attempt: int,
        ref: str | None,
        seconds: float,
        bookkeeping: JobBookkeeping | None,
    ) -> tuple[bool, bool]:
        """The common settle, a succeeded action with a plain next step, in one round trip:
        (applied, job closed).

        The next job, one script with the writes of `Settlement.success` and the job's
        finished mark go in one MULTI. The script refuses when the attempt lost its step
        or a cancel arrived meanwhile (and takes the next job back); `_apply` then
        decides under WATCH, knowing the job is closed.
        """
        following = claim.saga.after(claim.record.name)
        if following is None or following.approval is not None or claim.cancel is not None:
            return False, False
        saga_id = claim.saga_id
        with self.redis.pipeline() as pipe:
            job_id = self.queue.enqueue(
                pipe,
                saga_name=claim.saga.name,
                saga_id=saga_id,
                step=following,
                direction=Direction.DO,
                attempt=1,
            )
            next_job = (job_id, self.queue.job_key(job_id), self.queue.rq.key)
            check_at = self.store.clock() + self.stall_grace
            position = len(pipe)  # where the script's answer will be
            self.store.advance(
                pipe, saga_id, claim.record.name, attempt, ref, seconds, following.name, next_job, check_at
            )
            if bookkeeping is not None:
                bookkeeping.finished(pipe)
            applied = pipe.execute()[position] == 1
        return applied, bookkeeping is not None

    def _claim(
        self,
        pipe: Pipeline,
        saga_id: str,
        step_name: str,
        direction: str,
        attempt: int,
        bookkeeping: JobBookkeeping | None = None,
        started: bool = False,
    ) -> Claim | None:
        """Take the step for this attempt; for a gate, whose one job is its timeout, reject it.

        `started`: the job's started mark is written already (by `_claim_action`).
        """
        claim, status = self._read(pipe, saga_id, step_name, attempt)
        if not self._awaits(claim.record, status, direction, attempt):
            reason = f"step is {claim.record.status.value}, saga {status.value}"
            raise StaleAttempt(saga_id, step_name, attempt, reason)
        pipe.multi()
        if claim.step.approval is not None:
            approval = claim.step.approval
            self.settle.decided(pipe, claim, False, f"no {approval.signal} within {approval.timeout:g}s")
            if bookkeeping is not None:
                bookkeeping.finished(pipe)
            return None
        self.settle.claimed(pipe, claim, direction, attempt)
        if bookkeeping is not None and not started:
            bookkeeping.started(pipe)
        return claim

    def _owned(self, pipe: Pipeline, saga_id: str, step_name: str, direction: str, attempt: int) -> Claim:
        claim, status = self._read(pipe, saga_id, step_name, attempt)
        rec = claim.record
        if direction == Direction.DO:
            owns = (
                status == SagaStatus.RUNNING and rec.status == StepStatus.RUNNING and rec.attempts == attempt
            )
        else:
            owns = status == SagaStatus.COMPENSATING and rec.status == StepStatus.COMPENSATING
            owns = owns and rec.claimed == attempt
        if not owns:
            raise StaleAttempt(
                saga_id, step_name, attempt, f"step is {rec.status.value}, saga {status.value}"
            )
        return claim
