"""Waiting for sagas without sleeping: block on their history stream until they finish."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from saga import SagaEngine, SagaRecord, keys


def wait_until_finished(engine: SagaEngine, saga_id: str, timeout: float = 30.0) -> SagaRecord:
    """Return the saga once it is completed, compensated or failed; AssertionError after `timeout`."""
    return wait_until(engine, saga_id, lambda record: record.status.finished, timeout)


def wait_until(
    engine: SagaEngine, saga_id: str, done: Callable[[SagaRecord], bool], timeout: float = 30.0
) -> SagaRecord:
    """Return the saga once `done(record)` holds; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    last_id = "0-0"
    while True:
        record = engine.get(saga_id)
        if done(record):
            return record
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"saga {saga_id} still {record.status.value} after {timeout}s: {record.as_dict()}"
            )
        # Wake as soon as the saga records its next transition. The final one deletes the
        # stream (its history is archived), which a blocked XREAD does not notice: block briefly.
        entries = engine.redis.xread({keys.history(saga_id): last_id}, block=int(min(left, 0.2) * 1000))
        if entries:
            last_id = entries[0][1][-1][0]


def wait_until_callback_settled(engine: SagaEngine, saga_id: str, timeout: float = 30.0) -> SagaRecord:
    """Return the saga once its completion callback was delivered or given up; AssertionError after `timeout`.

    A delivery leaves no stream to block on, so this re-reads the record, waiting a
    moment between reads; it returns as soon as the condition holds, never after a fixed time.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        record = engine.get(saga_id)
        if record.callback is not None and record.callback.status.settled:
            return record
        if time.monotonic() >= deadline:
            raise AssertionError(f"saga {saga_id} callback not settled after {timeout}s: {record.callback}")
        pause.wait(0.05)
