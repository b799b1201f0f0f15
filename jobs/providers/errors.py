"""Provider errors, classified once here so no job has to guess.

A step's retry policy treats every `PermanentProviderError` as final and every
`TransientProviderError` as worth another attempt with the same idempotency key.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A provider refused or failed a call; `code` is the provider's own error code."""

    retryable = False

    def __init__(self, provider: str, code: str, message: str) -> None:
        super().__init__(f"{provider}: {code}: {message}")
        self.provider = provider
        self.code = code


class PermanentProviderError(ProviderError):
    """Retrying cannot help (a declined card, an invalid number): compensate instead."""


class TransientProviderError(ProviderError):
    """The call may succeed later (timeout, 5xx, rate limit): retry with the same key."""

    retryable = True


class CardDeclined(PermanentProviderError):
    """The card issuer declined the charge."""


class InvalidPhoneNumber(PermanentProviderError):
    """The number cannot receive SMS (Twilio error 21211)."""
