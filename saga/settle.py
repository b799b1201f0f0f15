"""What each outcome of an attempt writes, and which job it enqueues next.

Every method runs inside the caller's MULTI, after the caller has checked that
the attempt owns its step; the writes and the next enqueue commit together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from redis.client import Pipeline

from saga import keys
from saga.definition import Direction, Step
from saga.queueing import StepQueue
from saga.status import SagaStatus, StepStatus, check_saga_move, check_step_move
from saga.store import SagaStore, epoch, iso

if TYPE_CHECKING:
    from saga.attempt import Claim


class Settlement:
    """Applies claim, success and failure of one attempt to the records."""

    def __init__(self, store: SagaStore, queue: StepQueue, retention: int, grace: float) -> None:
        self.store = store
        self.queue = queue
        self.retention = retention
        self.grace = grace  # how late a saga may move before the reconciler looks at it

    def _touch(self, pipe: Pipeline, claim: Claim, fields: dict[str, str], wait: float = 0.0) -> None:
        """Update the saga and expect its next move within `wait` seconds plus the grace."""
        self.store.update_saga(pipe, claim.saga_id, fields, self.store.clock() + wait + self.grace)

    def claimed(self, pipe: Pipeline, claim: Claim, direction: str, attempt: int) -> None:
        """The attempt owns its step from now on."""
        rec, at = claim.record, self.store.now()
        if direction == Direction.DO:
            fields: dict[str, str | int] = {"attempts": attempt}
            if attempt == 1:
                fields["started_at"] = at
            self._step_move(pipe, claim, StepStatus.RUNNING, direction, attempt, "attempt started", fields)
        else:
            if rec.status != StepStatus.COMPENSATING:
                self._step_move(
                    pipe, claim, StepStatus.COMPENSATING, direction, attempt, "compensation started"
                )
            else:
                self._history(
                    pipe, claim, StepStatus.COMPENSATING, direction, attempt, "compensation retried"
                )
            fields = {"compensation_attempts": attempt, "claimed": attempt}
            if attempt == 1:
                fields["compensation_started_at"] = at
            self.store.update_step(pipe, claim.saga_id, rec.name, fields)
        if rec.next_attempt_at is not None:  # the retry it waited for has started
            self.store.clear_step_fields(pipe, claim.saga_id, rec.name, "next_attempt_at")
        self._touch(pipe, claim, {}, claim.step.timeout + self.queue.timeout_grace)

    def success(
        self,
        pipe: Pipeline,
        claim: Claim,
        direction: str,
        attempt: int,
        ref: str | None,
        seconds: float = 0.0,
    ) -> None:
        """Record the result (it took `seconds`) and enqueue what comes next."""
        name, at = claim.record.name, self.store.now()
        self.store.observe(pipe, name, direction, "succeeded", seconds)
        if direction == Direction.DO:
            done = {"ref": ref or "", "finished_at": at}
            self._step_move(pipe, claim, StepStatus.SUCCEEDED, direction, attempt, ref or "", done)
            if claim.cancel is not None:  # stop at this boundary: undo this step and those before
                reason = f"cancelled: {claim.cancel}"
                self._saga_move(pipe, claim, SagaStatus.COMPENSATING, reason, {"error": reason}, name)
                self._enqueue(pipe, claim, claim.step, Direction.UNDO, 1)
            else:
                self._advance(pipe, claim, claim.saga.after(name))
        else:
            fields = {"compensation_ref": ref or "", "compensation_finished_at": at, "claimed": 0}
            detail = ref or "nothing to undo"
            self._step_move(pipe, claim, StepStatus.COMPENSATED, direction, attempt, detail, fields)
            self._compensate_before(pipe, claim, failed_now=False)

    def failure(
        self,
        pipe: Pipeline,
        claim: Claim,
        direction: str,
        attempt: int,
        reason: str,
        permanent: bool,
        seconds: float | None = None,
    ) -> None:
        """Schedule a retry with backoff, or give up on the step and move on.

        `seconds` is how long the attempt ran; None when that is unknown (a lost worker).
        """
        step, name = claim.step, claim.record.name
        policy = step.retry if direction == Direction.DO else step.compensation_retry
        cancelled = claim.cancel is not None and direction == Direction.DO
        retry = not permanent and not cancelled and not policy.exhausted(attempt)
        if seconds is None:
            pipe.hincrby(keys.METRICS, f"attempts:lost:{direction}", 1)
        else:
            self.store.observe(pipe, name, direction, "retried" if retry else "failed", seconds)
        if retry:
            self._retry(pipe, claim, direction, attempt, reason, policy.delay_after(attempt))
        elif direction == Direction.DO:
            ended = {"error": reason, "finished_at": self.store.now()}
            self._step_move(pipe, claim, StepStatus.FAILED, direction, attempt, reason, ended)
            error = f"{name} failed after {attempt} attempt(s): {reason}"
            if cancelled:
                error = f"cancelled: {claim.cancel} ({error})"
            self._saga_move(
                pipe, claim, SagaStatus.COMPENSATING, error, {"error": error, "cause": error}, name
            )
            # The failed step is compensated too: its effect may have happened anyway.
            self._enqueue(pipe, claim, step, Direction.UNDO, 1)
        else:
            fields = {
                "compensation_error": reason,
                "compensation_finished_at": self.store.now(),
                "claimed": 0,
            }
            self._step_move(pipe, claim, StepStatus.COMPENSATION_FAILED, direction, attempt, reason, fields)
            failed = ",".join((*claim.failed_compensations, name))
            self._touch(pipe, claim, {"failed_compensations": failed})
            self._compensate_before(pipe, claim, failed_now=True)

    def noted(self, pipe: Pipeline, claim: Claim, direction: str, ref: str) -> None:
        """A provider id known mid-action, kept so that a retry can pick up from it."""
        field = "ref" if direction == Direction.DO else "compensation_ref"
        self.store.update_step(pipe, claim.saga_id, claim.record.name, {field: ref})

    def provider_reported(self, pipe: Pipeline, claim: Claim, direction: str, status: str) -> None:
        """Keep the provider's later word on the step's effect, and note it in the history."""
        field = "provider_status" if direction == Direction.DO else "compensation_provider_status"
        self.store.update_step(pipe, claim.saga_id, claim.record.name, {field: status})
        current = claim.record.status
        self._history(pipe, claim, current, direction, 0, f"provider reports {status}", source=current)

    def requeued(self, pipe: Pipeline, claim: Claim, direction: str, attempt: int, reason: str) -> None:
        """Enqueue a lost attempt again, recording why."""
        status = claim.record.status
        self._history(pipe, claim, status, direction, attempt, f"requeued: {reason}", source=status)
        delay = 0.0
        if claim.step.approval is not None and claim.record.decide_by:  # a gate's timeout keeps its time
            delay = max(0.0, epoch(claim.record.decide_by) - self.store.clock())
        self._touch(pipe, claim, {}, delay)
        self._enqueue(pipe, claim, claim.step, direction, attempt, delay, unschedule=True)

    # -- internals -----------------------------------------------------------

    def _retry(
        self, pipe: Pipeline, claim: Claim, direction: str, attempt: int, reason: str, delay: float
    ) -> None:
        name = claim.record.name
        when = iso(self.store.clock() + delay)
        detail = f"retry in {delay:.1f}s: {reason}"
        if direction == Direction.DO:
            fields: dict[str, str | int] = {"error": reason, "next_attempt_at": when}
            self._step_move(pipe, claim, StepStatus.PENDING, direction, attempt, detail, fields)
        else:
            self._history(pipe, claim, StepStatus.COMPENSATING, direction, attempt, detail)
            fields = {"compensation_error": reason, "next_attempt_at": when, "claimed": 0}
            self.store.update_step(pipe, claim.saga_id, name, fields)
        self._touch(pipe, claim, {}, delay)
        self._enqueue(pipe, claim, claim.step, direction, attempt + 1, delay)

    def _compensate_before(self, pipe: Pipeline, claim: Claim, *, failed_now: bool) -> None:
        """Undo the previous step next (or, in an operator's retry, the next failed undo),
        or end the saga when none is left."""
        if claim.undo_queue:
            (name, done), rest = claim.undo_queue[0].split(":"), claim.undo_queue[1:]
            self._reopen_undo(pipe, claim, name, int(done), "compensation retried by an operator")
            self._touch(pipe, claim, {"step": name, "undo_queue": ",".join(rest)})
            return
        previous = None if claim.undo_queue is not None else claim.saga.before(claim.record.name)
        if previous is not None:
            self._enqueue(pipe, claim, previous, Direction.UNDO, 1)
            self._touch(pipe, claim, {"step": previous.name})
            return
        failed = [*claim.failed_compensations, *([claim.record.name] if failed_now else [])]
        if failed:
            undos = ", ".join(f"{claim.saga.step(n).compensation_name} (undo of {n})" for n in failed)
            reason = f"{claim.saga_error}; {undos} failed: a person must reconcile with the provider"
            self._finish(pipe, claim, SagaStatus.FAILED, reason)
        else:
            self._finish(pipe, claim, SagaStatus.COMPENSATED, "every step undone")

    def _saga_move(
        self,
        pipe: Pipeline,
        claim: Claim,
        target: SagaStatus,
        detail: str,
        fields: Mapping[str, str] | None = None,
        step: str = "",
        wait: float = 0.0,
    ) -> Claim:
        """Move the saga (checked against the table), record and index the move.

        Returns the claim as it stands after the move, for a caller that moves on.
        """
        check_saga_move(claim.status, target)
        changed = {"status": target.value, **(fields or {})}
        if target.finished:
            self.store.update_saga(pipe, claim.saga_id, changed)
        else:
            self._touch(pipe, claim, changed, wait)
        self.store.record(
            pipe, claim.saga_id, source=claim.status.value, target=target.value, step=step, detail=detail
        )
        self.store.index(pipe, claim.saga_id, claim.status, target, claim.created)
        return replace(claim, status=target)

    def _finish(self, pipe: Pipeline, claim: Claim, target: SagaStatus, detail: str) -> None:
        fields = {"finished_at": self.store.now()}
        if target == SagaStatus.FAILED:
            fields["error"] = detail
        self._saga_move(pipe, claim, target, detail, fields)
        if claim.undo_queue is not None or claim.cancel is not None:
            self.store.clear_saga_fields(pipe, claim.saga_id, "undo_queue", "cancel")
        self.store.expire(pipe, claim.saga_id, [s.name for s in claim.saga.steps], self.retention)
        if claim.callback_url:  # in this MULTI: a finished saga always has its callback job
            self.queue.enqueue_callback(pipe, claim.saga_id, attempt=1)

    # -- gates -----------------------------------------------------------------

    def _advance(self, pipe: Pipeline, claim: Claim, following: Step | None) -> None:
        """Start the next step: wait at a gate this run needs, pass one it does not, finish after
        the last."""
        while following is not None and following.approval is not None:
            if following.approval.needed(claim.data):
                self._wait(pipe, claim, following)
                return
            self._gate_move(pipe, claim, following.name, StepStatus.PENDING, StepStatus.SKIPPED, "not needed")
            following = claim.saga.after(following.name)
        if following is None:
            self._finish(pipe, claim, SagaStatus.COMPLETED, "all steps succeeded")
        else:
            self._enqueue(pipe, claim, following, Direction.DO, 1)
            self._touch(pipe, claim, {"step": following.name})

    def _wait(self, pipe: Pipeline, claim: Claim, gate: Step) -> None:
        """Park the saga at `gate`; its one job is the timeout, due when the wait ends."""
        assert gate.approval is not None
        timeout = gate.approval.timeout
        fields = {
            "waiting_for": gate.approval.signal,
            "decide_by": iso(self.store.clock() + timeout),
            "started_at": self.store.now(),
        }
        detail = f"waiting for {gate.approval.signal} (no answer in {timeout:g}s counts as reject)"
        self._gate_move(pipe, claim, gate.name, StepStatus.PENDING, StepStatus.WAITING, detail, fields)
        self._saga_move(pipe, claim, SagaStatus.WAITING, detail, {"step": gate.name}, gate.name, timeout)
        self._enqueue(pipe, claim, gate, Direction.DO, 1, delay=timeout)

    def decided(self, pipe: Pipeline, claim: Claim, approved: bool, detail: str) -> None:
        """A waiting gate's answer (a signal, its timeout, or a cancel): go on, or compensate."""
        gate = claim.record.name
        fields = {"decision": "approved" if approved else "rejected", "finished_at": self.store.now()}
        if approved:
            self._gate_move(pipe, claim, gate, StepStatus.WAITING, StepStatus.SUCCEEDED, detail, fields)
            claim = self._saga_move(pipe, claim, SagaStatus.RUNNING, detail, {}, gate)
            self._advance(pipe, claim, claim.saga.after(gate))
            return
        fields["error"] = detail
        self._gate_move(pipe, claim, gate, StepStatus.WAITING, StepStatus.FAILED, detail, fields)
        error = f"{gate}: {detail}"
        claim = self._saga_move(
            pipe, claim, SagaStatus.COMPENSATING, error, {"error": error, "cause": error}, gate
        )
        self._compensate_before(pipe, claim, failed_now=False)

    # -- an operator's hand ----------------------------------------------------------

    def cancel_requested(self, pipe: Pipeline, claim: Claim, note: str) -> None:
        """Ask the running step's attempt to stop the saga when it ends (the next boundary)."""
        self.store.update_saga(pipe, claim.saga_id, {"cancel": note})
        status = claim.status.value
        detail = f"cancel requested: {note}"
        self.store.record(
            pipe, claim.saga_id, source=status, target=status, step=claim.record.name, detail=detail
        )

    def cancelled_between_steps(self, pipe: Pipeline, claim: Claim, note: str) -> None:
        """Cancel a saga whose current step is not running: compensate now.

        A step that already had an attempt (now waiting for its retry) may have taken
        effect, so it is compensated too; one never tried is left pending.
        """
        reason = f"cancelled: {note}"
        rec = claim.record
        if rec.attempts > 0:
            fields = {"error": reason, "finished_at": self.store.now()}
            self._step_move(pipe, claim, StepStatus.FAILED, Direction.DO, rec.attempts, reason, fields)
        claim = self._saga_move(pipe, claim, SagaStatus.COMPENSATING, reason, {"error": reason}, rec.name)
        if rec.attempts > 0:
            self._enqueue(pipe, claim, claim.step, Direction.UNDO, 1)
        else:
            self._compensate_before(pipe, claim, failed_now=False)

    def retried(self, pipe: Pipeline, claim: Claim, later: Sequence[tuple[str, int]], note: str) -> None:
        """Reopen a failed saga and redo its failed compensations, latest step first.

        `claim` is on the failed undo to redo first; `later` are the others as
        (name, attempts so far), kept in `undo_queue` and each reopened when the
        one before it ends.
        """
        queue = [f"{name}:{attempts}" for name, attempts in later]
        names = [claim.record.name, *(name for name, _ in later)]
        detail = f"an operator retries the undo of {', '.join(names)}: {note}"
        fields = {"error": claim.saga_error or "", "failed_compensations": "", "undo_queue": ",".join(queue)}
        self.store.clear_saga_fields(pipe, claim.saga_id, "finished_at")
        self.store.reopen(pipe, claim.saga_id, [s.name for s in claim.saga.steps], self.store.clock())
        claim = self._saga_move(pipe, claim, SagaStatus.COMPENSATING, detail, fields, claim.record.name)
        self._reopen_undo(pipe, claim, claim.record.name, claim.record.compensation_attempts, detail)
        self._touch(pipe, claim, {"step": claim.record.name})

    def resolved(self, pipe: Pipeline, claim: Claim, note: str) -> None:
        """Close a failed saga that a person settled by hand, keeping their note."""
        fields = {"resolution": note, "finished_at": self.store.now()}
        self._saga_move(pipe, claim, SagaStatus.RESOLVED, f"resolved by an operator: {note}", fields)
        self.store.expire(
            pipe, claim.saga_id, [s.name for s in claim.saga.steps], self.retention, count=False
        )

    def _reopen_undo(self, pipe: Pipeline, claim: Claim, name: str, attempts: int, detail: str) -> None:
        """Move a failed undo back to compensating and enqueue its next attempt."""
        check_step_move(StepStatus.COMPENSATION_FAILED, StepStatus.COMPENSATING)
        self.store.update_step(
            pipe, claim.saga_id, name, {"status": StepStatus.COMPENSATING.value, "claimed": 0}
        )
        self.store.record(
            pipe,
            claim.saga_id,
            source=StepStatus.COMPENSATION_FAILED.value,
            target=StepStatus.COMPENSATING.value,
            step=name,
            direction=Direction.UNDO,
            detail=detail,
        )
        self._enqueue(pipe, claim, claim.saga.step(name), Direction.UNDO, attempts + 1)

    def _gate_move(
        self,
        pipe: Pipeline,
        claim: Claim,
        gate: str,
        source: StepStatus,
        target: StepStatus,
        detail: str,
        fields: Mapping[str, str] | None = None,
    ) -> None:
        """Move a gate (not the claimed step, in general) and record it."""
        check_step_move(source, target)
        self.store.update_step(pipe, claim.saga_id, gate, {"status": target.value, **(fields or {})})
        self.store.record(
            pipe, claim.saga_id, source=source.value, target=target.value, step=gate, detail=detail
        )

    def _enqueue(
        self,
        pipe: Pipeline,
        claim: Claim,
        step: Step,
        direction: str,
        attempt: int,
        delay: float = 0.0,
        unschedule: bool = False,
    ) -> None:
        self.queue.enqueue(
            pipe,
            saga_name=claim.saga.name,
            saga_id=claim.saga_id,
            step=step,
            direction=direction,
            attempt=attempt,
            delay=delay,
            unschedule=unschedule,
        )

    def _step_move(
        self,
        pipe: Pipeline,
        claim: Claim,
        target: StepStatus,
        direction: str,
        attempt: int,
        detail: str,
        fields: Mapping[str, object] | None = None,
    ) -> None:
        """Move the step (and write `fields` in the same HSET), checked against the table."""
        check_step_move(claim.record.status, target)
        self.store.update_step(
            pipe, claim.saga_id, claim.record.name, {"status": target.value, **(fields or {})}
        )
        self._history(pipe, claim, target, direction, attempt, detail, source=claim.record.status)

    def _history(
        self,
        pipe: Pipeline,
        claim: Claim,
        target: StepStatus,
        direction: str,
        attempt: int,
        detail: str,
        source: StepStatus | None = None,
    ) -> None:
        self.store.record(
            pipe,
            claim.saga_id,
            source=(source or target).value,
            target=target.value,
            step=claim.record.name,
            direction=direction,
            attempt=attempt,
            detail=detail,
        )
