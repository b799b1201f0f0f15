"""The ids of the attempt being run, on every log line emitted while it runs.

An attempt binds its saga id, step, direction, attempt number and RQ job id in
a context variable for as long as it runs. `AttemptFields`, a filter on the
log handler, copies them onto each record, so lines from provider adapters,
SDKs and RQ carry the ids without passing them around.

A context variable rather than a global: the threaded worker runs many
attempts at once, one per pool thread, and each thread has its own context.
`run_with_deadline` copies the context into the thread that runs the step, so
the step's own lines are covered too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from saga import keys
from saga.errors import AttemptFailed
from saga.outcome import describe

log = logging.getLogger("saga.attempt")

FIELDS = ("saga_id", "step", "direction", "attempt", "job_id")

_bound: ContextVar[Mapping[str, object]] = ContextVar("saga_log_fields", default=MappingProxyType({}))


def current() -> Mapping[str, object]:
    """The fields bound in this context (empty outside an attempt)."""
    return _bound.get()


@contextmanager
def bound(**fields: object) -> Iterator[None]:
    """Add `fields` to every log line of this context until the block ends; inner blocks win."""
    token = _bound.set(MappingProxyType({**_bound.get(), **fields}))
    try:
        yield
    finally:
        _bound.reset(token)


class AttemptFields(logging.Filter):
    """Copies the bound fields onto each record; a field given with `extra=` is kept as given."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _bound.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


@contextmanager
def attempt(saga_id: str, step: str, direction: str, number: int) -> Iterator[None]:
    """Bind one attempt's ids and log how it ended: one line per attempt, at INFO or WARNING."""
    job_id = keys.job_id(saga_id, step, direction, number)
    with bound(saga_id=saga_id, step=step, direction=direction, attempt=number, job_id=job_id):
        began = time.monotonic()
        log.debug("attempt started")
        try:
            yield
        except AttemptFailed as failed:  # recorded by the engine; the cause says why
            cause = failed.__cause__ or failed
            log.warning("attempt failed after %.3fs: %s", time.monotonic() - began, describe(cause))
            raise
        except Exception as exc:  # not recorded (Redis down): the worker reports it or the reconciler will
            log.warning("attempt ended unrecorded after %.3fs: %s", time.monotonic() - began, describe(exc))
            raise
        log.info("attempt done in %.3fs", time.monotonic() - began)
