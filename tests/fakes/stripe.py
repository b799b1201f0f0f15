"""A stateful fake of the Stripe endpoints the adapter uses, with Stripe's idempotency rules.

Served by pytest-httpserver; every request is recorded so tests can assert on
what reached "Stripe": methods, paths, idempotency keys and form fields.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from werkzeug import Request, Response


@dataclass
class Seen:
    """One request as Stripe would have received it."""

    method: str
    path: str
    key: str | None
    form: dict[str, str]


@dataclass
class FakeStripe:
    """PaymentIntents (create, retrieve, confirm, capture, cancel) and refunds."""

    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    failures: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)
    _replies: dict[str, tuple[str, Response]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fail_next(self, path_pattern: str, status: int, error: dict[str, Any]) -> None:
        """Answer the next request whose path matches with this error (once)."""
        self.failures.append((path_pattern, status, error))

    def calls(self, method: str, pattern: str) -> list[Seen]:
        """Recorded requests of `method` whose path matches `pattern`."""
        return [r for r in self.requests if r.method == method and re.fullmatch(pattern, r.path)]

    def handle(self, request: Request) -> Response:
        """The WSGI handler pytest-httpserver calls for every request."""
        with self._lock:
            seen = Seen(
                request.method, request.path, request.headers.get("Idempotency-Key"), dict(request.form)
            )
            self.requests.append(seen)
            for i, (pattern, status, error) in enumerate(self.failures):
                if re.fullmatch(pattern, request.path):
                    del self.failures[i]
                    return _json({"error": error}, status)
            if seen.key is not None and seen.method == "POST":
                fingerprint = json.dumps([seen.path, sorted(seen.form.items())])
                if seen.key in self._replies:
                    first, reply = self._replies[seen.key]
                    if first != fingerprint:
                        message = "Keys for idempotent requests can only be used with the same parameters"
                        return _json({"error": {"type": "idempotency_error", "message": message}}, 400)
                    return reply
                reply = self._route(seen)
                self._replies[seen.key] = (fingerprint, reply)
                return reply
            return self._route(seen)

    def _route(self, seen: Seen) -> Response:
        if seen.method == "POST" and seen.path == "/v1/payment_intents":
            return self._create(seen.form)
        if seen.method == "POST" and seen.path == "/v1/refunds":
            return self._refund(seen.form)
        match = re.fullmatch(r"/v1/payment_intents/(pi_\w+)(?:/(confirm|capture|cancel))?", seen.path)
        if match is None or match[1] not in self.intents:
            return _json({"error": {"type": "invalid_request_error", "code": "resource_missing"}}, 404)
        intent = self.intents[match[1]]
        action = match[2]
        if action == "confirm":
            return self._confirm(intent)
        if action == "capture":
            if intent["status"] != "requires_capture":
                return _invalid(
                    "payment_intent_unexpected_state", f"cannot capture a {intent['status']} intent"
                )
            intent["status"] = "succeeded"
        elif action == "cancel":
            if intent["status"] in ("succeeded", "canceled"):
                return _invalid(
                    "payment_intent_unexpected_state", f"cannot cancel a {intent['status']} intent"
                )
            intent["status"] = "canceled"
        return _json(intent)

    def _create(self, form: dict[str, str]) -> Response:
        intent_id = f"pi_{next(self._ids):06d}"
        self.intents[intent_id] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": int(form["amount"]),
            "currency": form["currency"],
            "payment_method": form.get("payment_method"),
            "capture_method": form.get("capture_method", "automatic"),
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            "status": "requires_confirmation",
            "last_payment_error": None,
        }
        return _json(self.intents[intent_id])

    def _confirm(self, intent: dict[str, Any]) -> Response:
        if intent["status"] != "requires_confirmation":
            return _invalid("payment_intent_unexpected_state", f"cannot confirm a {intent['status']} intent")
        if "Declined" in (intent["payment_method"] or ""):
            error = {"type": "card_error", "code": "card_declined", "message": "Your card was declined."}
            intent["status"], intent["last_payment_error"] = "requires_payment_method", error
            return _json({"error": {**error, "payment_intent": intent}}, 402)
        intent["status"] = "requires_capture" if intent["capture_method"] == "manual" else "succeeded"
        return _json(intent)

    def _refund(self, form: dict[str, str]) -> Response:
        intent = self.intents.get(form.get("payment_intent", ""))
        if intent is None or intent["status"] != "succeeded":
            return _invalid("charge_not_refundable", "nothing captured to refund")
        refund_id = f"re_{next(self._ids):06d}"
        self.refunds[refund_id] = {
            "id": refund_id,
            "object": "refund",
            "payment_intent": intent["id"],
            "amount": intent["amount"],
            "status": "succeeded",
        }
        return _json(self.refunds[refund_id])


def _invalid(code: str, message: str) -> Response:
    return _json({"error": {"type": "invalid_request_error", "code": code, "message": message}}, 400)


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
