"""Real `python worker.py` processes: forked work-horses that crash, hang, wait and race."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient
from redis import Redis

from jobs.providers.sandbox import SandboxLedger
from jobs.runtime import build_engine
from saga import SagaEngine, SagaRecord, SagaStatus
from tests.conftest import BOOKING, ROOT, process_env
from tests.waiting import wait_until_finished

Start = Callable[..., subprocess.Popen[bytes]]


def run_one(
    settings_overrides: dict[str, Any],
    make_settings: Any,
    redis: Redis,
    client: FlaskClient,
    processes: Start,
) -> tuple[SagaEngine, SagaRecord]:
    settings = make_settings(**settings_overrides)
    engine = build_engine(settings, redis)
    client.application.extensions["saga_engine"] = engine
    saga_id = client.post("/book", json=BOOKING).get_json()["id"]
    processes("worker.py", settings)
    return engine, wait_until_finished(engine, saga_id, timeout=60)


def test_work_horse_killed_mid_step_is_retried_and_charges_once(
    make_settings: Any,
    redis: Redis,
    client: FlaskClient,
    processes: Start,
    ledger: SandboxLedger,
    tmp_path: Path,
) -> None:
    _, record = run_one(
        {"sandbox_faults": "charge_card=crash:1", "worker_class": "forking"},
        make_settings,
        redis,
        client,
        processes,
    )
    assert record.status == SagaStatus.COMPLETED
    assert record.step("charge_card").attempts == 2
    first = next(h for h in record.history if h.step == "charge_card" and h.target == "pending")
    assert "work-horse terminated" in (first.detail or "")  # the crash point really fired
    assert [e["kind"] for e in ledger.entries(record.id)] == ["charge", "message", "event_created"]


def test_crash_on_every_attempt_ends_compensated(
    make_settings: Any, redis: Redis, client: FlaskClient, processes: Start, ledger: SandboxLedger
) -> None:
    _, record = run_one(
        {"sandbox_faults": "send_sms=crash", "step_max_attempts": 2, "worker_class": "forking"},
        make_settings,
        redis,
        client,
        processes,
    )
    assert record.status == SagaStatus.COMPENSATED
    assert record.step("send_sms").attempts == 2
    assert [e["kind"] for e in ledger.entries(record.id)] == ["charge", "refund"]


def test_hanging_step_in_a_forked_horse_times_out_and_compensates(
    make_settings: Any, redis: Redis, client: FlaskClient, processes: Start, ledger: SandboxLedger
) -> None:
    _, record = run_one(
        {"sandbox_faults": "sync_calendar=hang", "step_timeout_seconds": 1, "step_max_attempts": 2},
        make_settings,
        redis,
        client,
        processes,
    )
    assert record.status == SagaStatus.COMPENSATED
    assert "StepTimedOut" in (record.step("sync_calendar").error or "")
    assert [e["kind"] for e in ledger.entries(record.id)] == ["charge", "message", "message", "refund"]


def test_backoff_delay_is_served_by_the_workers_rq_scheduler(
    make_settings: Any, redis: Redis, client: FlaskClient, processes: Start
) -> None:
    _, record = run_one(
        {"sandbox_faults": "book_slot=flaky:1", "retry_initial_delay_seconds": 1},
        make_settings,
        redis,
        client,
        processes,
    )
    assert record.status == SagaStatus.COMPLETED
    retry = next(h for h in record.history if h.step == "book_slot" and h.target == "pending")
    assert (retry.detail or "").startswith("retry in ")


def test_two_workers_racing_for_one_slot(
    settings: Any, engine: SagaEngine, client: FlaskClient, processes: Start, ledger: SandboxLedger
) -> None:
    ids = [client.post("/book", json=BOOKING).get_json()["id"] for _ in range(2)]
    processes("worker.py", settings)
    processes("worker.py", settings)
    statuses = sorted(wait_until_finished(engine, saga_id, 60).status.value for saga_id in ids)
    assert statuses == ["compensated", "completed"]
    assert [e["kind"] for e in ledger.entries()].count("charge") == 1


def test_malformed_setting_stops_the_worker_naming_the_variable(settings: Any) -> None:
    env = process_env(settings, SANDBOX_FAULTS="send_sms=sometimes")
    result = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, timeout=60, text=True
    )
    assert result.returncode == 2
    assert "SANDBOX_FAULTS" in result.stderr and "send_sms=sometimes" in result.stderr
