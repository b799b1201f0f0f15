"""The threaded worker: many steps in flight in one process, each visible to RQ as started."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from redis import Redis
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.suspension import resume, suspend

from jobs.providers.sandbox import SandboxLedger
from saga import RetryPolicy, Saga, SagaEngine, SagaStatus, Step, StepContext
from saga.schedule import register_periodic, scheduler
from saga.threaded import ThreadedSagaWorker
from tests.conftest import BOOKING

PARTIES = 6


def test_bookings_complete_on_the_threaded_worker(engine: SagaEngine, ledger: SandboxLedger) -> None:
    ids = [
        engine.start("booking", {**BOOKING, "slot": {**BOOKING["slot"], "resource": f"v{i}"}}).saga_id
        for i in range(12)
    ]
    ThreadedSagaWorker(engine, concurrency=4).work(burst=True, logging_level="WARNING")
    assert {engine.get(saga_id).status for saga_id in ids} == {SagaStatus.COMPLETED}
    assert [e["kind"] for e in ledger.entries()].count("charge") == 12
    # Each job left RQ's intermediate list as it started, not at the next periodic cleanup.
    assert engine.redis.llen(engine.queue.rq.intermediate_queue_key) == 0


def test_steps_run_at_the_same_time_and_show_as_started(redis: Redis) -> None:
    barrier = threading.Barrier(PARTIES, timeout=20)  # passes only if all are in flight at once
    looked = threading.Event()
    seen: dict[str, Any] = {}

    def meet(ctx: StepContext) -> str:
        if barrier.wait() == 0:  # one of them looks at what RQ shows while all are still running
            registry = StartedJobRegistry("bench", connection=redis)
            seen["started"] = set(registry.get_job_ids())
            seen["statuses"] = {
                Job.fetch(i, connection=redis, serializer=JSONSerializer).get_status()
                for i in seen["started"]
            }
            looked.set()
        looked.wait(20)
        return "met"

    step = Step("meet", meet, lambda ctx: None, "unmeet", timeout=30, retry=RetryPolicy(max_attempts=1))
    engine = SagaEngine(redis, [Saga("gathering", (step,))], queue_name="bench")
    ids = [engine.start("gathering", {}).saga_id for _ in range(PARTIES)]

    ThreadedSagaWorker(engine, concurrency=PARTIES).work(burst=True, logging_level="WARNING")

    assert {engine.get(saga_id).status for saga_id in ids} == {SagaStatus.COMPLETED}
    assert seen["started"] == {f"{saga_id}-meet-do-1" for saga_id in ids}
    assert seen["statuses"] == {"started"}


def test_bounded_pool_never_runs_more_than_its_concurrency(redis: Redis) -> None:
    lock = threading.Lock()
    now_running, peak = [0], [0]

    def count(ctx: StepContext) -> None:
        with lock:
            now_running[0] += 1
            peak[0] = max(peak[0], now_running[0])
        threading.Event().wait(0.05)  # hold the slot a moment so overlaps happen
        with lock:
            now_running[0] -= 1

    step = Step("count", count, lambda ctx: None, "uncount", retry=RetryPolicy(max_attempts=1))
    engine = SagaEngine(redis, [Saga("crowd", (step,))], queue_name="crowd")
    ids = [engine.start("crowd", {}).saga_id for _ in range(20)]
    ThreadedSagaWorker(engine, concurrency=3).work(burst=True, logging_level="WARNING")
    assert {engine.get(saga_id).status for saga_id in ids} == {SagaStatus.COMPLETED}
    assert peak[0] == 3


def test_failed_attempts_and_periodic_jobs_are_recorded_like_rq_does(
    make_settings: Callable[..., Any], redis: Redis
) -> None:
    from jobs.runtime import build_engine

    engine = build_engine(make_settings(sandbox_faults="send_sms=fail"), redis)
    saga_id = engine.start("booking", BOOKING).saga_id
    sched = scheduler(redis, engine.queue.rq.name, interval=1)
    register_periodic(sched, 30)
    sched.enqueue_jobs()
    ThreadedSagaWorker(engine, concurrency=4).work(burst=True, logging_level="WARNING")

    assert engine.get(saga_id).status == SagaStatus.COMPENSATED
    failed = engine.queue.rq.failed_job_registry.get_job_ids()
    assert failed == [f"{saga_id}-send_sms-do-1"]
    job = Job.fetch(failed[0], connection=redis, serializer=JSONSerializer)
    result = job.latest_result()
    assert result is not None and "InjectedFailure" in (result.exc_string or "")  # the real cause
    reconcile = Job.fetch("saga-reconcile", connection=redis, serializer=JSONSerializer)
    assert reconcile.get_status() == "finished"


def test_a_suspended_queue_is_honoured_though_asked_only_every_few_seconds(
    engine: SagaEngine, redis: Redis
) -> None:
    saga_id = engine.start("booking", BOOKING).saga_id
    suspend(redis)  # `rq suspend`
    ThreadedSagaWorker(engine, concurrency=2).work(burst=True, logging_level="WARNING")
    assert engine.get(saga_id).step("book_slot").attempts == 0  # nothing ran
    resume(redis)
    ThreadedSagaWorker(engine, concurrency=2).work(burst=True, logging_level="WARNING")
    assert engine.get(saga_id).status == SagaStatus.COMPLETED


def test_a_redis_that_lost_its_scripts_still_claims_and_records_each_job_once(
    engine: SagaEngine, redis: Redis
) -> None:
    saga_id = engine.start("booking", BOOKING).saga_id
    redis.script_flush()  # what a Redis restart does to loaded scripts
    ThreadedSagaWorker(engine, concurrency=2).work(burst=True, logging_level="WARNING")
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPLETED
    assert [s.attempts for s in record.steps] == [1, 1, 1, 1]
    assert StartedJobRegistry("sagas", connection=redis).get_job_ids() == []  # no execution left behind
