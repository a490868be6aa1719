"""The app's durable state. This is the only module that speaks SQL.

SQLite runs on one connection owned by one worker thread, so the event loop
never blocks on the disk and every statement is serialised (a claim is
atomic without extra locking). The SQL is plain enough that a PostgreSQL
backend only needs another `_Backend`.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

from bot.ingress.webhook import decode_json
from bot.models import (
    ACTIVE_STATES,
    BoxReport,
    PromptKind,
    PromptState,
    QueuedPrompt,
    Run,
    RunState,
)
from bot.runs.limits import DAY_SECONDS, Limit, LimitHit, Limits

T = TypeVar("T")
Row = tuple[Any, ...]

MIGRATIONS: tuple[str, ...] = (
    # 1: the webhook inbox, unique on GitHub's delivery GUID.
    """
    CREATE TABLE deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        action TEXT,
        installation_id INTEGER,
        payload BLOB NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        claimed_by TEXT,
        done_handlers TEXT NOT NULL DEFAULT '[]',
        last_error TEXT,
        received_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
    """,
    # 2: runs, the prompts queued for their boxes, and one-time notices.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        installation_id INTEGER NOT NULL,
        repo_id INTEGER NOT NULL,
        repo TEXT NOT NULL,
        repo_private INTEGER NOT NULL,
        number INTEGER NOT NULL,
        is_pull_request INTEGER NOT NULL,
        state TEXT NOT NULL,
        requester TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT,
        reasoning_effort TEXT,
        pr_number INTEGER,
        box_id TEXT,
        comment_id INTEGER,
        pr_comment_id INTEGER,
        head_sha TEXT,
        check_run_id INTEGER,
        events_cursor TEXT,
        reason TEXT,
        summary TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    );
    -- At most one active run per issue or pull request, whoever asks and however often.
    CREATE UNIQUE INDEX runs_one_active ON runs (repo_id, number)
        WHERE state IN ('requested', 'provisioning', 'prompting', 'working', 'idle');
    CREATE INDEX runs_by_pr ON runs (repo_id, pr_number);
    CREATE INDEX runs_by_state ON runs (state);
    CREATE TABLE prompts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs (id),
        kind TEXT NOT NULL,
        requester TEXT NOT NULL,
        instructions TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',
        box_prompt_id TEXT,
        trigger_key TEXT UNIQUE,
        text TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX prompts_by_run ON prompts (run_id, state);
    CREATE TABLE notices (key TEXT PRIMARY KEY, sent_at REAL NOT NULL);
    """,
    # 3: the explanation shown with a run that failed (which limit, what to do next).
    """
    ALTER TABLE runs ADD COLUMN notice TEXT;
    """,
    # 4: spending reservations, per-run TTL and default branch, and when prompts were sent.
    """
    ALTER TABLE runs ADD COLUMN reserved_at REAL;
    ALTER TABLE runs ADD COLUMN ttl_seconds INTEGER;
    ALTER TABLE runs ADD COLUMN default_branch TEXT;
    ALTER TABLE prompts ADD COLUMN sent_at REAL;
    CREATE INDEX runs_reserved ON runs (reserved_at);
    """,
    # 5: failing CI sent back to a pull request's box (auto_fix_ci), one row per head commit;
    # attempt 0 records a commit refused because the pull request used all its attempts.
    """
    CREATE TABLE ci_fixes (
        repo_id INTEGER NOT NULL,
        pr_number INTEGER NOT NULL,
        head_sha TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (repo_id, pr_number, head_sha)
    );
    CREATE INDEX runs_by_head ON runs (repo_id, head_sha);
    """,
    # 6: boxes whose stop (or delete) has not gone through yet, to be tried again.
    """
    CREATE TABLE pending_stops (
        run_id TEXT PRIMARY KEY REFERENCES runs (id),
        box_id TEXT NOT NULL,
        action TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        last_error TEXT
    );
    """,
    # 7: a hash of the body last written to each tracking comment, to skip unchanged edits.
    """
    CREATE TABLE shown_comments (
        comment_id INTEGER PRIMARY KEY,
        body_hash TEXT NOT NULL,
        shown_at REAL NOT NULL
    );
    """,
    # 8: what Box last said about each run's box: its setup script, billed time and dollars
    # (NULL: this Box does not report usage); final once the box is stopped.
    """
    CREATE TABLE box_reports (
        run_id TEXT PRIMARY KEY REFERENCES runs (id),
        box_id TEXT NOT NULL,
        installation_id INTEGER NOT NULL,
        repo_id INTEGER NOT NULL,
        setup_status TEXT,
        setup_error TEXT,
        seconds REAL NOT NULL,
        dollars REAL,
        dollars_per_second REAL NOT NULL,
        billed INTEGER NOT NULL,
        final INTEGER NOT NULL,
        read_at REAL NOT NULL
    );
    CREATE INDEX box_reports_by_installation ON box_reports (installation_id, read_at);
    """,
)


class StoreUnavailable(Exception):
    """The database cannot be reached or written."""


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery as kept in the inbox."""

    id: str
    event: str
    action: str | None
    installation_id: int | None
    payload: bytes
    status: DeliveryStatus
    attempts: int
    done_handlers: tuple[str, ...]
    last_error: str | None

    def data(self) -> dict[str, Any]:
        """Return the decoded JSON payload."""
        decoded: dict[str, Any] = decode_json(self.payload)
        return decoded


_DELIVERY_COLUMNS = (
    "id, event, action, installation_id, payload, status, attempts, done_handlers, last_error"
)


def _delivery(row: Row) -> Delivery:
    return Delivery(
        id=row[0],
        event=row[1],
        action=row[2],
        installation_id=row[3],
        payload=bytes(row[4]),
        status=DeliveryStatus(row[5]),
        attempts=row[6],
        done_handlers=tuple(json.loads(row[7])),
        last_error=row[8],
    )


_RUN_COLUMNS = (
    "id, installation_id, repo_id, repo, repo_private, number, is_pull_request, state,"
    " requester, provider, model, reasoning_effort, pr_number, box_id, comment_id,"
    " pr_comment_id, head_sha, check_run_id, events_cursor, reason, summary, created_at,"
    " updated_at, finished_at, notice, reserved_at, ttl_seconds, default_branch"
)
_RUN_UPDATABLE = frozenset(
    {
        "state",
        "pr_number",
        "box_id",
        "comment_id",
        "pr_comment_id",
        "head_sha",
        "check_run_id",
        "events_cursor",
        "reason",
        "summary",
        "finished_at",
        "model",
        "reasoning_effort",
        "provider",
        "notice",
        "reserved_at",
    }
)
_ACTIVE_SQL = ", ".join(f"'{state.value}'" for state in sorted(ACTIVE_STATES))
_PROMPT_COLUMNS = (
    "seq, run_id, kind, requester, instructions, state, box_prompt_id, trigger_key, text, sent_at"
)


def _run(row: Row) -> Run:
    return Run(
        id=row[0],
        installation_id=row[1],
        repo_id=row[2],
        repo=row[3],
        repo_private=bool(row[4]),
        number=row[5],
        is_pull_request=bool(row[6]),
        state=RunState(row[7]),
        requester=row[8],
        provider=row[9],
        model=row[10],
        reasoning_effort=row[11],
        pr_number=row[12],
        box_id=row[13],
        comment_id=row[14],
        pr_comment_id=row[15],
        head_sha=row[16],
        check_run_id=row[17],
        events_cursor=row[18],
        reason=row[19],
        summary=json.loads(row[20]),
        created_at=row[21],
        updated_at=row[22],
        finished_at=row[23],
        notice=row[24],
        reserved_at=row[25],
        ttl_seconds=row[26],
        default_branch=row[27],
    )


def _prompt(row: Row) -> QueuedPrompt:
    return QueuedPrompt(
        seq=row[0],
        run_id=row[1],
        kind=PromptKind(row[2]),
        requester=row[3],
        instructions=row[4],
        state=PromptState(row[5]),
        box_prompt_id=row[6],
        trigger_key=row[7],
        text=row[8],
        sent_at=row[9],
    )


@dataclass(frozen=True)
class PendingStop:
    """A box the app has to stop (or delete) and has not managed to yet."""

    run_id: str
    box_id: str
    delete: bool
    attempts: int
    next_attempt_at: float


_PENDING_STOP_COLUMNS = "run_id, box_id, action, attempts, next_attempt_at"


_BOX_REPORT_COLUMNS = (
    "run_id, box_id, installation_id, repo_id, setup_status, setup_error, seconds, dollars,"
    " dollars_per_second, billed, final, read_at"
)


def _box_report(row: Row) -> BoxReport:
    values = list(row)
    values[9], values[10] = bool(values[9]), bool(values[10])
    return BoxReport(*values)


def _pending_stop(row: Row) -> PendingStop:
    return PendingStop(row[0], row[1], row[2] == "delete", row[3], row[4])


class CreateOutcome(enum.Enum):
    """What `Store.create_run` did."""

    CREATED = "created"
    SAME_TRIGGER = "same trigger already handled"
    ACTIVE_EXISTS = "another run is active"


class CIFixOutcome(enum.Enum):
    """What `Store.claim_ci_fix` did."""

    QUEUED = "queued"
    LIMIT_REACHED = "limit reached"
    SEEN = "commit already handled"


@dataclass(frozen=True)
class CIFixClaim:
    """The outcome of a CI fix claim and the attempt it was (or the attempts used)."""

    outcome: CIFixOutcome
    attempt: int


@dataclass
class _Statement:
    """One statement waiting for the next group commit, and who waits for its rows."""

    sql: str
    params: Row
    result: asyncio.Future[list[Row]]


class _SQLiteBackend:
    """Runs statements on one SQLite connection in a dedicated thread.

    Single statements are committed in groups: whatever arrives while a commit is on
    disk goes into the next transaction, each in its own savepoint so one failing
    statement does not undo the others. Every caller still waits for its own commit
    (a delivery is answered 202 only once it is on disk), but a burst of deliveries
    shares one fsync instead of paying one each.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._conn: sqlite3.Connection | None = None
        self._waiting: list[_Statement] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("the store is closed")
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL: a delivery answered 202 survives a crash of the machine, not only of the app.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn = conn
        return self._conn

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: work(self._connect()))
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc
        except RuntimeError as exc:  # the executor was shut down: the store is closed
            raise StoreUnavailable("the store is closed") from exc

    async def statement(self, sql: str, params: Row) -> list[Row]:
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

    async def close(self) -> None:
        """Finish what is queued, then close; closing twice is harmless."""
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


def _commit_group(
    conn: sqlite3.Connection, *, group: Sequence[_Statement]
) -> list[list[Row] | StoreUnavailable]:
    """Run *group* in one transaction, each statement in a savepoint; return rows or errors."""
    if len(group) == 1:  # nothing to share: autocommit, as a lone statement always was
        try:
            return [conn.execute(group[0].sql, group[0].params).fetchall()]
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            return [StoreUnavailable(str(exc))]
    outcomes: list[list[Row] | StoreUnavailable] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for item in group:
            conn.execute("SAVEPOINT one")
            try:
                outcomes.append(conn.execute(item.sql, item.params).fetchall())
            except (sqlite3.Error, ValueError, OverflowError) as exc:  # bad values fail alone
                conn.execute("ROLLBACK TO one")
                outcomes.append(StoreUnavailable(str(exc)))
            conn.execute("RELEASE one")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


class Store:
    """Async access to the app's tables."""

    def __init__(self, backend: _SQLiteBackend, clock: Callable[[], float] = time.time) -> None:
        self._backend = backend
        self.clock = clock
        self.instance_id = uuid.uuid4().hex

    async def _one(self, sql: str, params: Row = ()) -> list[Row]:
        """Run one statement, committed before this returns, and return its rows."""
        return await self._backend.statement(sql, params)

    async def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""

        def _migrate(conn: sqlite3.Connection) -> int:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = row[0] or 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                conn.executescript(
                    f"BEGIN; {script}; INSERT INTO schema_version VALUES ({number}); COMMIT;"
                )
            return len(MIGRATIONS)

        return await self._backend.run(_migrate)

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the database answers a query."""
        await self._one("SELECT 1")

    async def close(self) -> None:
        await self._backend.close()

    # -- the webhook inbox -------------------------------------------------

    async def add_delivery(
        self,
        delivery_id: str,
        event: str,
        action: str | None,
        installation_id: int | None,
        payload: bytes,
    ) -> bool:
        """Store a delivery; return False when this delivery id is already in the inbox."""
        now = self.clock()
        rows = await self._one(
            "INSERT INTO deliveries (id, event, action, installation_id, payload,"
            " next_attempt_at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING RETURNING seq",
            (delivery_id, event, action, installation_id, payload, now, now),
        )
        return bool(rows)

    async def claim_deliveries(self, limit: int, lease_seconds: float) -> list[Delivery]:
        """Mark up to *limit* due deliveries as processing and return them, oldest first."""
        now = self.clock()
        rows = await self._one(
            "UPDATE deliveries SET status = 'processing', attempts = attempts + 1,"
            " lease_until = ?, claimed_by = ?"
            " WHERE seq IN (SELECT seq FROM deliveries WHERE"
            " (status = 'pending' AND next_attempt_at <= ?)"
            " OR (status = 'processing' AND lease_until < ?) ORDER BY seq LIMIT ?)"
            f" RETURNING seq, {_DELIVERY_COLUMNS}",
            (now + lease_seconds, self.instance_id, now, now, limit),
        )
        return [_delivery(row[1:]) for row in sorted(rows)]

    async def release_claims(self, every_instance: bool = False) -> int:
        """Hand back what this instance (or, after an unclean stop, any) was processing.

        Work handed back on a clean stop does not count as an attempt; work left behind by
        a crash does, so a delivery that brings the app down is not tried for ever.
        """
        rows = await self._one(
            "UPDATE deliveries SET status = 'pending', lease_until = NULL, claimed_by = NULL,"
            " attempts = CASE WHEN ? THEN attempts ELSE MAX(attempts - 1, 0) END"
            " WHERE status = 'processing' AND (? OR claimed_by = ?) RETURNING seq",
            (every_instance, every_instance, self.instance_id),
        )
        return len(rows)

    async def finish_delivery(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        done_handlers: Sequence[str] = (),
        error: str | None = None,
    ) -> None:
        """Record the final outcome of a delivery."""
        await self._one(
            "UPDATE deliveries SET status = ?, done_handlers = ?, last_error = ?,"
            " lease_until = NULL, finished_at = ? WHERE id = ?",
            (status.value, json.dumps(list(done_handlers)), error, self.clock(), delivery_id),
        )

    async def retry_delivery(
        self, delivery_id: str, done_handlers: Sequence[str], error: str, delay: float
    ) -> None:
        """Put a failed delivery back in the queue to be tried again after *delay* seconds."""
        await self._one(
            "UPDATE deliveries SET status = 'pending', done_handlers = ?, last_error = ?,"
            " lease_until = NULL, next_attempt_at = ? WHERE id = ?",
            (json.dumps(list(done_handlers)), error, self.clock() + delay, delivery_id),
        )

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        rows = await self._one(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
        )
        return _delivery(rows[0]) if rows else None

    async def delivery_counts(self) -> dict[str, int]:
        """Return the number of deliveries in each status."""
        rows = await self._one("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
        return {status: count for status, count in rows}

    async def next_due_in(self) -> float | None:
        """Seconds until the next pending delivery is due (None when nothing is pending)."""
        rows = await self._one(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'"
        )
        due = rows[0][0]
        return None if due is None else max(0.0, due - self.clock())

    # -- runs ----------------------------------------------------------------------------

    async def create_run(self, run: Run, first: QueuedPrompt) -> tuple[CreateOutcome, Run]:
        """Insert a run with its first prompt, unless that trigger was seen or a run is active."""
        now = self.clock()

        def _create(conn: sqlite3.Connection) -> tuple[CreateOutcome, Row]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcome = _insert_run(conn, run, first, now)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return outcome

        outcome, row = await self._backend.run(_create)
        return outcome, _run(row)

    async def get_run(self, run_id: str) -> Run | None:
        rows = await self._one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    async def active_run(self, repo_id: int, number: int) -> Run | None:
        """Return the active run asked on this issue or PR, or linked to this PR."""
        rows = await self._one(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE repo_id = ? AND (number = ? OR pr_number = ?)"
            f" AND state IN ({_ACTIVE_SQL}) ORDER BY created_at DESC LIMIT 1",
            (repo_id, number, number),
        )
        return _run(rows[0]) if rows else None

    async def latest_run(self, repo_id: int, number: int) -> Run | None:
        """Return the newest run asked on, or linked to, this issue or PR, whatever its state."""
        rows = await self._one(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE repo_id = ? AND (number = ? OR pr_number = ?)"
            " ORDER BY created_at DESC LIMIT 1",
            (repo_id, number, number),
        )
        return _run(rows[0]) if rows else None

    async def runs_in(self, states: Sequence[RunState]) -> list[Run]:
        marks = ", ".join("?" for _ in states)
        rows = await self._one(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE state IN ({marks}) ORDER BY created_at",
            tuple(state.value for state in states),
        )
        return [_run(row) for row in rows]

    async def update_run(
        self, run_id: str, *, expect: Sequence[RunState] | None = None, **fields: Any
    ) -> Run | None:
        """Change a run's fields; with *expect*, only if it is in one of those states."""
        unknown = set(fields) - _RUN_UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = {key: _column_value(value) for key, value in fields.items()}
        sql = ", ".join(f"{key} = ?" for key in values)
        where, params = "id = ?", [*values.values(), self.clock(), run_id]
        if expect is not None:
            where += f" AND state IN ({', '.join('?' for _ in expect)})"
            params += [state.value for state in expect]
        rows = await self._one(
            f"UPDATE runs SET {sql}, updated_at = ? WHERE {where} RETURNING {_RUN_COLUMNS}",
            tuple(params),
        )
        return _run(rows[0]) if rows else None

    async def count_runs(self) -> dict[str, int]:
        rows = await self._one("SELECT state, COUNT(*) FROM runs GROUP BY state")
        return {state: count for state, count in rows}

    async def reserve(self, run_id: str, limits: Limits) -> LimitHit | None:
        """Count this run against the spending limits, atomically; return the limit it hits.

        Active runs that have reserved are the boxes in use; a run that ends (archived or
        failed) stops counting. Runs per person per day count the reservations of the last
        day that are active or got a box.
        """
        now = self.clock()

        def _reserve(conn: sqlite3.Connection) -> LimitHit | None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                hit = _check_limits(conn, run_id, limits, now)
                if hit is None:
                    conn.execute(
                        "UPDATE runs SET reserved_at = COALESCE(reserved_at, ?) WHERE id = ?",
                        (now, run_id),
                    )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return hit

        return await self._backend.run(_reserve)

    # -- prompts --------------------------------------------------------------------------

    async def queue_prompt(self, prompt: QueuedPrompt) -> bool:
        """Queue a prompt for a run; False when its trigger was already queued."""
        rows = await self._one(
            "INSERT INTO prompts (run_id, kind, requester, instructions, state, trigger_key,"
            " created_at) VALUES (?, ?, ?, ?, 'queued', ?, ?)"
            " ON CONFLICT (trigger_key) DO NOTHING RETURNING seq",
            (
                prompt.run_id,
                prompt.kind.value,
                prompt.requester,
                prompt.instructions,
                prompt.trigger_key,
                self.clock(),
            ),
        )
        return bool(rows)

    async def prompts(self, run_id: str, states: Sequence[PromptState] = ()) -> list[QueuedPrompt]:
        """Return a run's prompts, oldest first, optionally only those in *states*."""
        chosen = states or tuple(PromptState)
        marks = ", ".join("?" for _ in chosen)
        rows = await self._one(
            f"SELECT {_PROMPT_COLUMNS} FROM prompts WHERE run_id = ? AND state IN ({marks})"
            " ORDER BY seq",
            (run_id, *(state.value for state in chosen)),
        )
        return [_prompt(row) for row in rows]

    async def update_prompt(
        self,
        seq: int,
        state: PromptState,
        *,
        box_prompt_id: str | None = None,
        text: str | None = None,
    ) -> None:
        """Move a prompt to *state*, recording the text sent and the box's prompt id once known.

        `sent_at` is when sending first began, so a prompt looked for after a restart is
        never confused with an older one of the same text.
        """
        await self._one(
            "UPDATE prompts SET state = ?, box_prompt_id = COALESCE(?, box_prompt_id),"
            " text = COALESCE(?, text),"
            " sent_at = CASE WHEN ? IN ('sending', 'sent') THEN COALESCE(sent_at, ?)"
            " ELSE sent_at END"
            " WHERE seq = ?",
            (state.value, box_prompt_id, text, state.value, self.clock(), seq),
        )

    # -- notices --------------------------------------------------------------------------

    async def claim_notice(self, key: str, every: float) -> bool:
        """Remember a notice; False if one with *key* was sent in the last *every* seconds."""
        now = self.clock()
        rows = await self._one(
            "INSERT INTO notices (key, sent_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
            " SET sent_at = excluded.sent_at WHERE notices.sent_at < ? RETURNING key",
            (key, now, now - every),
        )
        return bool(rows)

    # -- pending stops ----------------------------------------------------------------------

    async def add_pending_stop(self, run_id: str, box_id: str, *, delete: bool) -> PendingStop:
        """Record that the run's box must be stopped (or deleted), due now; return the record."""
        rows = await self._one(
            "INSERT INTO pending_stops (run_id, box_id, action, next_attempt_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET box_id = excluded.box_id,"
            " action = CASE WHEN excluded.action = 'delete' THEN 'delete' ELSE action END,"
            f" next_attempt_at = excluded.next_attempt_at RETURNING {_PENDING_STOP_COLUMNS}",
            (run_id, box_id, "delete" if delete else "stop", self.clock()),
        )
        return _pending_stop(rows[0])

    async def pending_stop(self, run_id: str) -> PendingStop | None:
        rows = await self._one(
            f"SELECT {_PENDING_STOP_COLUMNS} FROM pending_stops WHERE run_id = ?", (run_id,)
        )
        return _pending_stop(rows[0]) if rows else None

    async def pending_stops(self) -> list[PendingStop]:
        """Return every stop still to be done, the earliest due first."""
        rows = await self._one(
            f"SELECT {_PENDING_STOP_COLUMNS} FROM pending_stops ORDER BY next_attempt_at"
        )
        return [_pending_stop(row) for row in rows]

    async def stop_failed(self, run_id: str, error: str, retry_at: float) -> None:
        """Count a failed attempt and say when to try again."""
        await self._one(
            "UPDATE pending_stops SET attempts = attempts + 1, last_error = ?,"
            " next_attempt_at = ? WHERE run_id = ?",
            (error, retry_at, run_id),
        )

    async def clear_pending_stop(self, run_id: str) -> None:
        """Forget a stop that went through."""
        await self._one("DELETE FROM pending_stops WHERE run_id = ?", (run_id,))

    # -- box reports: setup and spend --------------------------------------------------------

    async def save_box_report(self, report: BoxReport) -> None:
        """Record the latest about a run's box, replacing the previous record."""
        await self._one(
            f"INSERT INTO box_reports ({_BOX_REPORT_COLUMNS}) VALUES ({', '.join('?' * 12)})"
            " ON CONFLICT (run_id) DO UPDATE SET box_id = excluded.box_id,"
            " setup_status = excluded.setup_status, setup_error = excluded.setup_error,"
            " seconds = excluded.seconds, dollars = excluded.dollars,"
            " dollars_per_second = excluded.dollars_per_second, billed = excluded.billed,"
            " final = excluded.final, read_at = excluded.read_at",
            (
                report.run_id,
                report.box_id,
                report.installation_id,
                report.repo_id,
                report.setup_status,
                report.setup_error,
                report.seconds,
                report.dollars,
                report.dollars_per_second,
                int(report.billed),
                int(report.final),
                report.read_at,
            ),
        )

    async def box_report(self, run_id: str) -> BoxReport | None:
        rows = await self._one(
            f"SELECT {_BOX_REPORT_COLUMNS} FROM box_reports WHERE run_id = ?", (run_id,)
        )
        return _box_report(rows[0]) if rows else None

    async def dollars_since(
        self, since: float, installation_id: int, repo_id: int | None = None
    ) -> float:
        """Dollars of the boxes read since *since*, and of active runs' boxes whenever read.

        A box still running counts with its latest reading; a stopped one with its final.
        """
        where = (
            "b.installation_id = ? AND (b.read_at >= ?"
            f" OR (b.final = 0 AND r.state IN ({_ACTIVE_SQL})))"
        )
        params: tuple[Any, ...] = (installation_id, since)
        if repo_id is not None:
            where, params = where + " AND b.repo_id = ?", (*params, repo_id)
        rows = await self._one(
            "SELECT COALESCE(SUM(b.dollars), 0) FROM box_reports b"
            f" JOIN runs r ON r.id = b.run_id WHERE {where}",
            params,
        )
        return float(rows[0][0])

    # -- tracking comments ------------------------------------------------------------------

    async def shown_hash(self, comment_id: int) -> str | None:
        """Return the hash of the body last written to a comment, if any."""
        rows = await self._one(
            "SELECT body_hash FROM shown_comments WHERE comment_id = ?", (comment_id,)
        )
        return str(rows[0][0]) if rows else None

    async def set_shown_hash(self, comment_id: int, body_hash: str) -> None:
        """Remember the hash of the body just written to a comment."""
        await self._one(
            "INSERT INTO shown_comments (comment_id, body_hash, shown_at) VALUES (?, ?, ?)"
            " ON CONFLICT (comment_id) DO UPDATE SET body_hash = excluded.body_hash,"
            " shown_at = excluded.shown_at",
            (comment_id, body_hash, self.clock()),
        )

    # -- CI fixes -------------------------------------------------------------------------

    async def linked_run_at(self, repo_id: int, head_sha: str) -> Run | None:
        """Return the active run whose linked pull request's head is *head_sha*."""
        rows = await self._one(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE repo_id = ? AND head_sha = ?"
            f" AND pr_number IS NOT NULL AND state IN ({_ACTIVE_SQL})"
            " ORDER BY created_at DESC LIMIT 1",
            (repo_id, head_sha),
        )
        return _run(rows[0]) if rows else None

    async def ci_fix_attempts(self, repo_id: int, pr_number: int) -> dict[str, int]:
        """Return the PR's head commits handled so far and their attempt (0: refused)."""
        rows = await self._one(
            "SELECT head_sha, attempt FROM ci_fixes WHERE repo_id = ? AND pr_number = ?",
            (repo_id, pr_number),
        )
        return {sha: attempt for sha, attempt in rows}

    async def claim_ci_fix(
        self, prompt: QueuedPrompt, repo_id: int, pr_number: int, head_sha: str, limit: int
    ) -> CIFixClaim:
        """Count one attempt for *head_sha* and queue *prompt*, atomically, within *limit*."""
        now = self.clock()

        def _claim(conn: sqlite3.Connection) -> CIFixClaim:
            conn.execute("BEGIN IMMEDIATE")
            try:
                claim = _claim_ci_fix(conn, prompt, (repo_id, pr_number, head_sha), limit, now)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return claim

        return await self._backend.run(_claim)


def _claim_ci_fix(
    conn: sqlite3.Connection,
    prompt: QueuedPrompt,
    commit: tuple[int, int, str],
    limit: int,
    now: float,
) -> CIFixClaim:
    seen = conn.execute(
        "SELECT attempt FROM ci_fixes WHERE repo_id = ? AND pr_number = ? AND head_sha = ?",
        commit,
    ).fetchone()
    if seen is not None:
        return CIFixClaim(CIFixOutcome.SEEN, seen[0])
    used = conn.execute(
        "SELECT COUNT(*) FROM ci_fixes WHERE repo_id = ? AND pr_number = ? AND attempt > 0",
        commit[:2],
    ).fetchone()[0]
    attempt = used + 1 if used < limit else 0
    conn.execute(
        "INSERT INTO ci_fixes (repo_id, pr_number, head_sha, attempt, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (*commit, attempt, now),
    )
    if not attempt:
        return CIFixClaim(CIFixOutcome.LIMIT_REACHED, used)
    conn.execute(
        "INSERT INTO prompts (run_id, kind, requester, instructions, state, trigger_key,"
        " created_at) VALUES (?, ?, ?, ?, 'queued', ?, ?) ON CONFLICT (trigger_key) DO NOTHING",
        (
            prompt.run_id,
            prompt.kind.value,
            prompt.requester,
            prompt.instructions,
            prompt.trigger_key,
            now,
        ),
    )
    return CIFixClaim(CIFixOutcome.QUEUED, attempt)


def _check_limits(
    conn: sqlite3.Connection, run_id: str, limits: Limits, now: float
) -> LimitHit | None:
    if limits.paused:
        return LimitHit(Limit.PAUSED, 0)
    run = conn.execute(
        "SELECT installation_id, repo_id, requester, reserved_at FROM runs WHERE id = ?",
        (run_id,),
    ).fetchone()
    installation_id, repo_id, requester, reserved_at = run
    active = f"state IN ({_ACTIVE_SQL}) AND reserved_at IS NOT NULL AND id != ?"
    scoped = (
        (limits.active, "", ()),
        (limits.per_installation, " AND installation_id = ?", (installation_id,)),
        (limits.per_repo, " AND repo_id = ?", (repo_id,)),
    )
    for bound, extra, params in scoped:
        if bound is None:
            continue
        count = conn.execute(
            f"SELECT COUNT(*) FROM runs WHERE {active}{extra}", (run_id, *params)
        ).fetchone()[0]
        if count >= bound.value:
            return LimitHit(bound.limit, bound.value)
    if reserved_at is not None:
        return None
    daily = [
        _daily_hit(conn, Limit.PER_USER_DAY, limits.per_user_day, requester, None, now),
        _daily_hit(conn, Limit.REPO_USER_DAY, limits.repo_per_user_day, requester, repo_id, now),
    ]
    # When both are reached, the one that frees up last is the one that keeps the run waiting.
    return max(filter(None, daily), key=lambda hit: hit.frees_at or 0.0, default=None)


def _daily_hit(
    conn: sqlite3.Connection,
    limit: Limit,
    value: int | None,
    requester: str,
    repo_id: int | None,
    now: float,
) -> LimitHit | None:
    """Count the person's runs of the last day (in *repo_id* only, if given) against *value*.

    A run counts once it reserved, while it is active or if it got a box: one that ended
    before a box was created (refused by Box's `GET /limits`, say) spent nothing.
    """
    if value is None:
        return None
    where = (
        f"requester = ? AND reserved_at > ? AND (state IN ({_ACTIVE_SQL}) OR box_id IS NOT NULL)"
    )
    params: tuple[Any, ...] = (requester, now - DAY_SECONDS)
    if repo_id is not None:
        where, params = where + " AND repo_id = ?", (*params, repo_id)
    count = conn.execute(f"SELECT COUNT(*) FROM runs WHERE {where}", params).fetchone()[0]
    if count < value:
        return None
    # The limit frees up when enough of these runs are a day old to leave one place.
    (freeing,) = conn.execute(
        f"SELECT reserved_at FROM runs WHERE {where} ORDER BY reserved_at LIMIT 1 OFFSET ?",
        (*params, count - value),
    ).fetchone()
    return LimitHit(limit, value, freeing + DAY_SECONDS)


def _column_value(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _insert_run(
    conn: sqlite3.Connection, run: Run, first: QueuedPrompt, now: float
) -> tuple[CreateOutcome, Row]:
    if first.trigger_key is not None:
        seen = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = (SELECT run_id FROM prompts"
            " WHERE trigger_key = ?)",
            (first.trigger_key,),
        ).fetchone()
        if seen is not None:
            return CreateOutcome.SAME_TRIGGER, seen
    try:
        conn.execute(
            f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES ({', '.join('?' * 28)})",
            (
                run.id,
                run.installation_id,
                run.repo_id,
                run.repo,
                int(run.repo_private),
                run.number,
                int(run.is_pull_request),
                run.state.value,
                run.requester,
                run.provider,
                run.model,
                run.reasoning_effort,
                run.pr_number,
                run.box_id,
                run.comment_id,
                run.pr_comment_id,
                run.head_sha,
                run.check_run_id,
                run.events_cursor,
                run.reason,
                json.dumps(run.summary),
                now,
                now,
                None,
                run.notice,
                run.reserved_at,
                run.ttl_seconds,
                run.default_branch,
            ),
        )
    except sqlite3.IntegrityError:
        active = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE repo_id = ? AND number = ?"
            f" AND state IN ({_ACTIVE_SQL})",
            (run.repo_id, run.number),
        ).fetchone()
        return CreateOutcome.ACTIVE_EXISTS, active
    conn.execute(
        "INSERT INTO prompts (run_id, kind, requester, instructions, state, trigger_key,"
        " created_at) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
        (run.id, first.kind.value, first.requester, first.instructions, first.trigger_key, now),
    )
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (run.id,)).fetchone()
    return CreateOutcome.CREATED, row


async def open_store(database_url: str, clock: Callable[[], float] = time.time) -> Store:
    """Open the database named by *database_url* and bring its schema up to date."""
    parsed = urlparse(database_url)
    if parsed.scheme != "sqlite":
        raise StoreUnavailable(f"unsupported database URL scheme {parsed.scheme!r}")
    path = database_url.removeprefix("sqlite:///").removeprefix("sqlite://") or ":memory:"
    store = Store(_SQLiteBackend(path), clock)
    await store.migrate()
    return store
