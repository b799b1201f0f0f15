"""GET /metrics: Prometheus text exposition, behind a bearer token when METRICS_TOKEN is set.

It holds counts, durations and step names only, no personal data, so it may
stay open on a private network; a token protects it anywhere else.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.exceptions import RedisError

from app.booking import engine
from app.errors import ApiError
from app.metric_families import SagaCollector

bp = Blueprint("metrics", __name__)


def _authorised() -> bool:
    """True when no token is configured, or the request carries it (compared in constant time)."""
    token = current_app.extensions["saga_settings"].metrics_token
    expected = token.get_secret_value() if token is not None else ""
    if not expected:
        return True
    scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


@bp.get("/metrics")
def metrics() -> Response | tuple[Response, int]:
    """Every `saga_` family, read from Redis in one scrape; 401 without the token, 503 without Redis."""
    if not _authorised():
        response = jsonify({"code": "unauthorized", "message": "send Authorization: Bearer <METRICS_TOKEN>"})
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response, 401
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SagaCollector(engine().overview))
    try:
        body = generate_latest(registry)
    except RedisError as exc:
        raise ApiError(503, "unavailable", "Redis did not answer; no figures to serve") from exc
    return Response(body, content_type=CONTENT_TYPE_LATEST)
