"""Stopping a run's box: now if Box answers, else noted as pending and retried with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bot.box.client import BoxClient
from bot.box.errors import BoxAPIError, BoxNotFoundError
from bot.box.models import BoxState
from bot.models import Run, RunState
from bot.runs.record import RunRecord
from bot.runs.timing import Timing
from bot.store.interface import Store
from bot.store.records import PendingStop

log = logging.getLogger(__name__)

STOPPED_BOX_STATES = frozenset({BoxState.ARCHIVING, BoxState.ARCHIVED, BoxState.ERROR})
BOX_DELETED = "deleted"  # not a Box state: the box is gone (404)
BOX_STOPPED = "The box was stopped and archived, so it does not keep running."
BOX_STOP_PENDING = "box-bot has not managed to stop the box yet and keeps trying."


class BoxStops:
    """Stops (or deletes) boxes once, however often it is asked, until Box confirms."""

    def __init__(
        self,
        store: Store,
        box: BoxClient,
        record: RunRecord,
        timing: Timing,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.box = box
        self.record = record
        self.timing = timing
        self.clock = clock
        self._retries: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    async def stop_box(self, run: Run, *, delete: bool = False) -> Run:
        """Stop (or delete) the run's box now, or note it as pending and try again later."""
        assert run.box_id is not None
        pending = await self.store.add_pending_stop(run.id, run.box_id, delete=delete)
        return await self._attempt(run, pending)

    async def stop_pending(self, run: Run) -> Run:
        """Try a stop that has not gone through yet again (a redelivered close, a restart)."""
        pending = await self.store.pending_stop(run.id)
        if pending is None:
            return run
        updated = await self._attempt(run, pending)
        await self.record.show(updated, final=True)
        return updated

    async def _attempt(self, run: Run, pending: PendingStop) -> Run:
        """Make one attempt; on failure schedule the next with backoff. Return the run as saved."""
        try:
            if pending.delete:  # a deleted box has no usage to read afterwards
                await self.record.spend.refresh(run, force=True)
                await self.box.delete_box(pending.box_id)
            else:
                await self.box.stop_box(pending.box_id)
        except BoxNotFoundError:
            pass
        except BoxAPIError as exc:
            if pending.delete or not await self._box_stopped(pending.box_id):
                delay = min(
                    self.timing.stop_retry_base * 2**pending.attempts, self.timing.stop_retry_max
                )
                log.warning(
                    "run %s: could not stop box %s (%s); trying again in %.0f s",
                    run.id,
                    pending.box_id,
                    exc,
                    delay,
                )
                await self.store.stop_failed(run.id, str(exc), self.clock() + delay)
                self.retry_later(run.id, delay)
                return await self.record.save(run, notice=stop_note(run, done=False))
        await self.store.clear_pending_stop(run.id)
        await self.record.spend.refresh(run, final=True)  # a stopped box is billed no more
        log.info(
            "run %s: box %s %s", run.id, pending.box_id, "deleted" if pending.delete else "stopped"
        )
        return await self.record.save(run, notice=stop_note(run, done=True))

    async def _box_stopped(self, box_id: str) -> bool:
        """Whether Box already archives the box (stopping it again is then not needed)."""
        state = await self._box_state(box_id)
        return state in (BOX_DELETED, BoxState.ARCHIVING, BoxState.ARCHIVED)

    async def _box_state(self, box_id: str) -> str | None:
        """The box's state as Box reports it, `BOX_DELETED` if it is gone, None if unclear."""
        try:
            return (await self.box.get_box(box_id)).state
        except BoxNotFoundError:
            return BOX_DELETED
        except BoxAPIError:
            return None

    def retry_later(self, run_id: str, delay: float) -> None:
        """Try the run's pending stop again after *delay* seconds (once, however often asked)."""
        if self._stopping or run_id in self._retries:
            return
        task = asyncio.create_task(self._retry(run_id, delay), name=f"stop {run_id}")
        self._retries[run_id] = task

    async def _retry(self, run_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        del self._retries[run_id]  # a failed attempt schedules the next one
        try:
            async with self.record.lock(run_id):
                run = await self.store.get_run(run_id)
                if run is not None:
                    await self.stop_pending(run)
        except Exception:
            log.exception("run %s: retrying the stop of its box failed", run_id)

    async def box_live(self, run: Run) -> bool:
        """Whether the run's box may still be running (an unclear answer counts as running)."""
        if run.box_id is None:
            return False
        state = await self._box_state(run.box_id)
        return state is None or (state != BOX_DELETED and state not in STOPPED_BOX_STATES)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Schedule no more retries; cancel those waiting and return them to be awaited."""
        self._stopping = True
        tasks = list(self._retries.values())
        for task in tasks:
            task.cancel()
        return tasks


def stop_note(run: Run, *, done: bool) -> str | None:
    """The run's notice with what is known about stopping its box."""
    text = run.notice or ""
    for note in (BOX_STOPPED, BOX_STOP_PENDING):
        text = text.replace(note, "")
    note = BOX_STOP_PENDING if not done else (BOX_STOPPED if run.state is RunState.FAILED else "")
    return "\n\n".join(part for part in (text.strip(), note) if part) or None
