"""One bench run's world: its redis-server, its clients, the processes it starts, its progress.

`with Bench(options, progress) as bench:` starts a redis-server of its own
(`EmbeddedRedis`, no AOF, on a free port) and guarantees that everything the
run started is stopped on the way out, whatever happened.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self, cast

from rq import Queue, Worker
from rq.serializers import JSONSerializer

from bench.drive import Meter
from bench.options import Options
from bench.procs import Children, wait_for
from bench.progress import Progress
from bench.roundtrips import ENV as COUNT_ENV
from bench.roundtrips import Tally, counted_client
from bench.worker import REGISTRY_PREFIX
from config import Settings
from launcher.redis_server import EmbeddedRedis, free_port

START_TIMEOUT = 60.0  # a worker or the web must be up by then (a loaded 2-core machine is slow)


@dataclass
class Workers:
    """A group of worker processes and what they said about themselves."""

    kind: str
    procs: list[subprocess.Popen[bytes]]
    queue: str
    infos: list[dict[str, str]] = field(default_factory=list)

    @property
    def pids(self) -> set[int]:
        """The processes' pids (each leads its own session)."""
        return {p.pid for p in self.procs}

    @property
    def concurrency(self) -> int:
        """Jobs the group can run at once, as the workers reported it."""
        total = 0
        for info in self.infos:
            value = info.get("concurrency", "")
            total += int(value) if value.isdigit() else 1
        return total or len(self.procs)

    @property
    def worker_class(self) -> str:
        """The class the workers really run (after any fallback)."""
        return ", ".join(sorted({i.get("class", "?") for i in self.infos})) or "?"

    @property
    def fallbacks(self) -> list[str]:
        """Why a worker did not run the class asked for."""
        return sorted({i["fallback"] for i in self.infos if i.get("fallback")})


class Bench:
    """Shared by the scenarios; a context manager."""

    def __init__(self, options: Options, progress: Progress) -> None:
        self.options = options
        self.progress = progress
        self.workdir = Path(tempfile.mkdtemp(prefix="saga-bench-"))
        self.server = EmbeddedRedis(self.workdir / "redis", appendonly=False)
        self.children = Children(self.workdir / "logs")
        self.monitor_tally = Tally()
        self.enqueue_tally = Tally()
        self.io_url = ""
        self._web: subprocess.Popen[bytes] | None = None
        self.web_port = 0
        self.notes: list[str] = []

    # -- lifetime ------------------------------------------------------------

    def __enter__(self) -> Self:
        self.url = self.server.start()
        self.monitor = counted_client(self.url, self.monitor_tally)
        self.enqueuer = counted_client(self.url, self.enqueue_tally)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.children.stop_all()
        finally:
            self.server.stop()
            if self.options.keep_logs:
                print(f"bench: logs kept in {self.workdir}", file=sys.stderr)
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def deadline(self, seconds: float) -> float:
        """A monotonic deadline `seconds` from now."""
        return time.monotonic() + seconds

    def flush(self) -> None:
        """Empty the database between scenarios (the web and idle workers keep running fine)."""
        self.monitor.flushdb()

    # -- environment ---------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a child: ours minus every Saga Relay setting, plus the bench's settings."""
        settings = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k.upper() not in settings and k != COUNT_ENV}
        env.update(
            PYTHONUNBUFFERED="1",
            REDIS_URL=self.url,
            APP_ENV="test",
            LOG_LEVEL="WARNING",
            SANDBOX_LEDGER=str(self.workdir / "ledger.sqlite3"),
            RATE_LIMIT_PER_CALLER="1000000/minute",
            RATE_LIMIT_PER_PHONE="1000000/minute",
            RETRY_INITIAL_DELAY_SECONDS="0",
            RETRY_MAX_DELAY_SECONDS="0",
        )
        if self.io_url:
            env["BENCH_IO_URL"] = self.io_url
        env.update(extra)
        return env

    # -- workers -------------------------------------------------------------

    def start_workers(
        self,
        saga: str,
        count: int,
        *,
        queue: str,
        worker: str = "simple",
        concurrency: int | None = None,
        count_round_trips: bool = False,
        **env: str,
    ) -> Workers:
        """Start `count` `bench.worker` processes and wait until each works its queue."""
        args = ["-m", "bench.worker", "--saga", saga, "--worker", worker, "--queue", queue]
        args += ["--redis-url", self.url]
        if concurrency is not None:
            args += ["--concurrency", str(concurrency)]
        extra = {COUNT_ENV: "1"} if count_round_trips else {}
        settings = {"QUEUE_NAME": queue} if saga == "booking" else {}
        procs = [
            self.children.python(f"worker-{saga}", args, self.env(**settings, **extra, **env))
            for _ in range(count)
        ]
        group = Workers(saga, procs, queue)
        self._await_workers(group, count)
        for proc in procs:
            raw = cast(dict[bytes, bytes], self.monitor.hgetall(f"{REGISTRY_PREFIX}{proc.pid}"))
            group.infos.append({k.decode(): v.decode() for k, v in raw.items()})
        for reason in group.fallbacks:
            if reason not in self.notes:
                self.notes.append(reason)
                self.progress.note(f"note: {reason}")
        return group

    def start_pool(self, size: int, queue: str) -> Workers:
        """`rq worker-pool -n size` on the bare chain's queue (stock CLI, forking workers)."""
        rq = Path(sys.executable).with_name("rq")
        argv = [str(rq), "worker-pool", "-n", str(size), "-u", self.url, "-S", "json", "-l", "WARNING", queue]
        proc = self.children.start("rq-worker-pool", argv, self.env())
        group = Workers("chain-pool", [proc], queue)
        self._await_workers(group, size)
        group.infos = [{"class": f"rq worker-pool -n {size} (rq.Worker)", "concurrency": str(size)}]
        return group

    def _await_workers(self, group: Workers, count: int) -> None:
        queue = Queue(group.queue, connection=self.monitor, serializer=JSONSerializer)
        wait_for(
            f"{count} {group.kind} worker(s) on {group.queue}",
            lambda: Worker.count(queue=queue) >= count,
            START_TIMEOUT,
            alive=lambda: self.children.check_alive(group.procs),
            interval=0.1,
        )
        time.sleep(0.3)  # registered happens just before the first BLPOP: let them get there

    def stop(self, group: Workers) -> None:
        """Stop a group (SIGTERM, then SIGKILL after a grace)."""
        self.children.stop(group.procs)

    def meter(self, group: Workers) -> Meter:
        """A meter over this group's processes (round trips if they count them)."""
        return Meter(self.monitor, self.monitor_tally, self.enqueue_tally, group.pids, group.pids)

    def alive(self, group: Workers) -> None:
        """Raise if a worker of the group died."""
        self.children.check_alive(group.procs)

    # -- web -----------------------------------------------------------------

    @property
    def web_sessions(self) -> set[int]:
        """The web's session (gunicorn's master and its workers), empty when it is not running."""
        return {self._web.pid} if self._web is not None and self._web.poll() is None else set()

    def alive_web(self) -> None:
        """Raise if the web died."""
        if self._web is not None:
            self.children.check_alive([self._web])

    def web(self, queue: str) -> int:
        """gunicorn as in the Procfile (2 workers x 4 threads) on a free port; started once per run."""
        if self._web is not None and self._web.poll() is None:
            return self.web_port
        self.web_port = free_port()
        argv = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{self.web_port}",
            "--workers", "2", "--threads", "4",
            "--no-control-socket", "wsgi:app",
        ]  # fmt: skip
        self._web = self.children.start("web", argv, self.env(QUEUE_NAME=queue))
        proc = self._web

        def answers() -> bool:
            import http.client

            conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=1)
            try:
                conn.request("GET", "/healthz")
                return conn.getresponse().status == 200
            except OSError:
                return False
            finally:
                conn.close()

        wait_for(
            "gunicorn", answers, START_TIMEOUT, alive=lambda: self.children.check_alive([proc]), interval=0.2
        )
        return self.web_port
