"""No phone numbers, names or card data outside the saga's input record: not in Redis, not in logs."""

from __future__ import annotations

import logging
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from config.logs import RedactingFormatter
from jobs.runtime import build_engine
from saga import SagaEngine, keys
from tests.conftest import BOOKING
from tests.waiting import wait_until_finished

PHONES = ["+15005550006", "+15005550001", "+447700900123"]
NAME = "Grace Hopper"


def values_of(redis: Redis, key: bytes) -> list[bytes]:
    """Every value stored under `key`, decompressed where RQ compressed it."""
    kind = redis.type(key)
    if kind == b"hash":
        raw = list(redis.hvals(key))
    elif kind == b"string":
        raw = [redis.get(key) or b""]
    elif kind == b"stream":
        raw = [v for _, fields in redis.xrange(key) for v in fields.values()]
    elif kind == b"list":
        raw = list(redis.lrange(key, 0, -1))
    elif kind == b"zset":
        raw = list(redis.zrange(key, 0, -1))
    elif kind == b"set":
        raw = list(redis.smembers(key))
    else:
        raw = []
    out = []
    for value in raw:
        try:
            out.append(zlib.decompress(value))
        except zlib.error:
            out.append(value)
    return out


def test_personal_data_stays_in_the_sagas_input_record(
    make_settings: Callable[..., Any],
    redis: Redis,
    client: FlaskClient,
    processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(sandbox_faults="sync_calendar=flaky:1,refund_card=flaky:1", step_max_attempts=2)
    engine: SagaEngine = build_engine(settings, redis)
    client.application.extensions["saga_engine"] = engine
    ids = []
    with caplog.at_level(logging.DEBUG):
        for i, phone in enumerate(PHONES):
            body = {
                **BOOKING,
                "customer": {"name": NAME, "phone": phone},
                "slot": {**BOOKING["slot"], "resource": f"viewing-{i}"},
            }
            ids.append(client.post("/book", json=body).get_json()["id"])
        client.post("/book", json={**BOOKING, "customer": {"name": NAME, "phone": "+1 bad"}})  # a 422
        processes("worker.py", settings, LOG_LEVEL="DEBUG")
        outcomes = {wait_until_finished(engine, saga_id, 60).status.value for saga_id in ids}
    assert outcomes == {"completed", "compensated"}  # +15005550001 is refused by the SMS provider

    leaks = []
    for key in redis.scan_iter():
        for value in values_of(redis, key):
            if any(p.encode() in value for p in PHONES) or NAME.encode() in value:
                leaks.append(key.decode())
    assert set(leaks) == {keys.data(saga_id) for saga_id in ids}

    logs = caplog.text + "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert "sync_calendar" in logs  # the logs were captured at all
    assert not any(p in logs for p in PHONES) and NAME not in logs


def test_log_lines_are_redacted() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise ValueError("Twilio refused +15005550001 for card 4242 4242 4242 4242 with sk_test_123")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "calling %s", ("+447700900123",), True)
        import sys

        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    assert "ValueError" in line
    assert "+1500" not in line and "+4477" not in line and "4242" not in line and "sk_test" not in line
