"""Waking up the moment a saga (or a bare chain) finishes, the same way for both.

Keyspace notifications of the bench's own redis-server, not the saga's history
stream: the engine may archive or delete that stream in the very transaction
that finishes the saga, and an XREAD blocked on a key that is deleted then is
never woken. Here both sides wake on an event about a key their last transaction
writes: the saga's hash (HSET status; the waiter then reads the status, one
round trip the chain does not need) and the chain's done stream (XADD).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Self, cast

from redis import Redis

from bench.chain import done_stream
from saga import keys

FINISHED = {b"completed", b"compensated", b"failed"}
EVENTS = "Kht"  # keyspace events of hash and stream commands


class Waiter:
    """Subscribed (by pattern) to saga hashes and chain done-streams while in use; a context manager.

    Switches keyspace notifications on for its lifetime and back off after, so
    other scenarios do not pay for them.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.pubsub = redis.pubsub()
        self._previous = ""
        self.space = f"__keyspace@{redis.connection_pool.connection_kwargs.get('db', 0)}__:"

    def __enter__(self) -> Self:
        config = cast(dict[str, str], self.redis.config_get("notify-keyspace-events"))
        self._previous = config.get("notify-keyspace-events", "")
        self.redis.config_set("notify-keyspace-events", EVENTS)
        self.pubsub.psubscribe(f"{self.space}{keys.saga('*')}", f"{self.space}{done_stream('*')}")
        for _ in range(2):  # both subscriptions confirmed before anything is measured
            self._next(5.0, want="psubscribe")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.pubsub.close()
        self.redis.config_set("notify-keyspace-events", self._previous)

    def _next(self, timeout: float, want: str = "pmessage") -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.pubsub.get_message(timeout=left)
            if message is not None and message["type"] == want:
                return cast(dict[str, Any], message)
        return None

    def _event(self, channel: bytes, deadline: float, what: str) -> None:
        """Block until an event about `channel`; events about other keys (older samples) are skipped."""
        while True:
            left = deadline - time.monotonic()
            message = self._next(left) if left > 0 else None
            if message is None:
                raise TimeoutError(f"{what} did not finish in time")
            if message["channel"] == channel:
                return

    def saga(self, saga_id: str, timeout: float = 30.0) -> str:
        """Wait until the saga is finished; return its final status.

        The id is known only once the saga started, so its status is read first
        (it may have finished already), then again after each event about its hash.
        """
        key = keys.saga(saga_id)
        channel = f"{self.space}{key}".encode()
        deadline = time.monotonic() + timeout
        while True:
            status = cast(bytes | None, self.redis.hget(key, "status"))
            if status in FINISHED and status is not None:
                return status.decode()
            self._event(channel, deadline, f"saga {saga_id}")

    def chain(self, token: str, timeout: float = 30.0) -> None:
        """Wait for the XADD of chain `token`'s last link (subscribed before the chain started)."""
        channel = f"{self.space}{done_stream(token)}".encode()
        self._event(channel, time.monotonic() + timeout, f"chain {token}")
