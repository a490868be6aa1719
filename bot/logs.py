"""Logging setup: text or JSON lines, with secrets masked in every record."""

from __future__ import annotations

import json
import logging
import sys

from bot.redact import redact


class RedactingFormatter(logging.Formatter):
    """Format a record as text, then mask anything that looks like a secret."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JSONFormatter(logging.Formatter):
    """One JSON object per line, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False))


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Send log records to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log repeats what our own lines say, with less care for secrets.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
