"""RQ workers that run saga jobs: a stock RQ worker with the engine bound to it.

They add two things to RQ: the engine that `saga.entrypoints` finds, and a
report to the engine when a work-horse dies mid-job, which RQ otherwise
records without calling the job's failure callback.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rq import Queue, SimpleWorker, Worker
from rq.serializers import JSONSerializer

from saga import entrypoints
from saga.engine import SagaEngine


class SagaWorker(Worker):
    """Forks a work-horse per job, like `rq worker`; a crash in a step kills only the horse."""

    def __init__(self, engine: SagaEngine, queues: Sequence[Queue] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("work_horse_killed_handler", entrypoints.on_horse_killed)
        super().__init__(queues or [engine.queue.rq], connection=engine.redis, **kwargs)
        self.engine = engine
        entrypoints.bind(engine)


class SimpleSagaWorker(SimpleWorker):
    """Runs jobs in its own process, without forking: for tests and debugging."""

    def __init__(self, engine: SagaEngine, queues: Sequence[Queue] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("serializer", JSONSerializer)
        super().__init__(queues or [engine.queue.rq], connection=engine.redis, **kwargs)
        self.engine = engine
        entrypoints.bind(engine)
