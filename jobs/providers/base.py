"""What the booking saga needs from the outside world, as three small protocols.

Each call carries the step's deterministic idempotency key so that a retry, a
replay after a crash or a duplicated job asks the provider for the same thing
twice and gets the same answer. `timeout` is the time left before the step's
deadline: an adapter passes it to its HTTP client so no call outlives its step.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Payments(Protocol):
    """Charges and refunds (Stripe in production)."""

    def charge(
        self,
        *,
        saga_id: str,
        idempotency_key: str,
        amount: int,
        currency: str,
        payment_method: str,
        timeout: float,
    ) -> str:
        """Charge once per idempotency key and return the charge id."""
        ...

    def refund(self, *, saga_id: str, charge_key: str, idempotency_key: str, timeout: float) -> str | None:
        """Refund the charge made under `charge_key`; None when no charge was made."""
        ...


class Messaging(Protocol):
    """Text messages (Twilio in production)."""

    def send(
        self, *, saga_id: str, idempotency_key: str, to: str, body: str, kind: str, timeout: float
    ) -> str:
        """Send one message per idempotency key and return its id (SID)."""
        ...

    def sent(self, *, idempotency_key: str, timeout: float) -> str | None:
        """The id of the message sent under `idempotency_key`, or None."""
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
