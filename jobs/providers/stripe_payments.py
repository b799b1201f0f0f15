"""Stripe through its official SDK: PaymentIntents created first, then confirmed.

Creating the PaymentIntent moves no money and gives us an id, which the step
records before confirming. A retry, a crash or a timeout therefore never
guesses: it retrieves the PaymentIntent and acts on its real status. Every
request carries a deterministic idempotency key, and the SDK's own retries are
off (the saga engine retries, with the same keys).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Literal

import stripe

from jobs.providers.base import ChargeRequest
from jobs.providers.errors import CardDeclined, PermanentProviderError, ProviderError, TransientProviderError

CaptureMethod = Literal["automatic", "manual"]
_TRANSIENT = (stripe.RateLimitError, stripe.APIConnectionError)


def classify(exc: stripe.StripeError) -> ProviderError:
    """Map a Stripe error to permanent (compensate) or transient (retry with the same key)."""
    code = exc.code or type(exc).__name__
    message = exc.user_message or str(exc.error.message if exc.error else "") or type(exc).__name__
    if code == "idempotency_key_in_use" or isinstance(exc, _TRANSIENT):
        return TransientProviderError("stripe", code, message)
    if isinstance(exc, stripe.CardError):
        return CardDeclined("stripe", exc.code or "card_declined", message)
    status = exc.http_status or 0
    if isinstance(exc, stripe.APIError) or status >= 500 or status == 429:
        return TransientProviderError("stripe", code, message)
    return PermanentProviderError("stripe", code, message)  # invalid request, auth, idempotency mismatch


class StripePayments:
    """`Payments` on Stripe; one client per process (the worker forks after creating this)."""

    def __init__(
        self,
        *,
        api_key: str,
        timeout: float,
        capture_method: CaptureMethod = "automatic",
        api_base: str | None = None,
    ) -> None:
        self._api_key = api_key
        self._timeout = timeout
        self.capture_method = capture_method
        self._api_base = api_base
        self._local = threading.local()

    @property
    def _v1(self) -> Any:
        if getattr(self._local, "pid", None) != os.getpid():
            client = stripe.StripeClient(
                self._api_key,
                base_addresses={"api": self._api_base} if self._api_base else None,
                max_network_retries=0,
                http_client=stripe.RequestsClient(timeout=self._timeout),
            )
            self._local.v1, self._local.pid = client.v1, os.getpid()
        return self._local.v1

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as exc:
            raise classify(exc) from None

    def _create(self, request: ChargeRequest) -> Any:
        params = {
            "amount": request.amount,
            "currency": request.currency,
            "payment_method": request.payment_method,
            "payment_method_types": ["card"],
            "capture_method": self.capture_method,
            "metadata": {"saga_id": request.saga_id},
        }
        options = {"idempotency_key": request.idempotency_key}
        return self._call(self._v1.payment_intents.create, params=params, options=options)

    def charge(
        self, request: ChargeRequest, *, known_ref: str | None, record: Callable[[str], None], timeout: float
    ) -> str:
        """Create (or find) the PaymentIntent, record its id, then confirm it unless already done."""
        if known_ref is None:
            intent = self._create(request)
            record(intent.id)
        else:
            intent = self._call(self._v1.payment_intents.retrieve, known_ref)
        if (
            intent.status in ("requires_confirmation", "requires_payment_method")
            and not intent.last_payment_error
        ):
            options = {"idempotency_key": f"{request.idempotency_key}:confirm"}
            intent = self._call(self._v1.payment_intents.confirm, intent.id, options=options)
        return self._settled(intent)

    @staticmethod
    def _settled(intent: Any) -> str:
        if intent.status in ("succeeded", "requires_capture"):
            return str(intent.id)
        if intent.status == "processing":
            raise TransientProviderError("stripe", "processing", "the payment is still processing")
        if intent.status == "requires_action":
            raise PermanentProviderError("stripe", "authentication_required", "the card needs 3-D Secure")
        error = intent.last_payment_error
        if error is not None:
            raise CardDeclined("stripe", error.code or "card_declined", error.message or "card declined")
        raise PermanentProviderError("stripe", intent.status, f"PaymentIntent is {intent.status}")

    def capture(
        self, request: ChargeRequest, *, charge_ref: str, idempotency_key: str, timeout: float
    ) -> str:
        """Capture an authorised PaymentIntent; one already captured is success."""
        intent = self._call(self._v1.payment_intents.retrieve, charge_ref)
        if intent.status == "requires_capture":
            options = {"idempotency_key": idempotency_key}
            intent = self._call(self._v1.payment_intents.capture, intent.id, options=options)
        if intent.status != "succeeded":
            raise PermanentProviderError(
                "stripe", intent.status, f"cannot capture a PaymentIntent in {intent.status}"
            )
        return str(intent.id)

    def refund(
        self, request: ChargeRequest, *, charge_ref: str | None, idempotency_key: str, timeout: float
    ) -> str | None:
        """Refund a captured payment, void an authorised one, cancel an unconfirmed one.

        Without a recorded id (the action crashed between Stripe's answer and our
        record), the create is replayed with the action's key: within Stripe's
        24-hour idempotency window it returns the PaymentIntent the action made, or
        makes an unconfirmed one, which is cancelled. Either way nothing is guessed.
        """
        if charge_ref is None:
            # A replayed create answers with the response of the time: look up the real status.
            charge_ref = self._create(request).id
        intent = self._call(self._v1.payment_intents.retrieve, charge_ref)
        options = {"idempotency_key": idempotency_key}
        if intent.status == "succeeded":
            refund = self._call(
                self._v1.refunds.create, params={"payment_intent": intent.id}, options=options
            )
            return str(refund.id)
        if intent.status == "processing":
            raise TransientProviderError(
                "stripe", "processing", "wait for the payment to settle before refunding"
            )
        if intent.status == "canceled":
            return None
        self._call(self._v1.payment_intents.cancel, intent.id, options=options)
        return str(intent.id) if intent.status == "requires_capture" else None
