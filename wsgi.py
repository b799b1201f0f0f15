"""WSGI entry point: `gunicorn wsgi:app`."""

from app import create_app
from config.startup import redis_or_exit, settings_or_exit
from jobs.runtime import build_engine

settings = settings_or_exit()
app = create_app(settings, build_engine(settings, redis_or_exit(settings)))
