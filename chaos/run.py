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
from chaos.observe import observe, unanswered_sagas
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
    "RETRY_INITIAL_DELAY_SECONDS": "0.2",
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
    """The whole run; 0 when no invariant was violated, 1 otherwise."""
    workdir = prepare_workdir(opts.workdir)
    ledger_path = workdir / "ledger.sqlite3"
    settings = {**PROCESS_SETTINGS, "SANDBOX_LEDGER": str(ledger_path), "SANDBOX_FAULTS": opts.faults}
    load_settings(settings)  # ConfigError now rather than five processes exiting 2
    bookings, pool = generate(opts.sagas, opts.seed, uuid.uuid4().hex[:8])
    summary = Summary(opts.sagas, opts.seed, opts.workers, opts.faults, str(workdir))
    procs.become_subreaper()
    cluster = Cluster(workdir, settings, opts.workers)
    supervisor = Supervisor(cluster, random.Random(opts.seed), opts.kill_every)
    stop = threading.Event()
    watcher: Watcher | None = None
    progress: Progress | None = None
    began = time.monotonic()
    try:
        out.write(f"chaos: workdir {workdir}; starting redis, web, {opts.workers} workers, scheduler\n")
        out.flush()
        cluster.start()
        watcher = Watcher(cluster.redis.url)
        restart_after = (
            max(1, math.ceil(opts.redis_restart_at * opts.sagas)) if opts.redis_restart_at else None
        )
        tally = Tally(watcher, supervisor, restart_after)

        def line(counts: Counter[str]) -> str:
            settled = sum(counts[s] for s in FINISHED)
            by_status = ", ".join(f"{s} {n}" for s, n in sorted(counts.items()) if n)
            redis = (
                "done" if supervisor.redis_done.is_set() else "due" if supervisor.redis_due.is_set() else "-"
            )
            return (
                f"[{time.monotonic() - began:6.1f}s] submitted {len(tally.keys)}/{opts.sagas}"
                f"  settled {settled}/{sum(counts.values())} ({by_status})"
                f"  kills {cluster.stats.kills}  restarts {sum(cluster.stats.restarts.values())}"
                f"  redis restart {redis}"
            )

        progress = Progress(watcher, line, out)
        supervisor.start()
        progress.start()
        submitter = Submitter(
            cluster.base_url, threads=opts.threads, stop=stop, patience=opts.patience, on_answer=tally
        )
        answers = submitter.run(bookings)
        summary.load_seconds = time.monotonic() - began
        if supervisor.redis_due.is_set():
            supervisor.redis_done.wait(90)  # the restart may still be under way
        answered = {a.booking.key for a in answers if a.saga_id is not None}
        silent = [b for b in bookings if b.key not in answered]
        redis = Redis.from_url(cluster.redis.url)
        late = unanswered_sagas(redis, silent)
        redis.close()
        for saga_id in late.values():
            watcher.add(saga_id)
        progress.submitted.set()
        deadline = time.monotonic() + opts.deadline
        while not progress.settled.wait(1.0) and time.monotonic() < deadline:
            if supervisor.error is not None:
                raise RuntimeError(f"supervisor failed: {supervisor.error!r}") from supervisor.error
        summary.settled_in_time = progress.settled.is_set()
        supervisor.stop_kills.set()
        supervisor.stop()
        progress.stop()
        cluster.quiesce()

        sagas: dict[str, Slot] = {}
        for answer in answers:
            if answer.saga_id is not None:
                sagas.setdefault(answer.saga_id, answer.booking.slot)
        by_key = {b.key: b for b in bookings}
        for key, saga_id in late.items():
            sagas.setdefault(saga_id, by_key[key].slot)
        observation, records = observe(cluster.redis.url, ledger_path, sagas, pool, answers)
        summary.submitted = len(answered)
        summary.unacknowledged = len(late)
        summary.unanswered = sorted(b.key for b in silent if b.key not in late)
        summary.rejected = [f"{a.booking.key}: {a.error}" for a in answers if a.status and a.status < 500
                            and a.saga_id is None]  # fmt: skip
        summary.duplicates = sum(1 for b in bookings if b.twice)
        summary.retried_posts = sum(1 for a in answers if a.tries > 1 and a.saga_id is not None)
        summary.outcomes = dict(Counter(s.status or "lost" for s in observation.sagas))
        summary.failed = {s.id: s.error or "" for s in observation.sagas if s.status == "failed"}
        summary.violations = check_all(observation)
        summary.kills = cluster.stats.kills
        summary.restarts = dict(cluster.stats.restarts)
        summary.exits = list(cluster.stats.exits)
        summary.redis_restarts = cluster.stats.redis_restarts
        summary.redis_downtime = cluster.stats.redis_downtime
        summary.redis_restarted_after = supervisor.redis_restarted_after
        summary.duration = time.monotonic() - began
        summary.logs = [str(p) for p in cluster.log_paths]
        write_json(workdir / "report.json", summary, records, observation.ledger)
        out.write("\n" + render(summary) + f"\n\nreport: {workdir / 'report.json'}\n")
        out.flush()
        return 0 if summary.ok else 1
    finally:
        stop.set()
        supervisor.stop()
        if progress is not None and progress.is_alive():
            progress.stopped.set()
            progress.join(timeout=30)
        cluster.close()
        if watcher is not None:
            watcher.close()
