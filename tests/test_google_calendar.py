"""GoogleCalendar: the real SDK (discovery, google-auth, httplib2) against a local fake of Google.

Nothing touches the internet: the service account's token_uri and the API base both point
at pytest-httpserver, which serves the OAuth token endpoint and the two event endpoints.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httplib2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import _exponential_backoff
from google.auth import exceptions as auth_exceptions
from googleapiclient.errors import HttpError
from pytest_httpserver import HTTPServer

from jobs.booking import event_id as booking_event_id
from jobs.providers.errors import PermanentProviderError, ProviderError, TransientProviderError
from jobs.providers.google_calendar import SCOPES, GoogleCalendar, classify_error, load_service_account
from tests.fakes.google_calendar import ACCESS_TOKEN, JWT_GRANT, FakeGoogleCalendar

SAGA_ID = "0f3c9a1be2d44c55a1b2c3d4e5f60718"
EVENT_ID = booking_event_id(SAGA_ID)
START = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
CLIENT_EMAIL = "saga-relay@test-project.iam.gserviceaccount.com"
EVENTS_PATH = "/calendar/v3/calendars/primary/events"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """The service account's key; the fake token endpoint checks assertions against its public half."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake(
    httpserver: HTTPServer, rsa_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeGoogleCalendar]:
    # google-auth only looks boundaries up on the internet when this is set; make sure it is not.
    monkeypatch.delenv(
        "GOOGLE_SDK_EXPERIMENTAL_PYTHON_REGIONAL_ACCESS_BOUNDARY_LOOKUP_ENABLED", raising=False
    )
    fake = FakeGoogleCalendar(httpserver, public_key=rsa_key.public_key())
    yield fake
    fake.release()
    httpserver.check_handler_errors()


def _info(fake: FakeGoogleCalendar, key: rsa.RSAPrivateKey) -> dict[str, Any]:
    return {
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "k1",
        "private_key": _pem(key),
        "client_email": CLIENT_EMAIL,
        "client_id": "1234567890",
        "token_uri": fake.token_uri,
    }


@pytest.fixture
def sa_info(fake: FakeGoogleCalendar, rsa_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    return _info(fake, rsa_key)


def _calendar(sa_info: dict[str, Any] | str, api_base: str, **overrides: Any) -> GoogleCalendar:
    args: dict[str, Any] = {"calendar_id": "primary", "timeout": 5.0, **overrides}
    return GoogleCalendar(service_account_info=sa_info, api_base=api_base, **args)


@pytest.fixture
def calendar(sa_info: dict[str, Any], fake: FakeGoogleCalendar) -> GoogleCalendar:
    return _calendar(sa_info, fake.api_base)


def _create(calendar: GoogleCalendar, timeout: float = 5.0) -> str:
    return calendar.create_event(
        saga_id=SAGA_ID,
        event_id=EVENT_ID,
        summary="Viewing: viewing-42",
        start=START,
        minutes=30,
        timeout=timeout,
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _assert_no_secrets(err: BaseException, sa_info: dict[str, Any]) -> None:
    text = str(err)
    assert ACCESS_TOKEN not in text
    assert "PRIVATE KEY" not in text and sa_info["private_key"][40:80] not in text


# --- the happy path: what goes over the wire ----------------------------------------------------


def test_insert_sends_the_event_with_a_token_from_the_jwt_grant(
    calendar: GoogleCalendar, fake: FakeGoogleCalendar
) -> None:
    assert _create(calendar) == EVENT_ID

    [token] = fake.calls("token")
    assert token.form["grant_type"] == JWT_GRANT
    assert token.claims["iss"] == CLIENT_EMAIL
    assert token.claims["scope"] == SCOPES[0]
    # google-auth always names Google's token endpoint as the audience, whatever token_uri is.
    assert token.claims["aud"] == "https://oauth2.googleapis.com/token"
    [insert] = fake.calls("insert")
    assert insert.path == EVENTS_PATH
    assert insert.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert insert.json == {
        "id": EVENT_ID,
        "summary": "Viewing: viewing-42",
        "start": {"dateTime": "2026-12-01T15:00:00+00:00"},
        "end": {"dateTime": "2026-12-01T15:30:00+00:00"},
        "extendedProperties": {"private": {"saga_id": SAGA_ID}},
    }
    assert fake.live_events() == {EVENT_ID}
    assert [r.op for r in fake.requests] == ["token", "insert"]


def test_calendar_id_is_escaped_in_the_path(
    httpserver: HTTPServer, rsa_key: rsa.RSAPrivateKey, sa_info: dict[str, Any]
) -> None:
    httpserver.clear()
    team = "team@group.calendar.google.com"
    fake = FakeGoogleCalendar(httpserver, public_key=rsa_key.public_key(), calendar_id=team)
    assert _create(_calendar(sa_info, fake.api_base, calendar_id=team)) == EVENT_ID
    [insert] = fake.calls("insert")
    assert insert.raw_uri.startswith("/calendar/v3/calendars/team%40group.calendar.google.com/events")
    assert fake.live_events() == {EVENT_ID}


def test_api_base_with_or_without_trailing_slash(sa_info: dict[str, Any], fake: FakeGoogleCalendar) -> None:
    assert _create(_calendar(sa_info, fake.api_base.rstrip("/"))) == EVENT_ID
    assert [r.path for r in fake.calls("insert")] == [EVENTS_PATH]


# --- idempotency -----------------------------------------------------------------------------------


def test_retry_after_an_insert_went_through_is_success(
    calendar: GoogleCalendar, fake: FakeGoogleCalendar
) -> None:
    assert _create(calendar) == EVENT_ID
    assert _create(calendar) == EVENT_ID  # the server answers 409: it was us

    inserts = fake.calls("insert")
    assert len(inserts) == 2
    assert [r.json["id"] for r in inserts] == [EVENT_ID, EVENT_ID]
    assert inserts[0].body == inserts[1].body
    assert fake.live_events() == {EVENT_ID}
    assert len(fake.events) == 1


def test_retry_after_a_timed_out_insert_that_landed(
    calendar: GoogleCalendar, fake: FakeGoogleCalendar
) -> None:
    gate = fake.stall("insert", proceed=True)
    with pytest.raises(TransientProviderError) as excinfo:
        _create(calendar, timeout=0.5)
    assert excinfo.value.code == "timeout"
    gate.set()  # the server now stores the event, after the client gave up
    assert _create(calendar) == EVENT_ID  # 409: done
    assert fake.live_events() == {EVENT_ID}
    assert len(fake.calls("insert")) == 2


def test_insert_after_delete_does_not_revive_the_event(
    calendar: GoogleCalendar, fake: FakeGoogleCalendar
) -> None:
    _create(calendar)
    assert calendar.delete_event(event_id=EVENT_ID, timeout=5.0) is True
    assert _create(calendar) == EVENT_ID  # Google keeps the id of a deleted event: 409
    assert fake.live_events() == set()
    assert fake.events[EVENT_ID]["status"] == "cancelled"


# --- delete ------------------------------------------------------------------------------------


def test_delete_existing_event(calendar: GoogleCalendar, fake: FakeGoogleCalendar) -> None:
    _create(calendar)
    assert calendar.delete_event(event_id=EVENT_ID, timeout=5.0) is True
    [delete] = fake.calls("delete")
    assert delete.method == "DELETE"
    assert delete.path == f"{EVENTS_PATH}/{EVENT_ID}"
    assert delete.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert fake.live_events() == set()


def test_delete_never_created_is_false(calendar: GoogleCalendar, fake: FakeGoogleCalendar) -> None:
    assert calendar.delete_event(event_id=EVENT_ID, timeout=5.0) is False  # 404
    assert len(fake.calls("delete")) == 1


def test_delete_twice_is_false_the_second_time(calendar: GoogleCalendar, fake: FakeGoogleCalendar) -> None:
    _create(calendar)
    assert calendar.delete_event(event_id=EVENT_ID, timeout=5.0) is True
    assert calendar.delete_event(event_id=EVENT_ID, timeout=5.0) is False  # 410 Gone


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [(403, "requiredAccessLevel", PermanentProviderError), (503, "backendError", TransientProviderError)],
)
def test_delete_errors_are_classified(
    calendar: GoogleCalendar,
    fake: FakeGoogleCalendar,
    status: int,
    reason: str,
    expected: type[ProviderError],
) -> None:
    fake.fail("delete", status, reason)
    with pytest.raises(expected) as excinfo:
        calendar.delete_event(event_id=EVENT_ID, timeout=5.0)
    assert excinfo.value.code == reason


# --- errors through the real SDK ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "reason", "expected"),
    [
        (400, "invalid", PermanentProviderError),
        (403, "requiredAccessLevel", PermanentProviderError),
        (403, "forbidden", PermanentProviderError),
        (403, "rateLimitExceeded", TransientProviderError),
        (403, "userRateLimitExceeded", TransientProviderError),
        (429, "rateLimitExceeded", TransientProviderError),
        (500, "backendError", TransientProviderError),
        (503, "backendError", TransientProviderError),
    ],
)
def test_insert_http_errors_are_classified_and_not_retried_by_the_sdk(
    calendar: GoogleCalendar,
    fake: FakeGoogleCalendar,
    sa_info: dict[str, Any],
    status: int,
    reason: str,
    expected: type[ProviderError],
) -> None:
    fake.fail("insert", status, reason, "Scripted failure")
    with pytest.raises(expected) as excinfo:
        _create(calendar)
    err = excinfo.value
    assert type(err) is expected
    assert (err.provider, err.code) == ("google_calendar", reason)
    assert f"HTTP {status}: Scripted failure" in str(err)
    assert isinstance(err.__cause__, HttpError)
    _assert_no_secrets(err, sa_info)
    assert len(fake.calls("insert")) == 1  # num_retries=0: the engine owns retries
    assert fake.events == {}


def test_insert_into_an_unknown_calendar_is_permanent(
    sa_info: dict[str, Any], fake: FakeGoogleCalendar
) -> None:
    with pytest.raises(PermanentProviderError) as excinfo:
        _create(_calendar(sa_info, fake.api_base, calendar_id="nobody@example.com"))
    assert excinfo.value.code == "notFound"


def test_insert_with_an_invalid_event_id_is_permanent(
    calendar: GoogleCalendar, fake: FakeGoogleCalendar
) -> None:
    with pytest.raises(PermanentProviderError) as excinfo:
        calendar.create_event(
            saga_id="x", event_id="SR-Not_Base32", summary="s", start=START, minutes=30, timeout=5.0
        )
    assert excinfo.value.code == "invalid"


def test_a_401_refreshes_the_token_once_and_resends(
    calendar: GoogleCalendar, fake: FakeGoogleCalendar
) -> None:
    """google-auth's AuthorizedHttp: a token that expired in flight costs one refresh, not a failure."""
    fake.fail("insert", 401, "authError")
    assert _create(calendar) == EVENT_ID
    assert [r.op for r in fake.requests] == ["token", "insert", "token", "insert"]


def test_a_401_after_a_fresh_token_is_permanent(
    calendar: GoogleCalendar, fake: FakeGoogleCalendar, sa_info: dict[str, Any]
) -> None:
    fake.fail("insert", 401, "authError")
    fake.fail("insert", 401, "authError")
    with pytest.raises(PermanentProviderError) as excinfo:
        _create(calendar)
    assert excinfo.value.code == "authError"
    _assert_no_secrets(excinfo.value, sa_info)
    assert len(fake.calls("insert")) == 2  # max_refresh_attempts=1


def test_connection_refused_is_transient(sa_info: dict[str, Any], fake: FakeGoogleCalendar) -> None:
    calendar = _calendar(sa_info, f"http://127.0.0.1:{_closed_port()}/")
    with pytest.raises(TransientProviderError) as excinfo:
        _create(calendar)
    assert excinfo.value.code == "network"
    assert isinstance(excinfo.value.__cause__, ConnectionRefusedError)


def test_token_endpoint_unreachable_is_transient(sa_info: dict[str, Any], fake: FakeGoogleCalendar) -> None:
    info = {**sa_info, "token_uri": f"http://127.0.0.1:{_closed_port()}/token"}
    with pytest.raises(TransientProviderError):
        _create(_calendar(info, fake.api_base))
    assert fake.requests == []


@pytest.mark.parametrize(("own", "left"), [(5.0, 0.5), (0.5, 30.0)], ids=["time-left", "own-timeout"])
def test_a_server_that_does_not_answer_times_out(
    sa_info: dict[str, Any], fake: FakeGoogleCalendar, own: float, left: float
) -> None:
    """The socket timeout is min(constructor timeout, time left in the step)."""
    calendar = _calendar(sa_info, fake.api_base, timeout=own)
    gate = fake.stall("insert")
    began = time.monotonic()
    try:
        with pytest.raises(TransientProviderError) as excinfo:
            _create(calendar, timeout=left)
    finally:
        gate.set()
    assert excinfo.value.code == "timeout"
    assert time.monotonic() - began < 3.0
    assert isinstance(excinfo.value.__cause__, TimeoutError)


def test_no_time_left_makes_no_request(calendar: GoogleCalendar, fake: FakeGoogleCalendar) -> None:
    with pytest.raises(TransientProviderError):
        _create(calendar, timeout=0.0)
    assert fake.requests == []


def test_token_endpoint_refusal_is_permanent(
    calendar: GoogleCalendar, fake: FakeGoogleCalendar, sa_info: dict[str, Any]
) -> None:
    fake.fail("token", 401, "invalid_client", "The OAuth client was not found.")
    with pytest.raises(PermanentProviderError) as excinfo:
        _create(calendar)
    assert excinfo.value.code == "invalid_client"
    assert isinstance(excinfo.value.__cause__, auth_exceptions.RefreshError)
    _assert_no_secrets(excinfo.value, sa_info)
    assert [r.op for r in fake.requests] == ["token"]


def test_a_key_google_does_not_know_is_permanent(fake: FakeGoogleCalendar, sa_info: dict[str, Any]) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    info = {**sa_info, "private_key": _pem(other)}
    with pytest.raises(PermanentProviderError) as excinfo:
        _create(_calendar(info, fake.api_base))
    assert excinfo.value.code == "invalid_grant"
    _assert_no_secrets(excinfo.value, info)
    assert fake.calls("insert") == []


def test_token_endpoint_5xx_is_transient_after_google_auths_own_retries(
    calendar: GoogleCalendar, fake: FakeGoogleCalendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    """google-auth retries the token request itself (3 tries, 1 s then 2 s apart); we cannot turn it off."""
    sleeps: list[float] = []
    monkeypatch.setattr(_exponential_backoff, "time", SimpleNamespace(sleep=sleeps.append))
    for _ in range(3):
        fake.fail("token", 503, "temporarily_unavailable")
    with pytest.raises(TransientProviderError):
        _create(calendar)
    assert len(fake.calls("token")) == 3
    assert len(sleeps) == 2
    assert fake.calls("insert") == []


# --- one client per process and thread ---------------------------------------------------------


def test_token_is_reused_within_a_thread_and_fetched_per_thread(
    calendar: GoogleCalendar, fake: FakeGoogleCalendar
) -> None:
    _create(calendar)
    calendar.delete_event(event_id=EVENT_ID, timeout=5.0)
    assert len(fake.calls("token")) == 1

    results: list[bool] = []
    thread = threading.Thread(
        target=lambda: results.append(calendar.delete_event(event_id=EVENT_ID, timeout=5.0))
    )
    thread.start()
    thread.join(10)
    assert results == [False]
    assert len(fake.calls("token")) == 2


def _delete_in_child(calendar: GoogleCalendar) -> None:
    raise SystemExit(0 if calendar.delete_event(event_id=EVENT_ID, timeout=5.0) else 3)


def test_a_forked_child_builds_its_own_client(calendar: GoogleCalendar, fake: FakeGoogleCalendar) -> None:
    _create(calendar)  # the parent has a client (and a token) before forking, like an RQ worker
    child = multiprocessing.get_context("fork").Process(target=_delete_in_child, args=(calendar,))
    child.start()
    child.join(20)
    assert child.exitcode == 0
    assert len(fake.calls("token")) == 2
    assert fake.live_events() == set()


def test_pickles_without_its_clients(calendar: GoogleCalendar, fake: FakeGoogleCalendar) -> None:
    _create(calendar)
    copy = pickle.loads(pickle.dumps(calendar))
    assert (copy.calendar_id, copy.timeout, copy.api_base) == ("primary", 5.0, fake.api_base)
    assert copy.delete_event(event_id=EVENT_ID, timeout=5.0) is True
    assert "PRIVATE" not in repr(calendar)


# --- classify_error, case by case --------------------------------------------------------------


def _http_error(status: int, content: bytes | dict[str, Any]) -> HttpError:
    body = json.dumps(content).encode() if isinstance(content, dict) else content
    return HttpError(httplib2.Response({"status": str(status)}), body, uri="https://example.test/x")


def _google(status: int, reason: str) -> HttpError:
    return _http_error(
        status, {"error": {"code": status, "message": "m", "errors": [{"reason": reason, "message": "m"}]}}
    )


@pytest.mark.parametrize(
    ("exc", "expected", "code"),
    [
        (_google(400, "invalid"), PermanentProviderError, "invalid"),
        (_google(401, "authError"), PermanentProviderError, "authError"),
        (_google(403, "forbidden"), PermanentProviderError, "forbidden"),
        (_google(403, "quotaExceeded"), PermanentProviderError, "quotaExceeded"),
        (_google(403, "rateLimitExceeded"), TransientProviderError, "rateLimitExceeded"),
        (_google(403, "userRateLimitExceeded"), TransientProviderError, "userRateLimitExceeded"),
        (
            _http_error(
                403,
                {"error": {"code": 403, "message": "m", "details": [{"reason": "RATE_LIMIT_EXCEEDED"}]}},
            ),
            TransientProviderError,
            "RATE_LIMIT_EXCEEDED",
        ),
        (_google(404, "notFound"), PermanentProviderError, "notFound"),
        (_google(408, "timeout"), TransientProviderError, "timeout"),
        (_google(409, "duplicate"), PermanentProviderError, "duplicate"),
        (_google(429, "rateLimitExceeded"), TransientProviderError, "rateLimitExceeded"),
        (_google(500, "backendError"), TransientProviderError, "backendError"),
        (_http_error(502, b"<html>Bad Gateway</html>"), TransientProviderError, "502"),
        (_google(503, "backendError"), TransientProviderError, "backendError"),
        (_http_error(400, b""), PermanentProviderError, "400"),
        (
            auth_exceptions.RefreshError("invalid_grant: Invalid JWT Signature.", {}),
            PermanentProviderError,
            "invalid_grant",
        ),
        (
            auth_exceptions.RefreshError("server_error: x", {}, retryable=True),
            TransientProviderError,
            "server_error",
        ),
        (
            auth_exceptions.RefreshError("No access token in response."),
            PermanentProviderError,
            "refresh_error",
        ),
        (auth_exceptions.TransportError("boom"), TransientProviderError, "transport"),
        (TimeoutError("timed out"), TransientProviderError, "timeout"),
        (ConnectionRefusedError(111, "Connection refused"), TransientProviderError, "network"),
        (ConnectionResetError(104, "Connection reset by peer"), TransientProviderError, "network"),
        (OSError(101, "Network is unreachable"), TransientProviderError, "network"),
        (httplib2.ServerNotFoundError("Unable to find the server"), TransientProviderError, "transport"),
        (http.client.RemoteDisconnected("closed"), TransientProviderError, "network"),
        (http.client.IncompleteRead(b"x"), TransientProviderError, "transport"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_classify_error(exc: BaseException, expected: type[ProviderError], code: str) -> None:
    err = classify_error(exc)
    assert type(err) is expected
    assert err.provider == "google_calendar"
    assert err.code == code
    assert err.retryable is (expected is TransientProviderError)


def test_classify_error_keeps_messages_short() -> None:
    err = classify_error(_http_error(500, {"error": {"code": 500, "message": "x" * 5000}}))
    assert len(str(err)) < 400


# --- load_service_account ----------------------------------------------------------------------


def test_load_service_account_from_path_and_from_json(
    tmp_path: Path, sa_info: dict[str, Any], fake: FakeGoogleCalendar
) -> None:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(sa_info))
    assert load_service_account(str(path)) == sa_info
    assert load_service_account(json.dumps(sa_info)) == sa_info
    # The constructor takes either as well.
    assert _create(_calendar(str(path), fake.api_base)) == EVENT_ID


def test_load_service_account_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"service account file .*nope\.json does not exist"):
        load_service_account(str(tmp_path / "nope.json"))


def test_load_service_account_not_json(tmp_path: Path, sa_info: dict[str, Any]) -> None:
    path = tmp_path / "sa.json"
    path.write_text("client_email = x")
    with pytest.raises(ValueError, match=r"sa\.json is not JSON"):
        load_service_account(str(path))
    broken = json.dumps(sa_info)[:-1]
    with pytest.raises(ValueError, match="service account JSON is not JSON") as excinfo:
        load_service_account(broken)
    assert "PRIVATE KEY" not in str(excinfo.value)


def test_load_service_account_not_an_object() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        load_service_account("[]")


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        (("client_email",), "client_email"),
        (("private_key",), "private_key"),
        (("token_uri",), "token_uri"),
        (("client_email", "token_uri"), "client_email, token_uri"),
    ],
)
def test_load_service_account_missing_fields(
    sa_info: dict[str, Any], drop: tuple[str, ...], named: str
) -> None:
    info = {k: v for k, v in sa_info.items() if k not in drop}
    with pytest.raises(ValueError, match=f"service account JSON is missing {named}$"):
        load_service_account(json.dumps(info))


def test_load_service_account_bad_private_key(sa_info: dict[str, Any]) -> None:
    broken = sa_info["private_key"][:200] + "garbage"
    with pytest.raises(ValueError, match="private_key is not a valid PEM private key") as excinfo:
        load_service_account(json.dumps({**sa_info, "private_key": broken}))
    assert "garbage" not in str(excinfo.value)
    assert excinfo.value.__cause__ is None


def test_load_service_account_empty() -> None:
    with pytest.raises(ValueError, match="empty value"):
        load_service_account("  ")


def test_constructor_rejects_bad_settings(sa_info: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="calendar_id"):
        GoogleCalendar(service_account_info=sa_info, calendar_id="", timeout=5.0)
    with pytest.raises(ValueError, match="timeout"):
        GoogleCalendar(service_account_info=sa_info, calendar_id="primary", timeout=0)
    with pytest.raises(ValueError, match="missing private_key"):
        GoogleCalendar(
            service_account_info={**sa_info, "private_key": ""}, calendar_id="primary", timeout=5.0
        )
