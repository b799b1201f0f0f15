"""The operator's page at /ops: sagas by status, search by call id, and one saga's timeline.

Server-rendered HTML with an inline stylesheet: no script, nothing fetched from
elsewhere. It sits behind the same Basic auth as rq-dashboard and is mounted only
with it, because it shows what every saga did (never the customer's details).
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, render_template, request
from pydantic import BaseModel, Field, ValidationError

from app import access, timeline
from app.booking import engine
from app.dashboard import ENDPOINT_JOB, ENDPOINT_JOBS
from app.errors import validation_error
from app.sagas import SAGA_ID
from config import Settings
from saga import SagaNotFound, SagaStatus

PREFIX = "/ops"

bp = Blueprint("operator", __name__, url_prefix=PREFIX)


class ListQuery(BaseModel):
    """`/ops/` query: any statuses (none means all), a call id, a page."""

    status: list[SagaStatus] = []
    call_id: str | None = Field(None, min_length=1, max_length=255)
    limit: int = Field(50, ge=1, le=500)
    # Each page reads offset + limit entries per status: a bound keeps one request cheap.
    offset: int = Field(0, ge=0, le=100_000)


@bp.before_request
def _authenticate() -> Response | None:
    """The dashboard's credentials, or a 401 challenge."""
    return access.require_operator()


@bp.app_template_filter("clock")
def _clock(timestamp: str | None) -> str:
    """The time of day of an ISO timestamp ("2026-12-01T15:00:00.123Z" -> "15:00:00.123")."""
    return timestamp.partition("T")[2].rstrip("Z") if timestamp else ""


@bp.context_processor
def _links() -> dict[str, object]:
    """rq-dashboard's endpoints and the statuses, for every template here."""
    return {
        "job_endpoint": ENDPOINT_JOB,
        "jobs_endpoint": ENDPOINT_JOBS,
        "saga_statuses": list(SagaStatus),
    }


@bp.get("/")
def index() -> str:
    """Sagas oldest first, filtered by status and call id, a page at a time; counts on top."""
    query = _list_query()
    overview = engine().overview
    # One more than a page, to know whether there is a next one.
    rows = overview.sagas(
        query.status or tuple(SagaStatus),
        reference=query.call_id,
        limit=query.limit + 1,
        offset=query.offset,
    )
    return render_template(
        "ops/list.html",
        query=query,
        rows=rows[: query.limit],
        more=len(rows) > query.limit,
        stats=overview.stats(),
    )


@bp.get("/sagas/<saga_id>")
def saga(saga_id: str) -> str | tuple[str, int]:
    """One saga: header, forward and compensation lanes, history; a 404 page when unknown."""
    if not SAGA_ID.match(saga_id):
        return render_template("ops/not_found.html", saga_id=saga_id), 404
    try:
        record = engine().get(saga_id)
    except SagaNotFound:
        return render_template("ops/not_found.html", saga_id=saga_id), 404
    return render_template(
        "ops/saga.html", saga=record, lanes=timeline.lanes(record), queue=engine().queue.rq.name
    )


def _list_query() -> ListQuery:
    """The query string as a `ListQuery`; 400 JSON naming the bad parameter."""
    raw: dict[str, object] = {k: v for k in ("call_id", "limit", "offset") if (v := request.args.get(k))}
    # An empty value is what a form's "all" option and an empty search box send.
    raw["status"] = [s for s in request.args.getlist("status") if s]
    try:
        return ListQuery.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, 400, "invalid_query", "the query string is invalid") from None


def mount(app: Flask, settings: Settings) -> None:
    """Mount /ops when the dashboard's credentials are set, behind the same check."""
    if access.configure(app, settings):
        app.register_blueprint(bp)
