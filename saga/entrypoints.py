"""The functions RQ calls. Each is a thin door into the engine bound to this worker.

The engine is found through a context variable that `SagaWorker` sets, not a
module global, so several engines (tests, or threads of one worker) never mix.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rq import get_current_job
from rq.job import Job

from saga.callbacks import CallbackDelivery
from saga.definition import Direction
from saga.errors import AttemptFailed, EngineNotBound

if TYPE_CHECKING:
    from saga.engine import SagaEngine

log = logging.getLogger("saga")
_engine: ContextVar[SagaEngine] = ContextVar("saga_engine")


def bind(engine: SagaEngine) -> None:
    """Make `engine` the one that saga jobs in this context run on."""
    _engine.set(engine)


def current() -> SagaEngine:
    """The engine bound to this context; raises `EngineNotBound` outside a saga worker."""
    try:
        return _engine.get()
    except LookupError:
        raise EngineNotBound() from None


def _attempt() -> int:
    job = get_current_job()
    if job is None:
        raise EngineNotBound()
    return int(job.meta["attempt"])


def do_step(saga_id: str, step: str) -> None:
    """RQ job: one attempt of a step's action."""
    current().run(saga_id, step, Direction.DO, _attempt())


def undo_step(saga_id: str, step: str) -> None:
    """RQ job: one attempt of a step's compensation."""
    current().run(saga_id, step, Direction.UNDO, _attempt())


def deliver_callback(saga_id: str, attempt: int) -> str | None:
    """RQ job: one delivery attempt of a finished saga's completion callback; returns its status."""
    engine = current()
    status = CallbackDelivery(engine, engine.callbacks).deliver(saga_id, attempt)
    return status.value if status else None


def _report(job: Job, reason: str) -> None:
    meta: dict[str, Any] = job.meta
    if {"saga_id", "callback_attempt"} <= meta.keys():  # a delivery attempt died: try the next
        engine = current()
        CallbackDelivery(engine, engine.callbacks).abandoned(
            meta["saga_id"], int(meta["callback_attempt"]), reason
        )
        return
    if not {"saga_id", "step", "direction", "attempt"} <= meta.keys():
        return  # not a saga job
    current().report_failure(meta["saga_id"], meta["step"], meta["direction"], int(meta["attempt"]), reason)


def on_job_failure(
    job: Job,
    connection: object,
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | None,
) -> None:
    """RQ failure callback: hand failures the job could not record itself to the engine.

    The engine records ordinary step failures before the job raises `AttemptFailed`,
    so those are skipped here. What remains is an RQ timeout or an abandoned job
    (its worker died); the engine fences those by attempt, so a late or false
    report about a step that finished is ignored.
    """
    if isinstance(exc, AttemptFailed):
        return
    _report(job, f"{exc_type.__name__}: {exc}; outcome unknown")


def on_horse_killed(job: Job, retpid: int, ret_val: int, rusage: object) -> None:
    """Worker hook: the work-horse died mid-job (OOM, SIGKILL); RQ skips `on_failure` then."""
    _report(job, f"work-horse terminated unexpectedly (wait status {ret_val}); outcome unknown")


def reconcile() -> int:
    """Periodic job: drive on every saga whose worker or job was lost; returns how many moved."""
    from saga.reconcile import Reconciler  # the reconciler imports the engine, which imports us

    repairs = Reconciler(current()).run()
    moved = [r for r in repairs if r.action in ("requeued", "failed_attempt")]
    if repairs:
        log.info("reconciled %d overdue saga(s), %d moved on", len(repairs), len(moved))
    return len(moved)
