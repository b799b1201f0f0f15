"""The /book request as a validated model: the contract the voice agent calls."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

E164 = r"^\+[1-9][0-9]{6,14}$"
HTTPS_ONLY = "https_only"  # validation context flag: production refuses plain-http callback URLs
# An absolute http(s) URL in printable ASCII with a host name or IPv4 address, written into the
# schema too, so that every string the OpenAPI document allows is accepted.
CALLBACK_URL = (
    r"^https?://([A-Za-z0-9._~%!$&'()*+,;=:-]+@)?[A-Za-z0-9._~%!$&'()*+,;=-]+(:[0-9]{1,5})?"
    r"([/?#][\x21-\x7e]*)?$"
)


class Slot(BaseModel):
    """Which viewing, when, and for how long."""

    model_config = ConfigDict(extra="ignore")

    resource: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    start: AwareDatetime
    minutes: int = Field(ge=5, le=480)


class Customer(BaseModel):
    """Who is viewing; the phone receives the confirmation SMS."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=100)
    phone: str = Field(pattern=E164, description="E.164, e.g. +15005550006")


class Payment(BaseModel):
    """The viewing fee in the currency's smallest unit, and a Stripe PaymentMethod id."""

    model_config = ConfigDict(extra="ignore")

    amount: int = Field(gt=0, le=1_000_000, strict=True)  # "49.00" must not become 49 cents
    currency: str = Field(pattern=r"^[a-z]{3}$")
    payment_method: str = Field(pattern=r"^pm_[A-Za-z0-9_]{1,100}$")

    @field_validator("amount", mode="before")
    @classmethod
    def _whole(cls, value: object) -> object:
        # JSON has one number type: 4900.0 is 4900, but a string like "49.00" stays an error.
        return int(value) if isinstance(value, float) and value.is_integer() else value

    @field_validator("currency", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class BookingRequest(BaseModel):
    """POST /book. Unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")

    call_id: str = Field(min_length=1, max_length=64)
    slot: Slot
    customer: Customer
    payment: Payment
    callback_url: str | None = Field(
        None,
        max_length=2000,
        pattern=CALLBACK_URL,
        description=(
            "Absolute http(s) URL told the outcome when the saga ends (a signed Standard Webhooks POST); "
            "https only in production"
        ),
    )

    @field_validator("callback_url")
    @classmethod
    def _absolute_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:  # the pattern rules these out
            raise ValueError("must be an absolute http:// or https:// URL")
        if info.context and info.context.get(HTTPS_ONLY) and parts.scheme != "https":
            raise ValueError("must be an https:// URL in production: the outcome travels over it")
        return value

    def saga_data(self) -> dict[str, Any]:
        """What the saga stores and the fingerprint covers: the JSON form without unset optional fields,
        so a request without callback_url keeps the fingerprint it always had."""
        return self.model_dump(mode="json", exclude_none=True)
