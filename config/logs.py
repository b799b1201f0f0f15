"""One log format for every process, carrying saga ids when a line has them."""

from __future__ import annotations

import logging

from saga.outcome import redact

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


class RedactingFormatter(logging.Formatter):
    """Scrubs phone numbers, card-like digit runs and secrets from every formatted line.

    Applied to the whole line after formatting, so tracebacks and third-party
    messages (RQ logs job errors) are covered too.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: str) -> None:
    """Log to stderr (the platform collects it) at `level`, redacted."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(FORMAT))
    handler.addFilter(SagaContext())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
