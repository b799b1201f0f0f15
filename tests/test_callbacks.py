"""Completion callbacks: one signed POST per saga outcome to a local receiver, retried with backoff."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from redis import Redis
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.scheduler import RQScheduler
from rq.serializers import JSONSerializer
from standardwebhooks.webhooks import Webhook
from werkzeug import Request, Response

from app import create_app
from config import Settings
from jobs.runtime import build_engine, callback_policy
from saga import SagaEngine, SagaRecord, SagaStatus, keys
from saga.entrypoints import bind, on_job_failure
from saga.errors import InvalidDefinition
from tests.conftest import BOOKING
from tests.waiting import wait_until_callback_settled

SECRET = "whsec_" + base64.b64encode(b"the callback secret, 32 bytes ok").decode()
INBOUND = "whsec_" + base64.b64encode(b"a test secret of thirty-two byte").decode()
FAST = {"callback_secret": SECRET, "callback_initial_delay_seconds": 0}


def booking(url: str) -> dict[str, Any]:
    return {**BOOKING, "callback_url": url}


def posts(httpserver: HTTPServer) -> list[Request]:
    return [request for request, _ in httpserver.log]


def payload(request: Request) -> dict[str, Any]:
    """The body, after checking its Standard Webhooks signature as a receiver would."""
    verified: dict[str, Any] = Webhook(SECRET).verify(request.get_data(), dict(request.headers))
    return verified


def engine_of(client: FlaskClient) -> SagaEngine:
    engine: SagaEngine = client.application.extensions["saga_engine"]
    return engine


def test_completed_booking_posts_one_signed_callback_without_personal_data(
    run_saga: Callable[..., SagaRecord], httpserver: HTTPServer, client: FlaskClient
) -> None:
    httpserver.expect_request("/done", method="POST").respond_with_data("ok")
    record = run_saga(booking(httpserver.url_for("/done")), **FAST)

    assert record.status == SagaStatus.COMPLETED
    [request] = posts(httpserver)
    body = payload(request)
    assert request.headers["webhook-id"] == f"{record.id}.completed"
    assert request.headers["content-type"] == "application/json"
    assert body["type"] == "saga.completed"
    assert body["timestamp"] == record.finished_at
    assert body["data"]["saga_id"] == record.id and body["data"]["call_id"] == "CA42"
    assert body["data"]["status"] == "completed" and body["data"]["error"] is None
    assert [(s["name"], s["status"]) for s in body["data"]["steps"]] == [
        ("book_slot", "succeeded"),
        ("charge_card", "succeeded"),
        ("send_sms", "succeeded"),
        ("sync_calendar", "succeeded"),
    ]
    assert body["data"]["steps"][1]["provider_id"] == record.step("charge_card").ref
    raw = request.get_data(as_text=True)
    for personal in ("+15005550006", "Ada Lovelace", "pm_card_visa"):
        assert personal not in raw
    assert record.callback is not None and record.callback.status == "delivered"
    assert record.callback.attempts == 1 and record.callback.delivered_at
    assert Job.exists(keys.callback_job_id(record.id, 1), connection=engine_of(client).redis)


def test_compensated_booking_says_so(run_saga: Callable[..., SagaRecord], httpserver: HTTPServer) -> None:
    httpserver.expect_request("/done", method="POST").respond_with_data("ok")
    record = run_saga(booking(httpserver.url_for("/done")), sandbox_faults="send_sms=fail", **FAST)

    assert record.status == SagaStatus.COMPENSATED
    [request] = posts(httpserver)
    body = payload(request)
    assert request.headers["webhook-id"] == f"{record.id}.compensated"
    assert body["type"] == "saga.compensated" and body["data"]["status"] == "compensated"
    assert "send_sms failed" in body["data"]["error"]
    assert {s["name"]: s["status"] for s in body["data"]["steps"]}["charge_card"] == "compensated"


def move_scheduled_jobs_due(engine: SagaEngine) -> None:
    """Make every scheduled job due now and let RQ's scheduler move it to the queue."""
    registry = engine.queue.rq.scheduled_job_registry
    for job_id in registry.get_job_ids():
        engine.redis.zadd(registry.key, {job_id: time.time() - 1})
    scheduler = RQScheduler([engine.queue.rq], connection=engine.redis, serializer=JSONSerializer)
    scheduler.acquire_locks()
    scheduler.enqueue_scheduled_jobs()
    scheduler.release_locks()


def saga_fields(redis: Redis, saga_id: str) -> dict[bytes, bytes]:
    raw: dict[bytes, bytes] = redis.hgetall(keys.saga(saga_id))  # type: ignore[assignment]
    return {k: v for k, v in raw.items() if k.decode() not in keys.CALLBACK_FIELDS}


def test_server_error_is_retried_after_backoff_with_the_same_webhook_id(
    run_saga: Callable[..., SagaRecord],
    httpserver: HTTPServer,
    client: FlaskClient,
    redis: Redis,
    drain: Callable[[SagaEngine], None],
) -> None:
    httpserver.expect_ordered_request("/done", method="POST").respond_with_data("busy", status=500)
    httpserver.expect_ordered_request("/done", method="POST").respond_with_data("ok")
    record = run_saga(
        booking(httpserver.url_for("/done")), callback_secret=SECRET, callback_initial_delay_seconds=30
    )
    engine = engine_of(client)

    callback = record.callback
    assert callback is not None and callback.status == "retrying" and callback.attempts == 1
    assert callback.last_error == "HTTP 500" and callback.next_attempt_at
    second = keys.callback_job_id(record.id, 2)
    registry = engine.queue.rq.scheduled_job_registry
    assert registry.get_job_ids() == [second]
    wait = (registry.get_scheduled_time(second) - datetime.now(UTC)).total_seconds()
    assert 13 <= wait <= 31  # 30 s with up to half taken off by jitter
    before = saga_fields(redis, record.id)

    move_scheduled_jobs_due(engine)
    drain(engine)

    after = engine.get(record.id)
    assert after.callback is not None and after.callback.status == "delivered"
    assert after.callback.attempts == 2
    first, again = posts(httpserver)
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == f"{record.id}.completed"
    assert payload(again) == payload(first)
    assert saga_fields(redis, record.id) == before  # the delivery never touched the saga itself
    assert redis.ttl(keys.saga(record.id)) > 0  # and the finished saga still expires


@pytest.mark.parametrize(
    ("status", "posted", "outcome"),
    [
        (400, 1, "gave_up"),
        (404, 1, "gave_up"),
        (410, 1, "gave_up"),
        (302, 1, "gave_up"),
        (408, 3, "gave_up"),
        (429, 3, "gave_up"),
        (503, 3, "gave_up"),
        (204, 1, "delivered"),
    ],
)
def test_receiver_answers_decide_between_stop_retry_and_done(
    run_saga: Callable[..., SagaRecord], httpserver: HTTPServer, status: int, posted: int, outcome: str
) -> None:
    httpserver.expect_request("/done", method="POST").respond_with_data(
        "", status=status, headers={"Location": "http://127.0.0.1:1/elsewhere"}
    )
    record = run_saga(booking(httpserver.url_for("/done")), callback_max_attempts=3, **FAST)

    assert len(posts(httpserver)) == posted  # a redirect is not followed: nothing reached port 1
    assert record.callback is not None
    assert (record.callback.status, record.callback.attempts) == (outcome, posted)
    if outcome == "gave_up":
        assert record.callback.last_error is not None
        assert record.callback.last_error.startswith(f"HTTP {status}")
        assert ("gave up after 3 attempts" in record.callback.last_error) == (posted == 3)


def test_unreachable_receiver_is_retried_then_given_up(run_saga: Callable[..., SagaRecord]) -> None:
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    record = run_saga(booking(f"http://127.0.0.1:{port}/done"), callback_max_attempts=2, **FAST)

    assert record.callback is not None
    assert (record.callback.status, record.callback.attempts) == ("gave_up", 2)
    assert record.callback.last_error == "connection failed (ConnectionError); gave up after 2 attempts"


def test_a_duplicate_job_does_not_post_again(
    run_saga: Callable[..., SagaRecord],
    httpserver: HTTPServer,
    client: FlaskClient,
    drain: Callable[[SagaEngine], None],
) -> None:
    httpserver.expect_request("/done", method="POST").respond_with_data("ok")
    record = run_saga(booking(httpserver.url_for("/done")), **FAST)
    engine = engine_of(client)
    with engine.redis.pipeline() as pipe:
        engine.queue.enqueue_callback(pipe, record.id, 1)
        pipe.execute()
    drain(engine)

    assert len(posts(httpserver)) == 1
    assert engine.get(record.id).callback == record.callback


def test_an_attempt_whose_worker_died_is_followed_by_the_next(
    run_saga: Callable[..., SagaRecord],
    httpserver: HTTPServer,
    client: FlaskClient,
    redis: Redis,
) -> None:
    httpserver.expect_request("/done", method="POST").respond_with_data("busy", status=503)
    record = run_saga(
        booking(httpserver.url_for("/done")), callback_secret=SECRET, callback_initial_delay_seconds=30
    )
    engine = engine_of(client)
    # Attempt 2 claimed its number, then its worker was killed before it could record the answer.
    redis.hset(keys.saga(record.id), mapping={"callback_status": "sending", "callback_attempts": 2})
    job = Job.fetch(keys.callback_job_id(record.id, 2), connection=redis, serializer=JSONSerializer)
    bind(engine)
    on_job_failure(job, redis, AbandonedJobError, AbandonedJobError("worker died"), None)

    callback = engine.get(record.id).callback
    assert callback is not None and callback.status == "retrying" and callback.attempts == 2
    assert callback.last_error is not None and "AbandonedJobError" in callback.last_error
    assert keys.callback_job_id(record.id, 3) in engine.queue.rq.scheduled_job_registry.get_job_ids()


def test_no_callback_url_no_callback_job(
    run_saga: Callable[..., SagaRecord], client: FlaskClient, redis: Redis
) -> None:
    record = run_saga(BOOKING, **FAST)

    assert record.status == SagaStatus.COMPLETED and record.callback is None
    assert not Job.exists(keys.callback_job_id(record.id, 1), connection=redis)
    assert client.get(f"/sagas/{record.id}").get_json()["callback"] is None


def test_saga_view_shows_the_callback(
    run_saga: Callable[..., SagaRecord], httpserver: HTTPServer, client: FlaskClient
) -> None:
    httpserver.expect_request("/done", method="POST").respond_with_data("ok")
    record = run_saga(booking(httpserver.url_for("/done")), **FAST)

    shown = client.get(f"/sagas/{record.id}").get_json()["callback"]
    assert shown == {
        "status": "delivered",
        "attempts": 1,
        "webhook_id": f"{record.id}.completed",
        "last_error": None,
        "delivered_at": record.callback.delivered_at if record.callback else "",
        "next_attempt_at": None,
    }
    assert "callback_url" not in json.dumps(client.get(f"/sagas/{record.id}").get_json())


@pytest.mark.parametrize(
    "url",
    ["ftp://example.test/done", "/done", "http://", "https://exa mple.test/", "https://e.test/" + "a" * 2000],
)
def test_callback_url_must_be_an_absolute_http_url(client: FlaskClient, url: str) -> None:
    response = client.post("/book", json=booking(url))
    assert response.status_code == 422
    assert response.get_json()["field"] == "callback_url"


def signed_post(client: FlaskClient, body: dict[str, Any]) -> Any:
    raw = json.dumps(body)
    stamp = int(time.time())
    signature = Webhook(INBOUND).sign("msg_1", datetime.fromtimestamp(stamp, UTC), raw)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(stamp), "webhook-signature": signature}
    return client.post("/book", data=raw, headers={"Content-Type": "application/json", **headers})


def test_production_requires_https(make_settings: Callable[..., Settings], redis: Redis) -> None:
    settings = make_settings(app_env="production", webhook_secret=INBOUND)
    client = create_app(settings, build_engine(settings, redis)).test_client()

    refused = signed_post(client, booking("http://agent.test/done"))
    assert refused.status_code == 422
    assert refused.get_json()["field"] == "callback_url"
    assert "https" in refused.get_json()["errors"][0]["message"]
    assert signed_post(client, booking("https://agent.test/done")).status_code == 202


def test_callback_url_is_part_of_the_request_fingerprint(client: FlaskClient) -> None:
    headers = {"Idempotency-Key": "k-callback"}
    assert client.post("/book", json=booking("https://a.test/"), headers=headers).status_code == 202
    again = client.post("/book", json=booking("https://b.test/"), headers=headers)
    assert again.get_json()["code"] == "idempotency_key_reused"


def test_secret_defaults_to_the_webhook_secret_and_production_never_sends_unsigned(
    make_settings: Callable[..., Settings],
) -> None:
    assert callback_policy(make_settings(webhook_secret=INBOUND)).secret == INBOUND
    assert callback_policy(make_settings(webhook_secret=INBOUND, callback_secret=SECRET)).secret == SECRET
    assert callback_policy(make_settings()).secret is None
    with pytest.raises(InvalidDefinition, match="must be signed"):
        type(callback_policy(make_settings()))(signed_only=True)


def test_tool_definition_leaves_the_callback_url_to_the_platform(client: FlaskClient) -> None:
    assert "callback_url" not in client.get("/tools/book.json").get_json()["parameters"]["properties"]
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    assert schemas["BookingRequest"]["properties"]["callback_url"]["anyOf"][0]["maxLength"] == 2000


def test_a_real_worker_delivers_after_a_scheduled_retry(
    make_settings: Callable[..., Settings],
    redis: Redis,
    client: FlaskClient,
    processes: Callable[..., Any],
    httpserver: HTTPServer,
) -> None:
    second_arrived = threading.Event()

    def accept(request: Request) -> Response:
        second_arrived.set()
        return Response("ok")

    httpserver.expect_ordered_request("/done", method="POST").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/done", method="POST").respond_with_handler(accept)
    settings = make_settings(callback_secret=SECRET, callback_initial_delay_seconds=1)
    engine = build_engine(settings, redis)
    client.application.extensions["saga_engine"] = engine
    saga_id = client.post("/book", json=booking(httpserver.url_for("/done"))).get_json()["id"]
    processes("worker.py", settings)

    assert second_arrived.wait(timeout=60), "the retry never reached the receiver"
    record = wait_until_callback_settled(engine, saga_id)

    assert record.status == SagaStatus.COMPLETED
    assert record.callback is not None
    assert (record.callback.status, record.callback.attempts) == ("delivered", 2)
    first, again = posts(httpserver)
    assert payload(first)["type"] == payload(again)["type"] == "saga.completed"
    assert again.headers["webhook-id"] == f"{saga_id}.completed"
