"""The databases tests run the store on: SQLite always, PostgreSQL when one is named."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

PG_ENV = "BOX_BOT_TEST_PG"
BACKENDS = ("sqlite",)


@asynccontextmanager
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """Yield the URL of a new, empty database on *backend*, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
        return
    pytest.fail(f"unknown backend {backend}")
    yield ""  # pragma: no cover


def pg_server() -> str | None:
    return os.environ.get(PG_ENV) or None
