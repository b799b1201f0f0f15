"""POST /book: verify, validate, start one booking saga, answer where to watch it."""

from __future__ import annotations

import hashlib
import json
import re

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from pydantic import ValidationError

from app.errors import ApiError, validation_error
from app.models import HTTPS_ONLY, BookingRequest
from app.signatures import SignatureCheck
from config import Settings
from jobs.booking import NAME
from saga import SagaEngine
from saga.errors import IdempotencyKeyReused

bp = Blueprint("booking", __name__)

KEY_PATTERN = "^[\\x21-\\x7e]{1,255}$"  # printable ASCII, no spaces
_KEY = re.compile(KEY_PATTERN)


def engine() -> SagaEngine:
    """The engine this app was created with."""
    engine: SagaEngine = current_app.extensions["saga_engine"]
    return engine


def _idempotency_key() -> str | None:
    """`Idempotency-Key`, else the Standard Webhooks `webhook-id` (the sender's retries reuse it)."""
    for header in ("Idempotency-Key", "webhook-id"):
        value = request.headers.get(header)
        if value is not None and not _KEY.match(value):
            raise ApiError(400, "invalid_idempotency_key", "use 1-255 printable ASCII characters", header)
    return request.headers.get("Idempotency-Key") or request.headers.get("webhook-id")


def _booking() -> BookingRequest:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the booking as application/json", "Content-Type")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON", "body")
    settings: Settings = current_app.extensions["saga_settings"]
    try:
        return BookingRequest.model_validate(body, context={HTTPS_ONLY: settings.app_env == "production"})
    except ValidationError as exc:
        raise validation_error(exc) from None


@bp.post("/book")
def book() -> tuple[Response, int, dict[str, str]]:
    """Start a booking saga; a repeat with the same idempotency key returns the first one."""
    signatures: SignatureCheck = current_app.extensions["saga_signatures"]
    signatures.verify(request)
    key = _idempotency_key()
    booking = _booking()
    data = booking.saga_data()
    fingerprint = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    try:
        started = engine().start(
            NAME,
            data,
            idempotency_key=key,
            fingerprint=fingerprint,
            reference=booking.call_id,
            callback_url=booking.callback_url,
        )
    except IdempotencyKeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc), "Idempotency-Key") from None
    record = started.record or engine().get(started.saga_id)
    location = url_for("sagas.show", saga_id=started.saga_id)
    return jsonify(record.as_dict()), 202 if started.created else 200, {"Location": location}
