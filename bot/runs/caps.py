"""Dollar caps acted on: no new box at the day's cap, a box stopped at its run's cap."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import gidgethub

from bot.box.client import BoxClient
from bot.box.errors import BoxAPIError
from bot.config.repo import RepoConfigError
from bot.metrics import Metrics
from bot.models import Run
from bot.runs.configs import RunConfigs
from bot.runs.failures import LimitReached
from bot.runs.limits import day_dollars_hit, day_start, describe_dollar_stop, limits_for
from bot.runs.record import RunRecord
from bot.settings import Settings
from bot.store.interface import Store
from bot.store.records import Bound, Limits

log = logging.getLogger(__name__)

Archive = Callable[[Run, str], Awaitable[Run]]


class DollarCaps:
    """Checks the daily dollar caps before a box starts, and stops a box at its run's cap."""

    def __init__(
        self,
        store: Store,
        box: BoxClient,
        settings: Settings,
        configs: RunConfigs,
        record: RunRecord,
        archive: Archive,
        metrics: Metrics | None,
        clock: Callable[[], float],
    ) -> None:
        self.store, self.box, self.settings, self.configs = store, box, settings, configs
        self.record, self.archive, self.metrics, self.clock = record, archive, metrics, clock

    async def check_day(self, run: Run, limits: Limits) -> None:
        """Refuse a new (or resumed) box while today's spend is at a daily dollar cap."""
        if limits.day_dollars is None and limits.repo_day_dollars is None:
            return
        since = day_start(self.clock())
        installation = await self.store.dollars_since(since, run.installation_id)
        repo = await self.store.dollars_since(since, run.installation_id, run.repo_id)
        hit = day_dollars_hit(limits, installation, repo, self.clock())
        if hit is not None:
            raise LimitReached(hit)

    async def run_cap(self, run: Run) -> Bound | None:
        """The dollar cap of one run now (the operator's alone if the config cannot be read)."""
        try:
            config = await self.configs.of(run)
        except (RepoConfigError, gidgethub.GitHubException) as exc:
            log.warning("run %s: config unreadable (%s); the operator's limits apply", run.id, exc)
            config = None
        return limits_for(self.settings, config).run_dollars

    async def stop(self, run: Run, cap: Bound, cost: float) -> None:
        """Interrupt and stop a run's box that reached its dollar cap, saying what it cost."""
        assert run.box_id is not None
        log.warning(
            "run %s: box %s cost $%.2f, reaching %s; stopping it",
            run.id,
            run.box_id,
            cost,
            cap.limit.value,
        )
        if self.metrics is not None:
            self.metrics.dollar_stops.labels(cap.limit.value).inc()
        with contextlib.suppress(BoxAPIError):  # nothing may be running (409), or it stops
            await self.box.interrupt(run.box_id)
        async with self.record.lock(run.id):
            run = await self.record.save(run, notice=describe_dollar_stop(cap, cost))
        await self.archive(run, f"limit {cap.limit.value} reached: the box cost ${cost:.2f}")
