"""JSON errors for every 4xx and 5xx: a stable `code`, a `message`, and the `field` at fault."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger("app")


class ApiError(Exception):
    """An error the API answers with `status` and a JSON body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        """The response body."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return {**body, **self.extra}


def validation_error(
    exc: ValidationError,
    status: int = 422,
    code: str = "validation_error",
    message: str = "the request body is invalid",
) -> ApiError:
    """422 (or `status`) naming every bad field by its dotted path, e.g. `slot.start`."""
    errors = [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "body",
            "code": error["type"],
            "message": error["msg"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]
    return ApiError(status, code, message, errors[0]["field"], errors=errors)


def register(app: Flask) -> None:
    """Install handlers so no error ever leaves as an HTML page."""

    @app.errorhandler(ApiError)
    def _api(exc: ApiError) -> tuple[Response, int]:
        return jsonify(exc.to_dict()), exc.status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        # Keep the exception's own headers (Retry-After on 429, Allow on 405).
        response = exc.get_response()
        code = (exc.name or "error").lower().replace(" ", "_")
        response.data = json.dumps({"code": code, "message": exc.description}).encode()
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return jsonify({"code": "internal_error", "message": "internal error; nothing was started"}), 500
