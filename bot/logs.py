"""Logging setup: text or JSON lines, with secrets masked and the work's ids on every line.

`bind(delivery=..., run=...)` attaches ids to every record logged inside it (including
from libraries), so a line says which delivery, installation, repo, run and box it is about.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator

from bot.redact import redact

_CONTEXT: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "log_context", default=None
)


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add *fields* to every log record made inside this block (in this task)."""
    bound = {key: value for key, value in fields.items() if value is not None}
    token = _CONTEXT.set({**(_CONTEXT.get() or {}), **bound})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def detached() -> contextvars.Context:
    """Return a context with no ids bound, for a task that outlives the work that started it."""
    context = contextvars.copy_context()
    context.run(_CONTEXT.set, None)
    return context


class ContextFilter(logging.Filter):
    """Copy the bound ids onto each record as `record.context` (a dict)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.context = dict(_CONTEXT.get() or {})
        return True


class RedactingFormatter(logging.Formatter):
    """Format a record as text, then mask anything that looks like a secret."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context: dict[str, object] = getattr(record, "context", {})
        if context:
            text += " [" + " ".join(f"{key}={value}" for key, value in context.items()) + "]"
        return redact(text)


class JSONFormatter(logging.Formatter):
    """One JSON object per line, secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "context", {}),
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
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log repeats what our own lines say, with less care for secrets.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
