"""Structured logs: the JSON formatter, the attempt's bound ids, and a real worker's every line."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis

from config import Settings
from config.logs import JsonFormatter, configure, default_format, handler
from jobs.runtime import build_engine
from saga import SagaStatus, keys
from saga.deadline import run_with_deadline
from saga.log_context import attempt, bound
from tests.conftest import BOOKING
from tests.waiting import wait_until_finished

PHONE = "+15005550006"
CARD = "4242 4242 4242 4242"


def record(message: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    """A record as `logging` makes it, with `extra` set on it, and the current exception if `exc`."""
    made = logging.LogRecord("saga.test", logging.ERROR, __file__, 1, message, args, None)
    if exc:
        made.exc_info = sys.exc_info()
    for name, value in extra.items():
        setattr(made, name, value)
    return made


def test_a_json_line_has_the_fields_and_no_phone_or_card_number() -> None:
    try:
        raise ValueError(f"Twilio refused {PHONE} for card {CARD}")
    except ValueError:
        made = record("sms to %s failed", PHONE, exc=True, saga_id="abc", step="send_sms", attempt=2)
    line = JsonFormatter().format(made)

    assert "\n" not in line
    fields = json.loads(line)
    assert fields["time"].endswith("+00:00") and "T" in fields["time"]
    assert (fields["level"], fields["logger"]) == ("ERROR", "saga.test")
    assert fields["message"] == "sms to [phone] failed"
    assert (fields["saga_id"], fields["step"], fields["attempt"]) == ("abc", "send_sms", 2)
    assert "direction" not in fields and "job_id" not in fields  # absent, not null, when unknown
    assert "ValueError: Twilio refused [phone] for card [number]" in fields["exc"]
    assert "Traceback" in fields["exc"]
    assert "+1500" not in line and "4242" not in line


def test_non_ascii_is_kept_readable() -> None:
    line = JsonFormatter().format(record("créneau réservé pour Zoë à 東京"))
    assert "Zoë à 東京" in line
    assert json.loads(line)["message"] == "créneau réservé pour Zoë à 東京"


def test_redaction_never_breaks_the_json() -> None:
    """Values are scrubbed before encoding: a secret next to a quote cannot eat the escape."""
    line = JsonFormatter().format(record('got authorization=abc"def and sk_live_123'))
    assert json.loads(line)["message"] == 'got [secret]"def and [secret]'


def test_default_format_is_json_in_production_only() -> None:
    assert default_format("production") == "json"
    assert default_format("development") == default_format("test") == "text"


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON lines that reach a handler set up like the processes' one, on logger `saga.test`."""
    out = io.StringIO()
    sink = handler("json")
    sink.setStream(out)  # type: ignore[attr-defined]
    logger = logging.getLogger("saga.test")
    logger.addHandler(sink)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in out.getvalue().splitlines()]
    logger.removeHandler(sink)
    logger.setLevel(logging.NOTSET)


def test_lines_during_an_attempt_carry_its_ids_and_extra_wins(
    lines: Callable[[], list[dict[str, Any]]],
) -> None:
    log = logging.getLogger("saga.test")
    log.info("before")
    with attempt("s1", "charge_card", "do", 3):
        log.info("inside")
        log.info("explicit", extra={"step": "refund_card", "attempt": 9})
    log.info("after")

    before, inside, explicit, after = lines()
    assert "saga_id" not in before and "saga_id" not in after
    assert inside["saga_id"] == "s1" and inside["direction"] == "do"
    assert (inside["step"], inside["attempt"]) == ("charge_card", 3)
    assert inside["job_id"] == keys.job_id("s1", "charge_card", "do", 3)
    assert (explicit["saga_id"], explicit["step"], explicit["attempt"]) == ("s1", "refund_card", 9)


def test_the_step_thread_of_a_deadline_sees_the_attempt(lines: Callable[[], list[dict[str, Any]]]) -> None:
    """Provider adapters log from the thread `run_with_deadline` starts, not the attempt's own."""
    with bound(saga_id="s2", step="send_sms", attempt=1):
        run_with_deadline(lambda: logging.getLogger("saga.test").info("from the step"), step="x", timeout=5)
    (line,) = lines()
    assert (line["saga_id"], line["step"], line["attempt"]) == ("s2", "send_sms", 1)


def test_concurrent_attempts_on_threads_do_not_mix(lines: Callable[[], list[dict[str, Any]]]) -> None:
    both_bound = threading.Barrier(2, timeout=10)

    def run(saga_id: str) -> None:
        with attempt(saga_id, "book_slot", "do", 1):
            both_bound.wait()  # each thread logs while the other's attempt is bound too
            logging.getLogger("saga.test").info("in %s", saga_id)

    threads = [threading.Thread(target=run, args=(s,)) for s in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logged = [line for line in lines() if line["message"].startswith("in ")]
    assert sorted((line["message"], line["saga_id"]) for line in logged) == [
        ("in left", "left"),
        ("in right", "right"),
    ]


def test_configure_honours_the_level_and_format() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure("WARNING", "json")
        (only,) = root.handlers
        assert isinstance(only.formatter, JsonFormatter)
        assert root.level == logging.WARNING
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        logging.captureWarnings(False)


@pytest.mark.parametrize("worker_class", ["threaded", "forking"])
def test_every_line_of_a_real_worker_is_json_and_its_attempt_lines_carry_ids(
    make_settings: Callable[..., Settings],
    redis: Redis,
    client: FlaskClient,
    processes: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
    worker_class: str,
) -> None:
    # One failed attempt, then a retry: a failure's line and a retry's carry the ids too.
    settings = make_settings(sandbox_faults="send_sms=flaky:1", worker_class=worker_class)
    engine = build_engine(settings, redis)
    client.application.extensions["saga_engine"] = engine
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]
    worker = processes("worker.py", settings, LOG_FORMAT="json")
    assert wait_until_finished(engine, saga_id, timeout=60).status == SagaStatus.COMPLETED
    worker.terminate()
    assert worker.wait(timeout=30) == 0

    (output,) = tmp_path.glob("*-worker.py.log")
    text = output.read_text()
    assert PHONE not in text and BOOKING["customer"]["name"] not in text
    lines = [json.loads(line) for line in text.splitlines()]  # every line, or this raises
    assert any(line["logger"].startswith("rq.") for line in lines)  # RQ's own lines are JSON too

    saga_lines = [line for line in lines if line["logger"].split(".")[0] == "saga"]
    for line in saga_lines:
        assert line["saga_id"] == saga_id and line["step"] and line["attempt"] >= 1, line
        assert line["job_id"] == keys.job_id(saga_id, line["step"], line["direction"], line["attempt"])
    ended = [(line["step"], line["attempt"], line["level"]) for line in saga_lines]
    assert ended == [
        ("book_slot", 1, "INFO"),
        ("charge_card", 1, "INFO"),
        ("send_sms", 1, "WARNING"),  # the injected transient failure
        ("send_sms", 2, "INFO"),
        ("sync_calendar", 1, "INFO"),
    ]
