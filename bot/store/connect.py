"""Open the store a `DATABASE_URL` names."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlparse

from bot.store.backend import Backend
from bot.store.interface import Store
from bot.store.operations import SQLStore
from bot.store.postgres import SCHEMES as POSTGRES_SCHEMES
from bot.store.postgres import PostgresBackend
from bot.store.records import StoreUnavailable
from bot.store.sqlite import SQLiteBackend, sqlite_path

DEFAULT_POOL_SIZE = 10


async def open_store(
    database_url: str,
    clock: Callable[[], float] = time.time,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    exclusive: bool = True,
    migrate: bool = True,
) -> Store:
    """Open the database named by *database_url* and bring its schema up to date.

    Without *migrate* the schema is left as it is (to look, not to change anything).

    `sqlite:///path` is one file for one process (with *exclusive*, another process that
    has it open is refused); `postgresql://…` (or `postgres://…`) is a server several
    instances share, through a pool of *pool_size* connections.
    """
    scheme = urlparse(database_url).scheme
    backend: Backend
    if scheme == "sqlite":
        backend = SQLiteBackend(sqlite_path(database_url), exclusive=exclusive)
    elif scheme in POSTGRES_SCHEMES:
        backend = await PostgresBackend.connect(database_url, pool_size)
    else:
        raise StoreUnavailable(f"unsupported database URL scheme {scheme!r}")
    store = SQLStore(backend, clock)
    if not migrate:
        return store
    try:
        await store.migrate()
    except BaseException:
        await store.close()
        raise
    return store
