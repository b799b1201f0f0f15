"""The Redis key layout. Every key and every idempotency key is built here and nowhere else.

    sr:saga:{id}                 hash    the saga record
    sr:saga:{id}:data            string  its input, JSON (apart, so the hash stays compact)
    sr:saga:{id}:step:{name}     hash    one step record
    sr:saga:{id}:history         stream  every transition, in order, while the saga runs
    sr:saga:{id}:log             string  the same, as JSON, once it finished (streams cost >= 4 KB)
    sr:sagas:active              zset    id -> when it should next have moved (reconciler)
    sr:sagas:status:{status}     zset    id -> created (epoch s): the sagas in each status
    sr:sagas:ref:{sha256(ref)}   zset    id -> created: sagas started for one caller reference (call id)
    sr:stats:finished:{minute}   string  sagas finished in that minute (epoch // 60), for throughput
    sr:metrics                   hash    counters: sagas per status reached, attempts per outcome
    sr:metrics:seconds           hash    step duration histogram buckets, sums and counts
    sr:reconciler:lock           string  held by the one reconciler pass running
    sr:idem:{sha256(key)}        hash    client Idempotency-Key -> saga id, request fingerprint
    sr:limits:...                (Flask-Limiter's counters, under this prefix)
    sr:slot:{resource}:{start}   string  a reserved slot -> the saga holding it

The saga hash also carries the delivery record of its completion callback, in
the fields of `CALLBACK_FIELDS` and no others (saga/callbacks.py writes them).

Client-supplied strings are hashed before they become part of a key, so no
input can reach into another part of the keyspace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

PREFIX = "sr"
ACTIVE = f"{PREFIX}:sagas:active"
RECONCILER_LOCK = f"{PREFIX}:reconciler:lock"
RATE_LIMITS = f"{PREFIX}:limits"
METRICS = f"{PREFIX}:metrics"
STEP_SECONDS = f"{PREFIX}:metrics:seconds"
# The saga-hash fields a callback delivery may write; it never writes any other.
CALLBACK_FIELDS = (
    "callback_id",
    "callback_status",
    "callback_attempts",
    "callback_last_error",
    "callback_delivered_at",
    "callback_next_attempt_at",
)


def digest(value: str) -> str:
    """Hex SHA-256: how client strings and personal data appear inside keys."""
    return hashlib.sha256(value.encode()).hexdigest()


def saga(saga_id: str) -> str:
    """The saga's own hash."""
    return f"{PREFIX}:saga:{saga_id}"


def data(saga_id: str) -> str:
    """The saga's input data."""
    return f"{PREFIX}:saga:{saga_id}:data"


def step(saga_id: str, name: str) -> str:
    """One step's hash."""
    return f"{PREFIX}:saga:{saga_id}:step:{name}"


def history(saga_id: str) -> str:
    """The saga's transition stream."""
    return f"{PREFIX}:saga:{saga_id}:history"


def history_log(saga_id: str) -> str:
    """A finished saga's history, archived from its stream."""
    return f"{PREFIX}:saga:{saga_id}:log"


def all_of_saga(saga_id: str, step_names: Iterable[str]) -> list[str]:
    """Every key one saga owns, for expiry."""
    return [
        saga(saga_id),
        data(saga_id),
        history(saga_id),
        history_log(saga_id),
        *(step(saga_id, n) for n in step_names),
    ]


def by_status(status: str) -> str:
    """The index of sagas in one status."""
    return f"{PREFIX}:sagas:status:{status}"


def by_reference(reference: str) -> str:
    """The index of sagas started for one caller reference (the voice agent's call id)."""
    return f"{PREFIX}:sagas:ref:{digest(reference)}"


INDEX_PATTERNS = (f"{PREFIX}:sagas:status:*", f"{PREFIX}:sagas:ref:*")
"""SCAN patterns of the shared indexes a saga has entries in (for measuring them)."""


def finished_in_minute(minute: int) -> str:
    """How many sagas finished in minute `minute` (epoch seconds // 60)."""
    return f"{PREFIX}:stats:finished:{minute}"


def idempotency(client_key: str) -> str:
    """Where a client's Idempotency-Key points at the saga it created."""
    return f"{PREFIX}:idem:{digest(client_key)}"


def slot(resource: str, start: str) -> str:
    """A bookable slot: one resource at one start time."""
    return f"{PREFIX}:slot:{digest(f'{resource}|{start}')}"


def action_key(saga_id: str, step_name: str) -> str:
    """Idempotency key for a step's action, sent to its provider on every attempt."""
    return f"{saga_id}:{step_name}:do"


def compensation_key(saga_id: str, step_name: str) -> str:
    """Idempotency key for a step's compensation."""
    return f"{saga_id}:{step_name}:undo"


def job_id(saga_id: str, step_name: str, direction: str, attempt: int) -> str:
    """RQ job id of one attempt; RQ allows only [A-Za-z0-9_-] in ids."""
    return f"{saga_id}-{step_name}-{direction}-{attempt}"


def callback_job_id(saga_id: str, attempt: int) -> str:
    """RQ job id of one delivery attempt of a saga's completion callback."""
    return f"{saga_id}-callback-{attempt}"
