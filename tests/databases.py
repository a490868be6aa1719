"""The databases tests run the store on: SQLite always, PostgreSQL when a server is named.

`BOX_BOT_TEST_PG` names the server (`postgresql://postgres@127.0.0.1:5432/test`); each
test gets a database of its own there, created for it and dropped after it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlparse

import asyncpg
import pytest

PG_ENV = "BOX_BOT_TEST_PG"
PG_SERVER = os.environ.get(PG_ENV, "").strip()
BACKENDS = ("sqlite", "postgresql") if PG_SERVER else ("sqlite",)
SKIPPED = f"PostgreSQL tests skipped: set {PG_ENV}=postgresql://user@host:port/db to run them"

# Run a test on every backend there is: `@on_every_backend` over a test using `settings`.
on_every_backend = pytest.mark.parametrize("database_backend", BACKENDS, indirect=True)


def report_header() -> str:
    return f"PostgreSQL tests on {urlparse(PG_SERVER).hostname}" if PG_SERVER else SKIPPED


@asynccontextmanager
async def database_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """Yield the URL of a new, empty database on *backend*, dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'box-bot.sqlite3'}"
        return
    name = f"box_bot_test_{uuid.uuid4().hex[:16]}"
    server = await asyncpg.connect(PG_SERVER)
    try:
        await server.execute(f'CREATE DATABASE "{name}"')
        yield urlparse(PG_SERVER)._replace(path=f"/{name}").geturl()
    finally:
        await server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await server.close()
