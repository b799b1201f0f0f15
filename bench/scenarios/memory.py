"""Scenario 5, Redis memory per finished saga, and proof that retention bounds it.

Part A: M booking sagas (the real saga, sandbox providers, 2 workers) started
with `engine.start`, run to `completed`; MEMORY USAGE (SAMPLES 0: exact) over
`saga.keys.all_of_saga` for each. Beside it: the RQ job data each saga leaves
(job hashes and results, kept `result_ttl`), and the bare chain's RQ job data
per chain as the baseline.
Part B: the same with SAGA_RETENTION_DAYS=0.00002 (1 s) in the workers'
environment: right after the sagas finish their keys exist with a TTL of at most
1 s; shortly after none is left.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

from redis import Redis

from bench.chain import NOOP_LINK
from bench.context import Bench
from bench.drive import Load, warm
from bench.measure import memory_usage
from bench.report import Figure, ScenarioResult, at_most
from bench.scenarios.common import failed_jobs
from bench.scenarios.loads import booking_body, chain_load
from config import load_settings
from jobs.booking import NAME as BOOKING
from jobs.runtime import build_engine
from saga import SagaEngine, keys

NAME = "memory"
TITLE = "5. Redis memory per finished saga, and retention"
QUEUE = "bench-mem"
CAP = 16
TINY_RETENTION_DAYS = "0.00002"  # 1.728 s -> 1 s: retention is whole seconds


def _engine(bench: Bench) -> SagaEngine:
    ledger = bench.workdir / "ledger.sqlite3"
    settings = load_settings({}, redis_url=bench.url, queue_name=QUEUE, app_env="test", sandbox_ledger=ledger)
    return build_engine(settings, bench.enqueuer)


def _booking_load(bench: Bench, engine: SagaEngine, ids: list[str]) -> Load:
    # The body is already what POST /book stores (BookingRequest's JSON dump of it is equal:
    # tests/test_bench.py checks), so the saga data is the same size as through the web.
    run = uuid.uuid4().hex[:6]

    def start() -> None:
        body = booking_body(len(ids), run)
        ids.append(engine.start(BOOKING, body, reference=body["call_id"]).saga_id)

    return Load("booking sagas", start, lambda: int(bench.monitor.zcard(keys.ACTIVE)))


def _rq_job_bytes(redis: Redis) -> tuple[int, int]:
    """(bytes, keys) of every RQ job hash and result stream in the database."""
    patterns = ("rq:job:*", "rq:results:*")
    return memory_usage(redis, [k for p in patterns for k in redis.scan_iter(match=p, count=1000)])


def _saga_keys(engine: SagaEngine, saga_id: str) -> list[str]:
    return keys.all_of_saga(saga_id, [s.name for s in engine.definition(BOOKING).steps])


def _bytes_by_kind(redis: Redis, engine: SagaEngine, ids: list[str]) -> dict[str, float]:
    """Mean MEMORY USAGE per saga of each of its keys, by key pattern (`:step:*` together)."""
    totals: dict[str, float] = {}
    for saga_id in ids:
        names = _saga_keys(engine, saga_id)
        sizes = [s or 0 for s in _pipelined_memory(redis, names)]
        for name, size in zip(names, sizes, strict=True):
            kind = name.replace(saga_id, "{id}")
            kind = kind.split(":step:")[0] + ":step:*" if ":step:" in kind else kind
            totals[kind] = totals.get(kind, 0.0) + size / len(ids)
    return totals


def _pipelined_memory(redis: Redis, names: list[str]) -> list[int | None]:
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name, samples=0)
        return cast(list[int | None], pipe.execute())


def _statuses(redis: Redis, ids: list[str]) -> dict[str, int]:
    with redis.pipeline(transaction=False) as pipe:
        for saga_id in ids:
            pipe.hget(keys.saga(saga_id), "status")
        found = cast(list[bytes | None], pipe.execute())
    counts: dict[str, int] = {}
    for status in found:
        name = status.decode() if status else "gone"
        counts[name] = counts.get(name, 0) + 1
    return counts


def run(bench: Bench) -> ScenarioResult:
    """Part A (memory, baseline), then part B (retention)."""
    result = ScenarioResult(NAME, TITLE)
    sizes, worker = bench.options.sizes, bench.options.saga_worker
    count, few = sizes.memory_sagas, sizes.retention_sagas
    details: dict[str, Any] = {}
    engine = _engine(bench)

    # A: memory with the default retention.
    bench.flush()
    bench.progress.update("booking sagas", 0.0, force=True)
    group = bench.start_workers("booking", 2, queue=QUEUE, worker=worker)
    ids: list[str] = []
    try:
        memory_before = int(bench.monitor.info("memory")["used_memory"])
        warm(_booking_load(bench, engine, ids), count, CAP, bench.deadline(60 + count))
        memory_after = int(bench.monitor.info("memory")["used_memory"])
        details["statuses"] = _statuses(bench.monitor, ids)
        details["failed_jobs"] = failed_jobs(bench.monitor, QUEUE)
    finally:
        bench.stop(group)
    sizes_per_saga = [memory_usage(bench.monitor, _saga_keys(engine, i))[0] for i in ids]
    # Its entries in the shared indexes (by status, by call id) count too, spread evenly.
    index_keys = [k for p in keys.INDEX_PATTERNS for k in bench.monitor.scan_iter(match=p, count=1000)]
    index_bytes = memory_usage(bench.monitor, index_keys)[0] / len(ids)
    saga_bytes = sum(sizes_per_saga) / len(ids) + index_bytes
    by_kind = _bytes_by_kind(bench.monitor, engine, ids)
    by_kind["indexes (status, call id)"] = index_bytes
    ttl = int(bench.monitor.ttl(keys.saga(ids[0])))
    rq_bytes, rq_keys = _rq_job_bytes(bench.monitor)
    slot_bytes, _ = memory_usage(bench.monitor, bench.monitor.scan_iter(match="sr:slot:*", count=1000))
    details.update(
        sagas=count,
        saga_keys_bytes={"mean": round(saga_bytes), "min": min(sizes_per_saga), "max": max(sizes_per_saga)},
        saga_keys_bytes_by_kind={k: round(v) for k, v in by_kind.items()},
        saga_key_ttl_s=ttl,
        rq_job_bytes_per_saga=round(rq_bytes / count),
        rq_job_keys_per_saga=round(rq_keys / count, 2),
        slot_bytes_per_saga=round(slot_bytes / count),
        used_memory_delta_per_saga=round((memory_after - memory_before) / count),
    )

    # Baseline: the bare chain's RQ job data per chain.
    bench.flush()
    bench.progress.update("bare chains", 0.4, force=True)
    chains = bench.start_workers("chain", 2, queue="bench-mem-chain", worker=worker)
    try:
        load = chain_load(NOOP_LINK, "bench-mem-chain", bench.enqueuer, bench.monitor)
        warm(load, count, CAP, bench.deadline(60 + count))
    finally:
        bench.stop(chains)
    chain_bytes, chain_keys = _rq_job_bytes(bench.monitor)
    details.update(
        chain_rq_job_bytes_per_chain=round(chain_bytes / count),
        chain_rq_job_keys_per_chain=chain_keys / count,
    )

    # B: retention.
    bench.flush()
    bench.progress.update("retention", 0.6, force=True)
    group = bench.start_workers(
        "booking", 2, queue=QUEUE, worker=worker, SAGA_RETENTION_DAYS=TINY_RETENTION_DAYS
    )
    short: list[str] = []
    try:
        warm(_booking_load(bench, engine, short), few, CAP, bench.deadline(60 + few))
        finished_at = time.monotonic()
        all_keys = [k for i in short for k in _saga_keys(engine, i)]
        with bench.monitor.pipeline(transaction=False) as pipe:
            for key in all_keys:
                pipe.pttl(key)
            ttls = [int(t) for t in pipe.execute()]
    finally:
        bench.stop(group)
    present_after_finish = sum(1 for t in ttls if t != -2)
    without_ttl = sum(1 for t in ttls if t == -1)
    deadline = finished_at + 15
    left = present_after_finish
    while time.monotonic() < deadline:
        left = int(bench.monitor.exists(*all_keys))
        if left == 0:
            break
        time.sleep(0.1)
    gone_after = time.monotonic() - finished_at
    details["retention"] = {
        "SAGA_RETENTION_DAYS": TINY_RETENTION_DAYS,
        "sagas": few,
        "keys": len(all_keys),
        "present_right_after_finish": present_after_finish,
        "without_ttl": without_ttl,
        "max_pttl_ms": max(ttls),
        "left_at_end": left,
        "all_gone_after_s": round(gone_after, 2) if left == 0 else None,
        "statuses": _statuses(bench.monitor, short) if left else {"gone": few},
    }
    bench.flush()

    result.figures += [
        Figure(
            NAME,
            "saga keys + index entries per finished saga",
            saga_bytes,
            "B",
            chain_bytes / count,
            "bare chain's RQ job data",
            at_most(4096, "B"),
            digits=0,
        ),
        Figure(
            NAME,
            "RQ job data per saga (kept result_ttl = 1 h)",
            rq_bytes / count,
            "B",
            chain_bytes / count,
            "bare chain's (result_ttl 500 s)",
            digits=0,
        ),
        Figure(
            NAME,
            f"saga keys left after retention ({TINY_RETENTION_DAYS} days)",
            float(left),
            "keys",
            float(present_after_finish),
            "present right after finishing",
            at_most(0, "keys"),
            digits=0,
        ),
    ]
    result.details = details
    if details["statuses"] != {"completed": count}:
        result.notes.append(f"booking sagas did not all complete: {details['statuses']}")
    if without_ttl:
        result.notes.append(f"{without_ttl} saga keys had no TTL after finishing")
    parts = ", ".join(f"{kind} {size:.0f} B" for kind, size in by_kind.items())
    result.notes.append(
        f"per saga, by key: {parts} (a Redis 6.2 stream costs >= 4 KB: its node preallocates)"
    )
    result.notes.append(
        f"default retention: saga keys expire after {ttl / 86400:.0f} days; "
        f"per booking also a slot key ({round(slot_bytes / count)} B, until a day after the viewing) "
        f"and, through the web, an Idempotency-Key hash (72 h)"
    )
    return result
