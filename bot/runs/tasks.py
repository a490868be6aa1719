"""One asyncio task per run that has work; a kick while it works makes it look once more.

A task drives its run only while this instance holds the run's lease (see `leases`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from bot.logs import detached
from bot.runs.leases import Leases

log = logging.getLogger(__name__)


class RunTasks:
    """Keeps one task driving each run that has been kicked, until *drive* finds nothing to do."""

    def __init__(self, drive: Callable[[str], Awaitable[None]], leases: Leases) -> None:
        self.drive = drive
        self.leases = leases
        self.stopping = False
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wanted: set[str] = set()
        self._leased: set[str] = set()  # runs whose task holds the lease (not still taking it)

    def kick(self, run_id: str) -> None:
        """Make sure a task is driving this run."""
        if self.stopping:
            return
        self._wanted.add(run_id)
        if run_id not in self._tasks:
            # A run outlives the delivery that kicked it: its lines carry the run, not that.
            self._tasks[run_id] = asyncio.create_task(
                self._loop(run_id), name=run_id, context=detached()
            )

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._tasks

    def abandon(self, run_id: str) -> None:
        """Stop driving a run whose lease this instance no longer holds."""
        self._wanted.discard(run_id)
        if (task := self._tasks.get(run_id)) is not None:
            task.cancel()

    async def take(self, run_id: str) -> bool:
        """Take a run's lease ahead of its task (kick it next); whether this instance holds it.

        It is renewed from now on, so nothing done before the kick races another instance.
        """
        if not await self.leases.take(run_id):
            return False
        self._leased.add(run_id)
        return True

    def held(self) -> list[str]:
        """The runs this instance drives now and holds the leases of.

        A task still taking its lease is not listed: renewing it would fail, and the run
        would look lost to another instance that took it first.
        """
        return sorted(self._leased)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Start no more tasks; cancel those running and return them to be awaited."""
        self.stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        return tasks

    async def _loop(self, run_id: str) -> None:
        try:
            if not await self.leases.take(run_id):  # another instance drives it
                self._wanted.discard(run_id)
                return
            self._leased.add(run_id)
            try:
                while run_id in self._wanted:
                    self._wanted.discard(run_id)
                    await self.drive(run_id)
            finally:
                self._leased.discard(run_id)
                await self.leases.release(run_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s: driver crashed", run_id)
        finally:
            del self._tasks[run_id]
