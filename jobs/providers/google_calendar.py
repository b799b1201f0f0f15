"""Google Calendar through the official SDK (google-api-python-client) and a service account.

The saga engine owns retries and deadlines, so this adapter makes exactly one
attempt per call (`num_retries=0`), bounds every HTTP exchange by the step's time
left, and turns every failure into a Permanent- or TransientProviderError. The
event id is chosen by the caller, so an insert is idempotent: a 409 means an
earlier attempt went through.

Objects are created in the RQ worker before it forks and then used in forked
children and in threads. httplib2 connections and the credentials' token cache
are not safe to share, so each (process, thread) builds its own on first use.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import google_auth_httplib2
import httplib2
from google.auth import exceptions as auth_exceptions
from google.oauth2 import service_account
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from jobs.providers.base import Calendar
from jobs.providers.errors import PermanentProviderError, ProviderError, TransientProviderError

PROVIDER = "google_calendar"
SCOPES = ["https://www.googleapis.com/auth/calendar.events"]
SERVICE_PATH = "calendar/v3/"
REQUIRED_FIELDS = ("client_email", "private_key", "token_uri")
# 403s that Google documents as "slow down", not "you may not".
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"})
MAX_MESSAGE = 300
# The exceptions a call can raise because of the remote side; anything else is our bug and propagates.
CALL_ERRORS = (
    HttpError,
    auth_exceptions.GoogleAuthError,
    httplib2.HttpLib2Error,
    http.client.HTTPException,
    OSError,  # socket errors, ConnectionError, TimeoutError (= socket.timeout)
)


def load_service_account(value: str) -> dict[str, Any]:
    """Service-account info from a JSON file path or the JSON itself, validated for config checks.

    Errors name the problem but never echo the JSON: it holds the private key.
    """
    text = value.strip()
    if not text:
        raise ValueError("service account: empty value (give a JSON file path or the JSON itself)")
    if text[0] in "{[":
        source = "service account JSON"
    else:
        path = Path(text).expanduser()
        source = f"service account file {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValueError(f"{source} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{source} cannot be read: {type(exc).__name__}") from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg and the position only, not str(exc) with the document.
        raise ValueError(f"{source} is not JSON ({exc.msg} at line {exc.lineno})") from None
    return check_service_account(info, source)


def check_service_account(info: Any, source: str = "service account info") -> dict[str, Any]:
    """Reject info the SDK would only reject at the first call: missing fields or a broken key."""
    if not isinstance(info, dict):
        raise ValueError(f"{source} is not a JSON object")
    missing = [name for name in REQUIRED_FIELDS if not isinstance(info.get(name), str) or not info[name]]
    if missing:
        raise ValueError(f"{source} is missing {', '.join(missing)}")
    try:
        service_account.Credentials.from_service_account_info(info, scopes=SCOPES)
    except (ValueError, TypeError):
        raise ValueError(f"{source}: private_key is not a valid PEM private key") from None
    return info


def _reasons(exc: HttpError) -> list[str]:
    """Google's machine-readable reasons: `error.errors[].reason` and `error.details[].reason`."""
    try:
        error = json.loads(exc.content.decode("utf-8"))["error"]
        items = [*error.get("errors", []), *error.get("details", [])]
        return [str(item["reason"]) for item in items if isinstance(item, dict) and item.get("reason")]
    except (ValueError, KeyError, TypeError, AttributeError):
        return []


def _short(text: str) -> str:
    return " ".join(text.split())[:MAX_MESSAGE]


def classify_error(exc: BaseException) -> ProviderError:
    """The one place that decides whether retrying a failed call can help.

    Messages come from the server's error text or the exception type, never from
    request headers, so no access token or key ends up in a step's recorded error.
    """
    if isinstance(exc, HttpError):
        status = int(exc.resp.status)
        reasons = _reasons(exc)
        code = reasons[0] if reasons else str(status)
        message = _short(f"HTTP {status}: {exc.reason}")
        if status in (408, 429) or status >= 500:
            return TransientProviderError(PROVIDER, code, message)
        if status == 403 and RATE_LIMIT_REASONS.intersection(reasons):
            return TransientProviderError(PROVIDER, code, message)
        if 400 <= status < 500:
            return PermanentProviderError(PROVIDER, code, message)
        return TransientProviderError(PROVIDER, code, message)
    if isinstance(exc, auth_exceptions.RefreshError):
        # The token endpoint refused the key (deleted, wrong account, bad clock): permanent,
        # unless google-auth itself flags the refusal as temporary (5xx, temporarily_unavailable).
        detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) else type(exc).__name__
        code = detail.split(":", 1)[0] if ":" in detail else "refresh_error"
        cls = TransientProviderError if getattr(exc, "retryable", False) else PermanentProviderError
        return cls(PROVIDER, _short(code), _short(f"token refresh failed: {detail}"))
    if isinstance(exc, TimeoutError):
        return TransientProviderError(PROVIDER, "timeout", _short(f"no answer in time: {exc}"))
    if isinstance(exc, OSError):
        return TransientProviderError(PROVIDER, "network", _short(f"{type(exc).__name__}: {exc}"))
    if isinstance(exc, auth_exceptions.GoogleAuthError | httplib2.HttpLib2Error | http.client.HTTPException):
        return TransientProviderError(PROVIDER, "transport", _short(f"{type(exc).__name__}: {exc}"))
    return TransientProviderError(PROVIDER, "unknown", _short(type(exc).__name__))


class GoogleCalendar(Calendar):
    """Events in one calendar, written as a service account (share the calendar with its email)."""

    def __init__(
        self,
        *,
        service_account_info: Mapping[str, Any] | str,
        calendar_id: str,
        timeout: float,
        api_base: str | None = None,
    ) -> None:
        """`service_account_info`: the parsed JSON, or a path / JSON string for `load_service_account`.

        `timeout` caps each HTTP exchange; `api_base` replaces https://www.googleapis.com
        (the SDK's root URL; `calendar/v3/` is appended, as Google serves it).
        """
        if isinstance(service_account_info, str):
            info = load_service_account(service_account_info)
        else:
            info = check_service_account(dict(service_account_info))
        if not calendar_id:
            raise ValueError("calendar_id must not be empty")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.__setstate__(
            {"info": info, "calendar_id": calendar_id, "timeout": float(timeout), "api_base": api_base}
        )

    def __getstate__(self) -> dict[str, Any]:
        # Clients never cross a process boundary; a spawned child builds its own.
        return {
            "info": self._info,
            "calendar_id": self.calendar_id,
            "timeout": self.timeout,
            "api_base": self.api_base,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._info: dict[str, Any] = state["info"]
        self.calendar_id: str = state["calendar_id"]
        self.timeout: float = state["timeout"]
        self.api_base: str | None = state["api_base"]
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"GoogleCalendar(calendar_id={self.calendar_id!r}, api_base={self.api_base!r})"

    def _client(self) -> tuple[service_account.Credentials, Any]:
        """This process's and thread's credentials (token cache) and API resource, built once."""
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            credentials = service_account.Credentials.from_service_account_info(self._info, scopes=SCOPES)
            endpoint = None if self.api_base is None else self.api_base.rstrip("/") + "/" + SERVICE_PATH
            # build() refuses `credentials` together with `http`: the credentials ride in the http.
            service = build(
                "calendar",
                "v3",
                http=self._http(credentials, self.timeout),
                static_discovery=True,
                cache_discovery=False,
                client_options={"api_endpoint": endpoint} if endpoint else None,
            )
            local.credentials, local.service, local.pid = credentials, service, os.getpid()
        return local.credentials, local.service

    @staticmethod
    def _http(
        credentials: service_account.Credentials, timeout: float
    ) -> google_auth_httplib2.AuthorizedHttp:
        # One refresh-and-resend on a 401 (a token that expired in flight), not google-auth's default two.
        return google_auth_httplib2.AuthorizedHttp(
            credentials, http=httplib2.Http(timeout=timeout), max_refresh_attempts=1
        )

    def _execute(self, make_request: Callable[[Any], Any], timeout: float) -> Any:
        """Run one request with a fresh connection whose socket timeout fits in the step's time left."""
        limit = min(self.timeout, timeout)
        if limit <= 0:
            raise TransientProviderError(PROVIDER, "timeout", "no time left before the step's deadline")
        credentials, service = self._client()
        http_ = self._http(credentials, limit)
        try:
            return make_request(service).execute(http=http_, num_retries=0)
        finally:
            http_.close()

    def create_event(
        self, *, saga_id: str, event_id: str, summary: str, start: datetime, minutes: int, timeout: float
    ) -> str:
        """Insert under our id; 409 (the id exists, even as a deleted event) means an earlier try landed."""
        body = {
            "id": event_id,
            "summary": summary,
            "start": {"dateTime": start.isoformat()},
            "end": {"dateTime": (start + timedelta(minutes=minutes)).isoformat()},
            "extendedProperties": {"private": {"saga_id": saga_id}},
        }
        try:
            self._execute(lambda s: s.events().insert(calendarId=self.calendar_id, body=body), timeout)
        except HttpError as exc:
            if exc.resp.status == 409:
                return event_id
            raise classify_error(exc) from exc
        except CALL_ERRORS as exc:
            raise classify_error(exc) from exc
        return event_id

    def delete_event(self, *, event_id: str, timeout: float) -> bool:
        """Delete; False when it was never created (404) or already deleted (410), both success."""
        try:
            self._execute(lambda s: s.events().delete(calendarId=self.calendar_id, eventId=event_id), timeout)
        except HttpError as exc:
            if exc.resp.status in (404, 410):
                return False
            raise classify_error(exc) from exc
        except CALL_ERRORS as exc:
            raise classify_error(exc) from exc
        return True
