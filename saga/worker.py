"""RQ workers that run saga jobs: a stock RQ worker with the engine bound to it.

They add two things to RQ: the engine that `saga.entrypoints` finds, and a
report to the engine when a work-horse dies mid-job, which RQ otherwise
records without calling the job's failure callback.
"""

from __future__ import annotations

import ctypes
import multiprocessing.util
import os
import signal
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer

from saga import entrypoints
from saga.engine import SagaEngine

_PR_SET_PDEATHSIG = 1
# RQ's default is 10 minutes. Maintenance is also when a worker takes over RQ's scheduler
# lock from one that died, and until then no delayed retry is moved to the queue.
MAINTENANCE_EVERY = 30


def die_with_worker(worker: object) -> None:
    """Arm `_die_with` in every multiprocessing child this worker forks (RQ's scheduler)."""
    parent = os.getpid()
    multiprocessing.util.register_after_fork(worker, lambda _: _die_with(parent))


def _die_with(parent: int) -> None:
    """In a child of the worker: be killed when the worker dies, even by SIGKILL (Linux).

    RQ runs its scheduler in a forked child that does not watch its parent; when
    an OOM kill takes the worker, the orphan would otherwise poll Redis forever.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: nothing to arm
        return
    if os.getppid() != parent:  # the worker died before the signal was armed
        os._exit(0)


class SagaWorker(Worker):
    """Forks a work-horse per job, like `rq worker`; a crash in a step kills only the horse.

    On SIGTERM it stops taking jobs and lets the running step finish; a step still
    running after `shutdown_grace` seconds is handed back: its horse is killed and
    the attempt recorded as failed with an unknown outcome, so another worker
    retries it with the same idempotency key. Platforms send SIGKILL 30 s after
    SIGTERM, so the grace stays below that.
    """

    def __init__(
        self,
        engine: SagaEngine,
        queues: Sequence[Queue] | None = None,
        *,
        shutdown_grace: float = 25.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_EVERY)
        kwargs.setdefault("work_horse_killed_handler", entrypoints.on_horse_killed)
        super().__init__(queues or [engine.queue.rq], connection=engine.redis, **kwargs)
        self.engine = engine
        self.shutdown_grace = shutdown_grace
        entrypoints.bind(engine)
        die_with_worker(self)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Warm shutdown, bounded: hand the running step back after the grace."""
        super().request_stop(signum, frame)
        if self.horse_pid:
            timer = threading.Timer(self.shutdown_grace, self._hand_back)
            timer.daemon = True
            timer.start()

    def _hand_back(self) -> None:
        if self.horse_pid:
            self.log.warning("step still running %ss after SIGTERM: handing it back", self.shutdown_grace)
            self.kill_horse()


class SimpleSagaWorker(SimpleWorker):
    """Runs jobs in its own process, without forking: for tests and debugging."""

    def __init__(self, engine: SagaEngine, queues: Sequence[Queue] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        super().__init__(queues or [engine.queue.rq], connection=engine.redis, **kwargs)
        self.engine = engine
        entrypoints.bind(engine)
