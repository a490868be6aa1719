"""What runs' boxes cost: read from Box at most once a minute each, recorded, and projected.

Each reading is kept in the store (so figures survive restarts and are shared by instances)
with how fast the box bills, which lets a dollar cap be acted on when the projection says it
is reached rather than at the next reading. A Box without the usage endpoint (404) is not
asked again for that box; its cost is shown as unknown.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

from bot.box.client import BoxClient
from bot.box.errors import BoxAPIError, BoxNotSupportedError
from bot.box.models import Box, Usage
from bot.metrics import Metrics
from bot.models import BoxReport, Run
from bot.runs.timing import USAGE_EVERY_SECONDS
from bot.store.interface import Store

log = logging.getLogger(__name__)


def projected_at(report: BoxReport, cap: float) -> float | None:
    """When the box's dollars reach *cap* at its current rate (None: not while it is idle)."""
    if report.dollars is None or report.final:
        return None
    if report.dollars >= cap:
        return report.read_at
    if not report.billed or report.dollars_per_second <= 0:
        return None
    return report.read_at + (cap - report.dollars) / report.dollars_per_second


class SpendTracker:
    """Keeps each run's `BoxReport` current: setup status, billed time and dollars."""

    def __init__(
        self,
        box: BoxClient,
        store: Store,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        every: float = USAGE_EVERY_SECONDS,
    ) -> None:
        self.box = box
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.every = every
        self._reports: dict[str, BoxReport] = {}
        self._no_usage: set[str] = set()  # boxes whose Box answered 404 to a usage read

    def cached(self, run_id: str) -> BoxReport | None:
        """The run's report as this instance last saw it, without asking the store."""
        return self._reports.get(run_id)

    async def report(self, run: Run) -> BoxReport | None:
        """The run's report as last recorded; None before its box exists."""
        if run.box_id is None:
            return None
        report = self._reports.get(run.id)
        if report is None or report.box_id != run.box_id:
            report = await self.store.box_report(run.id)
            if report is not None and report.box_id == run.box_id:
                self._reports[run.id] = report
            else:
                report = None
        return report

    def due_in(self, run_id: str) -> float:
        """Seconds until the run's usage may be read again (0: now)."""
        report = self._reports.get(run_id)
        if report is None:
            return 0.0
        return max(0.0, report.read_at + self.every - self.clock())

    async def note_setup(self, run: Run, box: Box) -> BoxReport:
        """Record the setup status *box* reports, keeping the cost figures as they are."""
        current = await self.report(run) or self._new(run, box.id)
        report = dataclasses.replace(
            current, setup_status=box.setup_status, setup_error=box.setup_error
        )
        if report != current:
            await self._save(report)
        return report

    async def refresh(
        self, run: Run, *, force: bool = False, final: bool = False
    ) -> BoxReport | None:
        """Read the box's usage when a minute has passed (at once with *force* or *final*).

        *final* marks the figure as the last one, read once the box is stopped.
        """
        if run.box_id is None:
            return None
        current = await self.report(run) or self._new(run, run.box_id)
        if current.final and not force:
            return current
        due = force or final or current.read_at == 0.0 or self.due_in(run.id) <= 0.0
        if not due:
            return current
        if run.box_id in self._no_usage or (current.read_at and current.dollars is None):
            if final and not current.final:
                return await self._save(dataclasses.replace(current, final=True))
            return current
        try:
            usage = await self.box.usage(run.box_id)
        except BoxNotSupportedError:
            log.info("run %s: Box does not report usage for box %s", run.id, run.box_id)
            self._no_usage.add(run.box_id)
            unknown = dataclasses.replace(current, dollars=None, final=final, read_at=self.clock())
            return await self._save(unknown)
        except BoxAPIError as exc:
            log.warning("run %s: usage of box %s unknown for now: %s", run.id, run.box_id, exc)
            return current
        return await self._save(self._reading(run, current, usage, final=final))

    def _reading(self, run: Run, current: BoxReport, usage: Usage, *, final: bool) -> BoxReport:
        if self.metrics is not None:
            self.metrics.box_spent(
                run.installation_id,
                run.repo,
                usage.seconds - current.seconds,
                usage.dollars - (current.dollars or 0.0),
            )
        return dataclasses.replace(
            current,
            seconds=usage.seconds,
            dollars=usage.dollars,
            dollars_per_second=usage.dollars_per_second,
            billed=usage.running,
            final=final,
            read_at=self.clock(),
        )

    def _new(self, run: Run, box_id: str) -> BoxReport:
        return BoxReport(run.id, box_id, run.installation_id, run.repo_id)

    async def _save(self, report: BoxReport) -> BoxReport:
        await self.store.save_box_report(report)
        self._reports[report.run_id] = report
        return report
