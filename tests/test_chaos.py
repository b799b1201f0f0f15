"""`make chaos`: each invariant catches what it must (hand-built worlds), and one short real run passes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chaos.invariants import (
    CALENDAR,
    CHARGE_ACCOUNTED,
    CHARGED_ONCE,
    CODE_ERROR,
    IDEMPOTENT,
    KNOWN_SAGA,
    SETTLED,
    SLOT_EXCLUSIVE,
    SLOT_HELD,
    SMS,
    Observation,
    SagaOutcome,
    Slot,
    check_all,
)
from chaos.load import DECLINED_CARD, INVALID_PHONE, Mix, generate

ROOT = Path(__file__).resolve().parent.parent
SLOT_A: Slot = ("viewing-000", "2030-01-07T09:00:00Z")
SLOT_C: Slot = ("viewing-000", "2030-01-08T09:00:00Z")
SLOT_D: Slot = ("viewing-001", "2030-01-07T09:00:00Z")
# The form saga/settle.py gives a failed saga's error.
REFUND_FAILED = (
    "sync_calendar failed after 1 attempt(s): sandbox: injected_failure: fault injected into sync_calendar; "
    "refund_card (undo of charge_card) failed: a person must reconcile with the provider"
)


def row(kind: str, saga_id: str, ref: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ledger row as SandboxLedger.entries() returns it."""
    return {"kind": kind, "saga_id": saga_id, "idempotency_key": f"{saga_id}:{kind}:{ref}", "ref": ref,
            "detail": detail or {}, "at": "2030-01-01T00:00:00+00:00"}  # fmt: skip


def charge(saga_id: str, ref: str) -> dict[str, Any]:
    return row("charge", saga_id, ref, {"amount": 4900, "currency": "usd", "payment_method": "pm_card_visa"})


def refund(saga_id: str, charge_ref: str) -> dict[str, Any]:
    return row("refund", saga_id, "re_" + charge_ref, {"charge": charge_ref, "amount": 4900})


def sms(saga_id: str, kind: str) -> dict[str, Any]:
    return row("message", saga_id, f"SM{kind}{saga_id}", {"kind": kind, "body": "...", "to_last4": "0006"})


def event(saga_id: str) -> dict[str, Any]:
    return row("event_created", saga_id, "sr" + saga_id)


def clean_world() -> Observation:
    """Four sagas that each ended as they should.

    a: completed (charged, confirmed, in the calendar, holds SLOT_A);
    b: lost the race for SLOT_A at book_slot: compensated, nothing happened;
    c: sync_calendar failed for good: charge refunded, confirmation then apology, slot free;
    d: like c, but refund_card ran out of attempts: failed, the charge stands (a person must act).
    """
    return Observation(
        sagas=[
            SagaOutcome("a", SLOT_A, "completed", errors=("retry in 0.2s: StepTimedOut: step charge_card",)),
            SagaOutcome(
                "b", SLOT_A, "compensated", errors=("SlotTaken: slot viewing-000 is already booked",)
            ),
            SagaOutcome("c", SLOT_C, "compensated", errors=("InjectedFailure: sandbox: injected_failure",)),
            SagaOutcome("d", SLOT_D, "failed", REFUND_FAILED),
        ],
        ledger=[
            charge("a", "ch_a"),
            sms("a", "confirmation"),
            event("a"),
            charge("c", "ch_c"),
            sms("c", "confirmation"),
            refund("c", "ch_c"),
            sms("c", "apology"),
            charge("d", "ch_d"),
            sms("d", "confirmation"),
            sms("d", "apology"),
        ],  # fmt: skip
        live_events=frozenset({"sra"}),
        holders={SLOT_A: "a", SLOT_C: None, SLOT_D: None},
        answers={"key-a": [(202, "a"), (200, "a")], "key-b": [(202, "b")]},
    )


def with_saga(obs: Observation, saga_id: str, **changes: Any) -> Observation:
    return replace(obs, sagas=[replace(s, **changes) if s.id == saga_id else s for s in obs.sagas])


def plus_rows(*rows: dict[str, Any]) -> Callable[[Observation], Observation]:
    return lambda obs: replace(obs, ledger=[*obs.ledger, *rows])


def without_rows(kind: str, saga_id: str) -> Callable[[Observation], Observation]:
    def change(obs: Observation) -> Observation:
        kept = [r for r in obs.ledger if not (r["kind"] == kind and r["saga_id"] == saga_id)]
        return replace(obs, ledger=kept)

    return change


def found(obs: Observation) -> set[tuple[str, str]]:
    return {(v.invariant, v.saga_id) for v in check_all(obs)}


def test_a_clean_world_passes() -> None:
    assert check_all(clean_world()) == []


CASES: dict[str, tuple[Callable[[Observation], Observation], set[tuple[str, str]]]] = {
    # every submitted saga settles
    "lost (404)": (lambda o: with_saga(o, "b", status=None), {(SETTLED, "b")}),
    "stuck": (lambda o: with_saga(o, "b", status="compensating"), {(SETTLED, "b")}),
    "failed without naming a compensation": (
        lambda o: with_saga(o, "b", status="failed", error="book_slot failed"),
        {(SETTLED, "b")},
    ),
    # one Idempotency-Key, one saga
    "one key, two sagas": (
        lambda o: replace(o, answers={**o.answers, "key-b": [(202, "b"), (200, "c")]}),
        {(IDEMPOTENT, "b")},
    ),
    "one key, created twice": (
        lambda o: replace(o, answers={**o.answers, "key-a": [(202, "a"), (202, "a")]}),
        {(IDEMPOTENT, "a")},
    ),
    # money
    "charged twice": (plus_rows(charge("a", "ch_a2")), {(CHARGED_ONCE, "a")}),
    "compensated but not refunded": (without_rows("refund", "c"), {(CHARGE_ACCOUNTED, "c")}),
    "refund of another charge": (
        lambda o: plus_rows(refund("c", "ch_other"))(without_rows("refund", "c")(o)),
        {(CHARGE_ACCOUNTED, "c")},
    ),
    "loser of a slot race charged": (plus_rows(charge("b", "ch_b")), {(CHARGE_ACCOUNTED, "b")}),
    "completed without a charge": (without_rows("charge", "a"), {(CHARGE_ACCOUNTED, "a")}),
    "completed but refunded": (plus_rows(refund("a", "ch_a")), {(CHARGE_ACCOUNTED, "a")}),
    "failed excuses only the compensation it names": (
        lambda o: with_saga(
            o,
            "d",
            error=REFUND_FAILED.replace(
                "refund_card (undo of charge_card)", "send_apology (undo of send_sms)"
            ),
        ),
        {(CHARGE_ACCOUNTED, "d")},
    ),  # fmt: skip
    # slots
    "double-booked": (
        lambda o: plus_rows(charge("b", "ch_b"), sms("b", "confirmation"), event("b"))(
            replace(with_saga(o, "b", status="completed"), live_events=o.live_events | {"srb"})
        ),
        {(SLOT_EXCLUSIVE, "a"), (SLOT_HELD, "b")},
    ),
    "slot held by a compensated saga": (
        lambda o: replace(o, holders={**o.holders, SLOT_C: "c"}),
        {(SLOT_HELD, "c")},
    ),
    "completed saga does not hold its slot": (
        lambda o: replace(o, holders={**o.holders, SLOT_A: None}),
        {(SLOT_HELD, "a")},
    ),
    # messages
    "two confirmations": (plus_rows(sms("a", "confirmation")), {(SMS, "a")}),
    "completed without a confirmation": (without_rows("message", "a"), {(SMS, "a")}),
    "apology to a completed booking": (plus_rows(sms("a", "apology")), {(SMS, "a")}),
    "apology without a confirmation": (plus_rows(sms("b", "apology")), {(SMS, "b")}),
    "confirmed, undone, never told": (
        lambda o: replace(o, ledger=[r for r in o.ledger if r["detail"].get("kind") != "apology"]),
        {(SMS, "c"), (SMS, "d")},
    ),
    # calendar
    "event of a compensated saga is live": (
        lambda o: replace(plus_rows(event("c"))(o), live_events=o.live_events | {"src"}),
        {(CALENDAR, "c")},
    ),
    "completed without an event": (lambda o: replace(o, live_events=frozenset()), {(CALENDAR, "a")}),
    # failures are injected, from providers, or from crashes: never from a bug in our code
    "a step failed with a TypeError": (
        lambda o: with_saga(o, "c", errors=("retry in 0.2s: TypeError: charge() got an unexpected keyword",)),
        {(CODE_ERROR, "c")},
    ),
    # nothing for sagas the API never handed out
    "ledger row of an unknown saga": (plus_rows(charge("zz", "ch_zz")), {(KNOWN_SAGA, "zz")}),
    "slot held by an unknown saga": (
        lambda o: replace(o, holders={**o.holders, SLOT_C: "zz"}),
        {(KNOWN_SAGA, "zz")},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_broken_promise_is_caught(case: str) -> None:
    change, expected = CASES[case]
    assert found(change(clean_world())) == expected


def test_a_failed_saga_names_its_failed_compensations() -> None:
    saga = SagaOutcome("d", SLOT_D, "failed", REFUND_FAILED)
    assert saga.failed_compensations == {"refund_card"}
    assert replace(saga, status="compensated").failed_compensations == frozenset()


def test_the_load_is_reproducible_and_mixed() -> None:
    first, pool = generate(500, seed=7, run_id="x")
    again, _ = generate(500, seed=7, run_id="y")
    assert [b.body for b in first] == [b.body for b in again]
    assert [b.body for b in first] != [b.body for b in generate(500, seed=8, run_id="x")[0]]
    assert len(pool) == round(500 * Mix().slot_ratio) and {b.slot for b in first} <= set(pool)
    assert len({b.slot for b in first}) < 500 * 0.5  # real contention for slots
    cards = [b.body["payment"]["payment_method"] for b in first]
    phones = [b.body["customer"]["phone"] for b in first]
    assert 5 <= cards.count(DECLINED_CARD) <= 50 and 3 <= phones.count(INVALID_PHONE) <= 40
    assert 3 <= sum(b.twice for b in first) <= 40
    assert len({b.key for b in first}) == 500


def test_a_short_chaos_run_passes(tmp_path: Path) -> None:
    """The real thing, small: 60 bookings, a worker SIGKILLed every ~2.5 s, Redis restarted once.

    Retries are immediate (--retry-delay 0) and the deadline is generous, to keep this test
    about safety, not liveness: a delayed retry waits for RQ's scheduler, whose lock outlives
    a SIGKILLed holder by a minute, and a reconcile pass killed midway keeps the reconciler's
    lock for a minute too (both reported; `make chaos` keeps the delays). It takes ~10 s,
    ~75 s when such a minute happens.
    """
    workdir = tmp_path / "chaos"
    command = [sys.executable, "-m", "chaos", "--sagas", "60", "--deadline", "75", "--kill-every", "2.5",
               "--retry-delay", "0", "--seed", "3", "--workdir", str(workdir)]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170)
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, output
    report = json.loads((workdir / "report.json").read_text())
    assert report["ok"] and report["violations"] == [], output
    assert report["submitted"] + report["unacknowledged"] == sum(report["outcomes"].values())
    assert report["submitted"] >= 55, output  # a few may go unanswered around the Redis restart
    assert report["kills"] >= 1, output
    assert report["redis_restarts"] == 1, output
    assert report["outcomes"].get("completed", 0) > 0 and report["outcomes"].get("compensated", 0) > 0, output
    assert "PASS" in result.stdout
