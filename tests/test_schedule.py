"""The scheduler process's periodic jobs: registered once, JSON-serialised, run by saga workers."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from saga import SagaEngine, keys
from saga.schedule import PERIODIC, register_periodic, scheduler


def test_periodic_jobs_register_once_and_run_on_a_saga_worker(
    engine: SagaEngine, redis: Redis, drain: Callable[[SagaEngine], None]
) -> None:
    sched = scheduler(redis, engine.queue.rq.name, interval=1)
    register_periodic(sched)
    register_periodic(sched)  # a restart replaces, never duplicates
    assert sorted(j.id for j in sched.get_jobs()) == sorted(PERIODIC)

    redis.zadd(keys.ACTIVE, {"0" * 32: 0.0})  # a saga that has not moved since 1970
    sched.enqueue_jobs()
    drain(engine)

    job = Job.fetch("saga-report-stalled", connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == 1
    assert [j.id for j in sched.get_jobs()] == ["saga-report-stalled"]  # rescheduled for its next run
