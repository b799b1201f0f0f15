"""The moving parts of a run: who follows the sagas, who kills workers, who tells the user.

Why threads: submissions, kills, the Redis restart and the progress line all happen
at once, as they would in production. Each thread only paces itself (a wait with a
timeout); nothing here uses a sleep to make a result correct.
"""

from __future__ import annotations

import random
import shutil
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

from redis import Redis
from redis.exceptions import RedisError

from chaos.cluster import Cluster
from chaos.invariants import FINISHED
from saga import keys

# Locks that keep sagas moving, and whose holder can die holding them (see `LockWatch`).
WATCHED_LOCKS = {"reconciler": keys.RECONCILER_LOCK, "rq-scheduler": "rq:scheduler-lock:sagas"}


class LockWatch:
    """How long a lock went without its holder touching it: a liveness clue, not a verdict.

    A lock is set with a TTL; a live holder releases it (the reconciler, after a pass)
    or refreshes it (RQ's scheduler, every second). So for one holder, the TTL seen at
    its highest minus the TTL now is how long nobody has touched it; a dead holder's
    lock runs down its whole TTL, and what it guards does not happen meanwhile.
    """

    def __init__(self) -> None:
        self.holder: bytes | None = None
        self.top_ms = 0
        self.longest_ms = 0

    def sample(self, holder: bytes | None, ttl_ms: int) -> None:
        if holder is None or ttl_ms < 0:
            self.holder = None
            return
        if holder != self.holder:
            self.holder, self.top_ms = holder, ttl_ms
        self.top_ms = max(self.top_ms, ttl_ms)
        self.longest_ms = max(self.longest_ms, self.top_ms - ttl_ms)


class Watcher:
    """The latest status of every saga the API handed out, read straight from Redis."""

    def __init__(self, redis_url: str) -> None:
        self.redis = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._statuses: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self.locks = {name: LockWatch() for name in WATCHED_LOCKS}

    def add(self, saga_id: str) -> None:
        with self._lock:
            self._statuses.setdefault(saga_id, "running")

    def poll(self) -> bool:
        """Refresh every unfinished saga; False when Redis did not answer (e.g. restarting)."""
        with self._lock:
            pending = [sid for sid, status in self._statuses.items() if status not in FINISHED]
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for key in WATCHED_LOCKS.values():
                    pipe.get(key)
                    pipe.pttl(key)
                for saga_id in pending:
                    pipe.hget(keys.saga(saga_id), "status")
                replies: list[Any] = pipe.execute()
        except RedisError:
            return False
        for index, watch in enumerate(self.locks.values()):
            watch.sample(replies[2 * index], int(replies[2 * index + 1]))
        found = replies[2 * len(self.locks) :]
        with self._lock:
            for saga_id, raw in zip(pending, found, strict=True):
                self._statuses[saga_id] = raw.decode() if raw is not None else None
        return True

    def counts(self) -> Counter[str]:
        """Sagas by status; `missing` for ids Redis does not know."""
        with self._lock:
            return Counter(status or "missing" for status in self._statuses.values())

    def all_settled(self) -> bool:
        with self._lock:
            return all(status in FINISHED for status in self._statuses.values())

    def close(self) -> None:
        self.redis.close()


class Supervisor(threading.Thread):
    """A platform with a grudge: restarts what exits, SIGKILLs a worker every few seconds,
    and restarts Redis once when told to."""

    def __init__(self, cluster: Cluster, rng: random.Random, kill_every: float) -> None:
        super().__init__(name="chaos-supervisor", daemon=True)
        self.cluster = cluster
        self.rng = rng
        self.kill_every = kill_every  # mean seconds between kills; 0 disables them
        self.redis_due = threading.Event()
        self.redis_done = threading.Event()
        self.redis_restarted_after: int | None = None  # answers received when Redis went down
        self.stop_kills = threading.Event()
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def _pause(self) -> float:
        return self.rng.uniform(0.75, 1.5) * self.kill_every

    def run(self) -> None:
        next_kill = time.monotonic() + self._pause() / 2  # the first one early: short runs get kills too
        try:
            while not self.stopped.wait(0.2):
                self.cluster.revive()
                if self.redis_due.is_set() and not self.redis_done.is_set():
                    self.cluster.restart_redis()
                    self.redis_done.set()
                if self.kill_every > 0 and not self.stop_kills.is_set() and time.monotonic() >= next_kill:
                    self.cluster.kill_random_worker(self.rng)
                    next_kill = time.monotonic() + self._pause()
        except BaseException as exc:  # reported by the main thread, which then stops everything
            self.error = exc

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=90)


class Progress(threading.Thread):
    """Polls the watcher and shows one updating line on a TTY, or a line every few seconds."""

    def __init__(
        self,
        watcher: Watcher,
        line: Callable[[Counter[str]], str],
        out: TextIO = sys.stdout,
        every: float = 5.0,
    ) -> None:
        super().__init__(name="chaos-progress", daemon=True)
        self.watcher = watcher
        self.line = line
        self.out = out
        self.tty = out.isatty()
        self.every = every
        self.stopped = threading.Event()
        self.submitted = threading.Event()  # set once every booking has its answer
        self.settled = threading.Event()  # set once submitted and every saga settled
        self._last_print = 0.0
        # Longest time no saga settled while some were pending: a liveness figure, not a verdict.
        self.longest_stall = 0.0
        self._settled = 0
        self._moved_at = time.monotonic()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.tick()
            self.stopped.wait(0.5)

    def tick(self, force: bool = False) -> None:
        """Poll once, set `settled` when due, and print if it is time to."""
        if self.watcher.poll() and self.submitted.is_set() and self.watcher.all_settled():
            self.settled.set()
        now = time.monotonic()
        counts = self.watcher.counts()
        settled = sum(counts[status] for status in FINISHED)
        if settled != self._settled or settled == sum(counts.values()):
            self._settled, self._moved_at = settled, now
        self.longest_stall = max(self.longest_stall, now - self._moved_at)
        if self.tty:  # one line, cut to the terminal's width so that \r can rewrite it
            width = shutil.get_terminal_size().columns - 1
            self.out.write("\r" + self.line(counts)[:width] + "\x1b[K")
            self.out.flush()
        elif force or now - self._last_print >= self.every:
            self._last_print = now
            self.out.write(self.line(counts) + "\n")
            self.out.flush()

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=30)
        self.tick(force=True)
        if self.tty:
            self.out.write("\n")
            self.out.flush()
