"""Reading the verdict's inputs: saga records from Redis, the sandbox ledger, the slot store.

Why apart from `invariants`: this is the only part that talks to Redis and SQLite,
so the rules themselves stay pure and testable without processes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from redis import Redis
from redis.exceptions import RedisError

from chaos.invariants import Observation, SagaOutcome, Slot
from chaos.load import Answer, Booking
from jobs.providers.sandbox import SandboxLedger, live_events
from jobs.slots import SlotStore
from saga import SagaEngine, SagaNotFound, keys


def unanswered_sagas(redis: Redis, bookings: Iterable[Booking]) -> dict[str, str]:
    """Idempotency-Key -> saga id for bookings the API never answered but did start.

    A POST can commit and lose its answer (Redis went away mid-request); the saga then
    runs and acts in the outside world, so it is checked like any other.
    """
    found = {}
    for booking in bookings:
        key = keys.idempotency(booking.key)
        kind = cast(bytes, redis.type(key))
        if kind == b"hash":  # saga id and request fingerprint
            raw = cast(bytes | None, redis.hget(key, "saga"))
        elif kind == b"string":  # the saga id alone (older layout)
            raw = cast(bytes | None, redis.get(key))
        else:
            continue
        if raw is not None:
            found[booking.key] = raw.decode()
    return found


def observe(
    redis_url: str,
    ledger_path: Path,
    sagas: Mapping[str, Slot],
    pool: Sequence[Slot],
    answers: Sequence[Answer],
) -> tuple[Observation, dict[str, dict[str, Any]]]:
    """The observation, plus each saga's record (status, steps, history) for the report."""
    redis = Redis.from_url(redis_url)
    try:
        engine = SagaEngine(redis, [])  # reading only: no saga definition needed
        outcomes, records = [], {}
        for saga_id, slot in sagas.items():
            try:
                record = engine.get(saga_id)
            except SagaNotFound:
                outcomes.append(SagaOutcome(saga_id, slot, None))
                continue
            errors = [h.detail for h in record.history if h.detail]
            errors += [e for step in record.steps for e in (step.error, step.compensation_error) if e]
            outcomes.append(SagaOutcome(saga_id, slot, record.status.value, record.error, tuple(errors)))
            records[saga_id] = record.as_dict()
        store = SlotStore(redis)
        holders = {slot: store.holder(slot[0], datetime.fromisoformat(slot[1])) for slot in pool}
    finally:
        redis.close()
    ledger = SandboxLedger(ledger_path)
    by_key: dict[str, list[tuple[int, str]]] = {}
    for answer in answers:
        if answer.status is not None and answer.saga_id is not None:
            by_key.setdefault(answer.booking.key, []).append((answer.status, answer.saga_id))
    observation = Observation(
        sagas=outcomes,
        ledger=ledger.entries(),
        live_events=frozenset(live_events(ledger)),
        holders=holders,
        answers=by_key,
    )
    return observation, records


def liveness_clues(redis_url: str, queue: str = "sagas") -> dict[str, Any]:
    """What can keep sagas from moving: locks whose holder may be dead, and the queues' sizes.

    Why: a stuck saga is a verdict; these clues say where to look. The reconciler's lock
    and RQ's scheduler lock each have a TTL: a holder that died keeps them until it runs out.
    """
    redis = Redis.from_url(redis_url)
    try:
        locks = [keys.RECONCILER_LOCK, *(k.decode() for k in redis.scan_iter("rq:scheduler-lock:*"))]
        return {
            "locks": {
                key: {
                    "holder": (v := cast(bytes | None, redis.get(key))) and v.decode(),
                    "ttl_ms": redis.pttl(key),
                }
                for key in locks
            },
            "queued_jobs": redis.llen(f"rq:queue:{queue}"),
            "scheduled_jobs": redis.zcard(f"rq:scheduled:{queue}"),
            "active_sagas": redis.zcard(keys.ACTIVE),
        }
    except RedisError as exc:
        return {"error": f"Redis did not answer: {exc}"}
    finally:
        redis.close()
