"""One writer per installation for edits of comments and check runs.

Only the newest version of a thing needs to reach GitHub, so an edit waiting to be
sent is replaced by a newer one of the same thing, and final states go before
progress. Callers wait for their edit while GitHub takes writes; once the
installation is paused by a rate limit they are let go at once and the edit is
sent when the pause ends, so no one waits out a limit holding a run's lock.

Final edits (a run's last comment body, its check's conclusion) are also kept in the
store until GitHub takes them: one GitHub kept refusing is tried again every few
minutes, and a restarted app (or another instance) sends what was left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import gidgethub

from bot.github.budget import InstallationPaused, limit_kind, sleep_until
from bot.github.client import GitHubAppAuth
from bot.redact import redact
from bot.store.interface import Store
from bot.store.records import StoreUnavailable

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
RETRY_DELAY_SECONDS = 2.0
MAX_RETRY_DELAY_SECONDS = 60.0
RESEND_EVERY_SECONDS = 300.0

GAVE_UP = "installation %s: gave up on %s after %d attempts: %s"


@dataclass
class Edit:
    """A PATCH whose newest version is all that matters (a comment body, a check run)."""

    key: str  # what it edits; a newer edit with the same key replaces this one
    path: str
    data: dict[str, Any]
    final: bool = False
    sent: Callable[[], Awaitable[None]] | None = None  # after GitHub accepted it
    given_up: Callable[[], Awaitable[None]] | None = None
    attempts: int = 0
    queued_at: float = 0.0  # the store's clock; a final saved later is newer than this edit


@dataclass
class _Lane:
    pending: dict[str, Edit] = field(default_factory=dict)
    waiters: dict[str, list[asyncio.Future[bool]]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None


class Outbox:
    """Sends each installation's edits one at a time, newest version only, finals first."""

    def __init__(
        self,
        auth: GitHubAppAuth,
        store: Store | None = None,
        *,
        max_attempts: int = MAX_ATTEMPTS,
        retry_delay: float = RETRY_DELAY_SECONDS,
        resend_every: float = RESEND_EVERY_SECONDS,
    ) -> None:
        self.auth = auth
        self.store = store
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.resend_every = resend_every
        self._lanes: dict[int, _Lane] = {}
        self._resender: asyncio.Task[None] | None = None
        auth.budget.on_pause(self._release)

    def start(self) -> None:
        """Send the final edits the store still holds now, and again every few minutes."""
        if self.store is not None and self._resender is None:
            self._resender = asyncio.create_task(self._resend_forever(), name="outbox-resend")

    async def _resend_forever(self) -> None:
        assert self.store is not None
        while True:
            try:
                for write in await self.store.pending_writes():
                    lane = self._lanes.setdefault(write.installation_id, _Lane())
                    if write.key in lane.pending:
                        continue
                    log.info("sending %s again (%d attempts so far)", write.key, write.attempts)
                    self._queue(
                        write.installation_id,
                        lane,
                        Edit(
                            write.key,
                            write.path,
                            json.loads(write.body),
                            final=True,
                            queued_at=self.store.clock(),
                        ),
                    )
            except StoreUnavailable as exc:
                log.warning("cannot read the final edits still to send: %s", exc)
            await asyncio.sleep(self.resend_every)

    def waiting(self, installation_id: int | None = None) -> int:
        """How many edits wait to be sent (for one installation, or all)."""
        lanes = (
            self._lanes.values()
            if installation_id is None
            else [self._lanes.get(installation_id, _Lane())]
        )
        return sum(len(lane.pending) for lane in lanes)

    async def send(self, installation_id: int, edit: Edit) -> bool:
        """Queue *edit*; wait until it (or a newer one) is sent and return True.

        Returns False at once while the installation is paused, and when a pause begins or
        GitHub refuses the edit for good; a paused edit stays queued.
        """
        lane = self._lanes.setdefault(installation_id, _Lane())
        older = lane.pending.pop(edit.key, None)
        if older is not None:  # the newest value of every field, and final if either was
            edit.data = {**older.data, **edit.data}
            edit.final = edit.final or older.final
        if self.store is not None:
            edit.queued_at = self.store.clock()
            if edit.final:
                await self.store.save_pending_write(
                    edit.key, installation_id, edit.path, json.dumps(edit.data)
                )
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        lane.waiters.setdefault(edit.key, []).append(future)
        self._queue(installation_id, lane, edit)
        if self.auth.budget.blocked(installation_id, write=True) is not None:
            return False
        return await asyncio.shield(future)

    def _queue(self, installation_id: int, lane: _Lane, edit: Edit) -> None:
        lane.pending[edit.key] = edit
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(
                self._drain(installation_id, lane), name=f"outbox-{installation_id}"
            )

    async def close(self) -> None:
        """Stop the writers (queued final edits stay in the store for the next start)."""
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        if self._resender is not None:
            tasks.append(self._resender)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _release(self, installation_id: int) -> None:
        """A pause began: let every caller waiting on this installation go on."""
        lane = self._lanes.get(installation_id)
        if lane is not None:
            for key in list(lane.waiters):
                self._settle(lane, key, False)

    @staticmethod
    def _settle(lane: _Lane, key: str, sent: bool) -> None:
        for future in lane.waiters.pop(key, []):
            if not future.done():
                future.set_result(sent)

    async def _drain(self, installation_id: int, lane: _Lane) -> None:
        gh = self.auth.installation_client(installation_id)
        while lane.pending:
            paused = self.auth.budget.blocked(installation_id, write=True)
            if paused is not None:
                self._release(installation_id)
                await sleep_until(paused.until, self.auth.clock)
                continue
            edit = next((e for e in lane.pending.values() if e.final), None)
            edit = edit or next(iter(lane.pending.values()))
            del lane.pending[edit.key]
            try:
                delay = await self._send_one(gh, installation_id, lane, edit)
            except StoreUnavailable as exc:  # sent or not, it is sent again: edits are idempotent
                log.warning(
                    "installation %s: %s: the store failed: %s", installation_id, edit.key, exc
                )
                self._requeue(lane, edit)
                delay = self.retry_delay
            if delay:
                await asyncio.sleep(delay)

    async def _send_one(self, gh: Any, installation_id: int, lane: _Lane, edit: Edit) -> float:
        """Send one edit; return how long to wait before the next try (0: go on)."""
        try:
            await gh.patch(edit.path, data=edit.data)
        except InstallationPaused:
            self._requeue(lane, edit)  # not sent, not an attempt
            return 0.0
        except gidgethub.HTTPException as exc:
            edit.attempts += 1
            if limit_kind(exc) is not None or isinstance(exc, gidgethub.GitHubBroken):
                return await self._again(installation_id, lane, edit, exc)
            await self._give_up(installation_id, lane, edit, exc, "refused")
            return 0.0
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            edit.attempts += 1
            return await self._again(installation_id, lane, edit, exc)
        if self.store is not None:
            await self.store.clear_pending_write(edit.key, edit.queued_at)
        if edit.sent is not None:
            await edit.sent()
        if edit.key not in lane.pending:
            self._settle(lane, edit.key, True)
        return 0.0

    async def _again(self, installation_id: int, lane: _Lane, edit: Edit, exc: Exception) -> float:
        if edit.attempts >= self.max_attempts:
            reason = "rate_limited" if isinstance(exc, gidgethub.BadRequest) else "unavailable"
            await self._give_up(installation_id, lane, edit, exc, reason)
            return 0.0
        log.warning(
            "installation %s: %s not sent (%s); trying again", installation_id, edit.key, exc
        )
        self._requeue(lane, edit)
        if isinstance(exc, gidgethub.BadRequest):
            return 0.0  # the rate budget holds the next try until the pause ends
        return float(min(self.retry_delay * 2 ** (edit.attempts - 1), MAX_RETRY_DELAY_SECONDS))

    @staticmethod
    def _requeue(lane: _Lane, edit: Edit) -> None:
        """Put an unsent edit back at the front, unless a newer version is already queued."""
        if edit.key not in lane.pending:
            lane.pending = {edit.key: edit, **lane.pending}

    async def _give_up(
        self, installation_id: int, lane: _Lane, edit: Edit, exc: Exception, reason: str
    ) -> None:
        log.error(GAVE_UP, installation_id, edit.key, edit.attempts, redact(str(exc)))
        if self.auth.metrics is not None:
            self.auth.metrics.github_writes_given_up.labels(reason).inc()
        if self.store is not None and edit.final:
            if reason == "refused":  # GitHub will never take it (the comment is gone, ...)
                await self.store.clear_pending_write(edit.key, edit.queued_at)
            else:
                await self.store.pending_write_failed(edit.key, redact(str(exc)))
        if edit.given_up is not None:
            await edit.given_up()
        if edit.key not in lane.pending:
            self._settle(lane, edit.key, False)
