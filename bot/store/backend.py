"""What a database backend gives the shared operations: statements, transactions, locks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

Row = Mapping[str, Any]
Params = Sequence[Any]


class Transaction(Protocol):
    """Statements that commit together, or not at all."""

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement in the transaction and return its rows."""
        ...


class Backend(Protocol):
    """One database, spoken to in the SQL both backends share (`?` marks a parameter).

    Errors of the database come out as `StoreUnavailable`.
    """

    skip_locked: str
    """What ends a `SELECT` so that rows another instance is claiming are passed over."""

    async def statement(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement, committed before this returns, and return its rows."""
        ...

    def transaction(self, lock: str | None = None) -> AbstractAsyncContextManager[Transaction]:
        """Open a transaction that commits when the block ends and rolls back if it raises.

        With *lock*, no other transaction naming the same lock runs at the same time,
        in any instance: a check-then-write inside it sees every earlier write.
        """
        ...

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the lock *name*, across every instance on this database, for the block."""
        ...

    async def notify(self, channel: str) -> None:
        """Tell every instance listening on *channel* that something happened."""
        ...

    async def listen(self, channel: str, callback: Callable[[], None]) -> None:
        """Call *callback* whenever any instance notifies *channel*, until the backend closes."""
        ...

    async def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""
        ...

    async def close(self) -> None:
        """Finish what is queued, then close; closing twice is harmless."""
        ...
