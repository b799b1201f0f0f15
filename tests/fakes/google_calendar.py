"""A stateful fake of Google Calendar v3 (events insert/delete) and Google's OAuth token endpoint.

It runs inside a pytest-httpserver server so the real SDK (google-api-python-client,
google-auth, httplib2) talks HTTP to it: paths, headers, the JWT assertion grant and
Google's error bodies are what the real services use. Every request is recorded.
Like Google, it keeps ids of deleted events: inserting one again is a 409, deleting
it again a 410.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

ACCESS_TOKEN = "ya29.test"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
EVENTS = re.compile(r"/calendar/v3/calendars/(?P<calendar>[^/]+)/events(?:/(?P<event>[^/]+))?")
EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")  # base32hex, as Google requires for client-chosen ids
STALL_LIMIT_S = 10.0


@dataclass
class Recorded:
    """One request as the server saw it."""

    op: str  # "token", "insert", "delete" or "unknown"
    method: str
    path: str  # percent-decoded
    raw_uri: str  # as sent
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None
    claims: dict[str, Any] = field(default_factory=dict)  # the JWT assertion's payload (token requests)


@dataclass
class _Scripted:
    status: int
    reason: str | None
    message: str
    gate: threading.Event | None = None
    proceed: bool = False  # after the gate opens, do the request for real instead of failing


def google_error(status: int, reason: str, message: str) -> Response:
    """An error in Google's JSON API format."""
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}],
        }
    }
    return Response(json.dumps(body), status=status, content_type="application/json; charset=UTF-8")


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FakeGoogleCalendar:
    """The calendar `calendar_id` plus a token endpoint at /token that trusts `public_key`."""

    def __init__(self, server: HTTPServer, *, public_key: rsa.RSAPublicKey, calendar_id: str = "primary"):
        self.server = server
        self.public_key = public_key
        self.calendar_id = calendar_id
        self.events: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self._scripted: dict[str, deque[_Scripted]] = {"token": deque(), "insert": deque(), "delete": deque()}
        self._lock = threading.Lock()
        self._gates: list[threading.Event] = []
        server.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    @property
    def api_base(self) -> str:
        """What GoogleCalendar takes as `api_base` (Google's root URL)."""
        return self.server.url_for("/")

    @property
    def token_uri(self) -> str:
        return self.server.url_for("/token")

    def fail(
        self, op: str, status: int, reason: str | None = None, message: str = "Scripted failure"
    ) -> None:
        """Answer the next `op` request with this error instead of doing it."""
        self._scripted[op].append(_Scripted(status, reason, message))

    def stall(self, op: str, *, proceed: bool = False) -> threading.Event:
        """Hold the next `op` request until the returned event is set, then answer 503 or,
        with `proceed`, do it (a request that lands after the client gave up)."""
        gate = threading.Event()
        self._gates.append(gate)
        self._scripted[op].append(_Scripted(503, "backendError", "Stalled", gate, proceed))
        return gate

    def release(self) -> None:
        """Let every stalled request go (teardown calls it so no handler outlives its test)."""
        for gate in self._gates:
            gate.set()

    def calls(self, op: str) -> list[Recorded]:
        return [r for r in self.requests if r.op == op]

    def live_events(self) -> set[str]:
        return {eid for eid, event in self.events.items() if event["status"] == "confirmed"}

    # --- the server side -------------------------------------------------------------------

    def _handle(self, request: Request) -> Response:
        recorded = self._record(request)
        with self._lock:
            self.requests.append(recorded)
            scripted = self._scripted[recorded.op].popleft() if self._scripted.get(recorded.op) else None
        if scripted is not None and scripted.gate is not None:
            scripted.gate.wait(STALL_LIMIT_S)
        if scripted is not None and not scripted.proceed:
            if recorded.op == "token":
                body = {"error": scripted.reason or "server_error", "error_description": scripted.message}
                return Response(json.dumps(body), status=scripted.status, content_type="application/json")
            return google_error(scripted.status, scripted.reason or str(scripted.status), scripted.message)
        if recorded.op == "token":
            return self._token(recorded)
        if recorded.op == "unknown":
            return google_error(404, "notFound", "Not Found")
        if request.headers.get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return google_error(401, "authError", "Request had invalid authentication credentials.")
        match = EVENTS.fullmatch(recorded.path)
        assert match is not None
        if match["calendar"] != self.calendar_id:
            return google_error(404, "notFound", "Not Found")
        with self._lock:
            if recorded.op == "insert":
                return self._insert(recorded.json)
            return self._delete(match["event"])

    def _record(self, request: Request) -> Recorded:
        match = EVENTS.fullmatch(request.path)
        if request.method == "POST" and request.path == "/token":
            op = "token"
        elif match and request.method == "POST" and match["event"] is None:
            op = "insert"
        elif match and request.method == "DELETE" and match["event"] is not None:
            op = "delete"
        else:
            op = "unknown"
        body = request.get_data()
        recorded = Recorded(
            op=op,
            method=request.method,
            path=request.path,
            raw_uri=str(request.environ.get("REQUEST_URI") or request.full_path),
            headers=dict(request.headers),
            body=body,
        )
        if op == "token":
            recorded.form = dict(request.form)
            parts = recorded.form.get("assertion", "").split(".")
            if len(parts) == 3:
                try:
                    recorded.claims = json.loads(_b64url(parts[1]))
                except ValueError:
                    pass
        elif body and "json" in (request.content_type or ""):
            recorded.json = json.loads(body)
        return recorded

    def _token(self, recorded: Recorded) -> Response:
        """RFC 7523: accept a JWT assertion signed (RS256) by the service account's key."""
        assertion = recorded.form.get("assertion", "")
        parts = assertion.split(".")
        if recorded.form.get("grant_type") != JWT_GRANT or len(parts) != 3:
            return self._token_error(400, "unsupported_grant_type", "Invalid grant_type.")
        try:
            self.public_key.verify(
                _b64url(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception:
            return self._token_error(400, "invalid_grant", "Invalid JWT Signature.")
        body = {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"}
        return Response(json.dumps(body), status=200, content_type="application/json")

    @staticmethod
    def _token_error(status: int, error: str, description: str) -> Response:
        body = {"error": error, "error_description": description}
        return Response(json.dumps(body), status=status, content_type="application/json")

    def _insert(self, body: Any) -> Response:
        if not isinstance(body, dict) or "start" not in body or "end" not in body:
            return google_error(400, "required", "Missing time.")
        event_id = str(body.get("id") or secrets.token_hex(13))
        if not EVENT_ID.fullmatch(event_id):
            return google_error(400, "invalid", "Invalid resource id value.")
        if event_id in self.events:
            return google_error(409, "duplicate", "The requested identifier already exists.")
        event = {**body, "id": event_id, "kind": "calendar#event", "status": "confirmed", "etag": '"1"'}
        self.events[event_id] = event
        return Response(json.dumps(event), status=200, content_type="application/json; charset=UTF-8")

    def _delete(self, event_id: str) -> Response:
        event = self.events.get(event_id)
        if event is None:
            return google_error(404, "notFound", "Not Found")
        if event["status"] == "cancelled":
            return google_error(410, "deleted", "Resource has been deleted")
        event["status"] = "cancelled"
        return Response(status=204)
