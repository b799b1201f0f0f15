"""The Flask API: a thin door that validates input and hands it to the saga engine."""

from __future__ import annotations

from flask import Flask

from app import booking, errors, health, sagas
from config import Settings, load_settings
from jobs.runtime import build_engine
from saga import SagaEngine


def create_app(settings: Settings | None = None, engine: SagaEngine | None = None) -> Flask:
    """Build the app; nothing connects to Redis until the first request."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.extensions["saga_settings"] = settings
    app.extensions["saga_engine"] = engine or build_engine(settings)
    errors.register(app)
    for blueprint in (booking.bp, sagas.bp, health.bp):
        app.register_blueprint(blueprint)
    return app
