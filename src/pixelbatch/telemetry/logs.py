"""Log lines: text for a terminal, one JSON object per line for a log pipeline.

``PIXELBATCH_LOG_FORMAT=json`` makes every record a JSON line; the events an operator
aggregates (an image finished, a batch finished) carry their fields under ``extra={"event":
{...}}`` (or a function that builds them, for the line written per image) so they become
top-level keys (batch_id, image_id, outcome, code, durations, bytes) instead of words to
parse out of a message. An HTTP client's own line per request (httpx
logs one at INFO; httpcore traces at DEBUG) is DEBUG noise here: the finished-image line
already says it all.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers whose INFO is one line per HTTP request made: shown only at DEBUG.
PER_REQUEST_LOGGERS = ("httpx", "httpcore")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if callable(event):  # built on demand: a text line never needs it
            event = event()
        if isinstance(event, dict):
            line.update(event)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: int, log_format: str) -> None:
    """Configure the root logger once per process, in text or JSON."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in PER_REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )
