"""Scenario 4, intake: POST /book through gunicorn (Procfile: 2 workers x 4 threads), no saga workers.

The load generator (`bench.loadgen`) runs in the bench process on the same
cores. Baseline: GET /healthz (Flask + one Redis PING) through the same server
with the same load, which is about the most any endpoint could do here.
- closed loop, `--intake-concurrency` connections: saturation requests/s and p99;
- open loop at `--intake-rate` requests/s (the target's 500): p99 counted from
  each request's scheduled time.
No saga workers run, so every booking stays queued; the database is emptied after.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from bench.context import Bench
from bench.loadgen import LoadResult, Tick, closed_loop, get_request, open_loop, post_json
from bench.measure import CLOCK_TICKS, percentile, redis_counters, session_members
from bench.report import Figure, ScenarioResult, at_least, at_most
from bench.scenarios.common import ticker
from bench.scenarios.latency import BOOKING_QUEUE
from bench.scenarios.loads import BOOKING

NAME = "intake"
TITLE = "4. intake, POST /book through gunicorn (2 workers x 4 threads)"
HOST = "127.0.0.1"


def _booking_requests(port: int) -> Any:
    run = uuid.uuid4().hex[:6]
    template = json.dumps(BOOKING).replace('"CA0"', '"CA%s"').replace('"bench-0"', '"bench-%s"')

    def make(index: int) -> bytes:
        key = f"{run}-{index}"
        body = (template % (key, key)).encode()
        return post_json(HOST, port, "/book", body, {"Idempotency-Key": key})

    return make


def _per_process_cpu(sessions: set[int]) -> dict[int, float]:
    """CPU seconds of each gunicorn process (master and workers)."""
    return {s.pid: s.cpu_ticks / CLOCK_TICKS for s in session_members(sessions)}


def _p(result: LoadResult, pct: float) -> float | None:
    return percentile(result.latencies, pct) * 1000 if result.latencies else None


def _summary(result: LoadResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "failed": result.failed,
        "statuses": dict(result.statuses),
        "seconds": round(result.duration, 2),
        "rate_per_s": round(result.rate, 1),
        "p50_ms": _p(result, 50),
        "p99_ms": _p(result, 99),
        "generator_cpu_share_of_a_core": round(result.generator_cpu / max(result.duration, 1e-9), 2),
        "errors": result.errors,
    }


def run(bench: Bench) -> ScenarioResult:
    """Four load runs against one gunicorn."""
    result = ScenarioResult(NAME, TITLE)
    sizes, options = bench.options.sizes, bench.options
    bench.flush()
    bench.progress.update("starting gunicorn", 0.0, force=True)
    port = bench.web(BOOKING_QUEUE)
    web_sessions = bench.web_sessions
    health = get_request(HOST, port, "/healthz")
    concurrency, rate = options.intake_concurrency, options.intake_rate
    cpu: dict[str, float] = {}
    per_process: dict[str, list[float]] = {}
    redis_cpu: dict[str, float] = {}

    def closed(make: Any, label: str, part: int) -> LoadResult:
        tick: Tick = ticker(bench.progress, label, part, 4)
        before = _per_process_cpu(web_sessions)
        redis_before = redis_counters(bench.monitor).cpu
        measured = closed_loop(
            HOST,
            port,
            make,
            concurrency=concurrency,
            duration=sizes.intake_window,
            warmup=sizes.intake_warmup,
            tick=tick,
        )
        seconds = sizes.intake_window + sizes.intake_warmup
        after = _per_process_cpu(web_sessions)
        split = sorted(((after[p] - before.get(p, 0.0)) / seconds for p in after), reverse=True)
        per_process[label] = [round(c, 2) for c in split]
        cpu[label] = sum(split)
        redis_cpu[label] = (redis_counters(bench.monitor).cpu - redis_before) / seconds
        return measured

    try:
        # Each run its own Idempotency-Keys: a key seen before would be answered as a replay (200).
        book_closed = closed(_booking_requests(port), "POST /book, closed loop", 0)
        health_closed = closed(lambda i: health, "GET /healthz, closed loop", 1)
        book_open = open_loop(
            HOST,
            port,
            _booking_requests(port),
            rate=rate,
            duration=sizes.intake_window,
            tick=ticker(bench.progress, f"POST /book at {rate:g}/s", 2, 4),
        )
        health_open = open_loop(
            HOST,
            port,
            lambda i: health,
            rate=rate,
            duration=sizes.intake_window,
            tick=ticker(bench.progress, f"GET /healthz at {rate:g}/s", 3, 4),
        )
        bench.alive_web()
    finally:
        bench.flush()

    base = "GET /healthz"
    result.figures += [
        Figure(
            NAME,
            f"requests/s, closed loop ({concurrency} connections)",
            book_closed.rate,
            "req/s",
            health_closed.rate,
            base,
            at_least(500, "req/s"),
        ),
        Figure(NAME, "p99, closed loop", _p(book_closed, 99), "ms", _p(health_closed, 99), base),
        Figure(
            NAME,
            f"p99 at {rate:g} req/s offered (open loop)",
            _p(book_open, 99),
            "ms",
            _p(health_open, 99),
            base,
            at_most(100, "ms"),
        ),
        Figure(NAME, f"answered req/s at {rate:g} offered", book_open.rate, "req/s", health_open.rate, base),
    ]
    result.details = {
        "concurrency": concurrency,
        "offered_rate": rate,
        "post_book_closed": _summary(book_closed),
        "healthz_closed": _summary(health_closed),
        "post_book_open": _summary(book_open),
        "healthz_open": _summary(health_open),
        "gunicorn_cpu_cores_used": {k: round(v, 2) for k, v in cpu.items()},
        "redis_cpu_cores_used": {k: round(v, 2) for k, v in redis_cpu.items()},
        "gunicorn_cores_per_process": per_process,
    }
    gen = book_closed.generator_cpu / max(book_closed.duration, 1e-9)
    result.notes.append(
        f"the load generator shares the 2 cores: it used {gen:.0%} of one core "
        "during the POST /book closed loop "
        f"(gunicorn used {cpu.get('POST /book, closed loop', 0):.2f} cores, "
        f"Redis {redis_cpu.get('POST /book, closed loop', 0):.2f})"
    )
    busiest = per_process.get("POST /book, closed loop", [])
    if len(busiest) >= 2 and busiest[0] > 2 * max(busiest[1], 0.01):
        result.notes.append(
            f"gunicorn's processes were unevenly loaded ({busiest} cores): keep-alive connections stay with "
            "the worker process that accepted them"
        )
    for label, res in (("POST /book closed", book_closed), ("POST /book open", book_open)):
        if set(res.statuses) - {202}:
            result.notes.append(f"{label}: answers other than 202 Accepted: {dict(res.statuses)}")
        if res.failed:
            result.notes.append(
                f"{label}: {res.failed} failed requests {dict(res.statuses)} {res.errors[:2]}"
            )
    return result
