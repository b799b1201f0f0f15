"""POST /twilio/status: Twilio's delivery reports for our SMS, recorded on the step.

Twilio signs each callback over the public URL it called and the form fields;
a request without a valid signature is refused with 403. Behind a TLS proxy the
URL Twilio signed is PUBLIC_URL + path, never the internal request URL.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from app.booking import engine
from app.errors import ApiError
from saga import Direction

bp = Blueprint("twilio_status", __name__)

# Which step sent a message of each kind, and in which direction.
_SENDER = {"confirmation": ("send_sms", Direction.DO), "apology": ("send_sms", Direction.UNDO)}


@bp.post("/twilio/status")
def status() -> Response:
    """Record MessageStatus on the step that sent MessageSid; 204 when recorded."""
    messaging = current_app.extensions.get("saga_twilio")
    if messaging is None:
        raise ApiError(404, "not_found", "Twilio is not configured (TWILIO_MODE=sandbox)")
    url = messaging.public_url + request.full_path.rstrip("?")
    if not messaging.status_callback_valid(url, request.form, request.headers.get("X-Twilio-Signature")):
        raise ApiError(403, "signature_invalid", "Twilio signature rejected", "X-Twilio-Signature")
    sender = _SENDER.get(request.args.get("kind", ""))
    sid, state = request.form.get("MessageSid"), request.form.get("MessageStatus")
    saga_id = request.args.get("saga_id", "")
    if sender is None or not sid or not state:
        raise ApiError(400, "invalid_callback", "expected kind, saga_id, MessageSid and MessageStatus")
    step, direction = sender
    if not engine().record_provider_status(saga_id, step, direction, sid, state):
        raise ApiError(404, "message_not_found", "no saga step sent this message", "MessageSid")
    return Response(status=204)
