"""WSGI entry point: `gunicorn wsgi:app`."""

from app import create_app
from config.startup import settings_or_exit

app = create_app(settings_or_exit())
