"""Periodic saga jobs, registered with rq-scheduler (the `scheduler` process)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer
from rq_scheduler import Scheduler


class JSONJob(Job):
    """rq-scheduler creates jobs without a serializer argument; force JSON like every saga job."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = JSONSerializer
        super().__init__(*args, **kwargs)


# job id -> function; each runs every `interval` seconds given to `register_periodic`.
PERIODIC = {"saga-reconcile": "saga.entrypoints.reconcile"}


def scheduler(redis: Redis, queue_name: str, interval: int) -> Scheduler:
    """An rq-scheduler that polls every `interval` seconds and enqueues JSON jobs."""
    return Scheduler(queue_name=queue_name, connection=redis, interval=interval, job_class=JSONJob)


def register_periodic(sched: Scheduler, interval: int) -> list[str]:
    """Schedule each periodic job once; a restart replaces it instead of adding a copy."""
    for job_id, func in PERIODIC.items():
        sched.cancel(job_id)
        sched.schedule(
            datetime.now(UTC),
            func,
            id=job_id,
            interval=interval,
            result_ttl=interval * 10,
            description=f"saga.{job_id.removeprefix('saga-')}",
        )
    return list(PERIODIC)
