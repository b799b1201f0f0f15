"""Sandbox providers: the ledger must tell the truth even with several processes writing at once."""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobs.providers.base import ChargeRequest
from jobs.providers.errors import CardDeclined, InvalidPhoneNumber, PermanentProviderError
from jobs.providers.sandbox import (
    SandboxCalendar,
    SandboxLedger,
    SandboxMessaging,
    SandboxPayments,
    live_events,
)

PHONE = "+447700900123"
WORKERS = 8


def _request(key: str = "s1:charge", **overrides: Any) -> ChargeRequest:
    args: dict[str, Any] = {
        "saga_id": "s1",
        "idempotency_key": key,
        "amount": 5000,
        "currency": "gbp",
        "payment_method": "pm_card_visa",
    }
    args.update(overrides)
    args.pop("timeout", None)
    return ChargeRequest(**args)


def _charge(payments: SandboxPayments, key: str = "s1:charge", **overrides: Any) -> str:
    return payments.charge(_request(key, **overrides), known_ref=None, record=lambda ref: None, timeout=5.0)


def _send(messaging: SandboxMessaging, key: str = "s1:sms", to: str = PHONE) -> str:
    return messaging.send(
        saga_id="s1", idempotency_key=key, to=to, body="Viewing booked", kind="confirmation", timeout=5.0
    )


def _create(calendar: SandboxCalendar, event_id: str = "evs1") -> str:
    return calendar.create_event(
        saga_id="s1",
        event_id=event_id,
        summary="Viewing",
        start=datetime(2030, 1, 2, 10, 0, tzinfo=UTC),
        minutes=30,
        timeout=5.0,
    )


def test_ledger_creates_parent_dirs_and_starts_empty(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "a" / "b" / "ledger.db")
    assert ledger.entries() == []
    assert (tmp_path / "a" / "b" / "ledger.db").exists()


def test_charge_records_one_row_and_replays(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    payments = SandboxPayments(ledger)
    ref = _charge(payments)
    assert re.fullmatch(r"ch_[A-Za-z0-9]{24}", ref)
    assert _charge(payments) == ref
    [entry] = ledger.entries()
    assert entry["kind"] == "charge" and entry["saga_id"] == "s1" and entry["ref"] == ref
    assert entry["idempotency_key"] == "s1:charge"
    assert entry["detail"] == {"amount": 5000, "currency": "gbp", "payment_method": "pm_card_visa"}
    assert datetime.fromisoformat(entry["at"]).tzinfo is not None


def test_charge_replay_with_other_parameters_is_an_idempotency_error(tmp_path: Path) -> None:
    payments = SandboxPayments(SandboxLedger(tmp_path / "ledger.db"))
    _charge(payments)
    for change in ({"amount": 4000}, {"currency": "eur"}):
        with pytest.raises(PermanentProviderError) as info:
            _charge(payments, **change)
        assert (info.value.provider, info.value.code) == ("stripe", "idempotency_error")


@pytest.mark.parametrize("method", ["pm_card_chargeDeclined", "pm_card_visa_chargeDeclined"])
def test_decline_records_nothing(tmp_path: Path, method: str) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    with pytest.raises(CardDeclined) as info:
        _charge(SandboxPayments(ledger), payment_method=method)
    assert (info.value.provider, info.value.code) == ("stripe", "card_declined")
    assert "Your card was declined." in str(info.value)
    assert ledger.entries() == []


def test_unknown_payment_method_is_resource_missing(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    with pytest.raises(PermanentProviderError) as info:
        _charge(SandboxPayments(ledger), payment_method="tok_visa")
    assert info.value.code == "resource_missing"
    assert "No such PaymentMethod: 'tok_visa'" in str(info.value)
    assert ledger.entries() == []


def test_refund_and_replay(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    payments = SandboxPayments(ledger)
    charge = _charge(payments)
    refund = payments.refund(_request(), charge_ref=None, idempotency_key="s1:refund", timeout=5.0)
    assert refund is not None and refund.startswith("re_")
    again = payments.refund(_request(), charge_ref=None, idempotency_key="s1:refund", timeout=5.0)
    assert again == refund
    entries = ledger.entries("s1")
    assert [e["kind"] for e in entries] == ["charge", "refund"]
    assert entries[1]["detail"] == {"charge": charge, "amount": 5000}
    assert entries[0]["seq"] < entries[1]["seq"]


def test_refund_without_charge_is_none_and_records_nothing(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    payments = SandboxPayments(ledger)
    refund = payments.refund(_request(), charge_ref=None, idempotency_key="s1:refund", timeout=5.0)
    assert refund is None
    assert ledger.entries() == []


def test_message_dedup_and_sent(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    messaging = SandboxMessaging(ledger)
    assert messaging.sent(idempotency_key="s1:sms", to=PHONE, timeout=5.0) is None
    sid = _send(messaging)
    assert re.fullmatch(r"SM[0-9a-f]{32}", sid)
    assert _send(messaging) == sid
    assert messaging.sent(idempotency_key="s1:sms", to=PHONE, timeout=5.0) == sid
    [entry] = ledger.entries()
    assert entry["kind"] == "message"
    assert entry["detail"] == {"kind": "confirmation", "body": "Viewing booked", "to_last4": "0123"}


def test_other_numbers_are_delivered(tmp_path: Path) -> None:
    messaging = SandboxMessaging(SandboxLedger(tmp_path / "ledger.db"))
    assert _send(messaging, key="k1", to="+15005550006").startswith("SM")
    assert _send(messaging, key="k2", to="+14155552671").startswith("SM")


@pytest.mark.parametrize("to", ["+15005550001", "07700900123", "not a number"])
def test_invalid_number_records_nothing(tmp_path: Path, to: str) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    with pytest.raises(InvalidPhoneNumber) as info:
        _send(SandboxMessaging(ledger), to=to)
    assert (info.value.provider, info.value.code) == ("twilio", "21211")
    assert to not in str(info.value)
    assert ledger.entries() == []


def test_full_phone_number_never_reaches_the_ledger_files(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    for i in range(3):
        _send(SandboxMessaging(ledger), key=f"k{i}")
    files = [p for p in tmp_path.iterdir() if p.is_file()]
    assert files
    for variant in (PHONE, PHONE[1:], PHONE[-10:]):
        for path in files:
            assert variant.encode() not in path.read_bytes(), path
    assert "0123" in str(ledger.entries())


def test_calendar_create_is_idempotent_and_delete_once(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    calendar = SandboxCalendar(ledger)
    assert _create(calendar) == "evs1"
    assert _create(calendar) == "evs1"
    assert live_events(ledger) == {"evs1"} == ledger.calendar_events()
    [created] = ledger.entries()
    assert created["kind"] == "event_created" and created["ref"] == "evs1"
    assert created["idempotency_key"] == "event:evs1:created"
    assert created["detail"] == {"summary": "Viewing", "start": "2030-01-02T10:00:00+00:00", "minutes": 30}
    assert calendar.delete_event(event_id="evs1", timeout=5.0) is True
    assert calendar.delete_event(event_id="evs1", timeout=5.0) is False
    assert live_events(ledger) == set()
    assert [e["kind"] for e in ledger.entries("s1")] == ["event_created", "event_deleted"]
    # As with Google, a deleted id stays taken: creating again does not revive the event.
    assert _create(calendar) == "evs1"
    assert live_events(ledger) == set()


def test_delete_unknown_event_is_false_and_records_nothing(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    assert SandboxCalendar(ledger).delete_event(event_id="nope", timeout=5.0) is False
    assert ledger.entries() == []


def test_entries_filter_by_saga_and_clear(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    payments = SandboxPayments(ledger)
    _charge(payments, key="s1:charge", saga_id="s1")
    _charge(payments, key="s2:charge", saga_id="s2")
    assert [e["saga_id"] for e in ledger.entries()] == ["s1", "s2"]
    assert [e["idempotency_key"] for e in ledger.entries("s2")] == ["s2:charge"]
    ledger.clear()
    assert ledger.entries() == []


def test_ledger_survives_pickling(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    _charge(SandboxPayments(ledger))
    copy = pickle.loads(pickle.dumps(ledger))
    assert copy.entries() == ledger.entries()


def test_threads_share_a_ledger(tmp_path: Path) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    payments = SandboxPayments(ledger)
    barrier = threading.Barrier(WORKERS)
    refs: list[str] = []

    def work() -> None:
        barrier.wait()
        refs.append(_charge(payments))

    threads = [threading.Thread(target=work) for _ in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(refs) == WORKERS and len(set(refs)) == 1
    assert len(ledger.entries()) == 1


def _refund_worker(ledger: SandboxLedger, barrier: Any, results: Any) -> None:
    barrier.wait()
    ref = SandboxPayments(ledger).refund(
        _request(), charge_ref=None, idempotency_key="s1:refund", timeout=5.0
    )
    results.put(ref)


def _charge_worker(ledger: SandboxLedger, barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put(_charge(SandboxPayments(ledger)))


def _run_in_processes(method: str, target: Callable[..., None], ledger: SandboxLedger) -> list[str]:
    ctx: Any = multiprocessing.get_context(method)
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(ledger, barrier, results)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    try:
        refs = [results.get(timeout=60) for _ in procs]
    except queue.Empty:
        pytest.fail("a worker process did not report")
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return refs


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_concurrent_refunds_in_processes_make_one_row(tmp_path: Path, method: str) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    charge = _charge(SandboxPayments(ledger))  # the parent holds an open connection across the fork
    refs = _run_in_processes(method, _refund_worker, ledger)
    assert len(set(refs)) == 1 and refs[0] is not None
    refunds = [e for e in ledger.entries() if e["kind"] == "refund"]
    assert len(refunds) == 1
    assert refunds[0]["ref"] == refs[0] and refunds[0]["detail"]["charge"] == charge


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_concurrent_charges_in_processes_make_one_row(tmp_path: Path, method: str) -> None:
    ledger = SandboxLedger(tmp_path / "ledger.db")
    assert ledger.entries() == []  # open a connection in the parent before forking
    refs = _run_in_processes(method, _charge_worker, ledger)
    assert len(set(refs)) == 1
    charges = ledger.entries()
    assert [e["kind"] for e in charges] == ["charge"]
    assert charges[0]["ref"] == refs[0]
