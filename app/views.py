"""What the API answers, as models: the source of the OpenAPI response schemas.

`SagaRecord.as_dict()` produces these shapes; the schemathesis test checks every
answer against them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

SagaState = Literal["running", "waiting", "compensating", "completed", "compensated", "failed", "resolved"]
StepState = Literal[
    "pending",
    "running",
    "waiting",
    "skipped",
    "succeeded",
    "failed",
    "compensating",
    "compensated",
    "compensation_failed",
]


class CompensationView(BaseModel):
    """The undo of one step (and the fields a step shares with it)."""

    name: str
    attempts: int
    idempotency_key: str
    provider_id: str | None
    provider_status: str | None
    error: str | None
    started_at: str | None
    finished_at: str | None


class GateView(BaseModel):
    """A step that waits for a person's signal instead of acting."""

    signal: str
    decide_by: str | None
    decision: Literal["approved", "rejected"] | None


class StepView(CompensationView):
    """One step: status, attempts, its idempotency key and the provider's id for what it did."""

    status: StepState
    next_attempt_at: str | None
    gate: GateView | None
    compensation: CompensationView


class TransitionView(BaseModel):
    """One entry of the saga's history."""

    at: str
    step: str | None
    direction: Literal["do", "undo"] | None
    attempt: int | None
    from_: str
    to: str
    detail: str | None

    model_config = {"populate_by_name": True, "alias_generator": lambda n: "from" if n == "from_" else n}


class CallbackView(BaseModel):
    """Delivery of the completion callback (present only when the booking gave a callback_url)."""

    status: Literal["pending", "sending", "retrying", "delivered", "gave_up"]
    attempts: int
    webhook_id: str | None
    last_error: str | None
    delivered_at: str | None
    next_attempt_at: str | None


class SagaView(BaseModel):
    """A saga as `GET /sagas/<id>` and `POST /book` answer it."""

    id: str
    saga: str
    status: SagaState
    error: str | None
    current_step: str | None
    reference: str | None
    cancel_requested: str | None
    resolution: str | None
    created_at: str
    updated_at: str
    finished_at: str | None
    steps: list[StepView]
    history: list[TransitionView]
    callback: CallbackView | None


class FieldError(BaseModel):
    """One invalid field."""

    field: str
    code: str
    message: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx: a stable `code`, a human `message`, the `field` at fault when there is one."""

    code: str
    message: str
    field: str | None = None
    errors: list[FieldError] | None = None
