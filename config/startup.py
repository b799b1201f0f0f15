"""Process start-up: settings or a clear exit."""

from __future__ import annotations

import sys

from config.logs import configure
from config.settings import ConfigError, Settings, load_settings


def settings_or_exit() -> Settings:
    """Load settings and configure logging; exit 2 with the reason if the environment is wrong."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"saga-relay: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure(settings.log_level)
    return settings
