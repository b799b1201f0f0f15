"""Twilio SMS behind the `Messaging` protocol, through the official SDK.

Twilio has no idempotency key, so every body ends with a short reference derived
from the step's key (`reference`), and `sent` finds an earlier message by listing
the recent messages to the same number and matching that reference. `send` does
not list first: the happy path stays one HTTP call, and the booking step asks
`sent` itself before a retry (attempt > 1) sends again.

What stays possible: Twilio's list can lag behind a create, so a retry right after
an attempt whose answer was lost (a crash or timeout after Twilio accepted) may not
see the first message and send a second. Twice at most unless answers are lost again
within that lag; the alternative, never retrying, would drop confirmations instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode, urlparse

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from jobs.providers.base import Messaging
from jobs.providers.errors import (
    InvalidPhoneNumber,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from saga.outcome import redact

PROVIDER = "twilio"
KINDS = frozenset({"confirmation", "apology"})
LIST_LIMIT = 50  # one page: far more messages than one caller gets from us in a booking's life
# Fixed messages for the codes that mean "this number cannot get our SMS": Twilio's own text quotes it.
INVALID_NUMBER_CODES: dict[int, str] = {
    21211: "The 'To' number is not a valid phone number.",
    21614: "The 'To' number is not a mobile number.",
    21610: "The recipient has unsubscribed (replied STOP).",
    21408: "Sending to the recipient's region is not enabled.",
}
# Beyond saga.outcome.redact: numbers quoted without '+', and 32-hex tokens (auth token, SIDs' tails).
_BARE_NUMBER = re.compile(r"\d[\d\s().-]{5,}\d")
_HEX_TOKEN = re.compile(r"[0-9a-fA-F]{32}")
# The SDK logs every request's query string at INFO, and `sent` filters on the caller's number.
_HTTP_LOG = logging.getLogger(__name__ + ".http")
_HTTP_LOG.setLevel(logging.WARNING)

T = TypeVar("T")


def reference(idempotency_key: str) -> str:
    """`Ref XXXXXXXX`: 40 bits of sha256(key), unique among the few messages one number gets."""
    digest = base64.b32encode(hashlib.sha256(idempotency_key.encode()).digest()).decode()
    return "Ref " + digest[:8]


def scrub(text: str) -> str:
    """A provider message without phone numbers or credentials, short enough for a record."""
    text = _HEX_TOKEN.sub("[secret]", redact(text))
    return _BARE_NUMBER.sub("[number]", text)[:200]


def _from_status(status: int, code: int | None, message: str) -> ProviderError:
    code_text = str(code if code is not None else status)
    if code in INVALID_NUMBER_CODES:
        return InvalidPhoneNumber(PROVIDER, code_text, INVALID_NUMBER_CODES[code])
    text = f"HTTP {status}: {scrub(message)}"
    if status in (408, 429) or status >= 500 or status < 400:
        return TransientProviderError(PROVIDER, code_text, text)
    return PermanentProviderError(PROVIDER, code_text, text)


def provider_error(exc: BaseException) -> ProviderError:
    """Classify anything the SDK or `requests` raised; the result never quotes the number."""
    if isinstance(exc, TwilioRestException):
        return _from_status(int(exc.status), _int_or_none(exc.code), str(exc.msg))
    if isinstance(exc, TwilioServiceException):  # RFC 9457 errors: a sibling, not a subclass
        return _from_status(int(exc.status), _int_or_none(exc.code), f"{exc.title}: {exc.detail or ''}")
    if isinstance(exc, requests.exceptions.Timeout):  # before ConnectionError: ConnectTimeout is both
        return TransientProviderError(PROVIDER, "timeout", "Twilio did not answer in time.")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return TransientProviderError(PROVIDER, "connection_error", "Could not connect to Twilio.")
    if isinstance(exc, TwilioException) and len(exc.args) > 1:
        # A list page that is not a 200 raises a bare TwilioException("Unable to fetch page", response).
        status = getattr(exc.args[1], "status_code", None)
        if isinstance(status, int):
            return _from_status(status, _payload_code(exc.args[1]), str(exc.args[0]))
    return TransientProviderError(PROVIDER, type(exc).__name__, scrub(str(exc.args[0]) if exc.args else ""))


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _payload_code(response: Any) -> int | None:
    try:
        return _int_or_none(json.loads(response.text).get("code"))
    except Exception:  # any body at all may come back with an error status
        return None


class TwilioMessaging(Messaging):
    """Twilio Programmable Messaging; one SDK client per process and thread, built on first use.

    The object is built in the RQ worker before it forks and then used in forked
    work-horses and in the engine's deadline threads; a `requests` session (and
    its sockets) must not be shared across either, hence the (pid, thread) key. As
    the engine starts a thread per attempt, that is about one client per attempt; a
    thread's client goes with its thread-locals, and urllib3 closes a collected pool.
    """

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str,
        public_url: str,
        timeout: float,
        api_base: str | None = None,
    ) -> None:
        if urlparse(public_url).scheme not in ("http", "https"):
            raise ValueError("public_url must be an absolute http(s) URL")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.from_number = from_number
        self.public_url = public_url.rstrip("/")
        self.timeout = timeout
        self.api_base = api_base
        self._local = threading.local()

    def __repr__(self) -> str:  # never show the token
        return f"TwilioMessaging(account_sid={self.account_sid!r}, from_number={self.from_number!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Only configuration crosses a process boundary; clients are rebuilt where they are used.
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _client(self, timeout: float) -> Client:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            # No retries: a retried POST could send twice; retries are the engine's, with `sent` first.
            http = TwilioHttpClient(timeout=self.timeout, logger=_HTTP_LOG, max_retries=0)
            client = Client(self.account_sid, self._auth_token, http_client=http)
            if self.api_base is not None:
                client.api.base_url = self.api_base
                # TWILIO_EDGE/TWILIO_REGION from the environment would rewrite the host of any URL.
                client.edge = client.region = None
            local.client, local.http, local.pid = client, http, os.getpid()
        # Per call: the time left before the step's deadline. `requests` applies it to the connect
        # and to each read, not to the whole call; the engine's deadline thread is the backstop.
        local.http.timeout = timeout
        client_: Client = local.client
        return client_

    def _call(self, timeout: float, call: Callable[[Client], T]) -> T:
        if timeout <= 0:
            raise TransientProviderError(PROVIDER, "timeout", "No time left before the step's deadline.")
        try:
            return call(self._client(min(timeout, self.timeout)))
        except (TwilioException, requests.exceptions.RequestException, ValueError) as exc:
            error = provider_error(exc)
        # Raised outside the except block: the SDK's exception quotes the number, so it must not be
        # chained as __context__ into tracebacks and logs.
        raise error

    def close(self) -> None:
        """Close this thread's HTTP session now rather than when the thread ends (a worker stopping)."""
        local = self._local
        if getattr(local, "pid", None) == os.getpid() and local.http.session is not None:
            local.http.session.close()
        local.__dict__.clear()

    def status_callback_url(self, saga_id: str, kind: str) -> str:
        """Where Twilio reports delivery; the web endpoint validates signatures against this URL."""
        return f"{self.public_url}/twilio/status?{urlencode({'saga_id': saga_id, 'kind': kind})}"

    def send(
        self, *, saga_id: str, idempotency_key: str, to: str, body: str, kind: str, timeout: float
    ) -> str:
        """Send `body` plus the key's reference and return the SID. Does not look for an earlier send."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}")
        message = self._call(
            timeout,
            lambda client: client.messages.create(
                to=to,
                from_=self.from_number,
                body=f"{body} {reference(idempotency_key)}",
                status_callback=self.status_callback_url(saga_id, kind),
            ),
        )
        return str(message.sid)

    def sent(self, *, idempotency_key: str, to: str, timeout: float) -> str | None:
        """The SID of a message to `to` carrying this key's reference, or None.

        No DateSent filter: a message still queued has no date_sent yet, and it is
        exactly the one a quick retry must find. The newest LIST_LIMIT messages to
        the number are one request. A miss can be Twilio's list lagging (see module).
        """
        ref = reference(idempotency_key)
        messages = self._call(timeout, lambda client: client.messages.list(to=to, limit=LIST_LIMIT))
        for message in messages:
            if (message.body or "").rstrip().endswith(ref):
                return str(message.sid)
        return None

    def status_callback_valid(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        """True only for a request Twilio signed with our auth token (X-Twilio-Signature, HMAC-SHA1).

        `url` must be the public URL Twilio called, query string included, not the one
        seen behind a proxy; `params` the POSTed form (a Flask MultiDict works).
        """
        if not signature:
            return False  # the SDK's compare() raises on None
        return bool(RequestValidator(self._auth_token).validate(url, params, signature))
