"""What the booking saga needs from the outside world, as three small protocols.

Each call carries the step's deterministic idempotency key so that a retry, a
replay after a crash or a duplicated job asks the provider for the same thing
twice and gets the same answer. `timeout` is the time left before the step's
deadline: an adapter passes it to its HTTP client so no call outlives its step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class ChargeRequest:
    """One saga's charge; `idempotency_key` is the charge step's own key."""

    saga_id: str
    idempotency_key: str
    amount: int
    currency: str
    payment_method: str


class Payments(Protocol):
    """Charges, captures and refunds (Stripe in production)."""

    def charge(
        self, request: ChargeRequest, *, known_ref: str | None, record: Callable[[str], None], timeout: float
    ) -> str:
        """Charge (or authorise) once per key and return the payment's id.

        `known_ref` is the id an earlier attempt recorded; `record` stores an id as
        soon as the provider has one, before any money moves.
        """
        ...

    def capture(
        self, request: ChargeRequest, *, charge_ref: str, idempotency_key: str, timeout: float
    ) -> str:
        """Capture an authorised payment (a no-op when it was captured at once)."""
        ...

    def refund(
        self, request: ChargeRequest, *, charge_ref: str | None, idempotency_key: str, timeout: float
    ) -> str | None:
        """Refund, or void an authorisation; None when no money was taken."""
        ...


class Messaging(Protocol):
    """Text messages (Twilio in production)."""

    def send(
        self, *, saga_id: str, idempotency_key: str, to: str, body: str, kind: str, timeout: float
    ) -> str:
        """Send one message per idempotency key and return its id (SID)."""
        ...

    def sent(self, *, idempotency_key: str, to: str, timeout: float) -> str | None:
        """The id of the message sent to `to` under `idempotency_key`, or None."""
        ...


class Calendar(Protocol):
    """Calendar events (Google Calendar in production)."""

    def create_event(
        self, *, saga_id: str, event_id: str, summary: str, start: datetime, minutes: int, timeout: float
    ) -> str:
        """Create the event with this id; an existing event with the id is success."""
        ...

    def delete_event(self, *, event_id: str, timeout: float) -> bool:
        """Delete the event; False when there was none (also success)."""
        ...
