"""The operator's page at /ops: behind the dashboard's auth, lists, search, pages, one saga's lanes."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from html.parser import HTMLParser

import pytest
from flask import Flask, url_for
from flask.testing import FlaskClient

from app import create_app
from app.timeline import duration
from config import Settings
from saga import SagaEngine, SagaRecord, SagaStatus, keys
from saga.queueing import OPERATOR_PAGE
from tests.conftest import BOOKING

USER, PASSWORD = "ops", "s3cret"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


@pytest.fixture
def ops_app(make_settings: Callable[..., Settings], engine: SagaEngine) -> Flask:
    """The app with dashboard credentials, so /ops and /rq are mounted."""
    return create_app(make_settings(dashboard_user=USER, dashboard_password=PASSWORD), engine)


@pytest.fixture
def ops(ops_app: Flask) -> FlaskClient:
    """A client of the app with /ops mounted."""
    return ops_app.test_client()


class Cells(HTMLParser):
    """Collects (lane, step, status) of every timeline cell, and every saga row's id."""

    def __init__(self) -> None:
        super().__init__()
        self.lane: str | None = None
        self.cells: list[tuple[str, str, str]] = []
        self.empty: list[str] = []
        self.rows: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and (found.get("id") or "").startswith("lane-"):
            self.lane = found["id"]
        if tag == "tr" and found.get("data-saga"):
            self.rows.append(str(found["data-saga"]))
        classes = (found.get("class") or "").split()
        if self.lane and "cell" in classes:
            if "empty" in classes:
                self.empty.append(self.lane)
            else:
                self.cells.append((self.lane, str(found["data-step"]), str(found["data-status"])))


def parse(html: str) -> Cells:
    """The page's cells and rows."""
    cells = Cells()
    cells.feed(html)
    return cells


def page(ops: FlaskClient, path: str) -> str:
    """GET `path` logged in; it must answer 200 HTML."""
    response = ops.get(path, headers=AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def test_not_mounted_without_dashboard_credentials(client: FlaskClient) -> None:
    assert client.get("/ops/").status_code == 404


@pytest.mark.parametrize("path", ["/ops/", "/ops/sagas/" + "0" * 32])
def test_needs_the_dashboards_basic_auth(ops: FlaskClient, path: str) -> None:
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{USER}:guess".encode()).decode()}
    anonymous = ops.get(path)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert anonymous.get_json()["code"] == "unauthorized"
    assert ops.get(path, headers=wrong).status_code == 401
    bearer = {"Authorization": "Bearer " + PASSWORD}
    assert ops.get(path, headers=bearer).status_code == 401
    assert ops.get(path, headers=AUTH).status_code in (200, 404)  # the zero id is unknown: its 404 page


def test_one_login_opens_both_ops_and_rq(ops: FlaskClient) -> None:
    assert ops.get("/rq/", headers=AUTH).status_code == 200
    assert ops.get("/ops/", headers=AUTH).status_code == 200
    assert ops.get("/rq/").headers["WWW-Authenticate"] == ops.get("/ops/").headers["WWW-Authenticate"]


def test_list_counts_every_status_and_filters_by_one(
    ops: FlaskClient, run_saga: Callable[..., SagaRecord], book: Callable[..., str]
) -> None:
    compensated = run_saga(sandbox_faults="send_sms=fail")
    running = book(call_id="call-2")  # never drained: still running
    html = page(ops, "/ops/")
    assert parse(html).rows == [compensated.id, running]
    for status in SagaStatus:  # every status, so one added later is listed too
        assert f'data-status="{status.value}"' in html
    assert parse(page(ops, "/ops/?status=compensated")).rows == [compensated.id]
    assert parse(page(ops, "/ops/?status=running")).rows == [running]
    assert parse(page(ops, "/ops/?status=running&status=compensated")).rows == [compensated.id, running]
    assert parse(page(ops, "/ops/?status=failed")).rows == []
    assert parse(page(ops, "/ops/?status=&call_id=")).rows == [compensated.id, running]  # an empty form


def test_search_by_call_id(ops: FlaskClient, book: Callable[..., str]) -> None:
    book(call_id="call-6")
    wanted = book(call_id="call-7")
    book(call_id="call-8")
    found = page(ops, "/ops/?call_id=call-7")
    assert parse(found).rows == [wanted]
    assert "call-7" in found
    assert parse(page(ops, "/ops/?call_id=call-7&status=failed")).rows == []
    assert parse(page(ops, "/ops/?call_id=nobody")).rows == []


def test_pages_oldest_first(ops: FlaskClient, book: Callable[..., str]) -> None:
    ids = [book(call_id=f"call-{n}") for n in range(5)]
    first = page(ops, "/ops/?limit=2")
    assert parse(first).rows == ids[:2]
    assert 'rel="next"' in first and 'rel="prev"' not in first
    assert parse(page(ops, "/ops/?limit=2&offset=2")).rows == ids[2:4]
    last = page(ops, "/ops/?limit=2&offset=4")
    assert parse(last).rows == ids[4:]
    assert 'rel="next"' not in last and 'rel="prev"' in last
    next_link = re.search(r'rel="next" href="([^"]+)"', first)
    assert next_link is not None
    assert parse(page(ops, next_link.group(1).replace("&amp;", "&"))).rows == ids[2:4]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=lost", "status.0"),
        ("offset=-1", "offset"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("offset=1e9", "offset"),
        ("call_id=" + "x" * 256, "call_id"),
    ],
)
def test_bad_query_is_400_json(ops: FlaskClient, query: str, field: str) -> None:
    response = ops.get(f"/ops/?{query}", headers=AUTH)
    assert response.status_code == 400
    body = response.get_json()
    assert body["code"] == "invalid_query"
    assert body["field"] == field


def test_compensated_saga_shows_both_lanes(ops: FlaskClient, run_saga: Callable[..., SagaRecord]) -> None:
    saga = run_saga(sandbox_faults="send_sms=fail")
    html = page(ops, f"/ops/sagas/{saga.id}")
    cells = parse(html)
    assert cells.cells == [
        ("lane-forward", "book_slot", "succeeded"),
        ("lane-forward", "charge_card", "succeeded"),
        ("lane-forward", "send_sms", "failed"),
        ("lane-forward", "sync_calendar", "pending"),
        ("lane-compensation", "release_slot", "compensated"),
        ("lane-compensation", "refund_card", "compensated"),
        ("lane-compensation", "send_apology", "compensated"),
    ]
    assert cells.empty == ["lane-compensation"]  # sync_calendar never ran, so nothing to undo
    charge = saga.step("charge_card")
    assert charge.ref and charge.ref in html and charge.compensation_ref and charge.compensation_ref in html
    assert "fault injected into send_sms" in html
    assert "CA42" in html  # the call id
    assert html.count("<tr>") >= len(saga.history)  # the history table, one row per transition


def test_rq_dashboard_links_open_the_jobs(ops: FlaskClient, run_saga: Callable[..., SagaRecord]) -> None:
    saga = run_saga(sandbox_faults="send_sms=fail")
    html = page(ops, f"/ops/sagas/{saga.id}")
    job = keys.job_id(saga.id, "charge_card", "undo", 1)
    link = f"/rq/0/view/job/{job}"
    assert f'href="{link}"' in html
    assert ops.get(link, headers=AUTH).status_code == 200
    assert ops.get(f"/rq/0/data/job/{job}.json", headers=AUTH).get_json()["id"] == job


def test_job_description_leads_to_the_page(
    ops_app: Flask, ops: FlaskClient, book: Callable[..., str]
) -> None:
    saga_id = book()
    with ops_app.test_request_context():
        path = url_for("operator.saga", saga_id=saga_id)
    assert path == OPERATOR_PAGE.format(saga_id=saga_id)
    queued = ops.get("/rq/0/data/jobs/sagas/queued/8/asc/1.json", headers=AUTH).get_json()
    assert [j["description"].split()[-1] for j in queued["jobs"]] == [path]


def test_no_personal_data_on_any_page(ops: FlaskClient, run_saga: Callable[..., SagaRecord]) -> None:
    saga = run_saga(sandbox_faults="send_sms=fail")
    html = page(ops, f"/ops/sagas/{saga.id}") + page(ops, "/ops/") + page(ops, "/ops/?call_id=CA42")
    for secret in (
        BOOKING["customer"]["phone"],
        BOOKING["customer"]["phone"].lstrip("+"),
        BOOKING["customer"]["name"],
        BOOKING["payment"]["payment_method"],
    ):
        assert secret not in html


@pytest.mark.parametrize("saga_id", ["0" * 32, "not-an-id", "<script>"])
def test_unknown_saga_is_a_404_page(ops: FlaskClient, saga_id: str) -> None:
    response = ops.get(f"/ops/sagas/{saga_id}", headers=AUTH)
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "<script>" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("started", "finished", "shown"),
    [
        ("2026-12-01T15:00:00.000Z", "2026-12-01T15:00:00.008Z", "8 ms"),
        ("2026-12-01T15:00:00.000Z", "2026-12-01T15:00:01.250Z", "1.25 s"),
        ("2026-12-01T15:00:00.000Z", "2026-12-01T15:03:04.200Z", "3 min 4 s"),
        ("2026-12-01T15:00:00.000Z", None, None),
    ],
)
def test_durations_read_at_a_glance(started: str, finished: str | None, shown: str | None) -> None:
    assert duration(started, finished) == shown
