"""One chaos run from start to verdict: start, load, crash, settle, check, report, clean up.

Why one function owns the whole run: everything it starts is stopped in its
`finally`, whatever happened (violations, an exception, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import math
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from redis import Redis

from chaos import procs
from chaos.cluster import Cluster
from chaos.invariants import FINISHED, Slot, check_all
from chaos.load import Answer, Submitter, generate
from chaos.monitor import Progress, Supervisor, Watcher
from chaos.observe import liveness_clues, observe, unanswered_sagas
from chaos.report import Summary, render, write_json
from config.settings import load_settings

DEFAULT_FAULTS = (
    "book_slot=crash:1@3%,charge_card=flaky:2@10%,send_sms=hang:1@4%,sync_calendar=fail@8%,"
    "release_slot=flaky:1@10%,refund_card=flaky:1@15%,send_apology=crash:1@10%,delete_event=flaky:1@10%"
)
# Every process gets these (config/settings.py): short timeouts so recovery is seen within a run.
PROCESS_SETTINGS = {
    "APP_ENV": "test",
    "LOG_LEVEL": "WARNING",
    "STEP_TIMEOUT_SECONDS": "2",
    "STEP_MAX_ATTEMPTS": "4",
    "RETRY_MAX_DELAY_SECONDS": "1",
    "STALL_GRACE_SECONDS": "2",
    "RQ_TIMEOUT_GRACE_SECONDS": "1",
    "RECONCILE_INTERVAL_SECONDS": "1",
    "SCHEDULER_INTERVAL_SECONDS": "1",
    "SHUTDOWN_GRACE_SECONDS": "1",
    # One caller books hundreds of viewings in seconds, and the invalid test number recurs:
    # the API's rate limits (a defence against abuse) would only turn the load away.
    "RATE_LIMIT_PER_CALLER": "1000000/minute",
    "RATE_LIMIT_PER_PHONE": "1000000/minute",
}
OWN_FILES = ("redis", "logs", "ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm", "report.json")


@dataclass(frozen=True)
class Options:
    """What `python -m chaos` was asked for (see its --help)."""

    sagas: int = 500
    seed: int = 1
    workers: int = 3
    threads: int = 8
    kill_every: float = 2.0
    deadline: float = 300.0
    redis_restart_at: float = 0.4
    faults: str = DEFAULT_FAULTS
    workdir: Path | None = None
    patience: float = 60.0
    retry_delay: float = 0.2  # RETRY_INITIAL_DELAY_SECONDS; 0 retries at once, without RQ's scheduler
    worker_class: str | None = None  # WORKER_CLASS (threaded, forking); None: the system's default


def prepare_workdir(path: Path | None) -> Path:
    """A fresh temp dir, or `path` with what an earlier run left removed (a stale AOF would replay)."""
    if path is None:
        return Path(tempfile.mkdtemp(prefix="saga-chaos-"))
    path = path.absolute()
    path.mkdir(parents=True, exist_ok=True)
    for name in OWN_FILES:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return path


class Tally:
    """Answers as they arrive: ids for the watcher, and the trigger of the Redis restart."""

    def __init__(self, watcher: Watcher, supervisor: Supervisor, restart_after: int | None) -> None:
        self.watcher = watcher
        self.supervisor = supervisor
        self.restart_after = restart_after
        self.keys: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, answer: Answer) -> None:
        """Called from the submitting threads for every final answer."""
        if answer.saga_id is None:
            return
        self.watcher.add(answer.saga_id)
        with self._lock:
            self.keys.add(answer.booking.key)
            due = self.restart_after is not None and len(self.keys) >= self.restart_after
            if due and not self.supervisor.redis_due.is_set():
                self.supervisor.redis_restarted_after = len(self.keys)
                self.supervisor.redis_due.set()


def run(opts: Options, out: TextIO = sys.stdout) -> int:
    """The whole run; 0 when no invariant was violated, 1 otherwise. Stops everything it started."""
    workdir = prepare_workdir(opts.workdir)
    ledger_path = workdir / "ledger.sqlite3"
    settings = {
        **PROCESS_SETTINGS,
        "SANDBOX_LEDGER": str(ledger_path),
        "SANDBOX_FAULTS": opts.faults,
        "RETRY_INITIAL_DELAY_SECONDS": f"{opts.retry_delay:g}",
        **({"WORKER_CLASS": opts.worker_class} if opts.worker_class else {}),
    }
    load_settings(settings)  # ConfigError now rather than five processes exiting 2
    procs.become_subreaper()
    chaos = ChaosRun(opts, workdir, Cluster(workdir, settings, opts.workers), out)
    try:
        return chaos.execute()
    finally:
        chaos.close()


class ChaosRun:
    """The phases of one run, sharing the cluster, the threads and the summary."""

    def __init__(self, opts: Options, workdir: Path, cluster: Cluster, out: TextIO) -> None:
        self.opts = opts
        self.workdir = workdir
        self.cluster = cluster
        self.out = out
        self.bookings, self.pool = generate(opts.sagas, opts.seed, uuid.uuid4().hex[:8])
        self.summary = Summary(
            opts.sagas, opts.seed, opts.workers, opts.faults, str(workdir), cluster.settings
        )
        self.supervisor = Supervisor(cluster, random.Random(opts.seed), opts.kill_every)
        self.stop = threading.Event()
        self.watcher: Watcher | None = None
        self.progress: Progress | None = None
        self.tally: Tally | None = None
        self.began = time.monotonic()

    def execute(self) -> int:
        """Start, submit under fire, settle, judge."""
        opts, cluster = self.opts, self.cluster
        self.out.write(
            f"chaos: workdir {self.workdir}; starting redis, web, {opts.workers} workers, scheduler\n"
        )
        self.out.flush()
        cluster.start()
        self.watcher = Watcher(cluster.redis.url)
        restart_after = math.ceil(opts.redis_restart_at * opts.sagas) if opts.redis_restart_at else None
        self.tally = Tally(self.watcher, self.supervisor, max(1, restart_after) if restart_after else None)
        self.progress = Progress(self.watcher, self.line, self.out)
        self.supervisor.start()
        self.progress.start()
        answers, late = self.submit()
        self.settle()
        return self.verdict(answers, late)

    def line(self, counts: Counter[str]) -> str:
        """The progress line."""
        settled = sum(counts[s] for s in FINISHED)
        by_status = ", ".join(f"{s} {n}" for s, n in sorted(counts.items()) if n)
        sup, stats = self.supervisor, self.cluster.stats
        redis = "done" if sup.redis_done.is_set() else "due" if sup.redis_due.is_set() else "-"
        submitted = len(self.tally.keys) if self.tally else 0
        return (
            f"[{time.monotonic() - self.began:6.1f}s] submitted {submitted}/{self.opts.sagas}"
            f"  settled {settled}/{sum(counts.values())} ({by_status})"
            f"  kills {stats.kills}  restarts {sum(stats.restarts.values())}  redis restart {redis}"
        )

    def submit(self) -> tuple[list[Answer], dict[str, str]]:
        """Post every booking; returns the answers and the sagas started whose answer was lost."""
        assert self.tally is not None and self.watcher is not None and self.progress is not None
        submitter = Submitter(
            self.cluster.base_url,
            threads=self.opts.threads,
            stop=self.stop,
            patience=self.opts.patience,
            on_answer=self.tally,
        )
        answers = submitter.run(self.bookings)
        self.summary.load_seconds = time.monotonic() - self.began
        if self.supervisor.redis_due.is_set():
            self.supervisor.redis_done.wait(90)  # the restart may still be under way
        answered = {a.booking.key for a in answers if a.saga_id is not None}
        redis = Redis.from_url(self.cluster.redis.url)
        try:
            late = unanswered_sagas(redis, [b for b in self.bookings if b.key not in answered])
        finally:
            redis.close()
        for saga_id in late.values():
            self.watcher.add(saga_id)
        self.progress.submitted.set()
        return answers, late

    def settle(self) -> None:
        """Keep the chaos going until every saga settled or the deadline passed, then quiesce."""
        assert self.progress is not None
        deadline = time.monotonic() + self.opts.deadline
        while not self.progress.settled.wait(1.0) and time.monotonic() < deadline:
            if self.supervisor.error is not None:
                error = self.supervisor.error
                raise RuntimeError(f"supervisor failed: {error!r}") from error
        self.summary.settled_in_time = self.progress.settled.is_set()
        self.summary.longest_stall = self.progress.longest_stall
        watched = self.progress.watcher.locks.items()
        self.summary.untouched_locks = {name: watch.longest_ms / 1000 for name, watch in watched}
        if not self.summary.settled_in_time:  # before the workers stop: the state they left
            self.summary.clues = liveness_clues(self.cluster.redis.url)
        self.supervisor.stop_kills.set()
        self.supervisor.stop()
        self.progress.stop()
        self.cluster.quiesce()

    def verdict(self, answers: list[Answer], late: dict[str, str]) -> int:
        """Observe, check, report; 0 only when nothing was violated."""
        s, cluster = self.summary, self.cluster
        sagas: dict[str, Slot] = {}
        for answer in answers:
            if answer.saga_id is not None:
                sagas.setdefault(answer.saga_id, answer.booking.slot)
        by_key = {b.key: b for b in self.bookings}
        for key, saga_id in late.items():
            sagas.setdefault(saga_id, by_key[key].slot)
        ledger_path = Path(cluster.settings["SANDBOX_LEDGER"])
        observation, records = observe(cluster.redis.url, ledger_path, sagas, self.pool, answers)
        answered = {a.booking.key for a in answers if a.saga_id is not None}
        s.submitted = len(answered)
        s.unacknowledged = len(late)
        s.unanswered = sorted(b.key for b in self.bookings if b.key not in answered and b.key not in late)
        s.rejected = [f"{a.booking.key}: {a.error}" for a in answers if a.status and not a.saga_id]
        s.duplicates = sum(1 for b in self.bookings if b.twice)
        s.retried_posts = sum(1 for a in answers if a.tries > 1 and a.saga_id is not None)
        s.outcomes = dict(Counter(saga.status or "lost" for saga in observation.sagas))
        s.failed = {saga.id: saga.error or "" for saga in observation.sagas if saga.status == "failed"}
        s.violations = check_all(observation)
        s.kills, s.busy_kills = cluster.stats.kills, cluster.stats.busy_kills
        s.restarts, s.exits = dict(cluster.stats.restarts), list(cluster.stats.exits)
        s.redis_restarts, s.redis_downtime = cluster.stats.redis_restarts, cluster.stats.redis_downtime
        s.redis_restarted_after = self.supervisor.redis_restarted_after
        s.duration = time.monotonic() - self.began
        s.logs = [str(p) for p in cluster.log_paths]
        write_json(self.workdir / "report.json", s, records, observation.ledger)
        self.out.write("\n" + render(s) + f"\n\nreport: {self.workdir / 'report.json'}\n")
        self.out.flush()
        return 0 if s.ok else 1

    def close(self) -> None:
        """Stop every thread and process, whatever state the run is in."""
        self.stop.set()
        self.supervisor.stop()
        if self.progress is not None and self.progress.is_alive():
            self.progress.stopped.set()
            self.progress.join(timeout=30)
        self.cluster.close()
        if self.watcher is not None:
            self.watcher.close()
