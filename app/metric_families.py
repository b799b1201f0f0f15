"""The Prometheus families of `/metrics`, built at each scrape from the counters the engine keeps in Redis.

The counters are written in the same transactions as the transitions they
count, so every web process serves the same figures whichever worker did the
work; in-process counters (or prometheus_client's multiprocess files) would
only see what one host's processes did.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from saga import SagaStatus
from saga.overview import Metrics, Overview

DIRECTIONS = ("do", "undo")
QUEUE_STATES = ("queued", "scheduled", "started")


class SagaCollector(Collector):
    """Reads `Overview.metrics()` once per scrape and turns it into families."""

    def __init__(self, overview: Overview) -> None:
        self.overview = overview

    def collect(self) -> Iterator[Metric]:
        """Every `saga_` family; raises RedisError when Redis does not answer."""
        yield from families(self.overview.metrics())


def families(metrics: Metrics) -> Iterator[Metric]:
    """The families of one reading: counters, gauges and the step duration histograms.

    Label sets that can be known up front (statuses, directions, queue states) are
    always present, at 0 if need be, so `increase()` sees a series' first event.
    """
    reached = CounterMetricFamily(
        "saga_sagas", "Sagas that reached each status (status=running: sagas started).", labels=["status"]
    )
    for status in SagaStatus:
        reached.add_metric([status.value], metrics.sagas_reached.get(status.value, 0))
    yield reached

    now = GaugeMetricFamily("saga_sagas_in_status", "Sagas in each status now.", labels=["status"])
    for status in SagaStatus:
        now.add_metric([status.value], metrics.in_status.get(status, 0))
    yield now

    durations = HistogramMetricFamily(
        "saga_step_duration_seconds",
        "How long attempts of steps (do) and compensations (undo) took, by outcome.",
        labels=["step", "direction", "outcome"],
    )
    compensations = CounterMetricFamily(
        "saga_compensations", "Compensation attempts, by step and outcome.", labels=["step", "outcome"]
    )
    for series in metrics.durations:
        labels = [series.step, series.direction, series.outcome]
        durations.add_metric(labels, buckets=series.cumulative(), sum_value=series.total)
        if series.direction == "undo":
            compensations.add_metric([series.step, series.outcome], series.count)
    yield durations
    yield compensations

    lost = CounterMetricFamily(
        "saga_attempts_lost",
        "Attempts recorded failed with an unknown outcome (killed, handed back, timed out, worker lost).",
        labels=["direction"],
    )
    for direction in DIRECTIONS:
        lost.add_metric([direction], metrics.attempts_lost.get(direction, 0))
    yield lost

    queue = GaugeMetricFamily("saga_queue_jobs", "Saga jobs in the RQ queue, by state.", labels=["state"])
    for state in QUEUE_STATES:
        queue.add_metric([state], metrics.queue_depths.get(state, 0))
    yield queue

    yield GaugeMetricFamily(
        "saga_oldest_unfinished_saga_age_seconds",
        "Age of the oldest running, waiting or compensating saga; 0 when there is none.",
        value=metrics.oldest_running_age or 0.0,
    )
