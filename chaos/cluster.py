"""The system under test as real processes: start them, kill them, restart them, stop them all.

Why real processes: what `make chaos` proves is about crashes (SIGKILLed workers,
orphaned work-horses, a Redis restart), which no in-process fake reproduces. The
processes are started exactly as the Procfile does, configured only through the
environment variables of `config/settings.py`.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from chaos import procs
from launcher.redis_server import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parent.parent
QUICK_EXIT = 2.0  # a process that dies sooner than this after start is restarted after a pause
RESTART_PAUSE = 1.0


def _signal_group(pgid: int, signum: int) -> None:
    """Signal a process group that may have vanished meanwhile."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@dataclass
class Managed:
    """One supervised process slot (e.g. worker 2) across its restarts."""

    role: str
    index: int
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    starts: int = 0
    not_before: float = 0.0  # no restart before this monotonic time
    handle: IO[bytes] | None = None  # our end of its log file

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class ClusterStats:
    """What the cluster went through, for the report."""

    kills: int = 0
    busy_kills: int = 0  # kills that orphaned a running work-horse (forking workers)
    restarts: Counter[str] = field(default_factory=Counter)  # role -> restarts of any cause
    exits: list[str] = field(default_factory=list)  # processes that ended by themselves
    redis_restarts: int = 0
    redis_downtime: float = 0.0


class Cluster:
    """Redis, web, workers and the scheduler; thread-safe, every start and stop under one lock."""

    def __init__(self, workdir: Path, settings: dict[str, str], workers: int) -> None:
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.redis = EmbeddedRedis(workdir / "redis", port=free_port(), appendonly=True)
        self.web_port = free_port()
        self.settings = settings
        self.stats = ClusterStats()
        self.sessions: set[int] = set()  # every session we created: the scope of the final sweep
        self._lock = threading.RLock()
        python = sys.executable
        web = [python, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.web_port}", "--workers", "2",
               "--no-control-socket", "wsgi:app"]  # fmt: skip
        self.procs = [Managed("web", 1, web, self.logdir / "web-1.log")]
        self.procs += [
            Managed("worker", i, [python, "worker.py"], self.logdir / f"worker-{i}.log")
            for i in range(1, workers + 1)
        ]
        self.procs.append(Managed("scheduler", 1, [python, "scheduler.py"], self.logdir / "scheduler-1.log"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def log_paths(self) -> list[Path]:
        return [p.log for p in self.procs] + [self.redis.logfile]

    def environment(self) -> dict[str, str]:
        """Our settings over the inherited environment, minus any setting the caller had exported."""
        from config.settings import Settings

        ours = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
        env.update(self.settings, REDIS_URL=self.redis.url, PYTHONUNBUFFERED="1")
        return env

    # -- starting -------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        """Redis first, then every process; returns once the web app answers /healthz."""
        self.logdir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.redis.start()
            self._note_redis_session()
            for proc in self.procs:
                self._spawn(proc)
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            try:
                with opener.open(f"{self.base_url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"web did not answer /healthz within {timeout:g}s; see {self.procs[0].log}"
                )
            time.sleep(0.2)

    def _note_redis_session(self) -> None:
        if self.redis.pid is not None:
            self.sessions.add(self.redis.pid)

    def _spawn(self, proc: Managed) -> None:
        if proc.handle is not None:
            proc.handle.close()  # the child has its own copy; orphans of the last one keep theirs
        proc.handle = log = proc.log.open("ab")
        log.write(f"==== chaos: starting {proc.name} (start #{proc.starts + 1}) at {time.ctime()}\n".encode())
        log.flush()
        proc.popen = subprocess.Popen(
            proc.argv,
            cwd=ROOT,
            env=self.environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session: see chaos.procs
        )
        self.sessions.add(proc.popen.pid)
        proc.started_at = time.monotonic()
        proc.starts += 1

    # -- chaos ----------------------------------------------------------------

    def kill_random_worker(self, rng: random.Random, prefer_busy: float = 0.75) -> int | None:
        """SIGKILL one live worker parent (not its children), then start a replacement at once.

        With probability `prefer_busy` the victim is a forking worker whose work-horse is
        running a step, when there is one: an idle worker's death proves little, a busy
        one's orphans its horse. (A threaded worker runs its steps in-process: its death
        takes them all, and nothing here can tell whether it was busy.)
        """
        with self._lock:
            live = [p for p in self.procs if p.role == "worker" and p.alive]
            if not live:
                return None
            busy = [p for p in live if p.popen is not None and procs.has_work_horse(p.popen.pid)]
            victim = rng.choice(busy if busy and rng.random() < prefer_busy else live)
            if victim in busy:
                self.stats.busy_kills += 1
            assert victim.popen is not None
            pid = victim.popen.pid
            os.kill(pid, signal.SIGKILL)
            victim.popen.wait()
            self.stats.kills += 1
            self._spawn(victim)
            self.stats.restarts[victim.role] += 1
            return pid

    def revive(self) -> list[str]:
        """Restart processes that ended by themselves (a platform would); returns their names."""
        revived = []
        now = time.monotonic()
        with self._lock:
            procs.reap_adopted()
            for proc in self.procs:
                if proc.popen is None or proc.alive:
                    continue
                if proc.not_before == 0.0:
                    code = proc.popen.returncode
                    self.stats.exits.append(f"{proc.name} pid {proc.popen.pid} exited with {code}")
                    quick = now - proc.started_at < QUICK_EXIT
                    proc.not_before = now + (RESTART_PAUSE if quick else 0.0)
                if now < proc.not_before:
                    continue
                proc.not_before = 0.0
                self._spawn(proc)
                self.stats.restarts[proc.role] += 1
                revived.append(proc.name)
        return revived

    def restart_redis(self) -> float:
        """Graceful stop (SIGTERM: the AOF is flushed), then start again on the same port and data.

        Returns the downtime in seconds. The processes are left alone: they must reconnect
        by themselves, or exit and be restarted by `revive`.
        """
        began = time.monotonic()
        self.redis.stop()
        self.redis.start(timeout=60)
        with self._lock:
            self._note_redis_session()
        downtime = time.monotonic() - began
        self.stats.redis_restarts += 1
        self.stats.redis_downtime += downtime
        return downtime

    # -- stopping -------------------------------------------------------------

    def quiesce(self, timeout: float = 20.0) -> None:
        """Stop workers and scheduler (SIGTERM, as on a deploy) and wait for their orphans.

        Done before the ledger is read: a work-horse orphaned by a kill may still be in
        a provider call, and its effect belongs in the verdict.
        """
        with self._lock:
            quiet = [p for p in self.procs if p.role != "web"]
            for proc in quiet:
                if proc.alive:
                    assert proc.popen is not None
                    _signal_group(proc.popen.pid, signal.SIGTERM)
            for proc in quiet:
                if proc.popen is not None:
                    try:
                        proc.popen.wait(timeout=timeout)
                    except subprocess.TimeoutExpired:
                        _signal_group(proc.popen.pid, signal.SIGKILL)
                        proc.popen.wait()
            web = {p.popen.pid for p in self.procs if p.role == "web" and p.popen is not None}
            redis = {self.redis.pid} if self.redis.pid is not None else set()
            others = self.sessions - web - redis
            if not procs.wait_sessions_empty(others, timeout):
                procs.kill_sessions(others)

    def close(self) -> None:
        """Stop everything we started, whatever state it is in: processes, orphans, then Redis."""
        with self._lock:
            for proc in self.procs:
                if proc.alive:
                    assert proc.popen is not None
                    _signal_group(proc.popen.pid, signal.SIGTERM)
            for proc in self.procs:
                if proc.popen is not None:
                    try:
                        proc.popen.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        _signal_group(proc.popen.pid, signal.SIGKILL)
                        proc.popen.wait()
            self.sessions |= procs.child_sessions()  # e.g. one started as Ctrl-C came
            redis = {self.redis.pid} if self.redis.pid is not None else set()
            procs.kill_sessions(self.sessions - redis, grace=2.0)
            self.redis.stop()
            procs.kill_sessions(self.sessions)
            for proc in self.procs:
                if proc.handle is not None:
                    proc.handle.close()
                    proc.handle = None
