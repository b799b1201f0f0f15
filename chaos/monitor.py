"""The moving parts of a run: who follows the sagas, who kills workers, who tells the user.

Why threads: submissions, kills, the Redis restart and the progress line all happen
at once, as they would in production. Each thread only paces itself (a wait with a
timeout); nothing here uses a sleep to make a result correct.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TextIO, cast

from redis import Redis
from redis.exceptions import RedisError

from chaos.cluster import Cluster
from chaos.invariants import FINISHED
from saga import keys


class Watcher:
    """The latest status of every saga the API handed out, read straight from Redis."""

    def __init__(self, redis_url: str) -> None:
        self.redis = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self._statuses: dict[str, str | None] = {}
        self._lock = threading.Lock()

    def add(self, saga_id: str) -> None:
        with self._lock:
            self._statuses.setdefault(saga_id, "running")

    def poll(self) -> bool:
        """Refresh every unfinished saga; False when Redis did not answer (e.g. restarting)."""
        with self._lock:
            pending = [sid for sid, status in self._statuses.items() if status not in FINISHED]
        if not pending:
            return True
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for saga_id in pending:
                    pipe.hget(keys.saga(saga_id), "status")
                found = cast(list[bytes | None], pipe.execute())
        except RedisError:
            return False
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
        next_kill = time.monotonic() + self._pause()
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

    def run(self) -> None:
        while not self.stopped.is_set():
            self.tick()
            self.stopped.wait(0.5)

    def tick(self, force: bool = False) -> None:
        """Poll once, set `settled` when due, and print if it is time to."""
        if self.watcher.poll() and self.submitted.is_set() and self.watcher.all_settled():
            self.settled.set()
        now = time.monotonic()
        if self.tty:
            self.out.write("\r" + self.line(self.watcher.counts()) + "\x1b[K")
            self.out.flush()
        elif force or now - self._last_print >= self.every:
            self._last_print = now
            self.out.write(self.line(self.watcher.counts()) + "\n")
            self.out.flush()

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=30)
        self.tick(force=True)
        if self.tty:
            self.out.write("\n")
            self.out.flush()
