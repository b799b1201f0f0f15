"""The booking saga with live adapters (real SDKs) against local fakes, crashes included."""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from redis import Redis

from jobs.runtime import build_engine
from saga import SagaEngine, SagaRecord, SagaStatus
from tests.conftest import BOOKING
from tests.fakes.stripe import FakeStripe
from tests.waiting import wait_until_finished

Start = Callable[..., subprocess.Popen[bytes]]


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


def run(
    client: FlaskClient,
    redis: Redis,
    make_settings: Any,
    drain: Callable[[SagaEngine], None],
    **overrides: Any,
) -> SagaRecord:
    engine = build_engine(make_settings(**overrides), redis)
    client.application.extensions["saga_engine"] = engine
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]
    drain(engine)
    return engine.get(saga_id)


def test_completed_saga_charges_one_payment_intent(
    client: FlaskClient,
    redis: Redis,
    make_settings: Any,
    drain: Callable[[SagaEngine], None],
    live_stripe: dict[str, Any],
    fake_stripe: FakeStripe,
) -> None:
    record = run(client, redis, make_settings, drain, **live_stripe)
    assert record.status == SagaStatus.COMPLETED
    (intent,) = fake_stripe.intents.values()
    assert intent["status"] == "succeeded" and intent["metadata"] == {"saga_id": record.id}
    assert record.step("charge_card").ref == intent["id"]


def test_failure_after_the_charge_refunds_it(
    client: FlaskClient,
    redis: Redis,
    make_settings: Any,
    drain: Callable[[SagaEngine], None],
    live_stripe: dict[str, Any],
    fake_stripe: FakeStripe,
) -> None:
    record = run(client, redis, make_settings, drain, sandbox_faults="sync_calendar=fail", **live_stripe)
    assert record.status == SagaStatus.COMPENSATED
    (refund,) = fake_stripe.refunds.values()
    assert refund["payment_intent"] == record.step("charge_card").ref
    assert fake_stripe.calls("POST", "/v1/refunds")[0].key == f"{record.id}:charge_card:undo"


def test_authorise_then_capture_voids_instead_of_refunding(
    client: FlaskClient,
    redis: Redis,
    make_settings: Any,
    drain: Callable[[SagaEngine], None],
    live_stripe: dict[str, Any],
    fake_stripe: FakeStripe,
) -> None:
    done = run(client, redis, make_settings, drain, stripe_capture_method="manual", **live_stripe)
    assert done.status == SagaStatus.COMPLETED and done.steps[-1].name == "capture_payment"
    assert fake_stripe.intents[done.step("charge_card").ref or ""]["status"] == "succeeded"

    redis.flushdb()
    failed = run(
        client,
        redis,
        make_settings,
        drain,
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
