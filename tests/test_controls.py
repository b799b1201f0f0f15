"""Gates, signals, cancel, and an operator's retry and resolve, against real Redis."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer

from config import Settings
from jobs.providers.sandbox import SandboxLedger
from jobs.runtime import build_engine
from saga import SagaEngine, SagaRecord, SagaStatus, StepContext, StepStatus, keys
from saga.errors import ActionRefused
from saga.reconcile import Reconciler
from tests.conftest import BOOKING
from tests.waiting import wait_until, wait_until_finished

GATED = {"approval_above_amount": 1000}  # BOOKING charges 4900: it waits


def gated_engine(
    make_settings: Callable[..., Settings], redis: Redis, client: FlaskClient, **extra: Any
) -> SagaEngine:
    engine = build_engine(make_settings(**GATED, **extra), redis)
    client.application.extensions["saga_engine"] = engine
    return engine


def book(client: FlaskClient, **payment: Any) -> str:
    body = {**BOOKING, "payment": {**BOOKING["payment"], **payment}}
    response = client.post("/book", json=body)
    assert response.status_code == 202, response.get_json()
    return str(response.get_json()["id"])


def kinds(ledger: SandboxLedger, saga_id: str) -> list[str]:
    return [e["kind"] for e in ledger.entries(saga_id)]


def statuses(record: SagaRecord) -> dict[str, str]:
    return {s.name: s.status.value for s in record.steps}


def fire_scheduled(engine: SagaEngine, redis: Redis) -> None:
    """What RQ's scheduler does when a scheduled job's time comes, made to come now."""
    registry = engine.queue.rq.scheduled_job_registry
    for job_id in registry.get_job_ids():
        redis.zadd(registry.key, {job_id: time.time() - 1})
    scheduler = RQScheduler([engine.queue.rq], connection=redis, serializer=JSONSerializer)
    scheduler.prepare_registries([engine.queue.rq.name])
    scheduler.enqueue_scheduled_jobs()


@pytest.fixture
def waiting(
    make_settings: Callable[..., Settings],
    redis: Redis,
    client: FlaskClient,
    drain: Callable[[SagaEngine], None],
) -> tuple[SagaEngine, str]:
    """A booking parked at its approval gate: slot held, card not charged."""
    engine = gated_engine(make_settings, redis, client)
    saga_id = book(client)
    drain(engine)
    return engine, saga_id


def test_a_booking_above_the_threshold_waits_without_holding_a_worker(
    waiting: tuple[SagaEngine, str], client: FlaskClient, ledger: SandboxLedger, redis: Redis
) -> None:
    engine, saga_id = waiting
    record = engine.get(saga_id)
    assert record.status == SagaStatus.WAITING
    assert statuses(record) == {
        "book_slot": "succeeded",
        "approval": "waiting",
        "charge_card": "pending",
        "send_sms": "pending",
        "sync_calendar": "pending",
    }
    assert kinds(ledger, saga_id) == []  # the slot is in Redis; nothing charged
    assert engine.queue.rq.count == 0  # no job holds a worker: only the timeout is scheduled
    assert engine.queue.rq.scheduled_job_registry.get_job_ids() == [f"{saga_id}-approval-do-1"]
    gate = client.get(f"/sagas/{saga_id}").get_json()["steps"][1]
    assert gate["status"] == "waiting"
    assert gate["gate"]["signal"] == "approval" and gate["gate"]["decide_by"]


def test_approve_charges_and_completes_and_a_repeat_changes_nothing(
    waiting: tuple[SagaEngine, str],
    client: FlaskClient,
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
    redis: Redis,
) -> None:
    engine, saga_id = waiting
    answer = client.post(
        f"/sagas/{saga_id}/signals/approval", json={"decision": "approve", "note": "ok by Sam"}
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "running"
    drain(engine)
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPLETED
    assert record.step("approval").decision == "approved"
    assert kinds(ledger, saga_id) == ["charge", "message", "event_created"]
    assert any(h.detail == "approved by signal approval: ok by Sam" for h in record.history)

    again = client.post(f"/sagas/{saga_id}/signals/approval", json={"decision": "approve"})
    assert again.status_code == 200
    assert engine.get(saga_id).history == record.history
    late = client.post(f"/sagas/{saga_id}/signals/approval", json={"decision": "reject"})
    assert late.status_code == 409
    assert late.get_json()["code"] == "not_waiting"

    # The timeout job fires after the approval: refused, nothing changes.
    fire_scheduled(engine, redis)
    drain(engine)
    assert engine.get(saga_id).history == record.history


def test_reject_releases_the_slot_and_charges_nothing(
    waiting: tuple[SagaEngine, str],
    client: FlaskClient,
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
) -> None:
    engine, saga_id = waiting
    answer = client.post(
        f"/sagas/{saga_id}/signals/approval", json={"decision": "reject", "note": "too dear"}
    )
    assert answer.status_code == 200
    assert answer.get_json()["status"] == "compensating"
    drain(engine)
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPENSATED
    assert statuses(record)["book_slot"] == "compensated"
    assert statuses(record)["approval"] == "failed"
    assert statuses(record)["charge_card"] == "pending"
    assert record.error == "approval: rejected by signal approval: too dear"
    assert kinds(ledger, saga_id) == []
    # The slot is free again: the same viewing can be booked.
    assert book(client) != saga_id


def test_no_answer_before_the_timeout_counts_as_reject(
    waiting: tuple[SagaEngine, str], redis: Redis, drain: Callable[[SagaEngine], None], ledger: SandboxLedger
) -> None:
    engine, saga_id = waiting
    fire_scheduled(engine, redis)
    drain(engine)
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPENSATED
    assert record.step("approval").decision == "rejected"
    assert record.error == "approval: no approval within 3600s"
    assert kinds(ledger, saga_id) == []


def test_a_booking_below_the_threshold_passes_the_gate(
    make_settings: Callable[..., Settings],
    redis: Redis,
    client: FlaskClient,
    drain: Callable[[SagaEngine], None],
) -> None:
    engine = gated_engine(make_settings, redis, client)
    saga_id = book(client, amount=900)
    drain(engine)
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPLETED
    assert statuses(record)["approval"] == "skipped"


def test_signal_errors_name_what_is_wrong(
    waiting: tuple[SagaEngine, str], client: FlaskClient, make_settings: Callable[..., Settings]
) -> None:
    engine, saga_id = waiting
    unknown = client.post(f"/sagas/{saga_id}/signals/payday", json={"decision": "approve"})
    assert unknown.status_code == 404
    assert unknown.get_json()["code"] == "unknown_signal"
    assert "approval" in unknown.get_json()["message"]
    bad = client.post(f"/sagas/{saga_id}/signals/approval", json={"decision": "maybe"})
    assert bad.status_code == 422
    assert bad.get_json()["field"] == "decision"
    extra = client.post(f"/sagas/{saga_id}/signals/approval", json={"decision": "approve", "amount": 1})
    assert extra.status_code == 422
    assert client.post(f"/sagas/{'0' * 32}/signals/approval", json={"decision": "approve"}).status_code == 404
    assert client.post("/sagas/nope/signals/approval", json={"decision": "approve"}).status_code == 404
    assert engine.get(saga_id).status == SagaStatus.WAITING


def test_cancel_while_waiting_compensates_at_once(
    waiting: tuple[SagaEngine, str], client: FlaskClient, drain: Callable[[SagaEngine], None]
) -> None:
    engine, saga_id = waiting
    answer = client.post(f"/sagas/{saga_id}/cancel", json={"note": "caller hung up"})
    assert answer.status_code == 202
    drain(engine)
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPENSATED
    assert record.error == "approval: cancelled: caller hung up"
    assert client.post(f"/sagas/{saga_id}/cancel", json={}).status_code == 409


def test_cancel_before_the_first_step_ran_leaves_nothing_to_undo(
    engine: SagaEngine, client: FlaskClient, drain: Callable[[SagaEngine], None], ledger: SandboxLedger
) -> None:
    saga_id = book(client)
    answer = client.post(f"/sagas/{saga_id}/cancel")  # no body at all: a note is optional
    assert answer.status_code == 202
    assert answer.get_json()["status"] == "compensated"
    drain(engine)  # the first step's job is still queued: it is refused when it runs
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPENSATED
    assert {s.status for s in record.steps} == {StepStatus.PENDING}
    assert kinds(ledger, saga_id) == []


def test_cancel_during_a_step_stops_at_its_end_and_undoes_it(
    make_settings: Callable[..., Settings],
    redis: Redis,
    client: FlaskClient,
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
) -> None:
    engine = build_engine(make_settings(), redis)
    client.application.extensions["saga_engine"] = engine
    seen: list[str] = []

    def cancel_mid_charge(point: str, ctx: StepContext) -> None:
        # The operator's request arrives while the charge is in flight.
        if point == "before_call" and ctx.step == "charge_card" and ctx.direction == "do":
            response = client.post(f"/sagas/{ctx.saga_id}/cancel", json={"note": "wrong flat"})
            seen.append(response.get_json()["cancel_requested"])

    engine.checkpoint = cancel_mid_charge
    saga_id = book(client)
    drain(engine)
    record = engine.get(saga_id)
    assert seen == ["wrong flat"]
    assert record.status == SagaStatus.COMPENSATED
    assert statuses(record) == {
        "book_slot": "compensated",
        "charge_card": "compensated",
        "send_sms": "pending",
        "sync_calendar": "pending",
    }
    assert kinds(ledger, saga_id) == ["charge", "refund"]
    assert record.error == "cancelled: wrong flat"
    # The next step's job, queued with the charge's result and taken back when the cancel
    # was seen, never existed for RQ.
    assert not redis.exists(engine.queue.job_key(f"{saga_id}-send_sms-do-1"))
    assert record.cancel_requested is None  # carried out, so no longer pending


def test_cancel_while_a_retry_is_due_undoes_the_step_that_was_tried(
    make_settings: Callable[..., Settings],
    redis: Redis,
    client: FlaskClient,
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
) -> None:
    engine = build_engine(
        make_settings(sandbox_faults="charge_card=flaky:1", retry_initial_delay_seconds=30), redis
    )
    client.application.extensions["saga_engine"] = engine
    saga_id = book(client)
    drain(engine)  # charge attempt 1 failed; attempt 2 is scheduled in 30 s
    assert engine.get(saga_id).step("charge_card").status == StepStatus.PENDING
    assert client.post(f"/sagas/{saga_id}/cancel", json={"note": "stop"}).status_code == 202
    drain(engine)
    record = engine.get(saga_id)
    assert record.status == SagaStatus.COMPENSATED
    assert statuses(record)["charge_card"] == "compensated"  # its first attempt may have charged
    fire_scheduled(engine, redis)  # the retry's time comes: refused
    drain(engine)
    assert engine.get(saga_id).history == record.history


def failed_saga(run_saga: Callable[..., SagaRecord]) -> SagaRecord:
    record = run_saga(sandbox_faults="send_sms=fail,refund_card=fail,release_slot=fail")
    assert record.status == SagaStatus.FAILED
    return record


def test_retry_redoes_the_failed_compensations_latest_first(
    run_saga: Callable[..., SagaRecord],
    make_settings: Callable[..., Settings],
    redis: Redis,
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
) -> None:
    record = failed_saga(run_saga)
    assert statuses(record)["charge_card"] == "compensation_failed"
    assert statuses(record)["book_slot"] == "compensation_failed"

    fixed = build_engine(make_settings(), redis)  # the provider works again
    assert fixed.retry(record.id, "Stripe is back") == ["charge_card", "book_slot"]
    assert fixed.get(record.id).status == SagaStatus.COMPENSATING
    drain(fixed)
    after = fixed.get(record.id)
    assert after.status == SagaStatus.COMPENSATED
    assert statuses(after)["charge_card"] == "compensated"
    assert statuses(after)["book_slot"] == "compensated"
    assert after.step("charge_card").compensation_attempts == 2  # one refused for good, one now
    assert kinds(ledger, record.id) == ["charge", "refund"]
    details = [h.detail or "" for h in after.history]
    assert any(
        d.startswith("an operator retries the undo of charge_card, book_slot: Stripe is back")
        for d in details
    )
    assert after.history[: len(record.history)] == record.history  # the earlier history is kept
    with pytest.raises(ActionRefused):
        fixed.retry(record.id, "again")


def test_a_retry_that_fails_again_leaves_the_saga_failed_with_the_original_cause(
    run_saga: Callable[..., SagaRecord],
    make_settings: Callable[..., Settings],
    redis: Redis,
    drain: Callable[[SagaEngine], None],
) -> None:
    record = failed_saga(run_saga)
    still = build_engine(make_settings(sandbox_faults="release_slot=fail"), redis)
    still.retry(record.id, "try once more")
    drain(still)
    after = still.get(record.id)
    assert after.status == SagaStatus.FAILED
    assert statuses(after)["charge_card"] == "compensated"
    assert statuses(after)["book_slot"] == "compensation_failed"
    assert after.error is not None and after.error.startswith("send_sms failed after 1 attempt(s)")
    assert after.error.count("a person must reconcile") == 1


def test_resolve_closes_a_failed_saga_with_the_operators_note(
    run_saga: Callable[..., SagaRecord], client: FlaskClient, redis: Redis
) -> None:
    record = failed_saga(run_saga)
    engine: SagaEngine = client.application.extensions["saga_engine"]
    with pytest.raises(ActionRefused, match="note"):
        engine.resolve(record.id, "  ")
    engine.resolve(record.id, "refunded by hand in the Stripe dashboard; card 4242424242424242")
    after = engine.get(record.id)
    assert after.status == SagaStatus.RESOLVED
    assert after.resolution is not None and "4242424242424242" not in after.resolution
    assert after.history[-1].target == "resolved"
    assert engine.overview.count(SagaStatus.FAILED) == 0
    assert engine.overview.count(SagaStatus.RESOLVED) == 1
    assert redis.ttl(f"sr:saga:{record.id}") > 0  # still expires after the retention
    with pytest.raises(ActionRefused):
        engine.resolve(record.id, "twice")


def test_operator_actions_refuse_sagas_they_do_not_fit(
    engine: SagaEngine, book: Callable[..., str], drain: Callable[[SagaEngine], None]
) -> None:
    saga_id = book()
    with pytest.raises(ActionRefused, match="only a failed saga"):
        engine.retry(saga_id, "why")
    with pytest.raises(ActionRefused, match="only a failed saga"):
        engine.resolve(saga_id, "why")
    drain(engine)
    with pytest.raises(ActionRefused, match="already completed"):
        engine.cancel(saga_id, "too late")


def test_concurrent_answers_apply_exactly_once(waiting: tuple[SagaEngine, str]) -> None:
    engine, saga_id = waiting
    barrier = threading.Barrier(12)
    outcomes: list[str] = []

    def answer(approve: bool) -> None:
        barrier.wait()
        try:
            outcomes.append("applied" if engine.signal(saga_id, "approval", approve) else "repeat")
        except ActionRefused:
            outcomes.append("refused")

    threads = [threading.Thread(target=answer, args=(i % 2 == 0,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("applied") == 1
    record = engine.get(saga_id)
    winner = record.step("approval").decision
    # Everyone who agreed with the winner saw a repeat; everyone else was refused.
    assert outcomes.count("repeat") == 5 and outcomes.count("refused") == 6
    decided = [h for h in record.history if h.step == "approval" and h.target in ("succeeded", "failed")]
    assert len(decided) == 1
    assert winner in ("approved", "rejected")


def test_a_lost_timeout_job_is_rescheduled_for_the_same_deadline(
    waiting: tuple[SagaEngine, str], redis: Redis
) -> None:
    engine, saga_id = waiting
    registry = engine.queue.rq.scheduled_job_registry
    job_id = f"{saga_id}-approval-do-1"
    due = registry.get_scheduled_time(job_id)
    redis.zrem(registry.key, job_id)  # lost, say, in a Redis restart
    redis.zadd(keys.ACTIVE, {saga_id: 0}, xx=True)  # and the saga is overdue for a look
    assert [(r.action, r.detail) for r in Reconciler(engine).run()] == [("requeued", job_id)]
    assert engine.queue.rq.count == 0  # not run now: that would reject before the deadline
    assert abs((registry.get_scheduled_time(job_id) - due).total_seconds()) <= 2
    assert engine.get(saga_id).status == SagaStatus.WAITING


def test_a_real_worker_parks_the_saga_and_finishes_it_after_approval(
    make_settings: Callable[..., Settings],
    redis: Redis,
    client: FlaskClient,
    processes: Callable[..., subprocess.Popen[bytes]],
    ledger: SandboxLedger,
) -> None:
    settings = make_settings(**GATED)
    engine = gated_engine(make_settings, redis, client)
    saga_id = book(client)
    processes("worker.py", settings)
    parked = wait_until(engine, saga_id, lambda r: r.status == SagaStatus.WAITING, timeout=60)
    assert kinds(ledger, saga_id) == []
    assert client.post(f"/sagas/{saga_id}/signals/approval", json={"decision": "approve"}).status_code == 200
    done = wait_until_finished(engine, saga_id, timeout=60)
    assert done.status == SagaStatus.COMPLETED
    assert kinds(ledger, saga_id) == ["charge", "message", "event_created"]
    assert parked.step("approval").waiting_for == "approval"
