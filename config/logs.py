"""One log set-up for every process: JSON lines or text, redacted, carrying saga ids when known.

The ids come from a record's `extra=` or, while an attempt runs, from the
attempt's bound context (`saga.log_context`), so third-party lines emitted
during a step carry them too.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

from saga.log_context import AttemptFields
from saga.outcome import redact

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s%(saga_context)s"
# The saga fields a JSON line carries when a record has them (`saga` is the definition's name).
FIELDS = ("saga_id", "saga", "step", "direction", "attempt", "job_id")

LogFormat = Literal["json", "text"]


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


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log pipelines to index by saga, step and attempt.

    Each text value is redacted before it is encoded, so a scrubbed value can
    never break the JSON around it; non-ASCII text is kept as it is.
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": redact(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value if isinstance(value, int | float) else redact(str(value))
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


def default_format(app_env: str) -> LogFormat:
    """JSON in production, where a pipeline reads the lines; text elsewhere, where people do."""
    return "json" if app_env == "production" else "text"


def handler(log_format: LogFormat) -> logging.Handler:
    """A stderr handler (the platform collects it) in `log_format`, with the attempt fields."""
    out = logging.StreamHandler()
    out.setFormatter(JsonFormatter() if log_format == "json" else RedactingFormatter(FORMAT))
    out.addFilter(AttemptFields())  # first: SagaContext reads what it copies
    out.addFilter(SagaContext())
    return out


def configure(level: str, log_format: LogFormat = "text") -> None:
    """Send every logger's lines to one handler at `level`, replacing any configured before."""
    root = logging.getLogger()
    root.handlers[:] = [handler(log_format)]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings become log lines too: one format on stderr
