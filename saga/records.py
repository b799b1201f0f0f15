"""What a saga run looks like when read back from Redis: plain, typed snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from saga import keys
from saga.status import SagaStatus, StepStatus


def _text(raw: dict[bytes, bytes], name: str) -> str | None:
    value = raw.get(name.encode())
    return value.decode() if value else None


def _int(raw: dict[bytes, bytes], name: str) -> int:
    value = raw.get(name.encode())
    return int(value) if value else 0


@dataclass(frozen=True)
class StepRecord:
    """One step as stored: its status both ways, attempts, keys and provider ids."""

    name: str
    compensation_name: str
    index: int
    status: StepStatus
    attempts: int
    compensation_attempts: int
    claimed: int  # the compensation attempt in flight, 0 when none
    idempotency_key: str
    compensation_key: str
    ref: str | None
    compensation_ref: str | None
    error: str | None
    compensation_error: str | None
    started_at: str | None
    finished_at: str | None
    next_attempt_at: str | None
    compensation_started_at: str | None
    compensation_finished_at: str | None
    provider_status: str | None = None  # what the provider later reported (e.g. SMS delivered)
    compensation_provider_status: str | None = None
    waiting_for: str | None = None  # a gate: the signal it waits for
    decide_by: str | None = None  # a gate: when no answer counts as a rejection
    decision: str | None = None  # a gate: approved | rejected

    @classmethod
    def from_hash(cls, saga_id: str, raw: dict[bytes, bytes]) -> StepRecord:
        """Decode a step hash (the keys are derived, not stored); raises KeyError if it is empty."""
        name = raw[b"name"].decode()
        return cls(
            name=name,
            compensation_name=raw[b"compensation_name"].decode(),
            index=_int(raw, "index"),
            status=StepStatus(raw[b"status"].decode()),
            attempts=_int(raw, "attempts"),
            compensation_attempts=_int(raw, "compensation_attempts"),
            claimed=_int(raw, "claimed"),
            idempotency_key=keys.action_key(saga_id, name),
            compensation_key=keys.compensation_key(saga_id, name),
            ref=_text(raw, "ref"),
            compensation_ref=_text(raw, "compensation_ref"),
            error=_text(raw, "error"),
            compensation_error=_text(raw, "compensation_error"),
            started_at=_text(raw, "started_at"),
            finished_at=_text(raw, "finished_at"),
            next_attempt_at=_text(raw, "next_attempt_at"),
            compensation_started_at=_text(raw, "compensation_started_at"),
            compensation_finished_at=_text(raw, "compensation_finished_at"),
            provider_status=_text(raw, "provider_status"),
            compensation_provider_status=_text(raw, "compensation_provider_status"),
            waiting_for=_text(raw, "waiting_for"),
            decide_by=_text(raw, "decide_by"),
            decision=_text(raw, "decision"),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, as the status endpoint shows it."""
        return {
            "name": self.name,
            "status": self.status.value,
            "attempts": self.attempts,
            "idempotency_key": self.idempotency_key,
            "provider_id": self.ref,
            "provider_status": self.provider_status,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "next_attempt_at": self.next_attempt_at,
            "gate": (
                {"signal": self.waiting_for, "decide_by": self.decide_by, "decision": self.decision}
                if self.waiting_for
                else None
            ),
            "compensation": {
                "name": self.compensation_name,
                "attempts": self.compensation_attempts,
                "idempotency_key": self.compensation_key,
                "provider_id": self.compensation_ref,
                "provider_status": self.compensation_provider_status,
                "error": self.compensation_error,
                "started_at": self.compensation_started_at,
                "finished_at": self.compensation_finished_at,
            },
        }


class CallbackStatus(StrEnum):
    """Where the delivery of a finished saga's completion callback stands."""

    PENDING = "pending"  # the saga ended; its first attempt has not run yet
    SENDING = "sending"  # an attempt is posting (or its worker died while it did)
    RETRYING = "retrying"  # the last attempt failed transiently; the next one is scheduled
    DELIVERED = "delivered"  # the receiver answered 2xx
    GAVE_UP = "gave_up"  # the receiver refused it for good, or every attempt failed

    @property
    def settled(self) -> bool:
        """True when no further attempt will be made."""
        return self in (CallbackStatus.DELIVERED, CallbackStatus.GAVE_UP)


@dataclass(frozen=True)
class CallbackRecord:
    """The delivery record of a saga's completion callback, kept in `keys.CALLBACK_FIELDS`."""

    status: CallbackStatus
    attempts: int
    webhook_id: str | None
    last_error: str | None
    delivered_at: str | None
    next_attempt_at: str | None

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> CallbackRecord | None:
        """Decode the callback fields of a saga hash; None when the saga has no callback_url."""
        if not raw.get(b"callback_url"):
            return None
        return cls(
            status=CallbackStatus(_text(raw, "callback_status") or CallbackStatus.PENDING.value),
            attempts=_int(raw, "callback_attempts"),
            webhook_id=_text(raw, "callback_id"),
            last_error=_text(raw, "callback_last_error"),
            delivered_at=_text(raw, "callback_delivered_at"),
            next_attempt_at=_text(raw, "callback_next_attempt_at"),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view; the URL is left out (it may carry the receiver's token)."""
        return {
            "status": self.status.value,
            "attempts": self.attempts,
            "webhook_id": self.webhook_id,
            "last_error": self.last_error,
            "delivered_at": self.delivered_at,
            "next_attempt_at": self.next_attempt_at,
        }


@dataclass(frozen=True)
class Transition:
    """One entry of a saga's history stream."""

    id: str
    at: str
    step: str | None
    direction: str | None
    attempt: int | None
    source: str
    target: str
    detail: str | None

    @classmethod
    def from_entry(cls, entry_id: bytes, raw: dict[bytes, bytes]) -> Transition:
        """Decode one XRANGE entry; its time is the entry id's milliseconds."""
        millis = int(entry_id.split(b"-")[0])
        at = (
            datetime.fromtimestamp(millis / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
        )
        return cls(
            id=entry_id.decode(),
            at=at,
            step=_text(raw, "step"),
            direction=_text(raw, "direction"),
            attempt=_int(raw, "attempt") or None,
            source=_text(raw, "from") or "",
            target=raw[b"to"].decode(),
            detail=_text(raw, "detail"),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "at": self.at,
            "step": self.step,
            "direction": self.direction,
            "attempt": self.attempt,
            "from": self.source,
            "to": self.target,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class SagaRecord:
    """A whole saga run: header, steps in order, and its history."""

    id: str
    name: str
    status: SagaStatus
    data: dict[str, Any]
    created_at: str
    updated_at: str
    finished_at: str | None
    error: str | None
    current_step: str | None = None
    reference: str | None = None  # the caller's id for the run (a call id)
    cancel_requested: str | None = None  # an operator's note, until the cancel is carried out
    resolution: str | None = None  # an operator's note on how a failed saga was settled
    steps: list[StepRecord] = field(default_factory=list)
    history: list[Transition] = field(default_factory=list)
    callback_url: str | None = None
    callback: CallbackRecord | None = None

    @classmethod
    def from_hashes(
        cls,
        saga_id: str,
        raw: dict[bytes, bytes],
        data: dict[str, Any],
        steps: list[StepRecord],
        history: list[Transition],
    ) -> SagaRecord:
        """Decode the saga hash together with its already-decoded parts."""
        return cls(
            id=saga_id,
            name=raw[b"name"].decode(),
            status=SagaStatus(raw[b"status"].decode()),
            data=data,
            created_at=raw[b"created_at"].decode(),
            updated_at=raw[b"updated_at"].decode(),
            finished_at=_text(raw, "finished_at"),
            error=_text(raw, "error"),
            current_step=_text(raw, "step"),
            reference=_text(raw, "reference"),
            cancel_requested=_text(raw, "cancel"),
            resolution=_text(raw, "resolution"),
            steps=steps,
            history=history,
            callback_url=_text(raw, "callback_url"),
            callback=CallbackRecord.from_hash(raw),
        )

    def step(self, name: str) -> StepRecord:
        """The record of step `name`; raises KeyError if the saga has no such step."""
        for record in self.steps:
            if record.name == name:
                return record
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view without the input data (it holds personal details)."""
        return {
            "id": self.id,
            "saga": self.name,
            "status": self.status.value,
            "error": self.error,
            "current_step": self.current_step,
            "reference": self.reference,
            "cancel_requested": self.cancel_requested,
            "resolution": self.resolution,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "steps": [s.as_dict() for s in self.steps],
            "history": [h.as_dict() for h in self.history],
            "callback": self.callback.as_dict() if self.callback else None,
        }
