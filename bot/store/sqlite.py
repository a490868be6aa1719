"""The SQLite backend: one connection, owned by one thread, in WAL mode.

The event loop never blocks on the disk, and every statement is serialised, so a
claim is atomic without extra locking. Everything SQLite-specific lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from bot.store.backend import Params, Row
from bot.store.records import StoreInUse, StoreUnavailable
from bot.store.schema import ColumnTypes, render

T = TypeVar("T")

MIGRATIONS = render(
    ColumnTypes(
        serial="INTEGER PRIMARY KEY AUTOINCREMENT", integer="INTEGER", real="REAL", blob="BLOB"
    )
)
# One process per file: a second one would drive the same runs as the first.
IN_USE = (
    "{path} is already used by another box-bot process; SQLite serves one process only:"
    " set DATABASE_URL=postgresql://… to run several instances"
)
MEMORY = ":memory:"
# What a statement can raise on values it cannot store; it fails alone, not its group.
STATEMENT_ERRORS = (sqlite3.Error, ValueError, OverflowError)


_held: dict[str, tuple[int, int]] = {}  # lock file -> (descriptor, opens in this process)


def _hold(path: str) -> None:
    """Lock `<path>.lock` for this process, or raise `StoreUnavailable` if another has it."""
    lock_path = os.path.realpath(path) + ".lock"
    if lock_path in _held:
        fd, opens = _held[lock_path]
        _held[lock_path] = (fd, opens + 1)
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreUnavailable(f"cannot open {lock_path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreInUse(IN_USE.format(path=path)) from None
    _held[lock_path] = (fd, 1)


def _let_go(path: str) -> None:
    lock_path = os.path.realpath(path) + ".lock"
    fd, opens = _held.pop(lock_path)
    if opens > 1:
        _held[lock_path] = (fd, opens - 1)
    else:
        os.close(fd)  # closing the descriptor releases the lock


def _row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, values, strict=True)}


@dataclass
class _Statement:
    """One statement waiting for the next group commit, and who waits for its rows."""

    sql: str
    params: Params
    result: asyncio.Future[list[Row]]


class SQLiteBackend:
    """Runs statements on one SQLite connection in a dedicated thread.

    Single statements are committed in groups: whatever arrives while a commit is on
    disk goes into the next transaction, each in its own savepoint so one failing
    statement does not undo the others. Every caller still waits for its own commit
    (a delivery is answered 202 only once it is on disk), but a burst of deliveries
    shares one fsync instead of paying one each. A transaction has the connection to
    itself until it ends.
    """

    skip_locked = ""  # one connection: nothing is ever claimed by someone else meanwhile

    def __init__(self, path: str, *, exclusive: bool = True) -> None:
        self._locked = exclusive and path != MEMORY
        if self._locked:
            _hold(path)
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        self._waiting: list[_Statement] = []
        self._flusher: asyncio.Task[None] | None = None
        self._turn = asyncio.Lock()  # a group commit or one transaction at a time
        self._locks: dict[str, asyncio.Lock] = {}
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("the store is closed")
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.row_factory = _row
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a delivery answered 202 survives a crash of the machine, not only of the app.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn = conn
        return self._conn

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run *work* on the connection, in its thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: work(self._connect()))
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        except RuntimeError as exc:  # the executor was shut down: the store is closed
            raise StoreUnavailable("the store is closed") from exc

    async def statement(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one statement in the next group commit and return its rows."""
        result: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Statement(sql, params, result))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="store group commit")
        return await result

    async def _flush(self) -> None:
        group: list[_Statement] = []
        try:
            while self._waiting:
                async with self._turn:
                    group, self._waiting = self._waiting, []
                    try:
                        outcomes = await self.run(functools.partial(_commit_group, group=group))
                    except StoreUnavailable as exc:
                        outcomes = [exc] * len(group)
                for item, outcome in zip(group, outcomes, strict=True):
                    if item.result.done():
                        continue
                    if isinstance(outcome, BaseException):
                        item.result.set_exception(outcome)
                    else:
                        item.result.set_result(outcome)
        finally:
            self._flusher = None
            for item in [*group, *self._waiting]:  # only when cancelled mid-commit
                if not item.result.done():
                    item.result.set_exception(StoreUnavailable("the store is closing"))

    @contextlib.asynccontextmanager
    async def transaction(self, lock: str | None = None) -> AsyncIterator[_SQLiteTransaction]:
        """`BEGIN IMMEDIATE` takes the one write lock, so *lock* needs nothing more."""
        async with self._turn:
            await self.run(lambda conn: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield _SQLiteTransaction(self)
            except BaseException:
                await self.run(_rollback)
                raise
            await self.run(lambda conn: conn.execute("COMMIT"))

    @contextlib.asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        """One process owns the file, so a lock in this process is a lock everywhere."""
        async with self._locks.setdefault(name, asyncio.Lock()):
            yield

    async def notify(self, channel: str) -> None:
        """Every listener is in this process: call them directly."""
        for callback in self._listeners.get(channel, ()):
            callback()

    async def listen(self, channel: str, callback: Callable[[], None]) -> None:
        self._listeners.setdefault(channel, []).append(callback)

    async def migrate(self) -> int:
        return await self.run(_migrate)

    async def close(self) -> None:
        if self._closed:
            return
        if self._flusher is not None:
            await self._flusher
        self._closed = True  # from here on, work fails with StoreUnavailable
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown, True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._locked:
            _let_go(self._path)


class _SQLiteTransaction:
    """Statements run on the connection while `SQLiteBackend.transaction` holds it."""

    def __init__(self, backend: SQLiteBackend) -> None:
        self._backend = backend

    async def fetch(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._backend.run(lambda conn: conn.execute(sql, params).fetchall())


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection) -> int:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    version = conn.execute("SELECT MAX(version) AS v FROM schema_version").fetchone()["v"] or 0
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.executescript(
            f"BEGIN; {script}; INSERT INTO schema_version VALUES ({number}); COMMIT;"
        )
    return len(MIGRATIONS)


def _commit_group(
    conn: sqlite3.Connection, *, group: Sequence[_Statement]
) -> list[list[Row] | StoreUnavailable]:
    """Run *group* in one transaction, each statement in a savepoint; return rows or errors."""
    if len(group) == 1:  # nothing to share: autocommit, as a lone statement always was
        try:
            return [conn.execute(group[0].sql, group[0].params).fetchall()]
        except STATEMENT_ERRORS as exc:
            return [StoreUnavailable(str(exc))]
    outcomes: list[list[Row] | StoreUnavailable] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for item in group:
            conn.execute("SAVEPOINT one")
            try:
                outcomes.append(conn.execute(item.sql, item.params).fetchall())
            except STATEMENT_ERRORS as exc:  # bad values fail alone
                conn.execute("ROLLBACK TO one")
                outcomes.append(StoreUnavailable(str(exc)))
            conn.execute("RELEASE one")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return outcomes


def sqlite_path(database_url: str) -> str:
    """Return the file a `sqlite://` URL names (`:memory:` when it names none)."""
    return database_url.removeprefix("sqlite:///").removeprefix("sqlite://") or MEMORY
