"""The booking saga: book slot -> charge card -> send SMS -> sync calendar, and their undos.

Each action sends its step's idempotency key to the provider; each compensation
is a no-op success when its action never took effect, because it also runs for
a step whose outcome is unknown (timed out, worker died).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobs.faults import FaultPlan
from jobs.providers.base import Calendar, ChargeRequest, Messaging, Payments
from jobs.providers.errors import PermanentProviderError
from jobs.slots import SlotStore, SlotTaken
from saga import Approval, RetryPolicy, Saga, Step, StepContext

NAME = "booking"
PERMANENT = (PermanentProviderError, SlotTaken)


@dataclass(frozen=True)
class BookingServices:
    """The outside world the booking steps talk to; faults apply only in sandbox mode."""

    slots: SlotStore
    payments: Payments
    messaging: Messaging
    calendar: Calendar
    faults: FaultPlan = field(default_factory=FaultPlan)


def event_id(saga_id: str) -> str:
    """Deterministic calendar event id (Google allows base32hex: our hex id qualifies)."""
    return f"sr{saga_id}"


def _charge_request(ctx: StepContext) -> ChargeRequest:
    payment = ctx.data["payment"]
    return ChargeRequest(
        saga_id=ctx.saga_id,
        idempotency_key=ctx.action_key,
        amount=int(payment["amount"]),
        currency=payment["currency"],
        payment_method=payment["payment_method"],
    )


def _slot(ctx: StepContext) -> tuple[str, datetime, int]:
    slot: dict[str, Any] = ctx.data["slot"]
    return slot["resource"], datetime.fromisoformat(slot["start"]), int(slot["minutes"])


class BookingSteps:
    """The eight functions of the booking saga, bound to their services."""

    def __init__(self, services: BookingServices, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.services = services
        self.monotonic = monotonic

    def _enter(self, name: str, ctx: StepContext) -> float:
        """Apply any injected fault, then return the time left for provider calls."""
        left = ctx.time_left(self.monotonic)
        self.services.faults.inject(name, ctx.attempt, left, ctx.saga_id)
        return ctx.time_left(self.monotonic)

    def book_slot(self, ctx: StepContext) -> str:
        """Reserve the slot for this saga (atomic: of two sagas, one wins)."""
        self._enter("book_slot", ctx)
        resource, start, minutes = _slot(ctx)
        self.services.slots.reserve(resource, start, minutes, ctx.saga_id)
        return f"{resource}@{start.isoformat()}"

    def release_slot(self, ctx: StepContext) -> str | None:
        """Free the slot if this saga still holds it."""
        self._enter("release_slot", ctx)
        resource, start, _ = _slot(ctx)
        return "released" if self.services.slots.release(resource, start, ctx.saga_id) else None

    def charge_card(self, ctx: StepContext) -> str:
        """Charge (or authorise) the viewing fee once per saga, whatever the number of attempts."""
        left = self._enter("charge_card", ctx)
        return self.services.payments.charge(
            _charge_request(ctx), known_ref=ctx.ref, record=ctx.record_ref, timeout=left
        )

    def refund_card(self, ctx: StepContext) -> str | None:
        """Refund or void the payment made under the action's key, if there was one."""
        left = self._enter("refund_card", ctx)
        return self.services.payments.refund(
            _charge_request(ctx), charge_ref=ctx.ref, idempotency_key=ctx.idempotency_key, timeout=left
        )

    def capture_payment(self, ctx: StepContext) -> str:
        """Capture the authorised payment, last, once everything else is done."""
        left = self._enter("capture_payment", ctx)
        charge = ctx.ref_of("charge_card")
        if charge is None:
            raise PermanentProviderError("stripe", "no_payment", "charge_card recorded no payment to capture")
        return self.services.payments.capture(
            _charge_request(ctx), charge_ref=charge, idempotency_key=ctx.idempotency_key, timeout=left
        )

    def keep_payment(self, ctx: StepContext) -> None:
        """Nothing to undo here: refund_card refunds a captured payment or voids an authorised one."""
        self._enter("keep_payment", ctx)
        return None

    def send_sms(self, ctx: StepContext) -> str:
        """Text the caller a confirmation."""
        left = self._enter("send_sms", ctx)
        resource, start, _ = _slot(ctx)
        body = f"Your viewing of {resource} on {start:%a %d %b %H:%M} UTC is booked."
        return self._send_once(ctx, body, "confirmation", left)

    def send_apology(self, ctx: StepContext) -> str | None:
        """Apologise, but only to a caller who was told the viewing was booked."""
        left = self._enter("send_apology", ctx)
        to = ctx.data["customer"]["phone"]
        if (
            ctx.ref is None
            and self.services.messaging.sent(idempotency_key=ctx.action_key, to=to, timeout=left) is None
        ):
            return None
        resource, _, _ = _slot(ctx)
        body = f"Sorry, we could not complete your viewing of {resource}; any charge has been refunded."
        return self._send_once(ctx, body, "apology", left)

    def _send_once(self, ctx: StepContext, body: str, kind: str, timeout: float) -> str:
        """Send, unless an earlier attempt of this step already did.

        SMS has no idempotency key: the id recorded right after the send stops a
        retry, and for a crash in between, a retry asks the provider first.
        """
        messaging, to = self.services.messaging, ctx.data["customer"]["phone"]
        own = ctx.ref if ctx.direction == "do" else None
        if own is None and ctx.attempt > 1:
            own = messaging.sent(idempotency_key=ctx.idempotency_key, to=to, timeout=timeout)
        if own is not None:
            return own
        sid = messaging.send(
            saga_id=ctx.saga_id,
            idempotency_key=ctx.idempotency_key,
            to=to,
            body=body,
            kind=kind,
            timeout=timeout,
        )
        ctx.record_ref(sid)
        return sid

    def sync_calendar(self, ctx: StepContext) -> str:
        """Create the calendar event under an id derived from the saga id."""
        left = self._enter("sync_calendar", ctx)
        resource, start, minutes = _slot(ctx)
        return self.services.calendar.create_event(
            saga_id=ctx.saga_id,
            event_id=event_id(ctx.saga_id),
            summary=f"Viewing: {resource}",
            start=start,
            minutes=minutes,
            timeout=left,
        )

    def delete_event(self, ctx: StepContext) -> str | None:
        """Delete the event this saga may have created."""
        left = self._enter("delete_event", ctx)
        deleted = self.services.calendar.delete_event(event_id=event_id(ctx.saga_id), timeout=left)
        return event_id(ctx.saga_id) if deleted else None


def booking_saga(
    services: BookingServices,
    *,
    timeout: float = 30.0,
    retry: RetryPolicy | None = None,
    capture_last: bool = False,
    approval_above: int | None = None,
    approval_timeout: float = 3600.0,
) -> Saga:
    """The booking saga with its services bound; one timeout and retry policy for every step.

    With `capture_last` the card is only authorised by charge_card and captured by a
    last step, so a failure anywhere before voids the authorisation instead of refunding.
    With `approval_above`, a booking charging more than that waits at an `approval` gate
    after its slot is held and before the card is charged; a rejection releases the slot.
    """
    steps = BookingSteps(services)
    policy = retry or RetryPolicy()

    def step(name: str, action: Any, undo_name: str, undo: Any) -> Step:
        return Step(
            name=name,
            action=action,
            compensate=undo,
            compensation_name=undo_name,
            timeout=timeout,
            retry=policy,
            compensation_retry=policy,
            permanent=PERMANENT,
        )

    chain = [step("book_slot", steps.book_slot, "release_slot", steps.release_slot)]
    if approval_above is not None:
        threshold = approval_above
        chain.append(
            Step.gate(
                "approval",
                Approval(
                    "approval",
                    timeout=approval_timeout,
                    needed=lambda data: int(data["payment"]["amount"]) > threshold,
                ),
            )
        )
    chain += [
        step("charge_card", steps.charge_card, "refund_card", steps.refund_card),
        step("send_sms", steps.send_sms, "send_apology", steps.send_apology),
        step("sync_calendar", steps.sync_calendar, "delete_event", steps.delete_event),
    ]
    if capture_last:
        chain.append(step("capture_payment", steps.capture_payment, "keep_payment", steps.keep_payment))
    return Saga(NAME, tuple(chain))
