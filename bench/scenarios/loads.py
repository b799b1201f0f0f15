"""The two sides every scenario compares: sagas through the engine, and the bare RQ chain."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any, cast

from redis import Redis

from bench.chain import DONE, chain_queue, start_chain
from bench.drive import Load
from saga import SagaEngine, keys

BOOKING: dict[str, Any] = {
    "call_id": "CA0",
    "slot": {"resource": "bench-0", "start": "2030-01-07T09:00:00Z", "minutes": 30},
    "customer": {"name": "Ada Lovelace", "phone": "+15005550006"},
    "payment": {"amount": 4900, "currency": "usd", "payment_method": "pm_card_visa"},
}


def saga_load(
    name: str, engine: SagaEngine, monitor: Redis, data: Callable[[int], Mapping[str, Any]]
) -> Load:
    """Start saga `name` on `engine`; unfinished = the engine's active index (one load at a time)."""
    counter = itertools.count()

    def start() -> None:
        engine.start(name, data(next(counter)))

    return Load(f"saga {name}", start, lambda: int(monitor.zcard(keys.ACTIVE)))


def chain_load(func: str, queue_name: str, enqueuer: Redis, monitor: Redis) -> Load:
    """Start bare chains of `func`; unfinished = started minus the chains' done counter."""
    queue = chain_queue(enqueuer, queue_name)
    prefix = uuid.uuid4().hex[:8]
    base = int(cast(bytes | None, monitor.get(DONE)) or 0)
    started = itertools.count(1)
    last = [0]

    def start() -> None:
        last[0] = next(started)
        start_chain(queue, func, f"{prefix}{last[0]}")

    def unfinished() -> int:
        return last[0] - (int(cast(bytes | None, monitor.get(DONE)) or 0) - base)

    return Load(f"chain {func.rsplit('.', 1)[-1]}", start, unfinished)


def booking_body(index: int, run: str) -> dict[str, Any]:
    """A valid booking with its own call, slot and therefore idempotency."""
    body = json.loads(json.dumps(BOOKING))
    body["call_id"] = f"CA{run}{index}"
    body["slot"]["resource"] = f"bench-{run}-{index}"
    return body
