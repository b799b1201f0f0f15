"""The operator's read side: sagas by status or caller reference, counts, and the metrics.

Everything here reads the indexes and counters the engine keeps in the same
transactions as the state they describe, so no scan of the keyspace is needed
and a figure is never ahead of, or behind, the records it counts.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import cast

from redis import Redis

from saga import keys
from saga.queueing import StepQueue
from saga.status import SagaStatus
from saga.store import DURATION_BUCKETS

Raw = dict[bytes, bytes]


@dataclass(frozen=True)
class SagaSummary:
    """One line of a saga list: no steps, no history, no personal data."""

    id: str
    saga: str
    status: SagaStatus
    reference: str | None
    current_step: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    error: str | None

    @classmethod
    def from_hash(cls, saga_id: str, raw: Raw) -> SagaSummary:
        """Decode the saga hash's header fields."""
        text = {k.decode(): v.decode() for k, v in raw.items()}
        return cls(
            id=saga_id,
            saga=text["name"],
            status=SagaStatus(text["status"]),
            reference=text.get("reference"),
            current_step=text.get("step"),
            created_at=text["created_at"],
            updated_at=text["updated_at"],
            finished_at=text.get("finished_at"),
            error=text.get("error"),
        )

    def as_dict(self) -> dict[str, str | None]:
        """JSON-ready view."""
        return {
            "id": self.id,
            "saga": self.saga,
            "status": self.status.value,
            "reference": self.reference,
            "current_step": self.current_step,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "error": self.error,
        }


@dataclass(frozen=True)
class Stats:
    """Counts by status, the oldest unfinished saga, and the last hour's throughput."""

    by_status: dict[SagaStatus, int]
    oldest_running_age: float | None  # seconds since the oldest running/waiting/compensating saga began
    oldest_running_id: str | None
    finished_last_hour: int


@dataclass
class Histogram:
    """One step duration series: per-bucket counts (not cumulative), their sum and count."""

    step: str
    direction: str
    outcome: str
    buckets: dict[str, int] = field(default_factory=dict)  # upper bound ("0.05" .. "+Inf") -> count
    total: float = 0.0

    @property
    def count(self) -> int:
        """Observations in all buckets."""
        return sum(self.buckets.values())

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count of observations <= le), Prometheus' shape, ending with +Inf."""
        running, out = 0, []
        for bound in (*(str(b) for b in DURATION_BUCKETS), "+Inf"):
            running += self.buckets.get(bound, 0)
            out.append((bound, running))
        return out


@dataclass(frozen=True)
class Metrics:
    """What `/metrics` exposes, read in one round trip."""

    sagas_reached: dict[str, int]  # status -> how many sagas ever reached it
    attempts_lost: dict[str, int]  # direction -> attempts whose outcome a worker never reported
    in_status: dict[SagaStatus, int]
    durations: list[Histogram]
    queue_depths: dict[str, int]  # queued, scheduled, started
    oldest_running_age: float | None


UNFINISHED = (SagaStatus.RUNNING, SagaStatus.WAITING, SagaStatus.COMPENSATING)


class Overview:
    """Lists and counts sagas for operators, the CLI and `/metrics`."""

    def __init__(self, redis: Redis, queue: StepQueue, clock: Callable[[], float] = time.time) -> None:
        self.redis = redis
        self.queue = queue
        self.clock = clock

    def sagas(
        self,
        statuses: Iterable[SagaStatus] = tuple(SagaStatus),
        *,
        reference: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[SagaSummary]:
        """Sagas in any of `statuses` (or with caller `reference`), oldest first.

        Entries whose records expired after their retention are left out.
        """
        wanted = set(statuses)
        if reference is not None:
            pairs = self._range(keys.by_reference(reference), 0, -1)
            return [s for s in self._summaries(pairs) if s.status in wanted][offset : offset + limit]
        with self.redis.pipeline(transaction=False) as pipe:
            for status in wanted:
                pipe.zrange(keys.by_status(status), 0, offset + limit - 1, withscores=True)
            ranges = cast(list[list[tuple[bytes, float]]], pipe.execute())
        merged = list(heapq.merge(*ranges, key=lambda pair: (pair[1], pair[0])))
        return self._summaries(merged[offset : offset + limit])

    def count(self, status: SagaStatus) -> int:
        """How many sagas are in `status` now (finished ones until their retention ends)."""
        return self.redis.zcard(keys.by_status(status))

    def stats(self) -> Stats:
        """Counts by status, the oldest unfinished saga and the sagas finished in the last hour."""
        now = self.clock()
        minute = int(now // 60)
        with self.redis.pipeline(transaction=False) as pipe:
            for status in SagaStatus:
                pipe.zcard(keys.by_status(status))
            for status in UNFINISHED:
                pipe.zrange(keys.by_status(status), 0, 0, withscores=True)
            pipe.mget([keys.finished_in_minute(m) for m in range(minute - 59, minute + 1)])
            *counts, running, waiting, compensating, minutes = pipe.execute()
        oldest = min((*running, *waiting, *compensating), key=lambda pair: pair[1], default=None)
        return Stats(
            by_status=dict(zip(SagaStatus, counts, strict=True)),
            oldest_running_age=now - oldest[1] if oldest else None,
            oldest_running_id=oldest[0].decode() if oldest else None,
            finished_last_hour=sum(int(m) for m in minutes if m),
        )

    def metrics(self) -> Metrics:
        """Counters, histograms, queue depths and the oldest unfinished saga's age."""
        rq = self.queue.rq
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.METRICS)
            pipe.hgetall(keys.STEP_SECONDS)
            for status in SagaStatus:
                pipe.zcard(keys.by_status(status))
            pipe.llen(rq.key)
            pipe.zcard(rq.scheduled_job_registry.key)
            pipe.zcard(rq.started_job_registry.key)
            counters, seconds, *rest = pipe.execute()
        in_status = dict(zip(SagaStatus, rest[: len(SagaStatus)], strict=True))
        queued, scheduled, started = rest[len(SagaStatus) :]
        reached: dict[str, int] = {}
        lost: dict[str, int] = {}
        for name, value in cast(Raw, counters).items():
            kind, _, label = name.decode().partition(":")
            if kind == "sagas":
                reached[label] = int(value)
            elif kind == "attempts" and label.startswith("lost:"):
                lost[label.removeprefix("lost:")] = int(value)
        stats = self.stats()
        return Metrics(
            sagas_reached=reached,
            attempts_lost=lost,
            in_status=in_status,
            durations=_histograms(cast(Raw, seconds)),
            queue_depths={"queued": queued, "scheduled": scheduled, "started": started},
            oldest_running_age=stats.oldest_running_age,
        )

    def prune(self, finished_before: float) -> int:
        """Drop index entries of finished sagas created before `finished_before` (their records
        expire after the retention anyway); the reconciler calls it. Returns how many went."""
        with self.redis.pipeline(transaction=False) as pipe:
            for status in SagaStatus:
                if status.finished:
                    pipe.zremrangebyscore(keys.by_status(status), "-inf", finished_before)
            return sum(cast(list[int], pipe.execute()))

    # -- internals -----------------------------------------------------------

    def _range(self, key: str, start: int, stop: int) -> list[tuple[bytes, float]]:
        return cast(list[tuple[bytes, float]], self.redis.zrange(key, start, stop, withscores=True))

    def _summaries(self, pairs: Sequence[tuple[bytes, float]]) -> list[SagaSummary]:
        ids = [member.decode() for member, _ in pairs]
        with self.redis.pipeline(transaction=False) as pipe:
            for saga_id in ids:
                pipe.hgetall(keys.saga(saga_id))
            hashes = cast(list[Raw], pipe.execute())
        return [SagaSummary.from_hash(i, raw) for i, raw in zip(ids, hashes, strict=True) if raw]


def _histograms(raw: Raw) -> list[Histogram]:
    series: dict[tuple[str, str, str], Histogram] = {}
    for name, value in raw.items():
        step, direction, outcome, bound = name.decode().split("|")
        hist = series.setdefault((step, direction, outcome), Histogram(step, direction, outcome))
        if bound == "sum_us":
            hist.total = int(value) / 1e6
        else:
            hist.buckets[bound] = int(value)
    return [series[k] for k in sorted(series)]
