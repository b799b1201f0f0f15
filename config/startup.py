"""Process start-up: settings or a clear exit."""

from __future__ import annotations

import logging
import sys

from redis import Redis
from redis.exceptions import RedisError

from config.logs import configure, default_format
from config.settings import ConfigError, Settings, load_settings
from saga.redis_checks import RedisMisconfigured, check_redis


def settings_or_exit() -> Settings:
    """Load settings and configure logging; exit 2 with the reason if the environment is wrong."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"saga-relay: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure(settings.log_level, settings.log_format or default_format(settings.app_env))
    return settings


def redis_or_exit(settings: Settings) -> Redis:
    """A client for REDIS_URL after checking the server keeps saga state; exit 2 if it would not."""
    redis = Redis.from_url(settings.redis_url, health_check_interval=30)
    try:
        for warning in check_redis(redis):
            logging.getLogger("startup").warning("%s", warning)
    except RedisMisconfigured as exc:
        print(f"saga-relay: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except RedisError as exc:
        print(f"saga-relay: cannot reach Redis at REDIS_URL: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return redis
