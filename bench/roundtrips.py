"""Counting Redis round trips on the client side, in a worker process or in the bench itself.

Why client side: the server counts commands, but cannot tell how many of them
arrived together (a pipeline or MULTI/EXEC is one network round trip, however
many commands it carries). redis-py sends every request, single command or
whole pipeline, with exactly one call of `AbstractConnection.send_packed_command`,
so counting those calls counts round trips (a health-check PING is one too,
and is counted: it is a round trip the process really makes).

In a worker (`BENCH_COUNT_ROUNDTRIPS=1`) every connection of the process is
counted. The count is published by a background thread to the hash
`bench:rt:<pid>` (fields `rt`, and `flushes`: how many HSETs the publisher
itself sent, so the bench can take them out of the server-side command count);
the publisher's own traffic is not counted.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis
from redis.connection import AbstractConnection, Connection

KEY_PREFIX = "bench:rt:"
ENV = "BENCH_COUNT_ROUNDTRIPS"


class RoundTripCounter:
    """Counts `send_packed_command` calls in the threads and scopes it is told to.

    `install()` patches redis-py's connection class once per process. With
    `everywhere=True` every call counts except in threads inside `paused()`;
    otherwise only calls made inside `counting()` count.
    """

    def __init__(self, *, everywhere: bool) -> None:
        self.everywhere = everywhere
        self.count = 0
        self._lock = threading.Lock()
        self._local = threading.local()
        self._original: Callable[..., Any] | None = None

    def _counts_here(self) -> bool:
        flag = getattr(self._local, "flag", None)
        return self.everywhere if flag is None else bool(flag)

    def install(self) -> RoundTripCounter:
        """Patch `AbstractConnection.send_packed_command`; a second install is refused."""
        if self._original is not None or getattr(AbstractConnection.send_packed_command, "_bench", False):
            raise RuntimeError("a round-trip counter is already installed in this process")
        original = AbstractConnection.send_packed_command
        counter = self

        def send_packed_command(conn: AbstractConnection, command: Any, check_health: bool = True) -> None:
            if counter._counts_here():
                with counter._lock:
                    counter.count += 1
            original(conn, command, check_health)

        send_packed_command._bench = True  # type: ignore[attr-defined]
        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
        self._original = original
        return self

    def uninstall(self) -> None:
        """Restore redis-py's own method."""
        if self._original is not None:
            AbstractConnection.send_packed_command = self._original  # type: ignore[method-assign]
            self._original = None

    @contextmanager
    def counting(self) -> Iterator[None]:
        """Count the calls this thread makes inside the block."""
        previous = getattr(self._local, "flag", None)
        self._local.flag = True
        try:
            yield
        finally:
            self._local.flag = previous

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Do not count the calls this thread makes inside the block."""
        previous = getattr(self._local, "flag", None)
        self._local.flag = False
        try:
            yield
        finally:
            self._local.flag = previous


class Publisher:
    """Writes a process's count to `bench:rt:<pid>` every `interval` seconds and at exit."""

    def __init__(self, counter: RoundTripCounter, redis_url: str, interval: float = 0.1) -> None:
        self.counter = counter
        self.redis = Redis.from_url(redis_url)
        self.interval = interval
        self.key = f"{KEY_PREFIX}{os.getpid()}"
        self.flushes = 0
        self._last: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-roundtrips", daemon=True)

    def start(self) -> Publisher:
        """Publish now, then periodically from a daemon thread, and once more at exit."""
        self.flush(force=True)
        self._thread.start()
        atexit.register(self.close)
        return self

    def flush(self, force: bool = False) -> None:
        """Publish the count if it changed (or always with `force`); the HSET itself is not counted."""
        value = self.counter.count
        if value == self._last and not force:
            return
        with self.counter.paused():
            self.flushes += 1
            self.redis.hset(self.key, mapping={"rt": value, "flushes": self.flushes})
        self._last = value

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # Redis going away at shutdown must not kill the worker
                return

    def close(self) -> None:
        """Stop the thread and publish the final count (best effort)."""
        self._stop.set()
        try:
            self.flush()
        except Exception:
            pass


class Tally:
    """A thread-safe count of round trips made by the clients built with `counted_client`.

    `by_name` counts the first command of each round trip by name (lower case),
    which for a client that sends no pipelines is every command it sent.
    """

    def __init__(self) -> None:
        self.count = 0
        self.by_name: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str = "?") -> None:
        """One more round trip."""
        with self._lock:
            self.count += 1
            self.by_name[name] = self.by_name.get(name, 0) + 1

    def names(self) -> dict[str, int]:
        """A copy of the per-name counts."""
        with self._lock:
            return dict(self.by_name)


def command_name(packed: Any) -> str:
    """The name of the first command in a packed request (RESP array of bulk strings)."""
    first = packed[0] if isinstance(packed, list | tuple) and packed else packed
    if isinstance(first, str):
        first = first.encode()
    if not isinstance(first, bytes | bytearray | memoryview):
        return "?"
    parts = bytes(first[:64]).split(b"\r\n", 3)
    return parts[2].decode(errors="replace").lower() if len(parts) > 2 else "?"


def counted_client(url: str, tally: Tally) -> Redis:
    """A client whose every round trip adds to `tally` (the bench's own clients: no global patch)."""

    class CountedConnection(Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            tally.add(command_name(command))
            super().send_packed_command(command, check_health)

    return Redis.from_url(url, connection_class=CountedConnection)


def read_all(redis: Redis) -> dict[int, tuple[int, int]]:
    """Every published count: pid -> (round trips, publisher HSETs so far)."""
    found: dict[int, tuple[int, int]] = {}
    for key in redis.scan_iter(match=f"{KEY_PREFIX}*", count=1000):
        raw = redis.hgetall(key)
        name = key.decode() if isinstance(key, bytes) else str(key)
        if raw:
            found[int(name.removeprefix(KEY_PREFIX))] = (int(raw[b"rt"]), int(raw[b"flushes"]))
    return found
