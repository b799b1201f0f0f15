"""The operator's read side against real Redis: status and call-id indexes, stats, metric counters."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis

from saga import SagaEngine, SagaStatus
from saga.overview import UNFINISHED


def test_sagas_are_listed_by_status_oldest_first_and_found_by_call_id(
    engine: SagaEngine, book: Callable[..., str], drain: Callable[[SagaEngine], None]
) -> None:
    first = book(call_id="call-1", slot={"resource": "flat-1"})
    second = book(call_id="call-2", slot={"resource": "flat-2"})
    third = book(call_id="call-1", slot={"resource": "flat-3"})

    running = engine.overview.sagas([SagaStatus.RUNNING])
    assert [s.id for s in running] == [first, second, third]
    assert [s.reference for s in running] == ["call-1", "call-2", "call-1"]
    assert [s.id for s in engine.overview.sagas(reference="call-1")] == [first, third]
    assert engine.overview.sagas(reference="nobody") == []
    assert [s.id for s in engine.overview.sagas(limit=1, offset=1)] == [second]

    drain(engine)
    assert engine.overview.sagas([SagaStatus.RUNNING]) == []
    done = engine.overview.sagas([SagaStatus.COMPLETED])
    assert [s.id for s in done] == [first, second, third]
    assert all(s.finished_at for s in done)
    assert engine.overview.count(SagaStatus.COMPLETED) == 3


def test_stats_count_statuses_the_oldest_unfinished_saga_and_the_last_hour(
    engine: SagaEngine, book: Callable[..., str], drain: Callable[[SagaEngine], None]
) -> None:
    done = book(slot={"resource": "flat-1"})
    drain(engine)
    waiting = book(slot={"resource": "flat-2"})

    stats = engine.overview.stats()
    assert stats.by_status[SagaStatus.COMPLETED] == 1
    assert sum(stats.by_status[s] for s in UNFINISHED) == 1
    assert stats.oldest_running_id == waiting != done
    assert stats.oldest_running_age is not None and 0 <= stats.oldest_running_age < 60
    assert stats.finished_last_hour == 1


def test_metrics_count_what_the_transitions_wrote(
    engine: SagaEngine, run_saga: Callable[..., object], redis: Redis
) -> None:
    run_saga(sandbox_faults="send_sms=fail")  # compensated: sms failed, charge and slot undone
    metrics = engine.overview.metrics()
    assert metrics.sagas_reached == {"running": 1, "compensating": 1, "compensated": 1}
    assert metrics.in_status[SagaStatus.COMPENSATED] == 1
    series = {(h.step, h.direction, h.outcome): h for h in metrics.durations}
    assert series[("book_slot", "do", "succeeded")].count == 1
    assert series[("charge_card", "undo", "succeeded")].count == 1
    failed = [
        h for (step, d, o), h in series.items() if step == "send_sms" and d == "do" and o != "succeeded"
    ]
    assert sum(h.count for h in failed) >= 1
    cumulative = series[("book_slot", "do", "succeeded")].cumulative()
    assert cumulative[-1] == ("+Inf", 1)
    assert [count for _, count in cumulative] == sorted(count for _, count in cumulative)
    assert metrics.queue_depths == {"queued": 0, "scheduled": 0, "started": 0}
