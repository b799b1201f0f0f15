"""The HTTP contract of /book and /sagas/<id>: answers, errors, idempotency, what reaches RQ."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs.providers.sandbox import SandboxLedger
from saga import SagaEngine, keys
from tests.conftest import BOOKING


def written(redis: Redis) -> list[bytes]:
    """Every key but the rate limiter's counters (which count bad requests too)."""
    return [key for key in redis.keys("*") if not key.startswith(keys.RATE_LIMITS.encode())]


def with_changes(**paths: Any) -> dict[str, Any]:
    """BOOKING with dotted paths replaced (value None deletes the field)."""
    body = json.loads(json.dumps(BOOKING))
    for path, value in paths.items():
        *parents, leaf = path.split("__")
        target = body
        for part in parents:
            target = target[part]
        if value is None:
            target.pop(leaf)
        else:
            target[leaf] = value
    return body


def test_book_answers_202_with_location_and_status(client: FlaskClient) -> None:
    response = client.post("/book", json=BOOKING)
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "running"
    assert response.headers["Location"] == f"/sagas/{body['id']}"
    assert "data" not in body  # the input holds personal details; the view does not echo it


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"call_id": None}, "call_id"),
        ({"slot__start": "tomorrow"}, "slot.start"),
        ({"slot__start": "2026-12-01T15:00:00"}, "slot.start"),  # no time zone
        ({"slot__minutes": 0}, "slot.minutes"),
        ({"slot__resource": ""}, "slot.resource"),
        ({"customer__phone": "0612345678"}, "customer.phone"),
        ({"customer__name": None}, "customer.name"),
        ({"payment__amount": -5}, "payment.amount"),
        ({"payment__amount": "49.00"}, "payment.amount"),
        ({"payment__currency": "dollars"}, "payment.currency"),
        ({"payment__payment_method": "4242424242424242"}, "payment.payment_method"),
        ({"payment": None}, "payment"),
    ],
)
def test_invalid_body_is_422_naming_the_field_and_writes_nothing(
    client: FlaskClient, redis: Redis, changes: dict[str, Any], field: str
) -> None:
    response = client.post("/book", json=with_changes(**changes))
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "validation_error"
    assert body["field"] == field
    assert field in [e["field"] for e in body["errors"]]
    assert "4242424242424242" not in response.get_data(as_text=True)  # input is not echoed back
    assert written(redis) == []


def test_every_bad_field_is_named(client: FlaskClient) -> None:
    body = with_changes(customer__phone="x", payment__currency="x", slot__minutes=9999)
    fields = {e["field"] for e in client.post("/book", json=body).get_json()["errors"]}
    assert fields == {"customer.phone", "payment.currency", "slot.minutes"}


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "invalid_json"),
        ("call_id=CA42", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("[1, 2]", "application/json", 422, "validation_error"),
    ],
)
def test_unreadable_bodies_get_json_errors(
    client: FlaskClient, redis: Redis, data: str, content_type: str, status: int, code: str
) -> None:
    response = client.post("/book", data=data, content_type=content_type)
    assert response.status_code == status
    assert response.get_json()["code"] == code
    assert written(redis) == []


def test_oversized_body_is_413_json(client: FlaskClient, redis: Redis) -> None:
    response = client.post("/book", json={**BOOKING, "notes": "x" * 70_000})
    assert response.status_code == 413
    assert response.get_json()["code"] == "request_entity_too_large"
    assert written(redis) == []


def test_bad_idempotency_key_is_400(client: FlaskClient, redis: Redis) -> None:
    response = client.post("/book", json=BOOKING, headers={"Idempotency-Key": "x" * 300})
    assert response.status_code == 400
    assert response.get_json()["field"] == "Idempotency-Key"
    assert written(redis) == []


def test_unknown_saga_is_404_json(client: FlaskClient) -> None:
    for saga_id in ("0" * 32, "not-an-id"):
        response = client.get(f"/sagas/{saga_id}")
        assert response.status_code == 404
        assert response.get_json()["code"] == "saga_not_found"


def test_unknown_route_is_404_json(client: FlaskClient) -> None:
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.get_json()["code"] == "not_found"


def test_same_idempotency_key_twenty_times_at_once_makes_one_saga_and_one_charge(
    app: Flask, engine: SagaEngine, redis: Redis, drain: Callable[[SagaEngine], None], ledger: SandboxLedger
) -> None:
    barrier = threading.Barrier(20)
    answers: list[tuple[int, str]] = []

    def deliver() -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post("/book", json=BOOKING, headers={"Idempotency-Key": "call-CA42"})
        answers.append((response.status_code, response.get_json()["id"]))

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len({saga_id for _, saga_id in answers}) == 1
    assert sorted(status for status, _ in answers) == [200] * 19 + [202]
    assert len(redis.keys("sr:saga:*:history")) == 1
    drain(engine)
    assert [e["kind"] for e in ledger.entries()].count("charge") == 1


def test_different_idempotency_keys_make_different_sagas(client: FlaskClient) -> None:
    first = client.post("/book", json=BOOKING, headers={"Idempotency-Key": "a"}).get_json()["id"]
    second = client.post("/book", json=BOOKING, headers={"Idempotency-Key": "b"}).get_json()["id"]
    assert first != second


def test_jobs_carry_only_saga_id_and_step_as_json(client: FlaskClient, redis: Redis) -> None:
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]
    job = Job.fetch(f"{saga_id}-book_slot-do-1", connection=redis, serializer=JSONSerializer)
    assert job.args == [saga_id, "book_slot"]
    assert job.kwargs == {}
    assert job.description == f"booking.book_slot saga={saga_id} attempt=1 /ops/sagas/{saga_id}"
    raw = redis.hget(job.key, "data")
    assert raw is not None
    json.loads(zlib.decompress(raw))  # RQ zlib-compresses job data: JSON inside, not pickle


def test_phone_number_is_only_in_the_sagas_input_record(
    client: FlaskClient, redis: Redis, engine: SagaEngine, drain: Callable[[SagaEngine], None]
) -> None:
    client.post("/book", json=BOOKING)
    drain(engine)
    phone = BOOKING["customer"]["phone"].encode()
    holders = []
    for key in redis.scan_iter():
        kind = redis.type(key)
        if kind == b"hash":
            values = b" ".join(redis.hvals(key))
        elif kind == b"string":
            values = redis.get(key) or b""
        elif kind == b"stream":
            values = b" ".join(b" ".join(f.values()) for _, f in redis.xrange(key))
        elif kind == b"list":
            values = b" ".join(redis.lrange(key, 0, -1))
        elif kind == b"zset":
            values = b" ".join(redis.zrange(key, 0, -1))
        else:
            values = b" ".join(redis.smembers(key)) if kind == b"set" else b""
        if phone in values:
            holders.append(key.decode())
    saga_id = holders[0].split(":")[2] if holders else ""
    assert holders == [keys.data(saga_id)]  # only the saga's own input record


def test_healthz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_sandbox_ledger_endpoint_lists_a_sagas_entries(
    client: FlaskClient, engine: SagaEngine, drain: Callable[[SagaEngine], None]
) -> None:
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]
    drain(engine)
    entries = client.get(f"/sandbox/ledger?saga_id={saga_id}").get_json()["entries"]
    assert [e["kind"] for e in entries] == ["charge", "message", "event_created"]
    assert "+15005550006" not in json.dumps(entries)
