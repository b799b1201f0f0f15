"""Scenario 2, idle latency: one at a time, from the request to the last step recorded.

Three variants, interleaved sample by sample (rotating their order) so a noisy
neighbour hits all of them alike:
- POST /book to gunicorn (as in the Procfile) -> the booking saga `completed`
  (the real path: validation, rate limits, sandbox providers with their SQLite ledger);
- `engine.start` of the no-op bench saga in the bench process -> `completed` (the engine alone);
- baseline: enqueue the first link of a bare RQ chain -> its last job's XADD.
All three wake on a keyspace notification about a key their last transaction
writes (`bench.scenarios.waiting`): the saga's hash, the chain's done stream.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import statistics
import time
import uuid
from collections.abc import Callable

from bench.chain import NOOP_LINK, chain_queue, start_chain
from bench.context import Bench, Workers
from bench.measure import percentile
from bench.report import Figure, ScenarioResult, at_most_x
from bench.sagas import NOOP, bench_engine
from bench.scenarios.loads import booking_body
from bench.scenarios.waiting import Waiter

NAME = "latency"
TITLE = "2. idle latency, one saga at a time (2 workers)"
BOOKING_QUEUE = "bench-booking"
WARM = 5


def _post_book(conn: http.client.HTTPConnection, body: dict[str, object]) -> str:
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Idempotency-Key": str(body["call_id"])}
    conn.request("POST", "/book", body=payload, headers=headers)
    response = conn.getresponse()
    answer = response.read()
    if response.status != 202:
        raise RuntimeError(f"POST /book answered {response.status}: {answer[:300]!r}")
    return str(json.loads(answer)["id"])


def run(bench: Bench) -> ScenarioResult:
    """Sample each variant `latency_samples` times."""
    result = ScenarioResult(NAME, TITLE)
    samples = bench.options.sizes.latency_samples
    worker = bench.options.saga_worker
    bench.flush()
    bench.progress.update("starting web and workers", 0.0, force=True)
    port = bench.web(BOOKING_QUEUE)
    groups: list[Workers] = []
    try:
        groups.append(bench.start_workers("booking", 2, queue=BOOKING_QUEUE, worker=worker))
        groups.append(bench.start_workers("noop", 2, queue="bench-lat", worker=worker))
        groups.append(bench.start_workers("chain", 2, queue="bench-lat-chain", worker=worker))
        engine = bench_engine(bench.enqueuer, "bench-lat")
        queue = chain_queue(bench.enqueuer, "bench-lat-chain")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with Waiter(bench.monitor) as waiter, contextlib.closing(connection) as conn:
            run_id = uuid.uuid4().hex[:6]
            statuses: dict[str, int] = {}

            answered: list[float] = []

            def booking(i: int) -> None:
                began = time.perf_counter()
                saga_id = _post_book(conn, booking_body(i, run_id))
                answered.append(time.perf_counter() - began)
                status = waiter.saga(saga_id)
                statuses[status] = statuses.get(status, 0) + 1

            def noop(i: int) -> None:
                saga_id = engine.start(NOOP, {}).saga_id
                waiter.saga(saga_id)

            def chain(i: int) -> None:
                token = f"{run_id}{i}"
                start_chain(queue, NOOP_LINK, token)
                waiter.chain(token)

            variants: list[tuple[str, Callable[[int], None]]] = [
                ("booking", booking),
                ("noop", noop),
                ("chain", chain),
            ]
            times: dict[str, list[float]] = {name: [] for name, _ in variants}
            total = WARM + samples
            for i in range(total):
                order = variants[i % 3 :] + variants[: i % 3]
                for name, sample in order:
                    began = time.perf_counter()
                    sample(i)
                    if i >= WARM:
                        times[name].append(time.perf_counter() - began)
                if i % 5 == 0:
                    for group in groups:
                        bench.alive(group)
                    bench.progress.update(f"sample {i + 1}/{total}", (i + 1) / total)
    finally:
        for group in groups:
            bench.stop(group)

    def ms(name: str, pct: float) -> float:
        return percentile(times[name], pct) * 1000

    base = "bare RQ chain"
    result.figures += [
        Figure(
            NAME, "POST /book -> completed, p50", ms("booking", 50), "ms", ms("chain", 50), base, at_most_x(2)
        ),
        Figure(NAME, "POST /book -> completed, p99", ms("booking", 99), "ms", ms("chain", 99), base),
        Figure(
            NAME,
            "engine.start -> completed (no-op saga), p50",
            ms("noop", 50),
            "ms",
            ms("chain", 50),
            base,
            at_most_x(2),
        ),
        Figure(
            NAME, "engine.start -> completed (no-op saga), p99", ms("noop", 99), "ms", ms("chain", 99), base
        ),
    ]
    result.details = {
        "samples": samples,
        "worker_classes": {g.kind: g.worker_class for g in groups},
        "booking_final_statuses": statuses,
        "post_book_answered_p50_ms": round(percentile(answered[WARM:], 50) * 1000, 2),
        "post_book_answered_p99_ms": round(percentile(answered[WARM:], 99) * 1000, 2),
        **{
            name: {
                "p50_ms": round(ms(name, 50), 2),
                "p90_ms": round(ms(name, 90), 2),
                "p99_ms": round(ms(name, 99), 2),
                "mean_ms": round(statistics.fmean(values) * 1000, 2),
                "min_ms": round(min(values) * 1000, 2),
                "max_ms": round(max(values) * 1000, 2),
            }
            for name, values in times.items()
        },
    }
    answer_ms = percentile(answered[WARM:], 50) * 1000
    result.notes.append(f"of POST /book -> completed, the 202 answer took {answer_ms:.1f} ms (p50)")
    if set(statuses) - {"completed"}:
        result.notes.append(f"some bookings did not complete: {statuses}")
    if samples < 100:
        result.notes.append(f"p99 of {samples} samples is close to the maximum: read it as a rough figure")
    return result
