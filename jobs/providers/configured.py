"""The providers this process uses, each `sandbox` or `live` by configuration.

Live adapters import their SDKs only when chosen, so a sandbox-only process
does not pay for them; secrets are read from settings here and nowhere else.
"""

from __future__ import annotations

from config import Settings
from jobs.providers.base import Calendar, Messaging, Payments
from jobs.providers.sandbox import SandboxCalendar, SandboxLedger, SandboxMessaging, SandboxPayments


def _secret(value: object) -> str:
    assert value is not None, "settings validation guarantees live credentials"
    return str(value.get_secret_value()) if hasattr(value, "get_secret_value") else str(value)


def payments(settings: Settings, ledger: SandboxLedger) -> Payments:
    """Stripe (`STRIPE_MODE=live`) or the sandbox."""
    if settings.stripe_mode == "sandbox":
        return SandboxPayments(ledger)
    from jobs.providers.stripe_payments import StripePayments

    return StripePayments(
        api_key=_secret(settings.stripe_api_key),
        timeout=settings.provider_timeout,
        capture_method=settings.stripe_capture_method,
        api_base=settings.stripe_api_base,
    )


def messaging(settings: Settings, ledger: SandboxLedger) -> Messaging:
    """Twilio (`TWILIO_MODE=live`) or the sandbox."""
    if settings.twilio_mode == "sandbox":
        return SandboxMessaging(ledger)
    from jobs.providers.twilio_sms import TwilioMessaging

    return TwilioMessaging(
        account_sid=_secret(settings.twilio_account_sid),
        auth_token=_secret(settings.twilio_auth_token),
        from_number=_secret(settings.twilio_from),
        public_url=_secret(settings.public_url),
        timeout=settings.provider_timeout,
        api_base=settings.twilio_api_base,
    )


def calendar(settings: Settings, ledger: SandboxLedger) -> Calendar:
    """Google Calendar (`CALENDAR_MODE=live`) or the sandbox."""
    if settings.calendar_mode == "sandbox":
        return SandboxCalendar(ledger)
    from jobs.providers.google_calendar import GoogleCalendar

    return GoogleCalendar(
        service_account_info=_secret(settings.google_service_account),
        calendar_id=_secret(settings.google_calendar_id),
        timeout=settings.provider_timeout,
        api_base=settings.google_calendar_api_base,
    )
