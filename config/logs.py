"""One log format for every process, carrying saga ids when a line has them."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s%(saga_context)s"


class SagaContext(logging.Filter):
    """Appends `saga=... step=... attempt=...` from a record's extras, when present."""

    def filter(self, record: logging.LogRecord) -> bool:
        parts = [
            f"{name}={getattr(record, attr)}"
            for name, attr in (("saga", "saga_id"), ("step", "step"), ("attempt", "attempt"))
            if getattr(record, attr, None) is not None
        ]
        record.saga_context = (" " + " ".join(parts)) if parts else ""
        return True


def configure(level: str) -> None:
    """Log to stderr (the platform collects it) at `level`."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(SagaContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
