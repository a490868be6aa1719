"""A run's record: the per-run lock, saving its state, and showing it on GitHub as stored."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import gidgethub

from bot.github.checks import CONCLUSIONS, Checks
from bot.github.tracker import Tracker
from bot.models import Run, RunState
from bot.runs.render import render_check_output, render_comment
from bot.runs.spend import SpendTracker
from bot.runs.timeline import Timeline
from bot.store.interface import Store

log = logging.getLogger(__name__)


class RunEnded(Exception):
    """The run was archived or failed meanwhile (by a command, a close, or another step)."""


class RunRecord:
    """Saves runs and keeps their tracking comments and checks showing what is stored."""

    def __init__(
        self,
        store: Store,
        tracker: Tracker,
        checks: Checks,
        clock: Callable[[], float],
        spend: SpendTracker,
    ) -> None:
        self.store = store
        self.tracker = tracker
        self.checks = checks
        self.clock = clock
        self.spend = spend
        self.desktops: dict[str, str] = {}  # secret links, kept in memory only
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, run_id: str) -> asyncio.Lock:
        """The lock held while a run's record is read, changed and shown."""
        return self._locks.setdefault(run_id, asyncio.Lock())

    async def set(self, run: Run, state: RunState) -> Run:
        """Move an active run to *state* and show it; raise `RunEnded` if it ended meanwhile."""
        async with self.lock(run.id):
            current = await self.store.get_run(run.id) or run
            if not current.state.active:
                raise RunEnded(current.state)
            if current.state is state:
                return current
            current = await self.save(current, state=state)
            log.info("run %s: %s", run.id, state.value)
            await self.show(current, final=True)
            return current

    async def save(self, run: Run, **fields: Any) -> Run:
        """Store *fields* of the run and return it as saved."""
        updated = await self.store.update_run(run.id, **fields)
        if updated is None:
            raise LookupError(f"run {run.id} disappeared from the store")
        return updated

    async def show(self, run: Run, *, final: bool = False) -> bool:
        """Render the run as stored now and edit its comments (call with the run's lock held)."""
        current = await self.store.get_run(run.id) or run
        await self.spend.report(current)  # what the box cost, for the info line
        if current.comment_id is None:  # GitHub refused it when the run was asked for
            try:
                current = await self.tracker.ensure_comment(current, await self.render(current))
            except (gidgethub.GitHubException, OSError, TimeoutError) as exc:
                log.warning("run %s: the tracking comment cannot be posted yet: %s", run.id, exc)
        return await self.tracker.show(current, await self.render(current), final=final)

    async def announce(self, run: Run, notice: str | None) -> Run:
        """Show *notice* prominently on the run's tracking comment (None removes it)."""
        async with self.lock(run.id):
            updated = await self.save(run, notice=notice)
            await self.show(updated, final=True)
            return updated

    async def render(self, run: Run) -> str:
        """Render the run's tracking comment as it stands, with who asked what."""
        return render_comment(
            run,
            Timeline.from_json(run.summary),
            now=self.clock(),
            prompts=await self.store.prompts(run.id),
            notice=run.notice,
            pr_url=pr_url(run),
            desktop_url=self.desktops.get(run.id) if run.state.active else None,
            box=self.spend.cached(run.id),
        )

    def check_output(self, run: Run) -> tuple[str, str, str]:
        """The run's check run output (title, summary, text) as it stands."""
        return render_check_output(
            run, Timeline.from_json(run.summary), now=self.clock(), box=self.spend.cached(run.id)
        )


def settled_conclusion(run: Run) -> str:
    """The conclusion of a check made after the work ended (neutral when nothing says)."""
    if run.state is RunState.FAILED:
        return "failure"
    status = Timeline.from_json(run.summary).prompt_status
    return CONCLUSIONS.get(status or "", "neutral")


def pr_url(run: Run) -> str | None:
    """Return the web URL of the run's linked pull request, if any."""
    if run.pr_number is None:
        return None
    return f"https://github.com/{run.repo}/pull/{run.pr_number}"
