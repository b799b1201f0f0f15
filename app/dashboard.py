"""rq-dashboard at /rq, behind HTTP Basic auth; not mounted at all without credentials.

rq-dashboard has no authentication of its own, shows job arguments and
errors, and can delete and requeue jobs, so it is never exposed open.
"""

from __future__ import annotations

import hmac

import rq_dashboard
from flask import Flask, Response, current_app, jsonify, request
from rq.serializers import JSONSerializer

from config import Settings

PREFIX = "/rq"
# rq-dashboard accepts GET on this state-changing endpoint; we require POST.
_CHANGES_STATE = {"rq_dashboard.requeue_all"}


def _refuse(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"code": code, "message": message})
    response.status_code = status
    response.headers.update(headers or {})
    return response


@rq_dashboard.blueprint.before_request
def _authenticate() -> Response | None:
    """Registered once at import: Flask refuses new hooks on a blueprint after its first use."""
    user, password = current_app.config["SAGA_DASHBOARD_AUTH"]
    auth = request.authorization
    given_user = auth.username if auth and auth.type == "basic" else None
    given_password = auth.password if auth and auth.type == "basic" else None
    ok = (
        given_user is not None
        and given_password is not None
        and hmac.compare_digest(given_user.encode(), user.encode())
        and hmac.compare_digest(given_password.encode(), password.encode())
    )
    if not ok:
        return _refuse(
            401, "unauthorized", "log in to the dashboard", {"WWW-Authenticate": 'Basic realm="rq"'}
        )
    if request.endpoint in _CHANGES_STATE and request.method != "POST":
        return _refuse(405, "method_not_allowed", "this action changes state: use POST")
    return None


def mount(app: Flask, settings: Settings) -> None:
    """Mount rq-dashboard on `app` when DASHBOARD_USER and DASHBOARD_PASSWORD are set."""
    if settings.dashboard_user is None or settings.dashboard_password is None:
        return
    app.config["SAGA_DASHBOARD_AUTH"] = (
        settings.dashboard_user,
        settings.dashboard_password.get_secret_value(),
    )
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    rq_dashboard.web.config.serializer = JSONSerializer  # every job here is JSON
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
