"""Nothing lost: the reconciler, crash points in real killed workers, SIGTERM, Redis settings."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq.job import Job

from jobs.providers.sandbox import SandboxLedger
from jobs.runtime import build_engine
from launcher.redis_server import EmbeddedRedis
from saga import SagaEngine, SagaStatus, keys
from saga.reconcile import LOCK_TTL, Reconciler
from saga.redis_checks import RedisMisconfigured, check_redis
from saga.worker import SimpleSagaWorker
from tests.conftest import BOOKING, ROOT, process_env
from tests.waiting import wait_until_finished

Start = Callable[..., subprocess.Popen[bytes]]
STEPS = ["book_slot", "charge_card", "send_sms", "sync_calendar"]


def overdue(redis: Redis, saga_id: str) -> None:
    """Pretend the saga's next move is long overdue."""
    redis.zadd(keys.ACTIVE, {saga_id: 0}, xx=True)


def kinds(ledger: SandboxLedger, saga_id: str) -> list[str]:
    return [e["kind"] for e in ledger.entries(saga_id)]


# -- the reconciler, in process ------------------------------------------------------------


def test_lost_job_is_requeued_with_the_same_id(
    engine: SagaEngine, redis: Redis, book: Callable[..., str], drain: Callable[[SagaEngine], None]
) -> None:
    saga_id = book()
    job_id = f"{saga_id}-book_slot-do-1"
    Job.fetch(job_id, connection=redis).delete()  # what a Redis restart can lose
    overdue(redis, saga_id)

    repairs = Reconciler(engine).run()
    assert [(r.saga_id, r.action, r.detail) for r in repairs] == [(saga_id, "requeued", job_id)]
    drain(engine)
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPLETED
    assert any((h.detail or "").startswith("requeued") for h in record.history)


def test_queued_job_is_left_alone(engine: SagaEngine, redis: Redis, book: Callable[..., str]) -> None:
    saga_id = book()
    overdue(redis, saga_id)
    assert [r.action for r in Reconciler(engine).run()] == ["waiting"]
    assert redis.lrange(engine.queue.rq.key, 0, -1) == [f"{saga_id}-book_slot-do-1".encode()]
    assert Reconciler(engine).run() == []  # no longer due: the next look is a grace away


def test_silent_running_attempt_is_failed_and_retried(
    engine: SagaEngine,
    redis: Redis,
    book: Callable[..., str],
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
) -> None:
    saga_id = book()
    redis.delete(engine.queue.rq.key)
    # A worker claimed attempt 1 and died without a trace.
    engine.store.transact([keys.saga(saga_id)], lambda p: engine._claim(p, saga_id, "book_slot", "do", 1))
    overdue(redis, saga_id)

    assert [r.action for r in Reconciler(engine).run()] == ["failed_attempt"]
    drain(engine)
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPLETED
    assert record.step("book_slot").attempts == 2
    assert kinds(ledger, saga_id) == ["charge", "message", "event_created"]


def test_lost_compensation_job_is_requeued(
    make_settings: Any,
    client: FlaskClient,
    redis: Redis,
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
) -> None:
    engine = build_engine(make_settings(sandbox_faults="send_sms=fail"), redis)
    client.application.extensions["saga_engine"] = engine
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]
    # book_slot, charge_card, then send_sms, which fails and enqueues its own undo.
    SimpleSagaWorker(engine).work(burst=True, max_jobs=3, with_scheduler=False, logging_level="ERROR")
    lost = f"{saga_id}-send_sms-undo-1"
    assert redis.lrange(engine.queue.rq.key, 0, -1) == [lost.encode()]
    Job.fetch(lost, connection=redis).delete()
    overdue(redis, saga_id)

    assert [(r.action, r.detail) for r in Reconciler(engine).run()] == [("requeued", lost)]
    drain(engine)
    assert engine.get(saga_id).status == SagaStatus.COMPENSATED
    assert kinds(ledger, saga_id) == ["charge", "refund"]


def test_two_reconcilers_at_once_requeue_once(
    engine: SagaEngine, redis: Redis, book: Callable[..., str]
) -> None:
    ids = [book() for _ in range(5)]
    redis.delete(engine.queue.rq.key)
    for saga_id in ids:
        overdue(redis, saga_id)
    barrier = threading.Barrier(4)
    results: list[list[str]] = []

    def run() -> None:
        barrier.wait()
        results.append([r.action for r in Reconciler(engine).run()])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a for r in results for a in r) == ["requeued"] * 5
    assert sorted(redis.lrange(engine.queue.rq.key, 0, -1)) == sorted(
        f"{saga_id}-book_slot-do-1".encode() for saga_id in ids
    )


# -- real workers killed at exact points ---------------------------------------------------

FAST_RECOVERY = {
    "step_timeout_seconds": 2,
    "rq_timeout_grace_seconds": 1,
    "stall_grace_seconds": 1,
    "reconcile_interval_seconds": 1,
    "scheduler_interval_seconds": 1,
}


@pytest.mark.parametrize("point", ["before_call", "after_call", "after_record"])
@pytest.mark.parametrize("step", STEPS)
def test_worker_killed_at_crash_point_recovers_with_one_charge(
    step: str,
    point: str,
    make_settings: Any,
    redis: Redis,
    client: FlaskClient,
    processes: Start,
    ledger: SandboxLedger,
    ledger_path: Path,
) -> None:
    settings = make_settings(sandbox_crash_point=f"{step}:{point}", **FAST_RECOVERY)
    engine = build_engine(settings, redis)
    client.application.extensions["saga_engine"] = engine
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]

    doomed = processes("worker.py", settings)
    assert doomed.wait(timeout=60) == -signal.SIGKILL
    assert (ledger_path.parent / f"crash-{step}-{point}.fired").exists()  # the crash point fired

    # The platform restarts the worker; the scheduler runs the reconciler.
    processes("worker.py", settings)
    processes("scheduler.py", settings)
    record = wait_until_finished(engine, saga_id, timeout=90)

    assert record.status == SagaStatus.COMPLETED
    assert kinds(ledger, saga_id) == ["charge", "message", "event_created"]
    assert len({e["ref"] for e in ledger.entries(saga_id) if e["kind"] == "charge"}) == 1


@pytest.mark.parametrize(
    ("worker_class", "handed_back"),
    [("forking", "work-horse terminated"), ("threaded", "worker shut down mid-step")],
)
def test_sigterm_hands_a_long_step_back_and_another_worker_finishes_it(
    worker_class: str,
    handed_back: str,
    make_settings: Any,
    redis: Redis,
    client: FlaskClient,
    processes: Start,
    ledger: SandboxLedger,
) -> None:
    hanging = make_settings(
        sandbox_faults="sync_calendar=hang:1", step_timeout_seconds=60, worker_class=worker_class
    )
    engine = build_engine(hanging, redis)
    client.application.extensions["saga_engine"] = engine
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]
    worker = processes("worker.py", hanging, SHUTDOWN_GRACE_SECONDS="1")
    wait_for_step(engine, saga_id, "sync_calendar", "running")

    worker.send_signal(signal.SIGTERM)  # what the platform sends on a deploy
    assert worker.wait(timeout=30) == 0
    step = engine.get(saga_id).step("sync_calendar")
    assert step.status.value == "pending" and step.attempts == 1
    assert handed_back in (step.error or "")

    processes("worker.py", hanging)  # attempt 2 is not faulted
    record = wait_until_finished(engine, saga_id, timeout=60)
    assert record.status == SagaStatus.COMPLETED
    assert record.step("sync_calendar").attempts == 2
    assert kinds(ledger, saga_id) == ["charge", "message", "event_created"]


def wait_for_step(engine: SagaEngine, saga_id: str, step: str, status: str, timeout: float = 30) -> None:
    """Block on the history stream until `step` reaches `status`."""
    last = "0-0"
    stream = keys.history(saga_id)
    for _ in range(int(timeout * 2)):
        for entry_id, fields in (engine.redis.xread({stream: last}, block=500) or [[stream, []]])[0][1]:
            last = entry_id
            if fields.get(b"step") == step.encode() and fields.get(b"to") == status.encode():
                return
    raise AssertionError(f"{step} never reached {status}")


# -- Redis settings checked at start -------------------------------------------------------


def test_eviction_policy_refuses_to_start(tmp_path: Path, settings: Any) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        Redis.from_url(server.url).config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(RedisMisconfigured, match="noeviction"):
            check_redis(Redis.from_url(server.url))
        for script in ("worker.py", "scheduler.py"):
            result = subprocess.run(
                [sys.executable, script],
                cwd=ROOT,
                env=process_env(settings, REDIS_URL=server.url),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 2
            assert "maxmemory-policy noeviction" in result.stderr


def test_persistence_off_is_a_warning(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        warnings = check_redis(Redis.from_url(server.url))
        assert len(warnings) == 1 and "persistence is off" in warnings[0]
    with EmbeddedRedis(tmp_path / "aof", appendonly=True) as server:
        assert check_redis(Redis.from_url(server.url)) == []


def test_retry_stranded_in_rqs_scheduler_is_moved_to_the_queue(
    make_settings: Any, redis: Redis, client: FlaskClient, drain: Callable[[SagaEngine], None]
) -> None:
    engine = build_engine(
        make_settings(sandbox_faults="charge_card=flaky:1", retry_initial_delay_seconds=30), redis
    )
    client.application.extensions["saga_engine"] = engine
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]
    drain(engine)
    retry = f"{saga_id}-charge_card-do-2"
    registry = engine.queue.rq.scheduled_job_registry
    assert registry.get_job_ids() == [retry]
    # The worker holding RQ's scheduler lock died: the retry's time passed long ago, nobody moved it.
    redis.zadd(registry.key, {retry: time.time() - 3600})
    overdue(redis, saga_id)

    assert [(r.action, r.detail) for r in Reconciler(engine).run()] == [("requeued", retry)]
    assert registry.get_job_ids() == []  # taken out, so RQ's scheduler cannot enqueue it a second time
    drain(engine)
    assert engine.get(saga_id).status == SagaStatus.COMPLETED


def test_a_reconciler_pass_that_died_blocks_the_next_only_briefly(engine: SagaEngine, redis: Redis) -> None:
    redis.set(keys.RECONCILER_LOCK, "a pass whose worker was killed", ex=LOCK_TTL)
    assert Reconciler(engine).run() == []
    assert 0 < redis.ttl(keys.RECONCILER_LOCK) <= 10
