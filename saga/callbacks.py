"""Completion callbacks: tell a finished saga's `callback_url` how it ended, signed, with retries.

Each delivery attempt is one RQ job (`{saga}-callback-{n}`). The first is
enqueued in the transaction that finishes the saga, so no crash can lose it.
An attempt claims its number on the saga hash before it POSTs and records the
answer after, writing only `keys.CALLBACK_FIELDS`: the saga is finished and its
state is never touched again from here. A transient failure enqueues the next
attempt at its backoff time in the same transaction as the record (not RQ's
Retry, which the threaded worker does not apply to these jobs). Every attempt
sends the same `webhook-id`, so a receiver drops a late duplicate.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, cast

import requests
from redis.client import Pipeline
from standardwebhooks.webhooks import Webhook

from saga import keys
from saga.definition import RetryPolicy
from saga.errors import InvalidDefinition, SagaNotFound
from saga.records import CallbackStatus, SagaRecord
from saga.store import iso

if TYPE_CHECKING:
    from saga.engine import SagaEngine

log = logging.getLogger("saga.callbacks")

Verdict = Literal["delivered", "retry", "stop"]
RETRYABLE_STATUSES = frozenset({408, 429})  # client errors that say "later", not "never"


def _default_retry() -> RetryPolicy:
    return RetryPolicy(max_attempts=8, initial_delay=5.0, max_delay=3600.0)


@dataclass(frozen=True)
class CallbackPolicy:
    """How callbacks are signed, how long one may take and how often it is tried.

    `signed_only` (production) refuses to exist without a secret, so an unsigned
    callback can never leave a production worker.
    """

    secret: str | None = None
    signed_only: bool = False
    retry: RetryPolicy = field(default_factory=_default_retry)
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.signed_only and not self.secret:
            raise InvalidDefinition("callbacks must be signed here: set CALLBACK_SECRET or WEBHOOK_SECRET")


@dataclass(frozen=True)
class CallbackEvent:
    """One saga outcome as sent: the message id receivers deduplicate on, and the exact body."""

    webhook_id: str
    body: str

    @classmethod
    def of(cls, record: SagaRecord) -> CallbackEvent:
        """The outcome of a finished saga, without any personal data (no name, phone or card)."""
        status = record.status.value
        payload = {
            "type": f"saga.{status}",
            "timestamp": record.finished_at or record.updated_at,
            "data": {
                "saga_id": record.id,
                "saga": record.name,
                "status": status,
                "call_id": record.reference,
                "error": record.error,
                "steps": [
                    {"name": s.name, "status": s.status.value, "provider_id": s.ref} for s in record.steps
                ],
            },
        }
        return cls(f"{record.id}.{status}", json.dumps(payload, separators=(",", ":")))


@dataclass(frozen=True)
class Answer:
    """What one attempt came to, and why (for the record and the log; never the URL)."""

    verdict: Verdict
    detail: str


def judge(status_code: int) -> Answer:
    """Classify the receiver's HTTP status: 2xx done, 5xx/408/429 later, anything else never."""
    if 200 <= status_code < 300:
        return Answer("delivered", f"HTTP {status_code}")
    if status_code >= 500 or status_code in RETRYABLE_STATUSES:
        return Answer("retry", f"HTTP {status_code}")
    if status_code == 410:
        return Answer("stop", "HTTP 410: the receiver no longer wants this callback")
    if 300 <= status_code < 400:
        return Answer("stop", f"HTTP {status_code}: redirects are not followed, fix callback_url")
    return Answer("stop", f"HTTP {status_code}: the receiver refused the callback")


def post(url: str, event: CallbackEvent, policy: CallbackPolicy, now: float) -> Answer:
    """POST the event once, signed when there is a secret; never follows a redirect."""
    sent = datetime.fromtimestamp(int(now), UTC)  # whole seconds: the header and the signature agree
    headers = {
        "content-type": "application/json",
        "user-agent": "saga-relay-callback",
        "webhook-id": event.webhook_id,
        "webhook-timestamp": str(int(now)),
    }
    if policy.secret:
        headers["webhook-signature"] = Webhook(policy.secret).sign(event.webhook_id, sent, event.body)
    try:
        response = requests.post(
            url, data=event.body.encode(), headers=headers, timeout=policy.timeout, allow_redirects=False
        )
    except requests.Timeout:
        return Answer("retry", f"no answer within {policy.timeout:g}s")
    except requests.ConnectionError as exc:  # the message would repeat the URL: keep only the kind
        return Answer("retry", f"connection failed ({type(exc).__name__})")
    except requests.RequestException as exc:
        return Answer("stop", f"the request could not be made ({type(exc).__name__})")
    response.close()
    return judge(response.status_code)


Fields = dict[str, str | int]


class CallbackDelivery:
    """Runs delivery attempts for one engine: claim, POST, record, schedule the next."""

    def __init__(self, engine: SagaEngine, policy: CallbackPolicy) -> None:
        self.engine = engine
        self.policy = policy

    def deliver(self, saga_id: str, attempt: int) -> CallbackStatus | None:
        """Run attempt `attempt`; returns what it recorded, None when there was nothing to do.

        Nothing to do: the saga expired, is not finished (an operator reopened it),
        has no callback_url, or this attempt already ran (a duplicate job).
        """
        extra = {"saga_id": saga_id, "attempt": attempt}
        try:
            record = self.engine.get(saga_id)
        except SagaNotFound:
            log.warning("callback dropped: the saga expired", extra=extra)
            return None
        if not record.status.finished or not record.callback_url:
            log.warning("callback skipped: saga is %s", record.status.value, extra=extra)
            return None
        event = CallbackEvent.of(record)
        if not self._claim(saga_id, event.webhook_id, attempt):
            log.info("callback attempt already ran: skipped", extra=extra)
            return None
        answer = post(record.callback_url, event, self.policy, self.engine.store.clock())
        return self._record(saga_id, attempt, answer, event.webhook_id)

    def abandoned(self, saga_id: str, attempt: int, reason: str) -> CallbackStatus | None:
        """An attempt died mid-POST (worker killed, job failed): count it as a transient failure."""
        return self._record(saga_id, attempt, Answer("retry", reason), None)

    # -- internals -----------------------------------------------------------

    def _read(self, pipe: Pipeline, saga_id: str) -> dict[str, str] | None:
        names = ["status", *keys.CALLBACK_FIELDS]
        values = cast(list[bytes | None], pipe.hmget(keys.saga(saga_id), names))
        if values[0] is None:  # the saga hash expired
            return None
        return {n: v.decode() for n, v in zip(names, values, strict=True) if v is not None}

    def _claim(self, saga_id: str, webhook_id: str, attempt: int) -> bool:
        """Take attempt `attempt` for this event, unless it (or a later one) already ran."""

        def body(pipe: Pipeline) -> bool:
            current = self._read(pipe, saga_id)
            if current is None:
                return False
            same = current.get("callback_id") == webhook_id
            status = CallbackStatus(current.get("callback_status", CallbackStatus.PENDING.value))
            if same and (status.settled or int(current.get("callback_attempts", 0)) >= attempt):
                return False
            pipe.multi()
            stale = ["callback_next_attempt_at"]
            if not same:  # a reopened saga ended anew: a new event, a new record
                stale += ["callback_last_error", "callback_delivered_at"]
            pipe.hdel(keys.saga(saga_id), *stale)
            claimed: Fields = {
                "callback_id": webhook_id,
                "callback_status": "sending",
                "callback_attempts": attempt,
            }
            self._write(pipe, saga_id, claimed)
            return True

        return self.engine.store.transact([keys.saga(saga_id)], body)

    def _record(
        self, saga_id: str, attempt: int, answer: Answer, webhook_id: str | None
    ) -> CallbackStatus | None:
        """Write the answer if attempt `attempt` still holds the delivery; enqueue the next on retry."""
        retry = self.policy.retry
        extra = {"saga_id": saga_id, "attempt": attempt}

        def body(pipe: Pipeline) -> CallbackStatus | None:
            current = self._read(pipe, saga_id)
            if (
                current is None
                or current.get("callback_status") != CallbackStatus.SENDING.value
                or int(current.get("callback_attempts", 0)) != attempt
                or (webhook_id is not None and current.get("callback_id") != webhook_id)
            ):
                return None
            pipe.multi()
            now = self.engine.store.clock()
            if answer.verdict == "delivered":
                self._write(
                    pipe, saga_id, {"callback_status": "delivered", "callback_delivered_at": iso(now)}
                )
                return CallbackStatus.DELIVERED
            if answer.verdict == "retry" and not retry.exhausted(attempt):
                delay = retry.delay_after(attempt)
                fields: Fields = {
                    "callback_status": "retrying",
                    "callback_last_error": answer.detail,
                    "callback_next_attempt_at": iso(now + delay),
                }
                self._write(pipe, saga_id, fields)
                self.engine.queue.enqueue_callback(pipe, saga_id, attempt + 1, delay)
                return CallbackStatus.RETRYING
            detail = (
                answer.detail
                if answer.verdict == "stop"
                else f"{answer.detail}; gave up after {attempt} attempts"
            )
            self._write(pipe, saga_id, {"callback_status": "gave_up", "callback_last_error": detail})
            return CallbackStatus.GAVE_UP

        status = self.engine.store.transact([keys.saga(saga_id)], body)
        if status is None:
            log.info("callback attempt no longer holds the delivery: nothing recorded", extra=extra)
        elif status == CallbackStatus.GAVE_UP:
            log.warning("callback gave up: %s", answer.detail, extra=extra)
        else:
            log.info("callback %s: %s", status.value, answer.detail, extra=extra)
        return status

    @staticmethod
    def _write(pipe: Pipeline, saga_id: str, fields: Fields) -> None:
        """HSET callback fields, and nothing else, on the saga hash (no `updated_at`: the saga is done)."""
        stray = fields.keys() - set(keys.CALLBACK_FIELDS)
        if stray:
            raise ValueError(f"a callback delivery may not write {sorted(stray)} on saga {saga_id}")
        pipe.hset(keys.saga(saga_id), mapping=fields)  # type: ignore[arg-type]
