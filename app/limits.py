"""Rate limits on /book, per caller and per phone number, counted in Redis (Flask-Limiter).

The phone number is hashed before it becomes part of a key: the limiter's
counters must not be another place that stores personal data.
"""

from __future__ import annotations

import time

from flask import Flask, Response, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from redis import Redis

from config import Settings
from saga import keys


def _phone() -> str | None:
    body = request.get_json(silent=True)
    customer = body.get("customer") if isinstance(body, dict) else None
    phone = customer.get("phone") if isinstance(customer, dict) else None
    return phone if isinstance(phone, str) else None


def phone_bucket() -> str:
    """The limiter key of the booking's phone number (hashed)."""
    return f"phone:{keys.digest(_phone() or '')[:32]}"


def install(app: Flask, settings: Settings, redis: Redis) -> Limiter:
    """A limiter for this app, counting in the saga Redis over the engine's connection pool.

    Only a 429 says when to come back (`Retry-After`): the `X-RateLimit-*` headers on
    every answer cost a Redis read per limit per request, a third of POST /book's time.
    """
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=settings.redis_url,
        storage_options={"key_prefix": keys.RATE_LIMITS, "connection_pool": redis.connection_pool},  # type: ignore[dict-item]
        headers_enabled=False,
        strategy="fixed-window",  # one round trip per limit; moving windows cost several
    )

    @app.after_request
    def _retry_after(response: Response) -> Response:
        breached = limiter.current_limit if response.status_code == 429 else None
        if breached is not None:
            response.headers["Retry-After"] = str(max(1, breached.reset_at - int(time.time())))
        return response

    return limiter


def limit_view(app: Flask, limiter: Limiter, settings: Settings, view_name: str) -> None:
    """Apply the per-caller and per-phone limits to one view (registered by endpoint name)."""
    view = app.view_functions[view_name]
    view = limiter.limit(settings.rate_limit_per_caller)(view)
    # Per phone, only bookings count (202): an agent's retries of one booking are idempotent replays.
    view = limiter.limit(
        settings.rate_limit_per_phone,
        key_func=phone_bucket,
        exempt_when=lambda: _phone() is None,
        deduct_when=lambda response: response.status_code == 202,
    )(view)
    app.view_functions[view_name] = view
