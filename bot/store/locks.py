"""A store lock by name as one reusable context manager, for clients that take one.

`Store.lock(name)` opens a new block each time; a client such as the Box client wants one
object it can enter again and again. Holders in this process queue on a local lock first,
so only one of them at a time waits on the database (a PostgreSQL advisory lock holds a
pooled connection while it waits).
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from bot.store.interface import Store


class NamedLock:
    """`async with` holds the store lock *name* across every instance on the database."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self._local = asyncio.Lock()
        self._held: AbstractAsyncContextManager[None] | None = None

    async def __aenter__(self) -> None:
        await self._local.acquire()
        held = self.store.lock(self.name)
        try:
            await held.__aenter__()
        except BaseException:
            self._local.release()
            raise
        self._held = held

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        held, self._held = self._held, None
        try:
            if held is not None:
                await held.__aexit__(exc_type, exc, traceback)
        finally:
            self._local.release()
