"""GET /metrics after real sagas: the exposition parsed back with Prometheus' own parser."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import ConnectionError as RedisConnectionError

from app import create_app
from config import Settings
from saga import SagaEngine, SagaRecord, SagaStatus
from tests.conftest import BOOKING

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: FlaskClient, **headers: str) -> tuple[dict[str, str], Samples]:
    """Each family's type, and every sample by (name, labels)."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def buckets(samples: Samples, step: str, direction: str, outcome: str) -> list[tuple[float, float]]:
    """(le, cumulative count) of one duration series, in bound order."""
    wanted = {("step", step), ("direction", direction), ("outcome", outcome)}
    found = [
        (float(dict(labels)["le"]), count)
        for (name, labels), count in samples.items()
        if name == "saga_step_duration_seconds_bucket" and wanted <= labels
    ]
    return sorted(found)


def test_metrics_after_a_completed_and_a_compensated_booking(
    run_saga: Callable[..., SagaRecord], client: FlaskClient
) -> None:
    compensated = run_saga(sandbox_faults="send_sms=fail")
    completed = run_saga({**BOOKING, "call_id": "CA43", "slot": {**BOOKING["slot"], "resource": "flat-2"}})
    assert (compensated.status, completed.status) == (SagaStatus.COMPENSATED, SagaStatus.COMPLETED)

    types, samples = scrape(client)

    assert types["saga_sagas"] == "counter"
    assert value(samples, "saga_sagas_total", status="running") == 2  # started
    assert value(samples, "saga_sagas_total", status="completed") == 1
    assert value(samples, "saga_sagas_total", status="compensating") == 1
    assert value(samples, "saga_sagas_total", status="compensated") == 1
    assert value(samples, "saga_sagas_total", status="failed") == 0  # present before the first one

    assert types["saga_sagas_in_status"] == "gauge"
    assert value(samples, "saga_sagas_in_status", status="completed") == 1
    assert value(samples, "saga_sagas_in_status", status="compensated") == 1
    assert value(samples, "saga_sagas_in_status", status="running") == 0

    assert types["saga_step_duration_seconds"] == "histogram"
    book_slot = buckets(samples, "book_slot", "do", "succeeded")
    counts = [count for _, count in book_slot]
    assert counts == sorted(counts) and book_slot[-1][0] == float("inf")
    labels = {"step": "book_slot", "direction": "do", "outcome": "succeeded"}
    assert book_slot[-1][1] == value(samples, "saga_step_duration_seconds_count", **labels) == 2
    assert 0 <= value(samples, "saga_step_duration_seconds_sum", **labels) < 10
    assert (
        value(samples, "saga_step_duration_seconds_count", step="send_sms", direction="do", outcome="failed")
        == 1
    )

    assert types["saga_compensations"] == "counter"
    assert value(samples, "saga_compensations_total", step="charge_card", outcome="succeeded") == 1
    assert value(samples, "saga_compensations_total", step="book_slot", outcome="succeeded") == 1
    compensated_steps = {
        dict(labels)["step"] for name, labels in samples if name == "saga_compensations_total"
    }
    # The failed step is compensated too (its action may have taken effect); sync_calendar never ran.
    assert compensated_steps == {"book_slot", "charge_card", "send_sms"}

    assert value(samples, "saga_attempts_lost_total", direction="do") == 0
    assert value(samples, "saga_queue_jobs", state="queued") == 0
    assert value(samples, "saga_oldest_unfinished_saga_age_seconds") == 0  # none unfinished


def test_queue_depth_and_oldest_age_of_a_saga_not_yet_run(
    book: Callable[..., str], client: FlaskClient
) -> None:
    book()
    _, samples = scrape(client)
    assert value(samples, "saga_queue_jobs", state="queued") == 1
    assert value(samples, "saga_sagas_in_status", status="running") == 1
    assert 0 <= value(samples, "saga_oldest_unfinished_saga_age_seconds") < 60


@pytest.fixture
def guarded(make_settings: Callable[..., Settings], engine: SagaEngine) -> FlaskClient:
    """A client of an app with METRICS_TOKEN set."""
    return create_app(make_settings(metrics_token="s3cret-metrics-token"), engine).test_client()


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", "Basic czNjcmV0LW1ldHJpY3MtdG9rZW4=", "s3cret-metrics-token"],
)
def test_a_set_token_is_required(guarded: FlaskClient, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = guarded.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert b"saga_" not in response.get_data()


def test_the_token_opens_it(guarded: FlaskClient) -> None:
    types, _ = scrape(guarded, Authorization="Bearer s3cret-metrics-token")
    assert "saga_sagas" in types


def test_metrics_are_not_rate_limited(make_settings: Callable[..., Settings], engine: SagaEngine) -> None:
    client = create_app(make_settings(rate_limit_per_caller="1/minute"), engine).test_client()
    answers = [client.get("/metrics") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert "X-RateLimit-Limit" not in answers[0].headers


def test_redis_down_is_503(app: Flask, engine: SagaEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    def down() -> None:
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(engine.overview, "metrics", down)
    response = app.test_client().get("/metrics")
    assert response.status_code == 503
    assert response.get_json()["code"] == "unavailable"


def test_an_empty_database_shows_every_fixed_family_at_zero(client: FlaskClient) -> None:
    """Fixed label sets exist before their first event, so `increase()` counts that event."""
    types, samples = scrape(client)
    assert set(types) == {
        "saga_sagas",
        "saga_sagas_in_status",
        "saga_step_duration_seconds",
        "saga_compensations",
        "saga_attempts_lost",
        "saga_queue_jobs",
        "saga_oldest_unfinished_saga_age_seconds",
    }
    assert value(samples, "saga_sagas_total", status="failed") == 0
    assert value(samples, "saga_attempts_lost_total", direction="undo") == 0
    assert set(samples.values()) == {0}
