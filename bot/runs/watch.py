"""Watching boxes: a prompt run and its events, polled within a call budget and a time limit,
and a box stopped at its dollar cap.

Limits act on time: the watcher sleeps until the next look or the next limit that is due,
whichever comes first, so a quiet box is not left running past a limit until its next look.
The idle sweep belongs here too: it looks at the boxes of idle runs and ends the runs whose
box Box archived on its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.box.client import BoxClient
from bot.box.errors import BoxAPIError, BoxNotFoundError
from bot.box.models import TERMINAL_PROMPT_STATUSES, BoxState, ResponseEvent, event_cursor
from bot.models import QueuedPrompt, Run, RunState
from bot.runs.failures import BoxGone
from bot.runs.record import RunEnded, RunRecord
from bot.runs.render import FailureKind, render_failure
from bot.runs.spend import projected_at
from bot.runs.timeline import Timeline
from bot.runs.timing import Timing
from bot.settings import Settings
from bot.store.interface import Store
from bot.store.records import Bound

log = logging.getLogger(__name__)

EVENT_PAGE_SIZE = 100
EVENT_PAGES_PER_POLL = 5
BOX_EXPIRED = "box archived after its time to live"
# Stops a run's box that reached its dollar cap: (run, the cap, what the box cost).
DollarStop = Callable[[Run, Bound, float], Awaitable[None]]
# The dollar cap of a run now, and how to stop its box there.
DollarCap = Callable[[Run], Awaitable[Bound | None]]
Sleep = Callable[[float], Awaitable[None]]


class CallBudget:
    """At most *calls* Box calls in any *window* seconds; a call over it waits its turn."""

    def __init__(
        self, calls: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.calls, self.window, self.clock = max(1, calls), window, clock
        self._made: collections.deque[float] = collections.deque()

    async def spend(self) -> None:
        """Wait until one more call fits in the window, and count it."""
        while True:
            now = self.clock()
            while self._made and now - self._made[0] >= self.window:
                self._made.popleft()
            if len(self._made) < self.calls:
                self._made.append(now)
                return
            await asyncio.sleep(self._made[0] + self.window - now)


@dataclass(frozen=True)
class PromptEnd:
    """How a prompt run ended: the run and timeline as last seen, its status, and whether it
    was interrupted for running too long."""

    run: Run
    timeline: Timeline
    status: str
    timed_out: bool


class Watcher:
    """Follows prompt runs on their boxes and notices boxes that went away."""

    def __init__(
        self,
        store: Store,
        box: BoxClient,
        record: RunRecord,
        settings: Settings,
        timing: Timing,
        clock: Callable[[], float],
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.store = store
        self.box = box
        self.record = record
        self.settings = settings
        self.timing = timing
        self.clock = clock
        self.sleep = sleep  # waits measured on `clock`, so limits act on its time
        self.spend = record.spend

    async def follow(
        self,
        run: Run,
        prompt: QueuedPrompt,
        cap: Bound | None = None,
        stop: DollarStop | None = None,
    ) -> PromptEnd:
        """Follow the prompt run until it ends, showing progress as it goes.

        With a dollar *cap*, *stop* is called once the box reaches it (see `enforce_dollars`).
        """
        box_id, prompt_id = run.box_id, prompt.box_prompt_id
        assert box_id is not None and prompt_id is not None
        timeline = Timeline.from_json(run.summary)
        timeline.start_prompt(prompt_id)
        polls, interval, timed_out = 0, self.timing.poll_interval, False
        deadline = self.deadline(prompt)
        budget = CallBudget(self.timing.calls_per_window, self.timing.budget_window)
        while True:
            await budget.spend()
            status = (await self.box.prompt_run(box_id, prompt_id)).status
            run, changed, more = await self._follow_events(run, timeline, budget)
            if status in TERMINAL_PROMPT_STATUSES:
                while more:  # the whole story before the result
                    run, _, more = await self._follow_events(run, timeline, budget)
                return PromptEnd(run, timeline, status, timed_out)
            if not timed_out and self.clock() >= deadline:
                timed_out = await self._time_out(run)
            await self.enforce_dollars(run, cap, stop)
            polls += 1
            if polls % self.timing.box_check_every == 0:
                await budget.spend()
                await self._check_box(run)
            async with self.record.lock(run.id):
                current = await self.store.get_run(run.id) or run  # the check may have moved
                if await self.record.show(current):
                    await self.record.checks.update(current, self.record.check_output(current))
            idle_max = max(self.timing.max_poll_interval, self.timing.poll_interval)
            busy = changed or more
            interval = self.timing.poll_interval if busy else min(interval * 1.5, idle_max)
            await self.sleep(
                self._until_next_look(run, interval, cap, None if timed_out else deadline)
            )

    def _until_next_look(
        self, run: Run, interval: float, cap: Bound | None, deadline: float | None
    ) -> float:
        """Seconds to sleep: the poll interval, cut short when a limit or a usage read is due."""
        now = self.clock()
        moments = [now + interval, now + self.spend.due_in(run.id)]
        if deadline is not None:
            moments.append(deadline)
        report = self.spend.cached(run.id)
        if cap is not None and report is not None:
            when = projected_at(report, cap.value)
            moments.extend([] if when is None else [when])
        return max(min(moments) - now, min(self.timing.poll_interval, 1.0))

    async def enforce_dollars(self, run: Run, cap: Bound | None, stop: DollarStop | None) -> None:
        """Read the box's usage when it is due; once it reaches *cap*, stop the box.

        The moment is projected from the last reading (usage is read once a minute), and
        usage is read again just before acting. Raises `RunEnded` once the box is stopped.
        """
        report = await self.spend.refresh(run)
        if cap is None or stop is None or report is None:
            return
        when = projected_at(report, cap.value)
        if when is None or when > self.clock():
            return
        report = await self.spend.refresh(run, force=True)
        if report is None or report.dollars is None or report.dollars < cap.value:
            return
        await stop(run, cap, report.dollars)
        raise RunEnded(RunState.ARCHIVED)

    async def _follow_events(
        self, run: Run, timeline: Timeline, budget: CallBudget
    ) -> tuple[Run, bool, bool]:
        """Read a few pages of new events; return the run, whether anything shown changed, and
        whether more pages wait.

        The saved cursor never passes a streaming partial that nothing has followed yet: Box
        may finalise it under the same id, so the next read starts before it again.
        """
        assert run.box_id is not None
        changed, cursor, more = False, run.events_cursor, False
        holding, held = False, run.events_cursor  # held: the cursor before an unsettled partial
        for _ in range(EVENT_PAGES_PER_POLL):
            await budget.spend()
            page = await self.box.events(
                run.box_id, limit=EVENT_PAGE_SIZE, cursor=cursor, sort="asc"
            )
            for event in page.events:
                changed = timeline.apply(event) or changed
                if isinstance(event, ResponseEvent):
                    if event.is_streaming and not holding:
                        holding, held = True, cursor
                    elif not event.is_streaming:
                        holding = False
                with contextlib.suppress(ValueError):
                    cursor = event_cursor(event)
            more = page.has_more and bool(page.events)
            if not more:
                break
            cursor = page.next_cursor or cursor
        # Hold at a partial, unless holding there again would stop reading a long backlog.
        saved = held if holding and (not more or held != run.events_cursor) else cursor
        if saved != run.events_cursor or changed:
            run = await self.record.save(run, events_cursor=saved, summary=timeline.to_json())
        return run, changed, more

    async def _check_box(self, run: Run) -> None:
        assert run.box_id is not None
        box = await self.box.get_box(run.box_id)
        if box.state in (BoxState.ERROR, BoxState.ARCHIVED, BoxState.ARCHIVING):
            raise BoxGone(box.state, started=True)

    async def _time_out(self, run: Run) -> bool:
        """Interrupt work that ran past `BOX_MAX_RUN_MINUTES` and say so."""
        assert run.box_id is not None
        minutes = self.settings.max_run_minutes
        log.warning("run %s: working for over %d minutes; interrupting", run.id, minutes)
        unit = "minute" if minutes == 1 else "minutes"
        message = f"The agent worked for more than {minutes} {unit} (BOX_MAX_RUN_MINUTES)."
        await self.record.announce(run, render_failure(FailureKind.TIMED_OUT, message))
        await self.box.interrupt(run.box_id)
        return True

    def deadline(self, prompt: QueuedPrompt) -> float:
        """When a prompt run has worked for `BOX_MAX_RUN_MINUTES`."""
        return (prompt.sent_at or self.clock()) + self.settings.max_run_minutes * 60

    async def check_idle_box(self, run: Run) -> None:
        """End an idle run whose box Box archived on its own (its TTL) or lost."""
        assert run.box_id is not None
        try:
            box = await self.box.get_box(run.box_id)
        except BoxNotFoundError:
            raise
        except BoxAPIError as exc:  # the work is done; the idle sweep looks again later
            log.warning("run %s: could not read box %s after its work: %s", run.id, run.box_id, exc)
            return
        if box.state == BoxState.ERROR:
            raise BoxGone(box.state, started=True)
        if box.state in (BoxState.ARCHIVING, BoxState.ARCHIVED):
            await self._box_expired(run)

    async def sweep_idle_runs(
        self,
        is_driving: Callable[[str], bool],
        cap_of: DollarCap | None = None,
        stop: DollarStop | None = None,
    ) -> None:
        """Every few minutes, end idle runs whose box Box archived on its own (its TTL), and
        stop the idle boxes that still bill once they reach their run's dollar cap."""
        while True:
            await asyncio.sleep(self.timing.sweep_every)
            try:
                for run in await self.store.runs_in([RunState.IDLE]):
                    if run.box_id is not None and not is_driving(run.id):
                        await self._sweep_one(run, cap_of, stop)
            except Exception:
                log.exception("the sweep of idle runs failed; trying again later")

    async def _sweep_one(self, run: Run, cap_of: DollarCap | None, stop: DollarStop | None) -> None:
        assert run.box_id is not None
        try:
            box = await self.box.get_box(run.box_id)
        except BoxAPIError as exc:
            log.warning("run %s: could not look at box %s: %s", run.id, run.box_id, exc)
            return
        if box.state in (BoxState.ARCHIVING, BoxState.ARCHIVED):
            await self._box_expired(run)
        elif cap_of is not None:
            with contextlib.suppress(RunEnded):
                await self.enforce_dollars(run, await cap_of(run), stop)

    async def _box_expired(self, run: Run) -> None:
        async with self.record.lock(run.id):
            await self.spend.refresh(run, final=True)  # Box archived it: billing has stopped
            updated = await self.store.update_run(
                run.id,
                expect=[RunState.IDLE],
                state=RunState.ARCHIVED,
                reason=BOX_EXPIRED,
                finished_at=self.clock(),
            )
            if updated is not None:
                log.info("run %s: %s", run.id, BOX_EXPIRED)
                await self.record.show(updated, final=True)
                await self.record.checks.update(updated, self.record.check_output(updated))
