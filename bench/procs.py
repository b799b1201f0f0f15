"""Child processes of the bench: start them in their own sessions, wait for them, stop them all.

Every child leads a new session (`start_new_session=True`); sessions are
inherited by everything it forks (RQ work-horses move to their own process
group, but not session), so "everything the bench started" is every process in
one of those sessions, which /proc tells us. Stopping is SIGTERM to each group,
a bounded wait, then SIGKILL to every member of the sessions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from bench.measure import session_members

ROOT = Path(__file__).resolve().parent.parent


class Children:
    """The processes one bench run started; `stop_all()` in a finally block ends them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: dict[int, IO[bytes]] = {}
        self._names: dict[int, str] = {}

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Start `argv` in /work/main's root, output to `<log_dir>/<name>-<n>.log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}-{len(self.procs)}.log", "wb")
        proc = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        self._logs[proc.pid] = log
        self._names[proc.pid] = name
        return proc

    def python(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Start `python <args>` with this interpreter."""
        return self.start(name, [sys.executable, *args], env)

    def log_tail(self, proc: subprocess.Popen[bytes], lines: int = 15) -> str:
        """The last lines a child wrote (for error messages)."""
        log = self._logs.get(proc.pid)
        if log is None:
            return ""
        log.flush()
        try:
            text = Path(log.name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self, procs: Sequence[subprocess.Popen[bytes]]) -> None:
        """Raise RuntimeError (with its log) if one of `procs` has exited."""
        for proc in procs:
            if proc.poll() is not None:
                name = self._names.get(proc.pid, "child")
                raise RuntimeError(
                    f"{name} (pid {proc.pid}) exited with {proc.returncode}:\n{self.log_tail(proc)}"
                )

    def stop(self, procs: Sequence[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
        """SIGTERM each group, wait up to `grace` s, then SIGKILL whatever is left in their sessions."""
        sessions = {p.pid for p in procs}
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for _ in range(3):  # bounded: a member forked while we were killing gets another round
            members = session_members(sessions)
            if not members:
                break
            for member in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(member.pid, signal.SIGKILL)
            time.sleep(0.05)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
            log = self._logs.pop(proc.pid, None)
            if log is not None:
                log.close()
        self.procs = [p for p in self.procs if p not in procs]

    def stop_all(self) -> None:
        """Stop every child still known."""
        self.stop(list(self.procs))


def wait_for(
    what: str,
    ready: Callable[[], bool],
    timeout: float,
    alive: Callable[[], None] = lambda: None,
    interval: float = 0.05,
) -> None:
    """Poll `ready()` until true; `alive()` may raise early; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not ready():
        alive()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:g}s")
        time.sleep(interval)
