"""Settings: defaults, and a clear error naming the variable for every malformed value."""

from __future__ import annotations

import pytest

from config import ConfigError, load_settings


def test_defaults() -> None:
    settings = load_settings({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.step_max_attempts == 5
    assert settings.retention_seconds == 30 * 86400
    assert settings.idempotency_ttl_seconds == 72 * 3600
    assert not settings.fault_plan


def test_environment_names_are_case_insensitive() -> None:
    settings = load_settings({"STEP_TIMEOUT_SECONDS": "2.5", "SANDBOX_FAULTS": "send_sms=flaky:2"})
    assert settings.step_timeout_seconds == 2.5
    assert str(settings.fault_plan) == "send_sms=flaky:2"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", "localhost:6379"),
        ("PORT", "http"),
        ("STEP_TIMEOUT_SECONDS", "0"),
        ("STEP_MAX_ATTEMPTS", "many"),
        ("SAGA_RETENTION_DAYS", "-1"),
        ("SANDBOX_FAULTS", "send_sms=sometimes"),
        ("APP_ENV", "staging"),
        ("QUEUE_NAME", "a:b"),
    ],
)
def test_malformed_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: value})
    assert f"{variable}:" in str(raised.value)
    assert value in str(raised.value)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"STRIPE_MODE": "live"}, "STRIPE_API_KEY"),
        ({"TWILIO_MODE": "live", "TWILIO_FROM": "+15005550006"}, "TWILIO_AUTH_TOKEN"),
        ({"CALENDAR_MODE": "live", "GOOGLE_CALENDAR_ID": "primary"}, "GOOGLE_SERVICE_ACCOUNT"),
        (
            {"CALENDAR_MODE": "live", "GOOGLE_CALENDAR_ID": "primary", "GOOGLE_SERVICE_ACCOUNT": "{not json"},
            "GOOGLE_SERVICE_ACCOUNT",
        ),
        (
            {"APP_ENV": "production", "WEBHOOK_SECRET": "whsec_x", "SANDBOX_FAULTS": "send_sms=fail"},
            "SANDBOX_FAULTS",
        ),
    ],
)
def test_live_provider_without_credentials_refuses_to_start(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ)


def test_secrets_are_not_echoed_in_config_errors() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({"WEBHOOK_SECRET": "not-whsec-supersecret"})
    assert "supersecret" not in str(raised.value)
