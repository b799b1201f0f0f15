"""Every setting the processes read, with its environment variable, default and form.

A missing or malformed value stops the process at start with a message that
names the variable and the form it expects; nothing reads the environment later.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from jobs.faults import FaultPlan

ROOT = Path(__file__).resolve().parent.parent


_RATE = r"^[0-9]+ ?(/|per )(second|minute|hour|day)$"
_URL = r"^https?://[^\s]+$"
Mode = Literal["sandbox", "live"]
LIVE_NEEDS = {
    "stripe_mode": ("stripe_api_key",),
    "twilio_mode": ("twilio_account_sid", "twilio_auth_token", "twilio_from", "public_url"),
    "calendar_mode": ("google_service_account", "google_calendar_id"),
}


class ConfigError(Exception):
    """The environment holds a setting the processes cannot run with."""


class Settings(BaseSettings):
    """Saga Relay's configuration; each field is the environment variable of the same name."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    app_env: Literal["development", "test", "production"] = "development"
    redis_url: str = Field("redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://")
    port: int = Field(5000, ge=1, le=65535)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    queue_name: str = Field("sagas", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    step_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    step_max_attempts: int = Field(5, ge=1, le=50)
    retry_initial_delay_seconds: float = Field(1.0, ge=0, le=3600)
    retry_max_delay_seconds: float = Field(60.0, ge=0, le=86400)
    saga_retention_days: float = Field(30.0, gt=0, le=3650)
    idempotency_ttl_hours: float = Field(72.0, gt=0, le=24 * 365)
    scheduler_interval_seconds: int = Field(10, ge=1, le=3600)
    reconcile_interval_seconds: int = Field(30, ge=1, le=3600)
    stall_grace_seconds: float = Field(60.0, gt=0, le=86400)
    shutdown_grace_seconds: float = Field(25.0, gt=0, le=3600)
    rq_timeout_grace_seconds: int = Field(15, ge=1, le=3600)
    job_result_ttl_seconds: int = Field(0, ge=0, le=86400)
    worker_class: Literal["threaded", "forking"] = "threaded"
    worker_concurrency: int = Field(32, ge=1, le=512)
    # Bookings charging more than this (in the currency's smallest unit) wait for a person's
    # approval before the charge; unset, none wait.
    approval_above_amount: int | None = Field(None, ge=0)
    approval_timeout_seconds: float = Field(3600.0, gt=0, le=7 * 86400)

    webhook_secret: SecretStr | None = None
    rate_limit_per_caller: str = Field("120/minute", pattern=_RATE)
    rate_limit_per_phone: str = Field("10/minute", pattern=_RATE)
    proxy_hops: int = Field(0, ge=0, le=5)
    dashboard_user: str | None = None
    dashboard_password: SecretStr | None = None

    stripe_mode: Mode = "sandbox"
    stripe_api_key: SecretStr | None = None
    stripe_api_base: str | None = Field(None, pattern=_URL)
    stripe_capture_method: Literal["automatic", "manual"] = "automatic"
    twilio_mode: Mode = "sandbox"
    twilio_account_sid: str | None = Field(None, pattern=r"^AC[0-9a-fA-F]{32}$")
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = Field(None, pattern=r"^\+[1-9][0-9]{6,14}$")
    twilio_api_base: str | None = Field(None, pattern=_URL)
    public_url: str | None = Field(None, pattern=_URL)
    calendar_mode: Mode = "sandbox"
    google_service_account: SecretStr | None = None  # a path to the JSON key, or the JSON itself
    google_calendar_id: str | None = None
    google_calendar_api_base: str | None = Field(None, pattern=_URL)
    provider_timeout_seconds: float = Field(10.0, gt=0, le=600)

    sandbox_ledger: Path = ROOT / "var" / "sandbox-ledger.sqlite3"
    sandbox_faults: str = ""
    sandbox_crash_point: str = Field("", pattern=r"^([a-z_]+:(before_call|after_call|after_record))?$")

    # Operating: /metrics and the log format.
    metrics_token: SecretStr | None = None  # unset or empty: /metrics is open (it holds no personal data)
    log_format: Literal["json", "text"] | None = None  # unset: json when APP_ENV=production, text otherwise
    # Completion callbacks (POST to the booking's callback_url when its saga ends).
    callback_secret: SecretStr | None = None  # whsec_...; WEBHOOK_SECRET signs them when unset
    callback_max_attempts: int = Field(8, ge=1, le=50)
    callback_initial_delay_seconds: float = Field(5.0, ge=0, le=3600)
    callback_max_delay_seconds: float = Field(3600.0, ge=0, le=86400)
    callback_timeout_seconds: float = Field(10.0, gt=0, le=60)

    @field_validator("sandbox_faults")
    @classmethod
    def _faults_parse(cls, value: str) -> str:
        FaultPlan.parse(value)  # raises ValueError naming the bad pair
        return value

    @field_validator("webhook_secret", "callback_secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("expected the whsec_... form of a Standard Webhooks secret")
        return value

    @model_validator(mode="after")
    def _production_is_signed(self) -> Settings:
        if self.app_env == "production" and self.webhook_secret is None:
            raise ValueError(
                "WEBHOOK_SECRET is required when APP_ENV=production: unsigned bookings move money"
            )
        if (self.dashboard_user is None) != (self.dashboard_password is None):
            raise ValueError("set DASHBOARD_USER and DASHBOARD_PASSWORD together, or neither")
        for mode, needs in LIVE_NEEDS.items():
            missing = [name.upper() for name in needs if getattr(self, name) is None]
            if getattr(self, mode) == "live" and missing:
                raise ValueError(f"{mode.upper()}=live needs {', '.join(missing)}")
        if self.calendar_mode == "live" and self.google_service_account is not None:
            from jobs.providers.google_calendar import load_service_account  # the SDK only when live

            try:
                load_service_account(self.google_service_account.get_secret_value())
            except ValueError as exc:
                raise ValueError(f"GOOGLE_SERVICE_ACCOUNT: {exc}") from None
        if self.app_env == "production" and (self.sandbox_faults or self.sandbox_crash_point):
            raise ValueError("SANDBOX_FAULTS and SANDBOX_CRASH_POINT are refused when APP_ENV=production")
        return self

    @property
    def provider_timeout(self) -> float:
        """Seconds any one provider call may take: PROVIDER_TIMEOUT_SECONDS, kept inside the step timeout."""
        return min(self.provider_timeout_seconds, self.step_timeout_seconds * 0.8)

    @property
    def callback_signing_secret(self) -> str | None:
        """The secret completion callbacks are signed with: CALLBACK_SECRET, else WEBHOOK_SECRET."""
        secret = self.callback_secret or self.webhook_secret
        return secret.get_secret_value() if secret else None

    @property
    def any_sandbox(self) -> bool:
        """True when at least one provider is the sandbox (its ledger is then served)."""
        return "sandbox" in (self.stripe_mode, self.twilio_mode, self.calendar_mode)

    @property
    def fault_plan(self) -> FaultPlan:
        """The parsed SANDBOX_FAULTS."""
        return FaultPlan.parse(self.sandbox_faults)

    @property
    def retention_seconds(self) -> int:
        """SAGA_RETENTION_DAYS in seconds."""
        return max(1, int(self.saga_retention_days * 86400))

    @property
    def idempotency_ttl_seconds(self) -> int:
        """IDEMPOTENCY_TTL_HOURS in seconds."""
        return int(self.idempotency_ttl_hours * 3600)


class _GivenSettings(Settings):
    """Settings from given values only, never the process environment (tests, tools)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read settings from `environ` (default: the process environment) plus `overrides`.

    Raises:
        ConfigError: one line per bad variable, naming it and what it expects.
    """
    try:
        if environ is None:
            return Settings(**overrides)  # type: ignore[arg-type]
        known = {k.lower(): v for k, v in environ.items() if k.lower() in Settings.model_fields}
        return _GivenSettings(**cast(dict[str, Any], {**known, **overrides}))
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across variables: its message names them
                lines.append(error["msg"].removeprefix("Value error, "))
                continue
            variable = str(error["loc"][0]).upper()
            shown = (
                "[hidden]"
                if "secret" in variable.lower() or "password" in variable.lower()
                else error.get("input")
            )
            lines.append(f"{variable}: {error['msg']} (got {shown!r})")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
