"""POST /sagas/<id>/signals/<name> and /sagas/<id>/cancel: a person's hand on a running saga.

Signed like POST /book (the same Standard Webhooks secret): whoever may start a
booking may approve, reject or cancel one, and nobody else.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.booking import engine
from app.errors import ApiError, validation_error
from app.sagas import known_id
from app.signatures import SignatureCheck
from saga import SagaNotFound
from saga.errors import ActionRefused, UnknownSignal

bp = Blueprint("controls", __name__)
M = TypeVar("M", bound=BaseModel)


class SignalRequest(BaseModel):
    """The answer a gate waits for."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    note: str = Field("", max_length=500, description="kept in the saga's history")


class CancelRequest(BaseModel):
    """Why the saga is stopped."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=500, description="kept in the saga's history")


def _body(model: type[M]) -> M:
    signatures: SignatureCheck = current_app.extensions["saga_signatures"]
    signatures.verify(request)
    raw = request.get_data(cache=True)
    if raw and not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send application/json", "Content-Type")
    body = request.get_json(silent=True) if raw else {}
    if body is None:
        raise ApiError(400, "invalid_json", "the request body is not valid JSON", "body")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _saga(saga_id: str) -> Response:
    return jsonify(engine().get(saga_id).as_dict())


@bp.post("/sagas/<saga_id>/signals/<signal>")
def signal(saga_id: str, signal: str) -> tuple[Response, int]:
    """Approve or reject the gate waiting for `signal`; the same answer again is a no-op (200)."""
    known_id(saga_id)
    answer = _body(SignalRequest)
    try:
        engine().signal(saga_id, signal, answer.decision == "approve", answer.note)
    except SagaNotFound as exc:
        raise ApiError(404, "saga_not_found", str(exc), "id") from None
    except UnknownSignal as exc:
        raise ApiError(404, "unknown_signal", str(exc), "signal") from None
    except ActionRefused as exc:
        raise ApiError(409, "not_waiting", str(exc), "decision") from None
    return _saga(saga_id), 200


@bp.post("/sagas/<saga_id>/cancel")
def cancel(saga_id: str) -> tuple[Response, int]:
    """Stop the saga at the next step boundary and compensate (202: it goes on in the workers)."""
    known_id(saga_id)
    request_ = _body(CancelRequest)
    try:
        engine().cancel(saga_id, request_.note or "no reason given")
    except SagaNotFound as exc:
        raise ApiError(404, "saga_not_found", str(exc), "id") from None
    except ActionRefused as exc:
        raise ApiError(409, "already_finished", str(exc), "id") from None
    return _saga(saga_id), 202
