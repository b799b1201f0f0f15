"""POST /book: validate, start one booking saga, answer where to watch it."""

from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from pydantic import ValidationError

from app.errors import ApiError, validation_error
from app.models import BookingRequest
from jobs.booking import NAME
from saga import SagaEngine

bp = Blueprint("booking", __name__)

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces


def engine() -> SagaEngine:
    """The engine this app was created with."""
    engine: SagaEngine = current_app.extensions["saga_engine"]
    return engine


def _payload() -> object:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the booking as application/json", "Content-Type")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON", "body")
    return body


@bp.post("/book")
def book() -> tuple[Response, int, dict[str, str]]:
    """Start a booking saga; a repeat with the same Idempotency-Key returns the first one."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _KEY.match(key):
        raise ApiError(400, "invalid_idempotency_key", "1-255 printable ASCII characters", "Idempotency-Key")
    try:
        booking = BookingRequest.model_validate(_payload())
    except ValidationError as exc:
        raise validation_error(exc) from None
    started = engine().start(NAME, booking.model_dump(mode="json"), idempotency_key=key)
    record = engine().get(started.saga_id)
    location = url_for("sagas.show", saga_id=started.saga_id)
    return jsonify(record.as_dict()), 202 if started.created else 200, {"Location": location}
