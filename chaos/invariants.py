"""What must hold after any amount of crashing, as pure functions over what was observed.

Why pure: the verdict must not depend on the processes that produced the data, and
each rule must be testable with a hand-built ledger. The inputs are the saga
outcomes from Redis, the sandbox ledger (the outside world: what was really
charged, texted and put in a calendar), the slot store, and the API's answers.

A `failed` saga (a compensation ran out of attempts: a person must act) is allowed,
but only the effect of the compensation its error names is excused: e.g. a charge
without a refund when `refund_card` failed.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Slot = tuple[str, str]  # (resource, start as booked)
Entry = Mapping[str, Any]  # one row of SandboxLedger.entries()

COMPLETED, COMPENSATED, FAILED = "completed", "compensated", "failed"
FINISHED = frozenset({COMPLETED, COMPENSATED, FAILED})
EVENT_PREFIX = "sr"  # jobs.booking.event_id

SETTLED = "settled"
IDEMPOTENT = "idempotent"
CHARGED_ONCE = "charged-once"
CHARGE_ACCOUNTED = "charge-accounted"
SLOT_EXCLUSIVE = "slot-exclusive"
SLOT_HELD = "slot-held"
SMS = "sms"
CALENDAR = "calendar"
KNOWN_SAGA = "known-saga"
CODE_ERROR = "code-error"

_UNDO = re.compile(r"\b([a-z_]+) \(undo of [a-z_]+\)")
# Errors are recorded as `Type: message` (saga/outcome.py). These types are bugs in our code,
# never an injected fault, a provider's refusal, a timeout, a dead worker or a Redis restart.
_BUG = re.compile(
    r"\b(?:TypeError|AttributeError|NameError|KeyError|IndexError|ValueError|AssertionError|"
    r"UnboundLocalError|ImportError|ModuleNotFoundError|ZeroDivisionError|RecursionError|"
    r"NotImplementedError|IllegalTransition|UnknownSaga|EngineNotBound): "
)


@dataclass(frozen=True)
class SagaOutcome:
    """One submitted saga as Redis last showed it; `status` None means Redis does not know it."""

    id: str
    slot: Slot
    status: str | None
    error: str | None = None
    errors: tuple[str, ...] = ()  # every failure its history records, e.g. "retry in 0.2s: Type: msg"

    @property
    def failed_compensations(self) -> frozenset[str]:
        """Compensations a `failed` saga's error names as not done (e.g. `refund_card`)."""
        if self.status != FAILED or not self.error:
            return frozenset()
        return frozenset(match[1] for match in _UNDO.finditer(self.error))

    def excused(self, compensation: str) -> bool:
        return compensation in self.failed_compensations


@dataclass(frozen=True)
class Violation:
    """One broken promise, about one saga."""

    invariant: str
    saga_id: str
    detail: str


@dataclass(frozen=True)
class Observation:
    """Everything the verdict is drawn from."""

    sagas: Sequence[SagaOutcome]
    ledger: Sequence[Entry]
    live_events: frozenset[str]
    holders: Mapping[Slot, str | None]
    # Idempotency-Key -> (HTTP status, saga id) of every answer the API gave for it.
    answers: Mapping[str, Sequence[tuple[int, str]]] = field(default_factory=dict)


def _rows(ledger: Iterable[Entry], kind: str, message: str | None = None) -> dict[str, list[Entry]]:
    """Ledger rows of one kind (and message kind) by saga id."""
    rows: dict[str, list[Entry]] = defaultdict(list)
    for entry in ledger:
        if entry["kind"] == kind and (message is None or entry["detail"].get("kind") == message):
            rows[entry["saga_id"]].append(entry)
    return rows


def _finished(obs: Observation) -> list[SagaOutcome]:
    """Sagas whose effects are final; unsettled ones are reported by `check_settled` alone."""
    return [s for s in obs.sagas if s.status in FINISHED]


def check_settled(obs: Observation) -> list[Violation]:
    """Every submitted saga ended completed, compensated, or failed naming the compensation."""
    found = []
    for saga in obs.sagas:
        if saga.status is None:
            found.append(Violation(SETTLED, saga.id, "lost: accepted by the API, unknown to Redis (404)"))
        elif saga.status not in FINISHED:
            found.append(Violation(SETTLED, saga.id, f"stuck: still {saga.status} at the deadline"))
        elif saga.status == FAILED and not saga.failed_compensations:
            found.append(Violation(SETTLED, saga.id, f"failed without naming a compensation: {saga.error!r}"))
    return found


def check_idempotency(obs: Observation) -> list[Violation]:
    """One Idempotency-Key, one saga: every answer carries the same id, and at most one is a 202."""
    found = []
    for key, answers in obs.answers.items():
        ids = sorted({saga_id for _, saga_id in answers})
        if len(ids) > 1:
            found.append(Violation(IDEMPOTENT, ids[0], f"Idempotency-Key {key} answered with sagas {ids}"))
        created = sum(1 for status, _ in answers if status == 202)
        if created > 1:
            found.append(Violation(IDEMPOTENT, ids[0], f"Idempotency-Key {key} got {created} answers 202"))
    return found


def check_charges(obs: Observation) -> list[Violation]:
    """At most one charge per saga; a charge stands only for a completed saga, else it is refunded."""
    charges, refunds = _rows(obs.ledger, "charge"), _rows(obs.ledger, "refund")
    found = [
        Violation(CHARGED_ONCE, saga_id, f"charged {len(rows)} times: {[r['ref'] for r in rows]}")
        for saga_id, rows in charges.items()
        if len(rows) > 1
    ]
    for saga in _finished(obs):
        charged = {row["ref"] for row in charges.get(saga.id, [])}
        refunded = [row["detail"].get("charge") for row in refunds.get(saga.id, [])]
        for ref in sorted(set(refunded) - charged):
            found.append(Violation(CHARGE_ACCOUNTED, saga.id, f"refund of a charge it does not have: {ref}"))
        if len(refunded) > len(set(refunded)):
            found.append(Violation(CHARGE_ACCOUNTED, saga.id, f"refunded more than once: {refunded}"))
        if saga.status == COMPLETED:
            if not charged:
                found.append(Violation(CHARGE_ACCOUNTED, saga.id, "completed without a charge"))
            if refunded:
                found.append(Violation(CHARGE_ACCOUNTED, saga.id, f"completed but refunded: {refunded}"))
        elif not saga.excused("refund_card"):
            for ref in sorted(charged - set(refunded)):
                found.append(
                    Violation(CHARGE_ACCOUNTED, saga.id, f"{saga.status} but charge {ref} was not refunded")
                )
    return found


def check_slots(obs: Observation) -> list[Violation]:
    """No slot booked twice; a slot is held by a completed saga, and every completed saga holds its own."""
    by_id = {saga.id: saga for saga in obs.sagas}
    found = []
    winners: dict[Slot, list[str]] = defaultdict(list)
    for saga in obs.sagas:
        if saga.status == COMPLETED:
            winners[saga.slot].append(saga.id)
    for slot, ids in winners.items():
        if len(ids) > 1:
            found.append(Violation(SLOT_EXCLUSIVE, ids[0], f"slot {slot} booked by {len(ids)} sagas: {ids}"))
    for slot, holder in obs.holders.items():
        if holder is None:
            continue
        owner = by_id.get(holder)
        if owner is None:
            found.append(Violation(KNOWN_SAGA, holder, f"holds slot {slot} but was never submitted"))
        elif owner.status in FINISHED and owner.status != COMPLETED and not owner.excused("release_slot"):
            found.append(Violation(SLOT_HELD, holder, f"{owner.status} but still holds slot {slot}"))
    for saga in _finished(obs):
        if saga.status == COMPLETED and obs.holders.get(saga.slot) != saga.id:
            holder = obs.holders.get(saga.slot)
            found.append(Violation(SLOT_HELD, saga.id, f"completed but slot {saga.slot} is held by {holder}"))
    return found


def check_messages(obs: Observation) -> list[Violation]:
    """One confirmation at most; an apology exactly for an undone saga that was told it was booked."""
    confirmations = _rows(obs.ledger, "message", "confirmation")
    apologies = _rows(obs.ledger, "message", "apology")
    found = []
    for kind, rows_by_saga in (("confirmation", confirmations), ("apology", apologies)):
        for saga_id, rows in rows_by_saga.items():
            if len(rows) > 1:
                found.append(Violation(SMS, saga_id, f"{len(rows)} {kind} messages sent"))
    for saga in _finished(obs):
        confirmed, apologised = saga.id in confirmations, saga.id in apologies
        if saga.status == COMPLETED:
            if not confirmed:
                found.append(Violation(SMS, saga.id, "completed without a confirmation"))
            if apologised:
                found.append(Violation(SMS, saga.id, "completed but an apology was sent"))
        elif apologised and not confirmed:
            found.append(Violation(SMS, saga.id, f"{saga.status}: apology without a confirmation"))
        elif confirmed and not apologised and not saga.excused("send_apology"):
            found.append(Violation(SMS, saga.id, f"{saga.status}: confirmed but never told it was undone"))
    return found


def check_calendar(obs: Observation) -> list[Violation]:
    """A calendar event exists exactly for the completed sagas."""
    found = []
    for saga in _finished(obs):
        live = EVENT_PREFIX + saga.id in obs.live_events
        if saga.status == COMPLETED and not live:
            found.append(Violation(CALENDAR, saga.id, "completed but has no calendar event"))
        elif saga.status != COMPLETED and live and not saga.excused("delete_event"):
            found.append(Violation(CALENDAR, saga.id, f"{saga.status} but its calendar event is live"))
    return found


def check_known(obs: Observation) -> list[Violation]:
    """Nothing happened in the outside world for a saga the API never handed out."""
    known = {saga.id for saga in obs.sagas}
    found = []
    counts = Counter(entry["saga_id"] for entry in obs.ledger if entry["saga_id"] not in known)
    for saga_id, count in sorted(counts.items()):
        found.append(Violation(KNOWN_SAGA, saga_id, f"{count} ledger row(s) for a saga never submitted"))
    for event in sorted(obs.live_events):
        saga_id = event.removeprefix(EVENT_PREFIX)
        if saga_id not in known and saga_id not in counts:
            found.append(Violation(KNOWN_SAGA, event, f"live calendar event {event} of no submitted saga"))
    return found


def check_errors(obs: Observation) -> list[Violation]:
    """No step failed because of a bug in our code (a TypeError is not chaos, it is a defect)."""
    found = []
    for saga in obs.sagas:
        bug = next((error for error in saga.errors if _BUG.search(error)), None)
        if bug is not None:
            found.append(
                Violation(CODE_ERROR, saga.id, f"a step failed with a programming error: {bug[:300]}")
            )
    return found


CHECKS = (
    check_settled,
    check_errors,
    check_idempotency,
    check_charges,
    check_slots,
    check_messages,
    check_calendar,
    check_known,
)


def check_all(obs: Observation) -> list[Violation]:
    """Every violation of every invariant."""
    return [violation for check in CHECKS for violation in check(obs)]
