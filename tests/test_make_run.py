"""`make run` as a new user meets it: start, book over HTTP, see it complete, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from config import load_settings
from jobs.runtime import build_engine
from launcher.redis_server import free_port, redis_answers
from tests.conftest import BOOKING, ROOT
from tests.waiting import wait_until_finished


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, Path]]:
    port, redis_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "SANDBOX_FAULTS", "MAKEFLAGS"}}
    env.update(PORT=str(port), EMBEDDED_REDIS_PORT=str(redis_port), VAR_DIR=str(tmp_path / "var"))
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    yield proc, port, tmp_path / "var"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def read_until(proc: subprocess.Popen[str], pattern: str) -> tuple[re.Match[str], str]:
    seen = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match, "".join(seen)
    raise AssertionError("make run ended before printing " + pattern + ":\n" + "".join(seen))


def test_make_run_books_a_viewing_end_to_end(make_run: tuple[subprocess.Popen[str], int, Path]) -> None:
    proc, port, var = make_run
    redis_url = read_until(proc, r"redis:\s+(redis://\S+)")[0].group(1)
    read_until(proc, r"Ctrl-C stops everything")

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/book",
        data=json.dumps(BOOKING).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": "make-run-1"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
        location = response.headers["Location"]

    engine = build_engine(load_settings({}, redis_url=redis_url), Redis.from_url(redis_url))
    wait_until_finished(engine, location.rsplit("/", 1)[1], timeout=60)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{location}", timeout=10) as response:
        assert json.load(response)["status"] == "completed"
    assert (var / "redis" / "appendonlydir").is_dir() or any((var / "redis").glob("*.aof"))
    assert (var / "sandbox-ledger.sqlite3").exists()

    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
    output = proc.communicate(timeout=60)[0]
    # make itself dies of the SIGINT (or reports it as 2/130); the launcher underneath stops in order.
    assert proc.returncode in (0, -signal.SIGINT, 2, 130), output
    assert "worker.1 stopped" in output and "launcher | stopped" in output
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # every process of the session has exited
    assert not redis_answers(redis_url)
