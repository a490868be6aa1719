"""Open the store a `DATABASE_URL` names."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlparse

from bot.store.interface import Store
from bot.store.operations import SQLStore
from bot.store.records import StoreUnavailable
from bot.store.sqlite import SQLiteBackend, sqlite_path


async def open_store(database_url: str, clock: Callable[[], float] = time.time) -> Store:
    """Open the database named by *database_url* and bring its schema up to date."""
    scheme = urlparse(database_url).scheme
    if scheme != "sqlite":
        raise StoreUnavailable(f"unsupported database URL scheme {scheme!r}")
    store = SQLStore(SQLiteBackend(sqlite_path(database_url)), clock)
    await store.migrate()
    return store
