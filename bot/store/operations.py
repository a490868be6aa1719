"""Every store operation, written once in the SQL that SQLite and PostgreSQL share."""

from __future__ import annotations

import enum
import json
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from bot.models import (
    ACTIVE_STATES,
    BoxReport,
    PromptKind,
    PromptState,
    QueuedPrompt,
    Run,
    RunState,
)
from bot.store.backend import Backend, Row, Transaction
from bot.store.interface import Store
from bot.store.records import (
    DAY_SECONDS,
    CIFixClaim,
    CIFixOutcome,
    CreateOutcome,
    Delivery,
    DeliveryStatus,
    LeaseTaken,
    Limit,
    LimitHit,
    Limits,
    PendingStop,
    Pruned,
)

DELIVERY_COLUMNS = (
    "id, event, action, installation_id, payload, status, attempts, done_handlers, last_error"
)
RUN_COLUMNS = (
    "id, installation_id, repo_id, repo, repo_private, number, is_pull_request, state,"
    " requester, provider, model, reasoning_effort, pr_number, box_id, comment_id,"
    " pr_comment_id, head_sha, check_run_id, events_cursor, reason, summary, created_at,"
    " updated_at, finished_at, notice, reserved_at, ttl_seconds, default_branch"
)
RUN_UPDATABLE = frozenset(
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
ACTIVE_SQL = ", ".join(f"'{state.value}'" for state in sorted(ACTIVE_STATES))
# States in which a run always has a step to take (an idle one only with a queued prompt).
DRIVEN_SQL = ", ".join(f"'{state.value}'" for state in sorted(ACTIVE_STATES - {RunState.IDLE}))
PROMPT_COLUMNS = (
    "seq, run_id, kind, requester, instructions, state, box_prompt_id, trigger_key, text, sent_at"
)
PENDING_STOP_COLUMNS = "run_id, box_id, action, attempts, next_attempt_at"
BOX_REPORT_COLUMNS = (
    "run_id, box_id, installation_id, repo_id, setup_status, setup_error, seconds, dollars,"
    " dollars_per_second, billed, final, read_at"
)
INSERT_PROMPT = (
    "INSERT INTO prompts (run_id, kind, requester, instructions, state, trigger_key,"
    " created_at) VALUES (?, ?, ?, ?, 'queued', ?, ?) ON CONFLICT (trigger_key) DO NOTHING"
)
# Transactions that check and then write take a lock by name, so that instances sharing
# one database take turns (SQLite needs none: it has one writer).
LIMITS_LOCK = "limits"
DELIVERIES_CHANNEL = "box_bot_deliveries"
# GitHub lets people redeliver the past 3 days: an id is kept a day longer than that, so a
# redelivery is still recognised however its payload's retention is set.
DELIVERY_ID_KEEP_SECONDS = 4 * DAY_SECONDS
RUNS_LOCK = "runs"
CI_FIXES_LOCK = "ci-fixes"
LEASES_LOCK = "leases"
REDELIVERY_HORIZON_KEY = "redelivery_horizon"


def delivery_from(row: Row) -> Delivery:
    return Delivery(
        id=row["id"],
        event=row["event"],
        action=row["action"],
        installation_id=row["installation_id"],
        payload=bytes(row["payload"]),
        status=DeliveryStatus(row["status"]),
        attempts=row["attempts"],
        done_handlers=tuple(json.loads(row["done_handlers"])),
        last_error=row["last_error"],
    )


def run_from(row: Row) -> Run:
    return Run(
        id=row["id"],
        installation_id=row["installation_id"],
        repo_id=row["repo_id"],
        repo=row["repo"],
        repo_private=bool(row["repo_private"]),
        number=row["number"],
        is_pull_request=bool(row["is_pull_request"]),
        state=RunState(row["state"]),
        requester=row["requester"],
        provider=row["provider"],
        model=row["model"],
        reasoning_effort=row["reasoning_effort"],
        pr_number=row["pr_number"],
        box_id=row["box_id"],
        comment_id=row["comment_id"],
        pr_comment_id=row["pr_comment_id"],
        head_sha=row["head_sha"],
        check_run_id=row["check_run_id"],
        events_cursor=row["events_cursor"],
        reason=row["reason"],
        summary=json.loads(row["summary"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        notice=row["notice"],
        reserved_at=row["reserved_at"],
        ttl_seconds=row["ttl_seconds"],
        default_branch=row["default_branch"],
    )


def prompt_from(row: Row) -> QueuedPrompt:
    return QueuedPrompt(
        seq=row["seq"],
        run_id=row["run_id"],
        kind=PromptKind(row["kind"]),
        requester=row["requester"],
        instructions=row["instructions"],
        state=PromptState(row["state"]),
        box_prompt_id=row["box_prompt_id"],
        trigger_key=row["trigger_key"],
        text=row["text"],
        sent_at=row["sent_at"],
    )


def pending_stop_from(row: Row) -> PendingStop:
    return PendingStop(
        run_id=row["run_id"],
        box_id=row["box_id"],
        delete=row["action"] == "delete",
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
    )


def box_report_from(row: Row) -> BoxReport:
    return BoxReport(
        run_id=row["run_id"],
        box_id=row["box_id"],
        installation_id=row["installation_id"],
        repo_id=row["repo_id"],
        setup_status=row["setup_status"],
        setup_error=row["setup_error"],
        seconds=row["seconds"],
        dollars=row["dollars"],
        dollars_per_second=row["dollars_per_second"],
        billed=bool(row["billed"]),
        final=bool(row["final"]),
        read_at=row["read_at"],
    )


def marks(count: int) -> str:
    """Return *count* parameter marks for an `IN (…)` list."""
    return ", ".join("?" for _ in range(count))


class SQLStore(Store):
    """The app's tables, through whichever backend holds them."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self._backend = backend
        self.clock = clock
        self.instance_id = uuid.uuid4().hex

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement, committed before this returns, and return its rows."""
        return await self._backend.statement(sql, params)

    async def migrate(self) -> int:
        return await self._backend.migrate()

    async def ping(self) -> None:
        await self._one("SELECT 1 AS one")

    async def close(self) -> None:
        await self._backend.close()

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        return self._backend.lock(name)

    # -- the webhook inbox -------------------------------------------------

    async def add_delivery(
        self,
        delivery_id: str,
        event: str,
        action: str | None,
        installation_id: int | None,
        payload: bytes,
    ) -> bool:
        now = self.clock()
        rows = await self._one(
            "INSERT INTO deliveries (id, event, action, installation_id, payload,"
            " next_attempt_at, received_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING RETURNING seq",
            (delivery_id, event, action, installation_id, payload, now, now),
        )
        if rows:
            await self._backend.notify(DELIVERIES_CHANNEL)
        return bool(rows)

    async def listen_deliveries(self, callback: Callable[[], None]) -> None:
        await self._backend.listen(DELIVERIES_CHANNEL, callback)

    async def prune_inbox(self, retention_seconds: float) -> Pruned:
        now = self.clock()
        payload_cutoff = now - retention_seconds
        emptied = await self._one(
            "UPDATE deliveries SET payload = ? WHERE status IN ('done', 'ignored')"
            " AND finished_at < ? AND length(payload) > 0 RETURNING seq",
            (b"", payload_cutoff),
        )
        deleted = await self._one(
            "DELETE FROM deliveries WHERE status IN ('done', 'ignored')"
            " AND finished_at < ? AND received_at < ? RETURNING seq",
            (payload_cutoff, now - DELIVERY_ID_KEEP_SECONDS),
        )
        asked = await self._one(
            "DELETE FROM redeliveries WHERE asked_at < ? RETURNING guid",
            (now - DELIVERY_ID_KEEP_SECONDS,),
        )
        return Pruned(payloads=len(emptied), deliveries=len(deleted), redeliveries=len(asked))

    async def claim_deliveries(self, limit: int, lease_seconds: float) -> list[Delivery]:
        now = self.clock()
        rows = await self._one(
            "UPDATE deliveries SET status = 'processing', attempts = attempts + 1,"
            " lease_until = ?, claimed_by = ?"
            " WHERE seq IN (SELECT seq FROM deliveries WHERE"
            " (status = 'pending' AND next_attempt_at <= ?)"
            " OR (status = 'processing' AND lease_until < ?) ORDER BY seq LIMIT ?"
            f"{self._backend.skip_locked})"
            f" RETURNING seq, {DELIVERY_COLUMNS}",
            (now + lease_seconds, self.instance_id, now, now, limit),
        )
        return [delivery_from(row) for row in sorted(rows, key=lambda row: int(row["seq"]))]

    async def release_claims(self, every_instance: bool = False) -> int:
        rows = await self._one(
            "UPDATE deliveries SET status = 'pending', lease_until = NULL, claimed_by = NULL,"
            " attempts = CASE WHEN ? OR attempts = 0 THEN attempts ELSE attempts - 1 END"
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
        await self._one(
            "UPDATE deliveries SET status = ?, done_handlers = ?, last_error = ?,"
            " lease_until = NULL, finished_at = ? WHERE id = ?",
            (status.value, json.dumps(list(done_handlers)), error, self.clock(), delivery_id),
        )

    async def retry_delivery(
        self, delivery_id: str, done_handlers: Sequence[str], error: str, delay: float
    ) -> None:
        await self._one(
            "UPDATE deliveries SET status = 'pending', done_handlers = ?, last_error = ?,"
            " lease_until = NULL, next_attempt_at = ? WHERE id = ?",
            (json.dumps(list(done_handlers)), error, self.clock() + delay, delivery_id),
        )

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        rows = await self._one(
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?", (delivery_id,)
        )
        return delivery_from(rows[0]) if rows else None

    async def take_lease(self, run_id: str, seconds: float) -> LeaseTaken | None:
        now = self.clock()
        async with self._backend.transaction(LEASES_LOCK) as tx:
            rows = await tx.fetch(
                "SELECT lease_owner, lease_until FROM runs WHERE id = ?", (run_id,)
            )
            if not rows:
                return None
            owner, until = rows[0]["lease_owner"], rows[0]["lease_until"]
            if owner not in (None, self.instance_id) and until is not None and until >= now:
                return None
            await tx.fetch(
                "UPDATE runs SET lease_owner = ?, lease_until = ? WHERE id = ?",
                (self.instance_id, now + seconds, run_id),
            )
        if owner is None:
            return LeaseTaken.FREE
        return LeaseTaken.OURS if owner == self.instance_id else LeaseTaken.EXPIRED

    async def renew_leases(self, run_ids: Sequence[str], seconds: float) -> set[str]:
        if not run_ids:
            return set()
        rows = await self._one(
            "UPDATE runs SET lease_until = ? WHERE lease_owner = ?"
            f" AND id IN ({marks(len(run_ids))}) RETURNING id",
            (self.clock() + seconds, self.instance_id, *run_ids),
        )
        return {row["id"] for row in rows}

    async def release_lease(self, run_id: str) -> None:
        await self._one(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL"
            " WHERE id = ? AND lease_owner = ?",
            (run_id, self.instance_id),
        )

    async def release_leases(self, every_instance: bool = False) -> int:
        rows = await self._one(
            "UPDATE runs SET lease_owner = NULL, lease_until = NULL"
            " WHERE lease_owner IS NOT NULL AND (? OR lease_owner = ?) RETURNING id",
            (every_instance, self.instance_id),
        )
        return len(rows)

    async def unleased_runs(self) -> list[str]:
        rows = await self._one(
            "SELECT id FROM runs WHERE (lease_owner IS NULL OR lease_until < ?)"
            f" AND (state IN ({DRIVEN_SQL}) OR (state = 'idle' AND EXISTS"
            " (SELECT 1 FROM prompts WHERE prompts.run_id = runs.id AND prompts.state = 'queued')))"
            " ORDER BY created_at",
            (self.clock(),),
        )
        return [row["id"] for row in rows]

    async def has_delivery(self, delivery_id: str) -> bool:
        rows = await self._one("SELECT 1 AS one FROM deliveries WHERE id = ?", (delivery_id,))
        return bool(rows)

    async def claim_redelivery(self, guid: str) -> bool:
        rows = await self._one(
            "INSERT INTO redeliveries (guid, asked_at) VALUES (?, ?)"
            " ON CONFLICT (guid) DO NOTHING RETURNING guid",
            (guid, self.clock()),
        )
        return bool(rows)

    async def redelivery_horizon(self) -> float | None:
        rows = await self._one(
            "SELECT value FROM app_state WHERE key = ?", (REDELIVERY_HORIZON_KEY,)
        )
        return float(rows[0]["value"]) if rows else None

    async def set_redelivery_horizon(self, at: float) -> None:
        await self._one(
            "INSERT INTO app_state (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (REDELIVERY_HORIZON_KEY, repr(at)),
        )

    async def delivery_counts(self) -> dict[str, int]:
        rows = await self._one("SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status")
        return {row["status"]: row["n"] for row in rows}

    async def next_due_in(self) -> float | None:
        rows = await self._one(
            "SELECT MIN(next_attempt_at) AS due FROM deliveries WHERE status = 'pending'"
        )
        due = rows[0]["due"]
        return None if due is None else max(0.0, due - self.clock())

    # -- runs ----------------------------------------------------------------------------

    async def create_run(self, run: Run, first: QueuedPrompt) -> tuple[CreateOutcome, Run]:
        async with self._backend.transaction(RUNS_LOCK) as tx:
            outcome, row = await _insert_run(tx, run, first, self.clock())
        return outcome, run_from(row)

    async def get_run(self, run_id: str) -> Run | None:
        rows = await self._one(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return run_from(rows[0]) if rows else None

    async def active_run(self, repo_id: int, number: int) -> Run | None:
        rows = await self._one(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE repo_id = ? AND (number = ? OR pr_number = ?)"
            f" AND state IN ({ACTIVE_SQL}) ORDER BY created_at DESC LIMIT 1",
            (repo_id, number, number),
        )
        return run_from(rows[0]) if rows else None

    async def latest_run(self, repo_id: int, number: int) -> Run | None:
        rows = await self._one(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE repo_id = ? AND (number = ? OR pr_number = ?)"
            " ORDER BY created_at DESC LIMIT 1",
            (repo_id, number, number),
        )
        return run_from(rows[0]) if rows else None

    async def runs_in(self, states: Sequence[RunState]) -> list[Run]:
        rows = await self._one(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE state IN ({marks(len(states))})"
            " ORDER BY created_at",
            tuple(state.value for state in states),
        )
        return [run_from(row) for row in rows]

    async def update_run(
        self, run_id: str, *, expect: Sequence[RunState] | None = None, **fields: Any
    ) -> Run | None:
        unknown = set(fields) - RUN_UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        values = {key: _column_value(value) for key, value in fields.items()}
        sql = ", ".join(f"{key} = ?" for key in values)
        where, params = "id = ?", [*values.values(), self.clock(), run_id]
        if expect is not None:
            where += f" AND state IN ({marks(len(expect))})"
            params += [state.value for state in expect]
        rows = await self._one(
            f"UPDATE runs SET {sql}, updated_at = ? WHERE {where} RETURNING {RUN_COLUMNS}",
            tuple(params),
        )
        return run_from(rows[0]) if rows else None

    async def count_runs(self) -> dict[str, int]:
        rows = await self._one("SELECT state, COUNT(*) AS n FROM runs GROUP BY state")
        return {row["state"]: row["n"] for row in rows}

    async def reserve(self, run_id: str, limits: Limits) -> LimitHit | None:
        now = self.clock()
        async with self._backend.transaction(LIMITS_LOCK) as tx:
            hit = await _check_limits(tx, run_id, limits, now)
            if hit is None:
                await tx.fetch(
                    "UPDATE runs SET reserved_at = COALESCE(reserved_at, ?) WHERE id = ?",
                    (now, run_id),
                )
        return hit

    # -- prompts --------------------------------------------------------------------------

    async def queue_prompt(self, prompt: QueuedPrompt) -> bool:
        rows = await self._one(
            f"{INSERT_PROMPT} RETURNING seq",
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
        chosen = states or tuple(PromptState)
        rows = await self._one(
            f"SELECT {PROMPT_COLUMNS} FROM prompts WHERE run_id = ?"
            f" AND state IN ({marks(len(chosen))}) ORDER BY seq",
            (run_id, *(state.value for state in chosen)),
        )
        return [prompt_from(row) for row in rows]

    async def update_prompt(
        self,
        seq: int,
        state: PromptState,
        *,
        box_prompt_id: str | None = None,
        text: str | None = None,
    ) -> None:
        sending = state in (PromptState.SENDING, PromptState.SENT)
        await self._one(
            "UPDATE prompts SET state = ?, box_prompt_id = COALESCE(?, box_prompt_id),"
            " text = COALESCE(?, text),"
            " sent_at = CASE WHEN ? THEN COALESCE(sent_at, ?) ELSE sent_at END"
            " WHERE seq = ?",
            (state.value, box_prompt_id, text, sending, self.clock(), seq),
        )

    # -- notices --------------------------------------------------------------------------

    async def claim_notice(self, key: str, every: float) -> bool:
        now = self.clock()
        rows = await self._one(
            "INSERT INTO notices (key, sent_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE"
            " SET sent_at = excluded.sent_at WHERE notices.sent_at < ? RETURNING key",
            (key, now, now - every),
        )
        return bool(rows)

    # -- pending stops ----------------------------------------------------------------------

    async def add_pending_stop(self, run_id: str, box_id: str, *, delete: bool) -> PendingStop:
        rows = await self._one(
            "INSERT INTO pending_stops (run_id, box_id, action, next_attempt_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET box_id = excluded.box_id,"
            " action = CASE WHEN excluded.action = 'delete' THEN 'delete'"
            " ELSE pending_stops.action END,"
            f" next_attempt_at = excluded.next_attempt_at RETURNING {PENDING_STOP_COLUMNS}",
            (run_id, box_id, "delete" if delete else "stop", self.clock()),
        )
        return pending_stop_from(rows[0])

    async def pending_stop(self, run_id: str) -> PendingStop | None:
        rows = await self._one(
            f"SELECT {PENDING_STOP_COLUMNS} FROM pending_stops WHERE run_id = ?", (run_id,)
        )
        return pending_stop_from(rows[0]) if rows else None

    async def pending_stops(self) -> list[PendingStop]:
        rows = await self._one(
            f"SELECT {PENDING_STOP_COLUMNS} FROM pending_stops ORDER BY next_attempt_at"
        )
        return [pending_stop_from(row) for row in rows]

    async def stop_failed(self, run_id: str, error: str, retry_at: float) -> None:
        await self._one(
            "UPDATE pending_stops SET attempts = attempts + 1, last_error = ?,"
            " next_attempt_at = ? WHERE run_id = ?",
            (error, retry_at, run_id),
        )

    async def clear_pending_stop(self, run_id: str) -> None:
        await self._one("DELETE FROM pending_stops WHERE run_id = ?", (run_id,))

    # -- box reports: setup and spend --------------------------------------------------------

    async def save_box_report(self, report: BoxReport) -> None:
        await self._one(
            f"INSERT INTO box_reports ({BOX_REPORT_COLUMNS}) VALUES ({marks(12)})"
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
            f"SELECT {BOX_REPORT_COLUMNS} FROM box_reports WHERE run_id = ?", (run_id,)
        )
        return box_report_from(rows[0]) if rows else None

    async def dollars_since(
        self, since: float, installation_id: int, repo_id: int | None = None
    ) -> float:
        where = (
            "b.installation_id = ? AND (b.read_at >= ?"
            f" OR (b.final = 0 AND r.state IN ({ACTIVE_SQL})))"
        )
        params: tuple[Any, ...] = (installation_id, since)
        if repo_id is not None:
            where, params = where + " AND b.repo_id = ?", (*params, repo_id)
        rows = await self._one(
            "SELECT COALESCE(SUM(b.dollars), 0) AS spent FROM box_reports b"
            f" JOIN runs r ON r.id = b.run_id WHERE {where}",
            params,
        )
        return float(rows[0]["spent"])

    # -- tracking comments ------------------------------------------------------------------

    async def shown_hash(self, comment_id: int) -> str | None:
        rows = await self._one(
            "SELECT body_hash FROM shown_comments WHERE comment_id = ?", (comment_id,)
        )
        return str(rows[0]["body_hash"]) if rows else None

    async def set_shown_hash(self, comment_id: int, body_hash: str) -> None:
        await self._one(
            "INSERT INTO shown_comments (comment_id, body_hash, shown_at) VALUES (?, ?, ?)"
            " ON CONFLICT (comment_id) DO UPDATE SET body_hash = excluded.body_hash,"
            " shown_at = excluded.shown_at",
            (comment_id, body_hash, self.clock()),
        )

    # -- CI fixes -------------------------------------------------------------------------

    async def linked_run_at(self, repo_id: int, head_sha: str) -> Run | None:
        rows = await self._one(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE repo_id = ? AND head_sha = ?"
            f" AND pr_number IS NOT NULL AND state IN ({ACTIVE_SQL})"
            " ORDER BY created_at DESC LIMIT 1",
            (repo_id, head_sha),
        )
        return run_from(rows[0]) if rows else None

    async def ci_fix_attempts(self, repo_id: int, pr_number: int) -> dict[str, int]:
        rows = await self._one(
            "SELECT head_sha, attempt FROM ci_fixes WHERE repo_id = ? AND pr_number = ?",
            (repo_id, pr_number),
        )
        return {row["head_sha"]: row["attempt"] for row in rows}

    async def claim_ci_fix(
        self, prompt: QueuedPrompt, repo_id: int, pr_number: int, head_sha: str, limit: int
    ) -> CIFixClaim:
        async with self._backend.transaction(CI_FIXES_LOCK) as tx:
            return await _claim_ci_fix(
                tx, prompt, (repo_id, pr_number, head_sha), limit, self.clock()
            )


async def _claim_ci_fix(
    tx: Transaction,
    prompt: QueuedPrompt,
    commit: tuple[int, int, str],
    limit: int,
    now: float,
) -> CIFixClaim:
    seen = await tx.fetch(
        "SELECT attempt FROM ci_fixes WHERE repo_id = ? AND pr_number = ? AND head_sha = ?",
        commit,
    )
    if seen:
        return CIFixClaim(CIFixOutcome.SEEN, seen[0]["attempt"])
    (counted,) = await tx.fetch(
        "SELECT COUNT(*) AS n FROM ci_fixes WHERE repo_id = ? AND pr_number = ? AND attempt > 0",
        commit[:2],
    )
    used: int = counted["n"]
    attempt = used + 1 if used < limit else 0
    await tx.fetch(
        "INSERT INTO ci_fixes (repo_id, pr_number, head_sha, attempt, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (*commit, attempt, now),
    )
    if not attempt:
        return CIFixClaim(CIFixOutcome.LIMIT_REACHED, used)
    await tx.fetch(
        INSERT_PROMPT,
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


async def _check_limits(
    tx: Transaction, run_id: str, limits: Limits, now: float
) -> LimitHit | None:
    if limits.paused:
        return LimitHit(Limit.PAUSED, 0)
    (run,) = await tx.fetch(
        "SELECT installation_id, repo_id, requester, reserved_at FROM runs WHERE id = ?",
        (run_id,),
    )
    active = f"state IN ({ACTIVE_SQL}) AND reserved_at IS NOT NULL AND id != ?"
    scoped = (
        (limits.active, "", ()),
        (limits.per_installation, " AND installation_id = ?", (run["installation_id"],)),
        (limits.per_repo, " AND repo_id = ?", (run["repo_id"],)),
    )
    for bound, extra, params in scoped:
        if bound is None:
            continue
        (counted,) = await tx.fetch(
            f"SELECT COUNT(*) AS n FROM runs WHERE {active}{extra}", (run_id, *params)
        )
        if counted["n"] >= bound.value:
            return LimitHit(bound.limit, bound.value)
    if run["reserved_at"] is not None:
        return None
    requester = run["requester"]
    daily = [
        await _daily_hit(tx, Limit.PER_USER_DAY, limits.per_user_day, requester, None, now),
        await _daily_hit(
            tx, Limit.REPO_USER_DAY, limits.repo_per_user_day, requester, run["repo_id"], now
        ),
    ]
    # When both are reached, the one that frees up last is the one that keeps the run waiting.
    return max(filter(None, daily), key=lambda hit: hit.frees_at or 0.0, default=None)


async def _daily_hit(
    tx: Transaction,
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
    where = f"requester = ? AND reserved_at > ? AND (state IN ({ACTIVE_SQL}) OR box_id IS NOT NULL)"
    params: tuple[Any, ...] = (requester, now - DAY_SECONDS)
    if repo_id is not None:
        where, params = where + " AND repo_id = ?", (*params, repo_id)
    (counted,) = await tx.fetch(f"SELECT COUNT(*) AS n FROM runs WHERE {where}", params)
    count: int = counted["n"]
    if count < value:
        return None
    # The limit frees up when enough of these runs are a day old to leave one place.
    (freeing,) = await tx.fetch(
        f"SELECT reserved_at FROM runs WHERE {where} ORDER BY reserved_at LIMIT 1 OFFSET ?",
        (*params, count - value),
    )
    return LimitHit(limit, value, freeing["reserved_at"] + DAY_SECONDS)


def _column_value(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


async def _insert_run(
    tx: Transaction, run: Run, first: QueuedPrompt, now: float
) -> tuple[CreateOutcome, Row]:
    if first.trigger_key is not None:
        seen = await tx.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE id = (SELECT run_id FROM prompts"
            " WHERE trigger_key = ?)",
            (first.trigger_key,),
        )
        if seen:
            return CreateOutcome.SAME_TRIGGER, seen[0]
    # With no conflict target, the partial unique index on active runs counts too.
    inserted = await tx.fetch(
        f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({marks(28)})"
        f" ON CONFLICT DO NOTHING RETURNING {RUN_COLUMNS}",
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
    if not inserted:
        (active,) = await tx.fetch(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE repo_id = ? AND number = ?"
            f" AND state IN ({ACTIVE_SQL})",
            (run.repo_id, run.number),
        )
        return CreateOutcome.ACTIVE_EXISTS, active
    await tx.fetch(
        "INSERT INTO prompts (run_id, kind, requester, instructions, state, trigger_key,"
        " created_at) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
        (run.id, first.kind.value, first.requester, first.instructions, first.trigger_key, now),
    )
    return CreateOutcome.CREATED, inserted[0]
