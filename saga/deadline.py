"""Step timeouts that do not depend on signals, so they work off the main thread too.

The action runs in a daemon thread and the caller waits at most `timeout`
seconds. A step that outlives it is reported as timed out with its outcome
unknown; the thread is abandoned, and any late result it produces is never
recorded (the attempt has lost its claim by then). In a forking worker the
work-horse exits right after the job, which ends such a thread for good.

The thread runs in a copy of the caller's context (a new thread starts with an
empty one), so what the caller bound, such as the attempt's log fields, holds
inside the step too.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

from saga.errors import StepTimedOut

T = TypeVar("T")


def run_with_deadline(fn: Callable[[], T], *, step: str, timeout: float) -> T:
    """Return `fn()`, re-raise its exception, or raise `StepTimedOut` after `timeout` seconds."""
    outcome: list[T] = []
    failure: list[BaseException] = []
    done = threading.Event()
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome.append(context.run(fn))
        except BaseException as exc:  # handed to the waiting thread, never swallowed
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=target, name=f"saga-step-{step}", daemon=True).start()
    if not done.wait(timeout):
        raise StepTimedOut(step, timeout)
    if failure:
        raise failure[0]
    return outcome[0]
