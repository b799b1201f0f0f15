"""Fast in-process engine runs on fakeredis: the saga logic without a server.

These complement, never replace, the real-Redis tests: fakeredis cannot run a
forking worker and differs from redis-server in details.
"""

from __future__ import annotations

from pathlib import Path

import fakeredis

from config import load_settings
from jobs.providers.sandbox import SandboxLedger
from jobs.runtime import build_engine
from saga import SagaStatus
from saga.worker import SimpleSagaWorker
from tests.conftest import BOOKING


def run(tmp_path: Path, faults: str = "") -> tuple[SagaStatus, list[str]]:
    settings = load_settings(
        {}, sandbox_ledger=tmp_path / "l.sqlite3", sandbox_faults=faults, retry_initial_delay_seconds=0
    )
    engine = build_engine(settings, fakeredis.FakeStrictRedis())
    started = engine.start("booking", BOOKING)
    SimpleSagaWorker(engine).work(burst=True, with_scheduler=False, logging_level="WARNING")
    ledger = SandboxLedger(settings.sandbox_ledger)
    return engine.get(started.saga_id).status, [e["kind"] for e in ledger.entries()]


def test_happy_path(tmp_path: Path) -> None:
    assert run(tmp_path) == (SagaStatus.COMPLETED, ["charge", "message", "event_created"])


def test_failure_compensates(tmp_path: Path) -> None:
    assert run(tmp_path, "send_sms=fail") == (SagaStatus.COMPENSATED, ["charge", "refund"])
