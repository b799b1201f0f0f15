"""Standard Webhooks signatures on /book: only the agent platform holding the secret may book.

Verified over the raw body bytes, never re-serialised JSON. The timestamp must be
within five minutes, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import binascii

from flask import Request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.errors import ApiError

HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class SignatureCheck:
    """Verifies requests against one `whsec_...` secret; `None` means unsigned development mode."""

    def __init__(self, secret: str | None) -> None:
        self._webhook = Webhook(secret) if secret else None

    @property
    def enabled(self) -> bool:
        """True when requests must be signed."""
        return self._webhook is not None

    def verify(self, request: Request) -> None:
        """Raise a 401 `ApiError` unless the request carries a valid, fresh signature."""
        if self._webhook is None:
            return
        missing = [name for name in HEADERS if not request.headers.get(name)]
        if missing:
            raise ApiError(
                401, "signature_missing", f"sign the request: {', '.join(missing)} missing", missing[0]
            )
        headers = {name: request.headers[name] for name in HEADERS}
        try:
            self._webhook.verify(request.get_data(cache=True), headers, json_parse=False)
        except WebhookVerificationError as exc:
            reason = (
                "timestamp too old or too new" if "timestamp" in str(exc).lower() else "signature mismatch"
            )
            raise ApiError(
                401, "signature_invalid", f"webhook signature rejected: {reason}", "webhook-signature"
            ) from None
        except (ValueError, binascii.Error, UnicodeDecodeError):  # malformed header or body bytes
            raise ApiError(
                401, "signature_invalid", "webhook signature is malformed", "webhook-signature"
            ) from None
