"""Engine guarantees against real Redis: fencing, false failure reports, backoff, retention."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from flask.testing import FlaskClient
from redis import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.registry import ScheduledJobRegistry
from rq.serializers import JSONSerializer

from jobs.providers.sandbox import SandboxLedger
from jobs.slots import SlotStore, SlotTaken
from saga import SagaEngine, SagaRecord, SagaStatus, keys
from saga.entrypoints import bind, on_job_failure
from tests.conftest import BOOKING


def fetch(redis: Redis, job_id: str) -> Job:
    return Job.fetch(job_id, connection=redis, serializer=JSONSerializer)


def test_false_abandoned_report_for_a_finished_step_compensates_nothing(
    engine: SagaEngine,
    redis: Redis,
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
    book: Callable[..., str],
) -> None:
    saga_id = book()
    drain(engine)
    before = engine.get(saga_id)
    assert before.status == SagaStatus.COMPLETED

    # What RQ's registry cleanup does when it wrongly deems a finished job abandoned (rq#2424).
    bind(engine)
    job = fetch(redis, f"{saga_id}-charge_card-do-1")
    error = AbandonedJobError("job abandoned")
    on_job_failure(job, redis, AbandonedJobError, error, None)
    drain(engine)

    after = engine.get(saga_id)
    assert after.status == SagaStatus.COMPLETED
    assert after.history == before.history
    assert [e["kind"] for e in ledger.entries(saga_id)] == ["charge", "message", "event_created"]


def test_report_from_an_older_attempt_is_refused(
    run_saga: Callable[..., SagaRecord], client: FlaskClient
) -> None:
    record = run_saga(sandbox_faults="charge_card=flaky:1")
    engine: SagaEngine = client.application.extensions["saga_engine"]
    assert record.step("charge_card").attempts == 2

    # Attempt 1 failed long ago and attempt 2 finished; late reports about either change nothing.
    assert engine.report_failure(record.id, "charge_card", "do", 1, "late report") is False
    assert engine.report_failure(record.id, "charge_card", "do", 2, "late report") is False
    assert engine.get(record.id).history == record.history


def test_duplicate_job_for_a_claimed_attempt_does_nothing(
    engine: SagaEngine,
    redis: Redis,
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
    book: Callable[..., str],
) -> None:
    saga_id = book()
    # The same attempt enqueued twice (a duplicate delivery): only one may run.
    job = fetch(redis, f"{saga_id}-book_slot-do-1")
    engine.queue.rq.enqueue_job(job)
    drain(engine)
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPLETED
    assert [h.target for h in record.history if h.step == "book_slot"] == ["running", "succeeded"]


def test_unknown_outcome_report_retries_the_step_with_the_same_key(
    engine: SagaEngine,
    redis: Redis,
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
    book: Callable[..., str],
) -> None:
    saga_id = book()
    # Claim attempt 1 of book_slot by hand, then report its worker dead mid-step.
    engine.store.transact(
        [keys.saga(saga_id)], lambda pipe: engine._claim(pipe, saga_id, "book_slot", "do", 1)
    )
    assert engine.report_failure(saga_id, "book_slot", "do", 1, "work-horse terminated") is True
    drain(engine)
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPLETED
    assert record.step("book_slot").attempts == 2


def test_retry_waits_in_rqs_scheduler_with_backoff(
    run_saga: Callable[..., SagaRecord], client: FlaskClient
) -> None:
    record = run_saga(sandbox_faults="charge_card=flaky:1", retry_initial_delay_seconds=30)
    engine: SagaEngine = client.application.extensions["saga_engine"]

    assert record.status == SagaStatus.RUNNING
    step = record.step("charge_card")
    assert step.status.value == "pending" and step.attempts == 1 and step.next_attempt_at
    registry = ScheduledJobRegistry(queue=engine.queue.rq)
    job_id = f"{record.id}-charge_card-do-2"
    assert registry.get_job_ids() == [job_id]
    wait = (registry.get_scheduled_time(job_id) - datetime.now(UTC)).total_seconds()
    assert 13 <= wait <= 31  # 30 s with up to half taken off by jitter, in whole seconds
    assert not any(h.direction == "undo" for h in record.history)


def test_finished_saga_expires_after_retention(run_saga: Callable[..., SagaRecord], redis: Redis) -> None:
    record = run_saga(saga_retention_days=2)
    assert record.status == SagaStatus.COMPLETED
    assert not redis.exists(keys.history(record.id))  # archived: the stream is gone
    assert [h.target for h in record.history][-1] == "completed"  # read back from the archive
    for key in keys.all_of_saga(record.id, [s.name for s in record.steps]):
        if key != keys.history(record.id):
            assert 2 * 86400 - 60 < redis.ttl(key) <= 2 * 86400, key
    assert redis.zscore(keys.ACTIVE, record.id) is None


def test_idempotency_key_is_kept_for_its_ttl(client: FlaskClient, redis: Redis) -> None:
    saga_id = client.post("/book", json=BOOKING, headers={"Idempotency-Key": "k1"}).get_json()["id"]
    assert redis.hget(keys.idempotency("k1"), "saga") == saga_id.encode()
    assert 72 * 3600 - 60 < redis.ttl(keys.idempotency("k1")) <= 72 * 3600
    assert redis.zscore(keys.ACTIVE, saga_id) is not None


def test_twenty_concurrent_reservations_of_one_slot_have_one_winner(redis: Redis) -> None:
    slots = SlotStore(redis)
    start = datetime(2026, 12, 1, 15, tzinfo=UTC)
    barrier = threading.Barrier(20)
    winners: list[str] = []

    def reserve(saga_id: str) -> None:
        barrier.wait()
        try:
            slots.reserve("viewing-42", start, 30, saga_id)
            winners.append(saga_id)
        except SlotTaken:
            pass

    threads = [threading.Thread(target=reserve, args=(f"saga{i}",)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert slots.holder("viewing-42", start) == winners[0]
    assert slots.release("viewing-42", start, "saga-that-lost") is False
    assert slots.holder("viewing-42", start) == winners[0]
    assert slots.release("viewing-42", start, winners[0]) is True
    assert slots.holder("viewing-42", start) is None


def test_two_bookings_of_one_slot_one_completes_one_is_compensated(
    engine: SagaEngine, drain: Callable[[SagaEngine], None], ledger: SandboxLedger, book: Callable[..., str]
) -> None:
    first, second = book(), book()
    drain(engine)
    records = {engine.get(first).status, engine.get(second).status}
    assert records == {SagaStatus.COMPLETED, SagaStatus.COMPENSATED}
    loser = engine.get(second if engine.get(first).status == SagaStatus.COMPLETED else first)
    assert "SlotTaken" in (loser.step("book_slot").error or "")
    assert ledger.entries(loser.id) == []  # nothing to undo, nothing charged
    assert [e["kind"] for e in ledger.entries()].count("charge") == 1
