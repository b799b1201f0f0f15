"""The Flask API: a thin door that validates input and hands it to the saga engine."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app import (
    booking,
    cli,
    controls,
    dashboard,
    errors,
    health,
    limits,
    metrics,
    openapi,
    operator,
    sagas,
    twilio_status,
)
from app.signatures import SignatureCheck
from config import Settings, load_settings
from jobs.providers import configured
from jobs.providers.sandbox import SandboxLedger
from jobs.runtime import build_engine
from saga import SagaEngine

log = logging.getLogger("app")


def create_app(settings: Settings | None = None, engine: SagaEngine | None = None) -> Flask:
    """Build the app; nothing connects to Redis until the first request."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    if settings.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops)  # type: ignore[method-assign]
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    if secret is None:
        log.warning("WEBHOOK_SECRET is not set: POST /book accepts UNSIGNED requests (development only)")
    app.extensions["saga_settings"] = settings
    engine = engine or build_engine(settings)
    app.extensions["saga_engine"] = engine
    app.extensions["saga_signatures"] = SignatureCheck(secret)
    errors.register(app)
    if settings.twilio_mode == "live":
        app.extensions["saga_twilio"] = configured.messaging(settings, SandboxLedger(settings.sandbox_ledger))
    for blueprint in (booking.bp, sagas.bp, controls.bp, health.bp, metrics.bp, openapi.bp, twilio_status.bp):
        app.register_blueprint(blueprint)
    limits.limit_view(app, limits.install(app, settings, engine.redis), settings, "booking.book")
    dashboard.mount(app, settings)
    operator.mount(app, settings)
    app.cli.add_command(cli.saga)
    return app
