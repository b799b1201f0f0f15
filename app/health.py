"""GET /healthz, and GET /sandbox/ledger in sandbox mode."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request
from redis.exceptions import RedisError

from app.booking import engine
from app.errors import ApiError
from jobs.providers.sandbox import SandboxLedger

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 while Redis answers, 503 otherwise (platform health checks)."""
    try:
        engine().redis.ping()
    except RedisError:
        return jsonify({"status": "unavailable", "redis": "down"}), 503
    return jsonify({"status": "ok"}), 200


@bp.get("/sandbox/ledger")
def ledger() -> Response:
    """What the sandbox providers did: charges, refunds, messages, events (sandbox mode only)."""
    settings = current_app.extensions["saga_settings"]
    if not settings.any_sandbox:
        raise ApiError(404, "not_found", "the ledger exists only in sandbox mode")
    saga_id = request.args.get("saga_id")
    return jsonify({"entries": SandboxLedger(settings.sandbox_ledger).entries(saga_id)})
