"""The /book request as a validated model: the contract the voice agent calls."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

E164 = r"^\+[1-9][0-9]{6,14}$"


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
