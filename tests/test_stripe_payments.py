"""The Stripe adapter through the real SDK against a local fake that keeps Stripe's rules."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer

from jobs.providers.base import ChargeRequest
from jobs.providers.errors import CardDeclined, PermanentProviderError, TransientProviderError
from jobs.providers.stripe_payments import StripePayments
from tests.fakes.stripe import FakeStripe

KEY = "saga1:charge_card:do"
REQUEST = ChargeRequest("saga1", KEY, 4900, "usd", "pm_card_visa")


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeStripe:
    stripe_fake = FakeStripe()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(stripe_fake.handle)
    return stripe_fake


@pytest.fixture
def stripe_api(httpserver: HTTPServer, fake: FakeStripe) -> Iterator[StripePayments]:
    yield StripePayments(api_key="sk_test_fake", timeout=5, api_base=httpserver.url_for("").rstrip("/"))


def charge(
    api: StripePayments, request: ChargeRequest = REQUEST, known: str | None = None
) -> tuple[str, list[str]]:
    recorded: list[str] = []
    return api.charge(request, known_ref=known, record=recorded.append, timeout=5), recorded


def test_charge_creates_records_then_confirms_with_deterministic_keys(
    stripe_api: StripePayments, fake: FakeStripe
) -> None:
    ref, recorded = charge(stripe_api)
    assert recorded == [ref] and fake.intents[ref]["status"] == "succeeded"
    create, confirm = fake.requests
    assert (create.method, create.path, create.key) == ("POST", "/v1/payment_intents", KEY)
    assert create.form["metadata[saga_id]"] == "saga1" and create.form["amount"] == "4900"
    assert (confirm.path, confirm.key) == (f"/v1/payment_intents/{ref}/confirm", f"{KEY}:confirm")


def test_retried_charge_sends_the_same_keys_and_makes_one_payment(
    stripe_api: StripePayments, fake: FakeStripe
) -> None:
    first, _ = charge(stripe_api)
    again, _ = charge(stripe_api)  # an attempt that never learnt the id: the create is replayed
    assert again == first and len(fake.intents) == 1
    assert {r.key for r in fake.calls("POST", "/v1/payment_intents")} == {KEY}


def test_retry_with_a_recorded_id_looks_before_it_acts(stripe_api: StripePayments, fake: FakeStripe) -> None:
    ref, _ = charge(stripe_api)
    fake.requests.clear()
    assert charge(stripe_api, known=ref)[0] == ref
    assert [(r.method, r.path) for r in fake.requests] == [("GET", f"/v1/payment_intents/{ref}")]


def test_crash_after_create_before_confirm_resumes_from_the_record(
    stripe_api: StripePayments, fake: FakeStripe
) -> None:
    fake.fail_next(r"/v1/payment_intents/pi_\w+/confirm", 503, {"type": "api_error", "message": "overloaded"})
    with pytest.raises(TransientProviderError):
        charge(stripe_api)
    (ref,) = fake.intents
    assert charge(stripe_api, known=ref)[0] == ref  # the retry: same intent, confirmed now
    assert fake.intents[ref]["status"] == "succeeded" and len(fake.intents) == 1


def test_declined_card_is_permanent(stripe_api: StripePayments, fake: FakeStripe) -> None:
    declined = ChargeRequest("saga1", KEY, 4900, "usd", "pm_card_chargeDeclined")
    with pytest.raises(CardDeclined) as raised:
        charge(stripe_api, declined)
    assert raised.value.code == "card_declined"
    (intent,) = fake.intents.values()
    assert intent["status"] == "requires_payment_method"


def test_refund_of_a_captured_payment_twice_refunds_once(
    stripe_api: StripePayments, fake: FakeStripe
) -> None:
    ref, _ = charge(stripe_api)
    first = stripe_api.refund(REQUEST, charge_ref=ref, idempotency_key="saga1:charge_card:undo", timeout=5)
    again = stripe_api.refund(REQUEST, charge_ref=ref, idempotency_key="saga1:charge_card:undo", timeout=5)
    assert first == again and len(fake.refunds) == 1
    assert fake.calls("POST", "/v1/refunds")[0].key == "saga1:charge_card:undo"


def test_refund_without_a_recorded_id_finds_the_payment_by_replaying_its_create(
    stripe_api: StripePayments, fake: FakeStripe
) -> None:
    ref, _ = charge(stripe_api)  # the action charged, then crashed before recording
    refund = stripe_api.refund(REQUEST, charge_ref=None, idempotency_key="undo", timeout=5)
    assert refund is not None and fake.refunds[refund]["payment_intent"] == ref
    assert len(fake.intents) == 1


def test_refund_when_nothing_was_charged_cancels_and_moves_no_money(
    stripe_api: StripePayments, fake: FakeStripe
) -> None:
    assert stripe_api.refund(REQUEST, charge_ref=None, idempotency_key="undo", timeout=5) is None
    (intent,) = fake.intents.values()
    assert intent["status"] == "canceled" and not fake.refunds


def test_manual_capture_authorises_then_captures_or_voids(httpserver: HTTPServer, fake: FakeStripe) -> None:
    api = StripePayments(
        api_key="sk_test_fake",
        timeout=5,
        capture_method="manual",
        api_base=httpserver.url_for("").rstrip("/"),
    )
    ref, _ = charge(api)
    assert fake.intents[ref]["status"] == "requires_capture"
    assert api.capture(REQUEST, charge_ref=ref, idempotency_key="cap", timeout=5) == ref
    assert api.capture(REQUEST, charge_ref=ref, idempotency_key="cap", timeout=5) == ref  # twice is fine
    assert fake.intents[ref]["status"] == "succeeded"

    other = ChargeRequest("saga2", "saga2:charge_card:do", 4900, "usd", "pm_card_visa")
    held, _ = charge(api, other)
    assert api.refund(other, charge_ref=held, idempotency_key="void", timeout=5) == held
    assert fake.intents[held]["status"] == "canceled" and not fake.refunds  # voided, not refunded


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (402, {"type": "card_error", "code": "insufficient_funds", "message": "no"}, CardDeclined),
        (
            400,
            {"type": "invalid_request_error", "code": "parameter_invalid", "message": "no"},
            PermanentProviderError,
        ),
        (401, {"type": "invalid_request_error", "message": "Invalid API Key"}, PermanentProviderError),
        (
            409,
            {"type": "invalid_request_error", "code": "idempotency_key_in_use", "message": "busy"},
            TransientProviderError,
        ),
        (
            429,
            {"type": "invalid_request_error", "code": "rate_limit", "message": "slow down"},
            TransientProviderError,
        ),
        (500, {"type": "api_error", "message": "boom"}, TransientProviderError),
        (503, {"type": "api_error", "message": "boom"}, TransientProviderError),
    ],
)
def test_error_classes_map_to_permanent_or_transient(
    stripe_api: StripePayments, fake: FakeStripe, status: int, error: dict[str, str], expected: type
) -> None:
    fake.fail_next("/v1/payment_intents", status, error)
    with pytest.raises(expected) as raised:
        charge(stripe_api)
    assert type(raised.value) is expected or issubclass(type(raised.value), expected)
    assert len(fake.requests) == 1  # the SDK did not retry behind our back


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = StripePayments(api_key="sk_test_fake", timeout=2, api_base=f"http://127.0.0.1:{port}")
    with pytest.raises(TransientProviderError):
        charge(api)


def test_errors_never_carry_the_api_key(stripe_api: StripePayments, fake: FakeStripe) -> None:
    fake.fail_next(
        "/v1/payment_intents", 401, {"type": "invalid_request_error", "message": "Invalid API Key"}
    )
    with pytest.raises(PermanentProviderError) as raised:
        charge(stripe_api)
    assert "sk_test_fake" not in str(raised.value)
