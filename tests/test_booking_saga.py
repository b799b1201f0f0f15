"""The booking saga end to end in this process: API -> Redis -> RQ jobs -> sandbox ledger."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from redis import Redis

from jobs.providers.sandbox import SandboxLedger
from saga import SagaEngine, SagaRecord, SagaStatus, StepStatus
from tests.conftest import BOOKING

STEPS = ["book_slot", "charge_card", "send_sms", "sync_calendar"]
RunSaga = Callable[..., SagaRecord]


def kinds(ledger: SandboxLedger, saga_id: str) -> list[str]:
    """The ledger entries of one saga, in the order they happened, as `kind[/message kind]`."""
    return [
        f"{e['kind']}/{e['detail']['kind']}" if e["kind"] == "message" else e["kind"]
        for e in ledger.entries(saga_id)
    ]


def undo_order(record: SagaRecord) -> list[str]:
    """Steps in the order their compensations finished."""
    return [
        h.step
        for h in record.history
        if h.direction == "undo" and h.target == StepStatus.COMPENSATED.value and h.step
    ]


def test_booking_completes_and_reaches_every_provider_once(
    client: FlaskClient,
    engine: SagaEngine,
    drain: Callable[[SagaEngine], None],
    ledger: SandboxLedger,
    book: Callable[..., str],
) -> None:
    saga_id = book()
    drain(engine)

    body = client.get(f"/sagas/{saga_id}").get_json()
    assert body["status"] == "completed"
    assert [s["name"] for s in body["steps"]] == STEPS
    assert all(s["status"] == "succeeded" and s["attempts"] == 1 for s in body["steps"])
    assert body["steps"][1]["provider_id"].startswith("ch_")
    assert body["steps"][1]["idempotency_key"] == f"{saga_id}:charge_card:do"
    assert body["steps"][2]["provider_id"].startswith("SM")
    assert kinds(ledger, saga_id) == ["charge", "message/confirmation", "event_created"]
    assert body["history"][0]["to"] == "running" and body["history"][-1]["to"] == "completed"


@pytest.mark.parametrize("failing", STEPS)
def test_permanent_failure_at_each_step_undoes_earlier_steps_once_in_reverse(
    failing: str, run_saga: RunSaga, redis: Redis, ledger: SandboxLedger
) -> None:
    record = run_saga(sandbox_faults=f"{failing}=fail")

    assert record.status == SagaStatus.COMPENSATED
    index = STEPS.index(failing)
    assert record.step(failing).attempts == 1  # a permanent error is not retried
    assert undo_order(record) == STEPS[index::-1]
    assert all(record.step(name).compensation_attempts == 1 for name in STEPS[: index + 1])
    assert all(record.step(name).attempts == 0 for name in STEPS[index + 1 :])
    expected = {
        "book_slot": [],
        "charge_card": [],
        "send_sms": ["charge", "refund"],
        "sync_calendar": ["charge", "message/confirmation", "message/apology", "refund"],
    }[failing]
    assert kinds(ledger, record.id) == expected
    assert redis.keys("sr:slot:*") == []  # the slot is free again


def test_declined_card_is_permanent_and_nothing_is_charged(run_saga: RunSaga, ledger: SandboxLedger) -> None:
    record = run_saga(
        {**BOOKING, "payment": {**BOOKING["payment"], "payment_method": "pm_card_chargeDeclined"}}
    )
    assert record.status == SagaStatus.COMPENSATED
    assert record.step("charge_card").attempts == 1
    assert "card_declined" in (record.step("charge_card").error or "")
    assert ledger.entries(record.id) == []


def test_invalid_phone_number_refunds_the_charge(run_saga: RunSaga, ledger: SandboxLedger) -> None:
    record = run_saga({**BOOKING, "customer": {**BOOKING["customer"], "phone": "+15005550001"}})
    assert record.status == SagaStatus.COMPENSATED
    assert kinds(ledger, record.id) == ["charge", "refund"]


def test_transient_failures_are_retried_then_succeed_without_compensating(
    run_saga: RunSaga, ledger: SandboxLedger
) -> None:
    record = run_saga(sandbox_faults="charge_card=flaky:2", step_max_attempts=3)

    assert record.status == SagaStatus.COMPLETED
    assert record.step("charge_card").attempts == 3
    transitions = [h.target for h in record.history if h.step == "charge_card"]
    assert transitions == ["running", "pending", "running", "pending", "running", "succeeded"]
    assert not any(h.direction == "undo" for h in record.history)
    assert kinds(ledger, record.id) == ["charge", "message/confirmation", "event_created"]


def test_exhausted_retries_compensate_only_after_the_last_attempt(
    run_saga: RunSaga, ledger: SandboxLedger
) -> None:
    record = run_saga(sandbox_faults="send_sms=flaky:9", step_max_attempts=3)

    assert record.status == SagaStatus.COMPENSATED
    assert record.step("send_sms").attempts == 3
    targets = [(h.step, h.direction, h.target) for h in record.history]
    first_undo = next(i for i, t in enumerate(targets) if t[1] == "undo")
    last_attempt = max(i for i, t in enumerate(targets) if t == ("send_sms", "do", "running"))
    assert last_attempt < first_undo
    assert kinds(ledger, record.id) == ["charge", "refund"]


def test_step_outliving_its_timeout_is_failed_and_compensated(
    run_saga: RunSaga, ledger: SandboxLedger
) -> None:
    record = run_saga(sandbox_faults="sync_calendar=hang", step_timeout_seconds=0.3, step_max_attempts=2)

    assert record.status == SagaStatus.COMPENSATED
    assert record.step("sync_calendar").attempts == 2
    assert "StepTimedOut" in (record.step("sync_calendar").error or "")
    assert undo_order(record) == STEPS[::-1]
    assert kinds(ledger, record.id) == ["charge", "message/confirmation", "message/apology", "refund"]


def test_failing_compensation_is_retried_then_the_rest_still_run_and_the_saga_fails(
    run_saga: RunSaga, client: FlaskClient, redis: Redis, ledger: SandboxLedger
) -> None:
    record = run_saga(sandbox_faults="sync_calendar=fail,refund_card=flaky:9")

    body = client.get(f"/sagas/{record.id}").get_json()
    assert body["status"] == "failed"
    assert "refund_card (undo of charge_card) failed" in body["error"]
    assert "sync_calendar failed" in body["error"]
    charge = body["steps"][1]
    assert charge["status"] == "compensation_failed"
    assert charge["compensation"]["attempts"] == 3
    assert body["steps"][0]["status"] == "compensated"  # release_slot still ran after the failure
    assert redis.keys("sr:slot:*") == []
    assert kinds(ledger, record.id) == ["charge", "message/confirmation", "message/apology"]


def test_flaky_compensation_is_retried_and_refunds_once(run_saga: RunSaga, ledger: SandboxLedger) -> None:
    record = run_saga(sandbox_faults="send_sms=fail,refund_card=flaky:1")

    assert record.status == SagaStatus.COMPENSATED
    assert record.step("charge_card").compensation_attempts == 2
    assert kinds(ledger, record.id) == ["charge", "refund"]
