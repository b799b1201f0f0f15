"""The booking saga with live adapters (real SDKs) against local fakes, crashes included."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from redis import Redis
from twilio.request_validator import RequestValidator

from app import create_app
from jobs.runtime import build_engine
from saga import SagaRecord, SagaStatus
from tests.conftest import BOOKING
from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.fakes.stripe import FakeStripe
from tests.fakes.twilio import FakeTwilio
from tests.waiting import wait_until_finished

Start = Callable[..., subprocess.Popen[bytes]]
TWILIO_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
PUBLIC_URL = "https://relay.example.com"


@pytest.fixture
def fake_stripe(httpserver: HTTPServer) -> FakeStripe:
    fake = FakeStripe()
    httpserver.expect_request(re.compile(".*")).respond_with_handler(fake.handle)
    return fake


@pytest.fixture
def live_stripe(httpserver: HTTPServer, fake_stripe: FakeStripe) -> dict[str, Any]:
    return {
        "stripe_mode": "live",
        "stripe_api_key": "sk_test_fake",
        "stripe_api_base": httpserver.url_for("").rstrip("/"),
    }


def test_completed_saga_charges_one_payment_intent(
    run_saga: Callable[..., SagaRecord],
    live_stripe: dict[str, Any],
    fake_stripe: FakeStripe,
) -> None:
    record = run_saga(**live_stripe)
    assert record.status == SagaStatus.COMPLETED
    (intent,) = fake_stripe.intents.values()
    assert intent["status"] == "succeeded" and intent["metadata"] == {"saga_id": record.id}
    assert record.step("charge_card").ref == intent["id"]


def test_failure_after_the_charge_refunds_it(
    run_saga: Callable[..., SagaRecord],
    live_stripe: dict[str, Any],
    fake_stripe: FakeStripe,
) -> None:
    record = run_saga(sandbox_faults="sync_calendar=fail", **live_stripe)
    assert record.status == SagaStatus.COMPENSATED
    (refund,) = fake_stripe.refunds.values()
    assert refund["payment_intent"] == record.step("charge_card").ref
    assert fake_stripe.calls("POST", "/v1/refunds")[0].key == f"{record.id}:charge_card:undo"


def test_authorise_then_capture_voids_instead_of_refunding(
    run_saga: Callable[..., SagaRecord],
    redis: Redis,
    live_stripe: dict[str, Any],
    fake_stripe: FakeStripe,
) -> None:
    done = run_saga(stripe_capture_method="manual", **live_stripe)
    assert done.status == SagaStatus.COMPLETED and done.steps[-1].name == "capture_payment"
    assert fake_stripe.intents[done.step("charge_card").ref or ""]["status"] == "succeeded"

    redis.flushdb()
    failed = run_saga(
        stripe_capture_method="manual",
        sandbox_faults="sync_calendar=fail",
        **live_stripe,
    )
    assert failed.status == SagaStatus.COMPENSATED
    assert fake_stripe.intents[failed.step("charge_card").ref or ""]["status"] == "canceled"
    assert not fake_stripe.refunds  # no money moved, so none had to come back


@pytest.mark.parametrize("later_failure", ["", "send_sms=fail"])
def test_crash_between_stripes_answer_and_our_record_charges_once(
    later_failure: str,
    client: FlaskClient,
    redis: Redis,
    make_settings: Any,
    processes: Start,
    live_stripe: dict[str, Any],
    fake_stripe: FakeStripe,
) -> None:
    settings = make_settings(
        sandbox_crash_point="charge_card:after_call",
        sandbox_faults=later_failure,
        step_timeout_seconds=2,
        rq_timeout_grace_seconds=1,
        stall_grace_seconds=1,
        reconcile_interval_seconds=1,
        scheduler_interval_seconds=1,
        **live_stripe,
    )
    engine = build_engine(settings, redis)
    client.application.extensions["saga_engine"] = engine
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]
    assert processes("worker.py", settings).wait(timeout=60) == -signal.SIGKILL  # died after Stripe answered
    processes("worker.py", settings)
    processes("scheduler.py", settings)
    record = wait_until_finished(engine, saga_id, timeout=90)

    (intent,) = fake_stripe.intents.values()  # one PaymentIntent, never two
    if later_failure:
        assert record.status == SagaStatus.COMPENSATED
        assert [r["payment_intent"] for r in fake_stripe.refunds.values()] == [intent["id"]]
    else:
        assert record.status == SagaStatus.COMPLETED
        assert intent["status"] == "succeeded" and not fake_stripe.refunds


# -- every provider live: Stripe, Twilio and Google through their SDKs ---------------------


@pytest.fixture
def all_live(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, Any], FakeStripe, FakeTwilio, FakeGoogleCalendar]]:
    monkeypatch.delenv(
        "GOOGLE_SDK_EXPERIMENTAL_PYTHON_REGIONAL_ACCESS_BOUNDARY_LOOKUP_ENABLED", raising=False
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    google = FakeGoogleCalendar(httpserver, public_key=key.public_key())
    stripe_server = HTTPServer()
    stripe_server.start()
    stripe_fake = FakeStripe()
    stripe_server.expect_request(re.compile(".*")).respond_with_handler(stripe_fake.handle)
    with FakeTwilio(TWILIO_SID, TWILIO_TOKEN) as twilio:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        account = {
            "type": "service_account",
            "client_email": "relay@test.iam.gserviceaccount.com",
            "private_key": pem,
            "private_key_id": "k1",
            "token_uri": google.token_uri,
        }
        settings = {
            "stripe_mode": "live",
            "stripe_api_key": "sk_test_fake",
            "stripe_api_base": stripe_server.url_for("").rstrip("/"),
            "twilio_mode": "live",
            "twilio_account_sid": TWILIO_SID,
            "twilio_auth_token": TWILIO_TOKEN,
            "twilio_from": "+15005550006",
            "twilio_api_base": twilio.url,
            "public_url": PUBLIC_URL,
            "calendar_mode": "live",
            "google_service_account": json.dumps(account),
            "google_calendar_id": "primary",
            "google_calendar_api_base": google.api_base,
        }
        yield settings, stripe_fake, twilio, google
    google.release()
    stripe_server.clear()
    stripe_server.stop()


def test_all_live_providers_complete_a_booking(
    run_saga: Callable[..., SagaRecord],
    all_live: tuple[dict[str, Any], FakeStripe, FakeTwilio, FakeGoogleCalendar],
) -> None:
    settings, stripe_fake, twilio, google = all_live
    record = run_saga(**settings)
    assert record.status == SagaStatus.COMPLETED
    (intent,) = stripe_fake.intents.values()
    assert intent["status"] == "succeeded"
    (message,) = twilio.messages
    assert message["sid"] == record.step("send_sms").ref
    assert (
        twilio.callbacks[message["sid"]]
        == f"{PUBLIC_URL}/twilio/status?saga_id={record.id}&kind=confirmation"
    )
    assert google.live_events() == {f"sr{record.id}"}


def test_all_live_providers_compensate_a_calendar_failure(
    run_saga: Callable[..., SagaRecord],
    all_live: tuple[dict[str, Any], FakeStripe, FakeTwilio, FakeGoogleCalendar],
) -> None:
    settings, stripe_fake, twilio, google = all_live
    google.fail("insert", 403, "forbidden")  # permanent: the calendar is not shared with us
    record = run_saga(**settings)
    assert record.status == SagaStatus.COMPENSATED
    assert [m["body"].split(" Ref ")[0].split(",")[0] for m in twilio.messages] == [
        "Your viewing of viewing-42 on Tue 01 Dec 15:00 UTC is booked.",
        "Sorry",
    ]
    assert len(stripe_fake.refunds) == 1 and google.live_events() == set()


def test_twilio_status_callback_is_verified_and_recorded(
    run_saga: Callable[..., SagaRecord],
    make_settings: Any,
    client: FlaskClient,
    all_live: tuple[dict[str, Any], FakeStripe, FakeTwilio, FakeGoogleCalendar],
) -> None:
    settings, _, _, _ = all_live
    record = run_saga(**settings)
    app = create_app(make_settings(**settings), client.application.extensions["saga_engine"])
    web = app.test_client()
    path = f"/twilio/status?saga_id={record.id}&kind=confirmation"
    form = {"MessageSid": record.step("send_sms").ref or "", "MessageStatus": "delivered"}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + path, form)

    assert web.post(path, data=form).status_code == 403  # unsigned
    assert (
        web.post(
            path, data={**form, "MessageStatus": "failed"}, headers={"X-Twilio-Signature": signature}
        ).status_code
        == 403
    )  # tampered
    assert web.post(path, data=form, headers={"X-Twilio-Signature": signature}).status_code == 204
    step = web.get(f"/sagas/{record.id}").get_json()["steps"][2]
    assert step["provider_status"] == "delivered"

    other = {"MessageSid": "SMnotours", "MessageStatus": "delivered"}
    other_signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + path, other)
    assert web.post(path, data=other, headers={"X-Twilio-Signature": other_signature}).status_code == 404
