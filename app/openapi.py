"""GET /openapi.json (OpenAPI 3.1 from the pydantic models) and GET /tools/book.json.

The tool definition is the booking request as a self-contained JSON Schema
(no `$ref`), the form LLM agent platforms register as a function/tool.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic.json_schema import models_json_schema

from app.booking import KEY_PATTERN
from app.controls import CancelRequest, SignalRequest
from app.models import BookingRequest
from app.views import ErrorBody, SagaView

bp = Blueprint("openapi", __name__)

_REF = "#/components/schemas/{model}"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}},
    }


def _saga(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="SagaView")}}},
    }


def _header(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", **({"pattern": pattern} if pattern else {})}
    return {"name": name, "in": "header", "required": False, "schema": schema, "description": description}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the public API."""
    _, schemas = models_json_schema(
        [
            (BookingRequest, "validation"),
            (SignalRequest, "validation"),
            (CancelRequest, "validation"),
            (SagaView, "serialization"),
            (ErrorBody, "serialization"),
        ],
        ref_template=_REF,
    )
    signed = [
        _header("webhook-timestamp", "Standard Webhooks timestamp (seconds); within 5 minutes"),
        _header("webhook-signature", "v1,<base64 HMAC-SHA256 of id.timestamp.body>, space-separated"),
    ]
    saga_id = {"name": "saga_id", "in": "path", "required": True, "schema": {"type": "string"}}
    book = {
        "summary": "Book a property viewing (starts a booking saga)",
        "operationId": "book",
        "parameters": [
            _header(
                "Idempotency-Key", "Repeats with the same key return the first saga (kept 72 h)", KEY_PATTERN
            ),
            _header(
                "webhook-id",
                "Standard Webhooks message id; the idempotency key when none is given",
                KEY_PATTERN,
            ),
            *signed,
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="BookingRequest")}}},
        },
        "responses": {
            "202": {**_saga("Saga started"), "headers": {"Location": {"schema": {"type": "string"}}}},
            "200": {
                **_saga("The saga this idempotency key started before"),
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            "400": _error("Unreadable JSON or a malformed header"),
            "401": _error("Missing, invalid or expired webhook signature"),
            "413": _error("Body over 64 KB"),
            "415": _error("Not application/json"),
            "422": _error("Invalid booking, or the idempotency key was used for another booking"),
            "429": {
                **_error("Rate limit exceeded"),
                "headers": {"Retry-After": {"schema": {"type": "string"}}},
            },
        },
    }
    show = {
        "summary": "Where a saga stands: steps, attempts, provider ids, history",
        "operationId": "getSaga",
        "parameters": [saga_id],
        "responses": {"200": _saga("The saga"), "404": _error("Unknown or expired saga")},
    }
    signal = {
        "summary": "Approve or reject the gate a waiting saga is parked at",
        "operationId": "signalSaga",
        "parameters": [
            saga_id,
            {"name": "signal", "in": "path", "required": True, "schema": {"type": "string"}},
            _header("webhook-id", "Standard Webhooks message id"),
            *signed,
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="SignalRequest")}}},
        },
        "responses": {
            "200": _saga("Applied (or the same answer was applied before)"),
            "400": _error("Unreadable JSON"),
            "401": _error("Missing, invalid or expired webhook signature"),
            "404": _error("Unknown saga, or no gate waits for this signal"),
            "409": _error("The gate is not waiting (answered, timed out or cancelled)"),
            "415": _error("Not application/json"),
            "422": _error("Invalid decision or note"),
        },
    }
    cancel = {
        "summary": "Stop a running or waiting saga at the next step boundary and compensate",
        "operationId": "cancelSaga",
        "parameters": [saga_id, _header("webhook-id", "Standard Webhooks message id"), *signed],
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="CancelRequest")}}},
        },
        "responses": {
            "202": _saga("Cancelled, or cancel requested of the running step; compensation follows"),
            "400": _error("Unreadable JSON"),
            "401": _error("Missing, invalid or expired webhook signature"),
            "404": _error("Unknown or expired saga"),
            "409": _error("The saga is already compensating or finished"),
            "415": _error("Not application/json"),
            "422": _error("Invalid note"),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Saga Relay", "version": "1.0.0"},
        "paths": {
            "/book": {"post": book},
            "/sagas/{saga_id}": {"get": show},
            "/sagas/{saga_id}/signals/{signal}": {"post": signal},
            "/sagas/{saga_id}/cancel": {"post": cancel},
        },
        "components": {"schemas": schemas["$defs"]},
    }


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(defs[schema["$ref"].rsplit("/", 1)[1]], defs)
        return {k: _inline(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def tool() -> dict[str, Any]:
    """The booking request as an LLM tool definition with a self-contained parameter schema."""
    schema = BookingRequest.model_json_schema()
    # Where the outcome goes is the platform's to set, never the model's to invent.
    schema["properties"].pop("callback_url", None)
    return {
        "name": "book_viewing",
        "description": (
            "Book a property viewing for the caller: reserves the slot, charges the viewing fee, texts a "
            "confirmation and adds it to the calendar; undone automatically if any step fails. Send an "
            "Idempotency-Key header (e.g. the call id) so a retry never books twice."
        ),
        "parameters": _inline(schema, schema.get("$defs", {})),
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document."""
    return jsonify(document())


@bp.get("/tools/book.json")
def book_tool() -> Response:
    """The tool definition for LLM agent platforms."""
    return jsonify(tool())
