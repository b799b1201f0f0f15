"""Who may use the operator's tools: /rq and /ops share one HTTP Basic check.

Both show what sagas did (and rq-dashboard can delete and requeue jobs), so
neither is ever mounted without DASHBOARD_USER and DASHBOARD_PASSWORD.
"""

from __future__ import annotations

import hmac

from flask import Flask, Response, current_app, jsonify, request

from config import Settings

_CONFIG = "SAGA_OPERATOR_AUTH"
# One realm for both, so a browser that logged in to one is let into the other.
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="saga-relay operators"'}


def configure(app: Flask, settings: Settings) -> bool:
    """Remember the operators' credentials on `app`; False when they are not set (mount nothing)."""
    if settings.dashboard_user is None or settings.dashboard_password is None:
        return False
    app.config[_CONFIG] = (settings.dashboard_user, settings.dashboard_password.get_secret_value())
    return True


def refuse(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON refusal shaped like every other API error."""
    response = jsonify({"code": code, "message": message})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def require_operator() -> Response | None:
    """None when the request carries the operators' Basic credentials, else a 401 challenge."""
    user, password = current_app.config[_CONFIG]
    auth = request.authorization
    if auth is None or auth.type != "basic" or auth.username is None or auth.password is None:
        return refuse(401, "unauthorized", "log in with the dashboard's credentials", _CHALLENGE)
    # Both compared, always: how long a refusal takes says nothing about which one was wrong.
    user_ok = hmac.compare_digest(auth.username.encode(), user.encode())
    password_ok = hmac.compare_digest(auth.password.encode(), password.encode())
    if not (user_ok and password_ok):
        return refuse(401, "unauthorized", "log in with the dashboard's credentials", _CHALLENGE)
    return None
