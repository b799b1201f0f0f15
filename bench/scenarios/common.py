"""Helpers the scenarios share: failed-job checks and a progress tick for part k of n."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from bench.progress import Progress


def failed_jobs(redis: Redis, queue_name: str) -> int:
    """Jobs RQ recorded as failed on this queue (a healthy run has none)."""
    queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
    return int(FailedJobRegistry(queue=queue).count)


def ticker(progress: Progress, label: str, part: int, parts: int) -> Callable[[float], None]:
    """A tick for part `part` (from 0) of `parts` of the current scenario."""

    def tick(fraction: float) -> None:
        progress.update(label, (part + fraction) / parts)

    return tick


def mb(value: int) -> float:
    """Bytes to MiB."""
    return value / 2**20
