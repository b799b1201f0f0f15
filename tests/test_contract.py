"""The /book contract: signatures, idempotency, limits, OpenAPI and tool schema, dashboard access."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from standardwebhooks.webhooks import Webhook

from app import create_app
from app.views import SagaView
from config import ConfigError, Settings, load_settings
from jobs.providers.sandbox import SandboxLedger
from saga import SagaEngine
from tests.conftest import BOOKING

SECRET = "whsec_" + base64.b64encode(b"a test secret of thirty-two byte").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the secret before the last rotat").decode()


def signed(
    body: bytes, secret: str = SECRET, msg_id: str = "msg_1", at: float | None = None
) -> dict[str, str]:
    """Headers a Standard Webhooks sender would attach."""
    timestamp = int(time.time() if at is None else at)
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


@pytest.fixture
def signed_app(make_settings: Callable[..., Settings], engine: SagaEngine) -> Flask:
    return create_app(make_settings(webhook_secret=SECRET), engine)


def post(client: FlaskClient, body: bytes, headers: dict[str, str]) -> Any:
    return client.post("/book", data=body, headers={"Content-Type": "application/json", **headers})


BODY = json.dumps(BOOKING).encode()


# -- signatures ----------------------------------------------------------------------------


def test_valid_signature_is_accepted(signed_app: Flask) -> None:
    response = post(signed_app.test_client(), BODY, signed(BODY))
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("missing", "signature_missing"),
        ("tampered_body", "signature_invalid"),
        ("wrong_secret", "signature_invalid"),
        ("expired", "signature_invalid"),
        ("future", "signature_invalid"),
        ("malformed", "signature_invalid"),
    ],
)
def test_bad_signature_is_401_and_starts_nothing(
    signed_app: Flask, redis: Redis, case: str, code: str
) -> None:
    headers = signed(BODY)
    body = BODY
    if case == "missing":
        headers = {}
    elif case == "tampered_body":
        body = BODY.replace(b"4900", b"1")
    elif case == "wrong_secret":
        headers = signed(BODY, secret=OLD_SECRET)
    elif case == "expired":
        headers = signed(BODY, at=time.time() - 6 * 60)
    elif case == "future":
        headers = signed(BODY, at=time.time() + 6 * 60)
    elif case == "malformed":
        headers["webhook-signature"] = "v1-no-comma"
    response = post(signed_app.test_client(), body, headers)
    assert response.status_code == 401
    assert response.get_json()["code"] == code
    assert redis.keys("sr:saga:*") == []


def test_rotation_accepts_any_listed_signature(signed_app: Flask) -> None:
    old = signed(BODY, secret=OLD_SECRET)
    new = signed(BODY)
    headers = {**new, "webhook-signature": f"{old['webhook-signature']} {new['webhook-signature']}"}
    assert post(signed_app.test_client(), BODY, headers).status_code == 202


def test_signature_covers_raw_bytes_not_reserialised_json(signed_app: Flask) -> None:
    body = (
        b'{"call_id":"CA42",  "slot": {"resource": "viewing-42", "start": "2026-12-01T15:00:00Z", '
        b'"minutes": 30}, "customer": {"name": "Ada", "phone": "+15005550006"}, '
        b'"payment": {"amount": 4900, "currency": "usd", "payment_method": "pm_card_visa"}}'
    )
    assert post(signed_app.test_client(), body, signed(body)).status_code == 202


def test_unsigned_development_mode_warns(
    make_settings: Callable[..., Settings], engine: SagaEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING"):
        app = create_app(make_settings(), engine)
    assert "UNSIGNED" in caplog.text
    assert post(app.test_client(), BODY, {}).status_code == 202


def test_production_without_secret_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="WEBHOOK_SECRET is required when APP_ENV=production"):
        load_settings({"APP_ENV": "production"})


# -- idempotency ---------------------------------------------------------------------------


def test_same_key_same_body_replays_the_original(client: FlaskClient) -> None:
    first = client.post("/book", json=BOOKING, headers={"Idempotency-Key": "k"})
    again = client.post("/book", json=BOOKING, headers={"Idempotency-Key": "k"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]


def test_same_key_different_body_is_422(client: FlaskClient, redis: Redis) -> None:
    client.post("/book", json=BOOKING, headers={"Idempotency-Key": "k"})
    other = {**BOOKING, "payment": {**BOOKING["payment"], "amount": 9900}}
    response = client.post("/book", json=other, headers={"Idempotency-Key": "k"})
    assert response.status_code == 422
    assert response.get_json()["code"] == "idempotency_key_reused"
    assert len(redis.keys("sr:saga:*:history")) == 1


def test_webhook_id_is_the_key_when_no_idempotency_key(signed_app: Flask) -> None:
    client = signed_app.test_client()
    first = post(client, BODY, signed(BODY, msg_id="msg_42"))
    retry = post(client, BODY, signed(BODY, msg_id="msg_42"))  # the sender's retry: new timestamp, same id
    assert (first.status_code, retry.status_code) == (202, 200)
    assert retry.get_json()["id"] == first.get_json()["id"]


def test_fifty_concurrent_deliveries_of_one_webhook_make_one_saga(
    signed_app: Flask, engine: SagaEngine, drain: Callable[[SagaEngine], None], ledger: SandboxLedger
) -> None:
    headers = signed(BODY, msg_id="msg_burst")
    barrier = threading.Barrier(50)
    answers: list[tuple[int, str]] = []

    def deliver() -> None:
        client = signed_app.test_client()
        barrier.wait()
        response = post(client, BODY, headers)
        answers.append((response.status_code, response.get_json()["id"]))

    threads = [threading.Thread(target=deliver) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({saga_id for _, saga_id in answers}) == 1
    assert sorted(status for status, _ in answers) == [200] * 49 + [202]
    drain(engine)
    assert [e["kind"] for e in ledger.entries()].count("charge") == 1


# -- rate limits ---------------------------------------------------------------------------


def test_rate_limit_per_caller_is_429_with_retry_after(
    make_settings: Callable[..., Settings], engine: SagaEngine
) -> None:
    client = create_app(make_settings(rate_limit_per_caller="3/minute"), engine).test_client()
    statuses = [client.post("/book", json={}).status_code for _ in range(4)]
    assert statuses == [422, 422, 422, 429]
    response = client.post("/book", json=BOOKING)
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert response.get_json()["code"] == "too_many_requests"


def test_rate_limit_per_phone_counts_bookings_not_replays(
    make_settings: Callable[..., Settings], engine: SagaEngine
) -> None:
    client = create_app(make_settings(rate_limit_per_phone="2/minute"), engine).test_client()
    for key in ("a", "a", "a", "b"):
        assert client.post("/book", json=BOOKING, headers={"Idempotency-Key": key}).status_code in (200, 202)
    response = client.post("/book", json=BOOKING, headers={"Idempotency-Key": "c"})
    assert response.status_code == 429
    other_phone = {**BOOKING, "customer": {**BOOKING["customer"], "phone": "+15005550007"}}
    assert client.post("/book", json=other_phone, headers={"Idempotency-Key": "d"}).status_code == 202


def test_limiter_keys_hold_no_phone_number(client: FlaskClient, redis: Redis) -> None:
    client.post("/book", json=BOOKING)
    limiter_keys = redis.keys("sr:limits*")
    assert limiter_keys and not any(b"5005550006" in key for key in limiter_keys)


# -- documents -----------------------------------------------------------------------------


def test_openapi_document_describes_book_and_sagas(client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    assert {"/book", "/sagas/{saga_id}"} <= doc["paths"].keys()
    schemas = doc["components"]["schemas"]
    assert schemas["Customer"]["properties"]["phone"]["pattern"].startswith("^\\+")
    assert set(doc["paths"]["/book"]["post"]["responses"]) >= {
        "202",
        "200",
        "401",
        "413",
        "415",
        "422",
        "429",
    }


def test_tool_definition_is_self_contained(client: FlaskClient) -> None:
    tool = client.get("/tools/book.json").get_json()
    assert tool["name"] == "book_viewing"
    assert "$ref" not in json.dumps(tool)
    params = tool["parameters"]
    assert set(params["required"]) == {"call_id", "slot", "customer", "payment"}
    assert params["properties"]["slot"]["properties"]["start"]["format"] == "date-time"


def test_answers_match_the_documented_view(
    client: FlaskClient, engine: SagaEngine, drain: Callable[[SagaEngine], None]
) -> None:
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]
    drain(engine)
    SagaView.model_validate(client.get(f"/sagas/{saga_id}").get_json())


# -- the dashboard -------------------------------------------------------------------------


def test_dashboard_is_not_mounted_without_credentials(client: FlaskClient) -> None:
    assert client.get("/rq/").status_code == 404


def test_dashboard_needs_basic_auth_and_post_for_changes(
    make_settings: Callable[..., Settings], engine: SagaEngine
) -> None:
    app = create_app(make_settings(dashboard_user="ops", dashboard_password="s3cret"), engine)
    client = app.test_client()
    auth = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ops:guess").decode()}

    anonymous = client.get("/rq/")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/rq/", headers=wrong).status_code == 401
    assert client.get("/rq/", headers=auth).status_code == 200
    assert client.get("/rq/0/data/queues.json", headers=auth).get_json()["queues"] is not None
    assert client.get("/rq/requeue/sagas", headers=auth).status_code == 405
    assert client.post("/rq/requeue/sagas").status_code == 401
    assert client.post("/rq/requeue/sagas", headers=auth).get_json()["status"] == "OK"
