"""A stateful fake of Twilio's Messages API (2010-04-01) on localhost, for the real SDK to call.

Point a client at it with `client.api.base_url = fake.url`. It answers what the
SDK sends for `messages.create` and `messages.list`, in Twilio's JSON shapes
(errors included, quoting the number like Twilio does), records every request,
and can be scripted to fail or to hang the next request.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

INVALID_NUMBER = "+15005550001"  # as with Twilio's test credentials: error 21211
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_META = ("first_page_uri", "next_page_uri", "previous_page_uri", "page", "page_size", "start", "end", "uri")


@dataclass(frozen=True)
class Recorded:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    auth: tuple[str, str] | None


@dataclass
class _Fail:
    status: int
    body: str


@dataclass
class _Hang:
    """Do the work, then wait for `release` before answering (the answer that comes too late)."""

    release: threading.Event = field(default_factory=threading.Event)


def error_body(status: int, code: int, message: str) -> str:
    """Twilio's legacy error document."""
    return json.dumps(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
    )


class FakeTwilio:
    """Messages.json for one account: POST creates (status queued, no date_sent yet), GET lists."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.requests: list[Recorded] = []
        self.messages: list[dict[str, Any]] = []  # oldest first
        self.callbacks: dict[str, str] = {}  # SID -> StatusCallback
        self._script: deque[_Fail | _Hang] = deque()
        self._hangs: list[_Hang] = []
        self._lock = threading.Lock()
        self.errors: list[BaseException] = []  # raised inside the fake: a test should check it is empty
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        self._server.fake = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-twilio", daemon=True
        )

    @property
    def url(self) -> str:
        """The `api_base` to give the SDK."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def path(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def start(self) -> FakeTwilio:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release any hung request, stop serving and join every handler thread."""
        for hang in self._hangs:
            hang.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(
        self, status: int, code: int | None = None, message: str = "", *, body: str | None = None
    ) -> None:
        """The next request gets this error (a Twilio error document unless `body` is given)."""
        text = body if body is not None else error_body(status, code if code is not None else status, message)
        self._script.append(_Fail(status, text))

    def hang_next(self) -> threading.Event:
        """The next request is processed, but answered only once the returned event is set."""
        hang = _Hang()
        self._script.append(hang)
        self._hangs.append(hang)
        return hang.release

    def posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    # Called by the handler threads.

    def handle(self, method: str, target: str, headers: Any, raw: bytes) -> tuple[int, str, _Hang | None]:
        split = urlsplit(target)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        form = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        with self._lock:
            self.requests.append(Recorded(method, split.path, query, form, _basic_auth(headers)))
            step = self._script.popleft() if self._script else None
            if isinstance(step, _Fail):
                return step.status, step.body, None
            if split.path != self.path:
                return 404, error_body(404, 20404, f"The requested resource {split.path} was not found"), step
            if _basic_auth(headers) != (self.account_sid, self.auth_token):
                return 401, error_body(401, 20003, "Authenticate"), step
            if method == "POST":
                return (*self._create(form), step)
            return 200, self._list(query), step

    def _create(self, form: dict[str, str]) -> tuple[int, str]:
        to = form.get("To", "")
        if to == INVALID_NUMBER or not _E164.fullmatch(to):
            return 400, error_body(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not form.get("Body"):
            return 400, error_body(400, 21602, "Message body is required.")
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        message = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": to,
            "from": form.get("From"),
            "body": form["Body"],
            "status": "queued",
            "direction": "outbound-api",
            "num_segments": "1",
            "num_media": "0",
            "date_created": now,
            "date_updated": now,
            "date_sent": None,
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "messaging_service_sid": None,
            "api_version": "2010-04-01",
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        self.messages.append(message)
        self.callbacks[sid] = form.get("StatusCallback", "")
        return 201, json.dumps(message)

    def _list(self, query: dict[str, str]) -> str:
        found = list(reversed(self.messages))  # newest first, like Twilio
        for name, attr in (("To", "to"), ("From", "from")):
            if name in query:
                found = [m for m in found if m[attr] == query[name]]
        if "DateSent>" in query:  # date_sent is set only once a message left Twilio
            after = datetime.fromisoformat(query["DateSent>"].replace("Z", "+00:00"))
            found = [m for m in found if m["date_sent"] and parsedate_to_datetime(m["date_sent"]) >= after]
        size = int(query.get("PageSize", "50"))
        page = {key: None for key in _META} | {"page": 0, "page_size": size, "start": 0, "uri": self.path}
        return json.dumps(page | {"messages": found[:size], "end": max(0, min(size, len(found)) - 1)})


class _Server(ThreadingHTTPServer):
    fake: FakeTwilio
    daemon_threads = True  # a kept-alive connection a test never closed must not block stop()

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, ConnectionError):  # a client that gave up is fine
            self.fake.errors.append(error)


def _basic_auth(headers: Any) -> tuple[str, str] | None:
    value = headers.get("Authorization", "")
    if not value.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(value[6:]).decode().partition(":")
    return user, password


def _handler(fake: FakeTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like Twilio

        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, body, hang = fake.handle(self.command, self.path, self.headers, raw)
            if isinstance(hang, _Hang):
                hang.release.wait(timeout=30)  # a safety net only: every test releases it
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # request lines carry phone numbers

    return Handler
