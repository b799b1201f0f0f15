"""How a failure is written down: short, typed, and without personal data.

Provider messages can quote what they were sent (a phone number, a card
number); what reaches the saga record, the history and the logs is scrubbed.
"""

from __future__ import annotations

import re

# E.164 phone numbers and runs of 12-19 digits (card-like), with common separators.
_PHONE = re.compile(r"\+\d[\d\s().-]{6,}\d")
_CARD = re.compile(r"\b(?:\d[ -]?){12,19}\b")
_SECRET = re.compile(
    r"\b(?:sk|rk|whsec)_[A-Za-z0-9_]+|(?i:authorization)[\"']?\s*[:=]\s*[\"']?[^\s,'\"}]+(?: [^\s,'\"}]+)?"
)

LIMIT = 500


def redact(text: str) -> str:
    """Replace phone numbers, card-like digit runs and API secrets with placeholders."""
    text = _SECRET.sub("[secret]", text)
    text = _PHONE.sub("[phone]", text)
    return _CARD.sub("[number]", text)


def describe(exc: BaseException) -> str:
    """`Type: message`, redacted and cut to a size that fits a record."""
    return redact(f"{type(exc).__name__}: {exc}")[:LIMIT]
