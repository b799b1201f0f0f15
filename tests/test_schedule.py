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
    register_periodic(sched, 30)
    register_periodic(sched, 30)  # a restart replaces, never duplicates
    assert sorted(j.id for j in sched.get_jobs()) == sorted(PERIODIC)

    redis.zadd(keys.ACTIVE, {"0" * 32: 0.0})  # an overdue saga whose record has expired
    sched.enqueue_jobs()
    drain(engine)

    job = Job.fetch("saga-reconcile", connection=redis, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == 0
    assert redis.zscore(keys.ACTIVE, "0" * 32) is None  # the reconciler dropped it
    assert [j.id for j in sched.get_jobs()] == ["saga-reconcile"]  # rescheduled for its next run
