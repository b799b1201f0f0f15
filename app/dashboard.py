"""rq-dashboard at /rq, behind HTTP Basic auth; not mounted at all without credentials.

rq-dashboard has no authentication of its own, shows job arguments and
errors, and can delete and requeue jobs, so it is never exposed open.
"""

from __future__ import annotations

import rq_dashboard
from flask import Flask, Response, request
from rq.serializers import JSONSerializer

from app import access
from config import Settings

PREFIX = "/rq"
ENDPOINT_JOB = "rq_dashboard.job_view"  # /rq/<instance>/view/job/<job_id>
ENDPOINT_JOBS = "rq_dashboard.jobs_overview"  # /rq/<instance>/view/jobs/<queue>/<registry>/...
# rq-dashboard accepts GET on this state-changing endpoint; we require POST.
_CHANGES_STATE = {"rq_dashboard.requeue_all"}


@rq_dashboard.blueprint.before_request
def _authenticate() -> Response | None:
    """Registered once at import: Flask refuses new hooks on a blueprint after its first use."""
    refused = access.require_operator()
    if refused is not None:
        return refused
    if request.endpoint in _CHANGES_STATE and request.method != "POST":
        return access.refuse(405, "method_not_allowed", "this action changes state: use POST")
    return None


def mount(app: Flask, settings: Settings) -> None:
    """Mount rq-dashboard on `app` when DASHBOARD_USER and DASHBOARD_PASSWORD are set."""
    if not access.configure(app, settings):
        return
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    rq_dashboard.web.config.serializer = JSONSerializer  # every job here is JSON
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix=PREFIX)
