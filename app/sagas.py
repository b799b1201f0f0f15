"""GET /sagas/<id>: where a saga stands, step by step, with its history."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify

from app.booking import engine
from app.errors import ApiError
from saga import SagaNotFound

bp = Blueprint("sagas", __name__)

SAGA_ID = re.compile(r"^[0-9a-f]{32}$")


def known_id(saga_id: str) -> None:
    """404 for anything that cannot be a saga id, before it reaches Redis."""
    if not SAGA_ID.match(saga_id):
        raise ApiError(404, "saga_not_found", f"no saga {saga_id!r}", "id")


@bp.get("/sagas/<saga_id>")
def show(saga_id: str) -> Response:
    """The saga's status, steps and history; 404 JSON when unknown or expired."""
    known_id(saga_id)
    try:
        return jsonify(engine().get(saga_id).as_dict())
    except SagaNotFound as exc:
        raise ApiError(404, "saga_not_found", str(exc), "id") from None
