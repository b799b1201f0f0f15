"""TwilioMessaging: the real Twilio SDK against a local fake of the Messages API, never the internet."""

from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from werkzeug.datastructures import MultiDict

from jobs.providers import twilio_sms
from jobs.providers.errors import (
    InvalidPhoneNumber,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from jobs.providers.twilio_sms import TwilioMessaging, provider_error, reference
from tests.fakes.twilio import INVALID_NUMBER, FakeTwilio

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
FROM = "+15005550006"
PHONE = "+447700900123"
OTHER_PHONE = "+447700900456"
PUBLIC_URL = "https://relay.example.com/"  # the trailing slash must not double up
SAGA = "0f1e2d3c"
KEY = f"{SAGA}:send_sms:do"


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server
    assert server.errors == []


def make(api_base: str, **overrides: Any) -> TwilioMessaging:
    args: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "from_number": FROM,
        "public_url": PUBLIC_URL,
        "timeout": 5.0,
        "api_base": api_base,
    }
    return TwilioMessaging(**(args | overrides))


@pytest.fixture
def messaging(fake: FakeTwilio) -> Iterator[TwilioMessaging]:
    adapter = make(fake.url)
    yield adapter
    adapter.close()


def send(messaging: TwilioMessaging, *, key: str = KEY, to: str = PHONE, timeout: float = 5.0) -> str:
    return messaging.send(
        saga_id=SAGA, idempotency_key=key, to=to, body="Booked.", kind="confirmation", timeout=timeout
    )


def send_sms_step(messaging: TwilioMessaging, attempt: int) -> str:
    """What the booking step is meant to do: on a retry, look before sending again."""
    if attempt > 1 and (earlier := messaging.sent(idempotency_key=KEY, to=PHONE, timeout=5.0)):
        return earlier
    return send(messaging)


def assert_private(error: BaseException) -> None:
    """Nothing a log or the saga record could get from the error quotes the number or a credential."""
    shown = "".join(traceback.format_exception(error)) + repr(error)
    for secret in (PHONE, PHONE[1:], INVALID_NUMBER, INVALID_NUMBER[1:], AUTH_TOKEN, "0123456789abcdef"):
        assert secret not in shown
    assert error.__context__ is None and error.__cause__ is None


# --- sending ---------------------------------------------------------------------------------------


def test_send_posts_to_from_body_with_reference_and_callback_with_basic_auth(
    fake: FakeTwilio, messaging: TwilioMessaging
) -> None:
    sid = messaging.send(
        saga_id=SAGA, idempotency_key=KEY, to=PHONE, body="Booked.", kind="apology", timeout=5.0
    )

    [post] = fake.posts()
    assert post.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert post.form == {
        "To": PHONE,
        "From": FROM,
        "Body": f"Booked. {reference(KEY)}",
        "StatusCallback": f"https://relay.example.com/twilio/status?saga_id={SAGA}&kind=apology",
    }
    assert post.auth == (ACCOUNT_SID, AUTH_TOKEN)
    assert re.fullmatch(r"SM[0-9a-f]{32}", sid) and sid == fake.messages[0]["sid"]


def test_reference_is_short_deterministic_and_differs_per_key() -> None:
    assert re.fullmatch(r"Ref [A-Z2-7]{8}", reference(KEY))
    assert reference(KEY) == reference(KEY)
    assert reference(KEY) != reference(f"{SAGA}:send_sms:undo")


def test_send_rejects_an_unknown_kind_without_calling_twilio(
    fake: FakeTwilio, messaging: TwilioMessaging
) -> None:
    with pytest.raises(ValueError, match="kind"):
        messaging.send(saga_id=SAGA, idempotency_key=KEY, to=PHONE, body="x", kind="promo", timeout=5.0)
    assert fake.requests == []


def test_no_time_left_is_transient_and_calls_nobody(fake: FakeTwilio, messaging: TwilioMessaging) -> None:
    with pytest.raises(TransientProviderError) as raised:
        send(messaging, timeout=0)
    assert raised.value.code == "timeout" and fake.requests == []


# --- finding an earlier send ----------------------------------------------------------------------


def test_sent_finds_the_message_sent_under_the_same_key_only(
    fake: FakeTwilio, messaging: TwilioMessaging
) -> None:
    sid = send(messaging)
    other = send(messaging, key=f"{SAGA}-other:send_sms:do")

    assert messaging.sent(idempotency_key=KEY, to=PHONE, timeout=5.0) == sid
    assert messaging.sent(idempotency_key=f"{SAGA}-other:send_sms:do", to=PHONE, timeout=5.0) == other
    assert messaging.sent(idempotency_key=f"{SAGA}:send_sms:undo", to=PHONE, timeout=5.0) is None
    assert messaging.sent(idempotency_key=KEY, to=OTHER_PHONE, timeout=5.0) is None
    lists = [r for r in fake.requests if r.method == "GET"]
    # Filtered on the number; no DateSent filter, which would hide a message still queued (the fake's).
    assert [r.query for r in lists[:1]] == [{"To": PHONE, "PageSize": str(twilio_sms.LIST_LIMIT)}]
    assert fake.messages[0]["date_sent"] is None


def test_sent_is_none_when_nothing_was_sent(fake: FakeTwilio, messaging: TwilioMessaging) -> None:
    assert messaging.sent(idempotency_key=KEY, to=PHONE, timeout=5.0) is None
    assert len(fake.requests) == 1


def test_a_retry_after_a_crash_finds_the_first_send_instead_of_sending_again(
    fake: FakeTwilio, messaging: TwilioMessaging
) -> None:
    first = send_sms_step(messaging, attempt=1)  # Twilio answered; the worker died before recording it

    assert send_sms_step(make(fake.url), attempt=2) == first  # another process, another client
    assert len(fake.messages) == 1 and len(fake.posts()) == 1


def test_an_answer_lost_to_a_timeout_is_found_by_the_retry(
    fake: FakeTwilio, messaging: TwilioMessaging
) -> None:
    release = fake.hang_next()  # Twilio creates the message, then answers too late
    with pytest.raises(TransientProviderError) as raised:
        send(messaging, timeout=0.3)
    release.set()
    assert raised.value.code == "timeout"
    assert_private(raised.value)

    assert send_sms_step(messaging, attempt=2) == fake.messages[0]["sid"]
    assert len(fake.messages) == 1 and len(fake.posts()) == 1


# --- errors ---------------------------------------------------------------------------------------

QUOTING = f"The 'To' number {PHONE} cannot receive this message."

POST_ERRORS: list[tuple[int, int | None, str | None, type[ProviderError], str]] = [
    # (HTTP status, Twilio code, raw body or None for Twilio's error document, expected type, code)
    (400, 21614, None, InvalidPhoneNumber, "21614"),
    (400, 21610, None, InvalidPhoneNumber, "21610"),
    (400, 21408, None, InvalidPhoneNumber, "21408"),
    (400, 21602, None, PermanentProviderError, "21602"),
    (403, 20403, None, PermanentProviderError, "20403"),
    (404, 20404, None, PermanentProviderError, "20404"),
    (429, 20429, None, TransientProviderError, "20429"),
    (500, 20500, None, TransientProviderError, "20500"),
    (503, None, "<html>Service Unavailable</html>", TransientProviderError, "503"),
    (  # RFC 9457 problem details: the SDK raises TwilioServiceException, not TwilioRestException
        400,
        None,
        f'{{"type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid To", "status": 400,'
        f' "code": 21211, "detail": "{QUOTING}"}}',
        InvalidPhoneNumber,
        "21211",
    ),
    (200, None, "not json", TransientProviderError, "JSONDecodeError"),
]


@pytest.mark.parametrize(("status", "code", "body", "expected", "expected_code"), POST_ERRORS)
def test_send_errors_are_classified_and_never_quote_the_number(
    fake: FakeTwilio,
    messaging: TwilioMessaging,
    status: int,
    code: int | None,
    body: str | None,
    expected: type[ProviderError],
    expected_code: str,
) -> None:
    fake.fail_next(status, code, QUOTING, body=body)
    with pytest.raises(ProviderError) as raised:
        send(messaging)
    assert type(raised.value) is expected and raised.value.code == expected_code
    assert raised.value.provider == "twilio"
    assert_private(raised.value)


def test_an_invalid_number_is_permanent_and_not_quoted(fake: FakeTwilio, messaging: TwilioMessaging) -> None:
    with pytest.raises(InvalidPhoneNumber) as raised:
        send(messaging, to=INVALID_NUMBER)
    assert raised.value.code == "21211" and not raised.value.retryable
    assert INVALID_NUMBER in fake.posts()[0].form["To"]  # it did reach Twilio, which quoted it back
    assert_private(raised.value)


def test_bad_credentials_are_permanent_and_not_quoted(fake: FakeTwilio) -> None:
    messaging = make(fake.url, auth_token="0" * 32)
    with pytest.raises(PermanentProviderError) as raised:
        send(messaging)
    assert raised.value.code == "20003" and "HTTP 401" in str(raised.value)
    assert "0" * 32 not in str(raised.value)
    assert_private(raised.value)


def test_connection_refused_is_transient() -> None:
    with socket.socket() as probe:  # a port nobody listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientProviderError) as raised:
        send(make(f"http://127.0.0.1:{port}"))
    assert raised.value.code == "connection_error"
    assert_private(raised.value)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (500, 20500, TransientProviderError),
        (429, 20429, TransientProviderError),
        (401, 20003, PermanentProviderError),
    ],
)
def test_list_errors_are_classified_too(
    fake: FakeTwilio, messaging: TwilioMessaging, status: int, code: int, expected: type[ProviderError]
) -> None:
    # A list page that is not a 200 comes out of the SDK as a bare TwilioException.
    fake.fail_next(status, code, QUOTING)
    with pytest.raises(ProviderError) as raised:
        messaging.sent(idempotency_key=KEY, to=PHONE, timeout=5.0)
    assert type(raised.value) is expected and raised.value.code == str(code)
    assert_private(raised.value)


def test_a_list_that_times_out_is_transient(fake: FakeTwilio, messaging: TwilioMessaging) -> None:
    release = fake.hang_next()
    with pytest.raises(TransientProviderError) as raised:
        messaging.sent(idempotency_key=KEY, to=PHONE, timeout=0.3)
    release.set()
    assert raised.value.code == "timeout"


def test_unexpected_exceptions_are_transient_and_scrubbed() -> None:
    error = provider_error(RuntimeError(f"boom for {PHONE} token {AUTH_TOKEN}"))
    assert isinstance(error, TransientProviderError) and error.code == "RuntimeError"
    assert PHONE not in str(error) and AUTH_TOKEN not in str(error)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_the_sdk_does_not_retry_on_its_own(fake: FakeTwilio, messaging: TwilioMessaging, status: int) -> None:
    fake.fail_next(status)
    with pytest.raises(TransientProviderError):
        send(messaging)
    assert len(fake.posts()) == 1 and fake.messages == []


def test_no_retries_are_configured_for_https_either(
    fake: FakeTwilio, messaging: TwilioMessaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake speaks http; TwilioHttpClient mounts its own adapter for https:// only.
    built: list[Client] = []

    def keeping(*args: Any, **kwargs: Any) -> Client:
        built.append(Client(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(twilio_sms, "Client", keeping)
    send(messaging)
    session = built[0].http_client.session
    for url in ("https://api.twilio.com/", fake.url):
        assert session.get_adapter(url).max_retries.total == 0


def test_the_sdk_logs_no_phone_number(
    fake: FakeTwilio, messaging: TwilioMessaging, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    send(messaging)
    messaging.sent(idempotency_key=KEY, to=PHONE, timeout=5.0)  # the SDK logs query strings at INFO
    assert all(PHONE not in record.getMessage() for record in caplog.records)


# --- one client per process and thread ------------------------------------------------------------


def test_one_client_per_thread_and_per_process(
    fake: FakeTwilio, messaging: TwilioMessaging, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Client] = []

    def counting(*args: Any, **kwargs: Any) -> Client:
        built.append(Client(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(twilio_sms, "Client", counting)
    send(messaging)
    send(messaging, key="k2")
    assert len(built) == 1

    thread = threading.Thread(target=send, args=(messaging,), kwargs={"key": "k3"})
    thread.start()
    thread.join()
    assert len(built) == 2

    pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: pid + 1)  # as seen in a forked work-horse
    send(messaging, key="k4")
    assert len(built) == 3 and len(fake.messages) == 4

    messaging.close()  # this thread's client is gone; the next call builds another
    send(messaging, key="k5")
    assert len(built) == 4


def test_a_forked_child_sends_with_the_parents_object(fake: FakeTwilio, messaging: TwilioMessaging) -> None:
    send(messaging)  # the parent has a client and a session before the fork, like an RQ worker
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.write(write, send(messaging, key="child").encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_sid = pipe.read()
    assert os.waitpid(child, 0)[1] == 0
    assert messaging.sent(idempotency_key="child", to=PHONE, timeout=5.0) == child_sid
    assert send(messaging, key="after") != child_sid  # the parent's own client still works


def test_pickles_without_clients_and_hides_the_token(fake: FakeTwilio, messaging: TwilioMessaging) -> None:
    send(messaging)
    copy = pickle.loads(pickle.dumps(messaging))
    assert copy.sent(idempotency_key=KEY, to=PHONE, timeout=5.0) == fake.messages[0]["sid"]
    assert AUTH_TOKEN not in repr(messaging)


# --- status callbacks -----------------------------------------------------------------------------

CALLBACK = {"MessageSid": "SM" + "ab" * 16, "MessageStatus": "delivered", "To": PHONE}


@pytest.fixture
def signed() -> Callable[..., tuple[str, str]]:
    def sign(url: str, params: dict[str, str], token: str = AUTH_TOKEN) -> tuple[str, str]:
        return url, RequestValidator(token).compute_signature(url, params)

    return sign


def test_a_signed_status_callback_validates(
    messaging: TwilioMessaging, signed: Callable[..., tuple[str, str]]
) -> None:
    url, signature = signed(messaging.status_callback_url(SAGA, "confirmation"), CALLBACK)
    assert url == f"https://relay.example.com/twilio/status?saga_id={SAGA}&kind=confirmation"
    assert messaging.status_callback_valid(url, CALLBACK, signature)
    assert messaging.status_callback_valid(url, MultiDict(CALLBACK), signature)  # Flask's request.form


def test_tampered_wrongly_addressed_or_unsigned_callbacks_do_not_validate(
    messaging: TwilioMessaging, signed: Callable[..., tuple[str, str]]
) -> None:
    url, signature = signed(messaging.status_callback_url(SAGA, "confirmation"), CALLBACK)
    assert not messaging.status_callback_valid(url, CALLBACK | {"MessageStatus": "failed"}, signature)
    elsewhere = messaging.status_callback_url(SAGA, "apology")
    assert not messaging.status_callback_valid(elsewhere, CALLBACK, signature)
    assert not messaging.status_callback_valid(url, CALLBACK, None)
    assert not messaging.status_callback_valid(url, CALLBACK, "")
    _, forged = signed(url, CALLBACK, token="0" * 32)
    assert not messaging.status_callback_valid(url, CALLBACK, forged)
