"""One instance drives each run: a lease in the store, renewed while it drives.

An instance takes a run's lease before it drives the run and renews every lease it holds
every `renew_every` seconds. One that cannot renew stops driving before its leases can expire
(fail-stop), so two instances never drive one run. Every instance looks every `scan_every`
seconds for runs with work whose lease expired (their instance died) or that nobody holds,
and takes them over: the run goes on from its stored step, as after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection

from bot.store.interface import Store
from bot.store.records import LeaseTaken, StoreUnavailable

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0
RENEW_EVERY_SECONDS = 10.0
SCAN_EVERY_SECONDS = 5.0


class Leases:
    """Takes, renews and gives up this instance's run leases."""

    def __init__(
        self,
        store: Store,
        *,
        seconds: float = LEASE_SECONDS,
        renew_every: float = RENEW_EVERY_SECONDS,
        scan_every: float = SCAN_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.seconds = seconds
        self.renew_every = renew_every
        self.scan_every = scan_every
        self.clock = clock
        self.taken_over = 0  # runs this instance took from an instance whose lease expired

    async def take(self, run_id: str) -> bool:
        """Whether this instance may drive *run_id* now (it then holds its lease)."""
        try:
            taken = await self.store.take_lease(run_id, self.seconds)
        except StoreUnavailable as exc:
            log.warning("run %s: its lease cannot be taken now: %s", run_id, exc)
            return False
        if taken is LeaseTaken.EXPIRED:
            self.taken_over += 1
            log.info("run %s: taken over from an instance whose lease expired", run_id)
        return taken is not None

    async def release(self, run_id: str) -> None:
        """Give up the lease on a run this instance has stopped driving."""
        try:
            await self.store.release_lease(run_id)
        except StoreUnavailable as exc:  # it expires on its own
            log.warning("run %s: its lease could not be given up: %s", run_id, exc)

    async def release_all(self) -> None:
        """Give up every lease this instance holds (it is stopping)."""
        try:
            await self.store.release_leases()
        except StoreUnavailable as exc:  # they expire on their own
            log.warning("run leases could not be given up: %s", exc)

    async def keep(self, held: Callable[[], Collection[str]], lost: Callable[[str], None]) -> None:
        """Renew the leases of the runs *held* names; call *lost* for each one no longer held.

        When renewing fails for so long that a lease could expire before the next try, every
        run is given up: better a pause than two instances driving one run.
        """
        renewed_at = self.clock()
        while True:
            await asyncio.sleep(self.renew_every)
            runs = sorted(held())
            try:
                kept = await self.store.renew_leases(runs, self.seconds)
            except StoreUnavailable as exc:
                if self.clock() - renewed_at >= self.seconds - self.renew_every:
                    log.error("run leases cannot be renewed (%s): stopping %d runs", exc, len(runs))
                    for run_id in runs:
                        lost(run_id)
                else:
                    log.warning("run leases not renewed yet: %s", exc)
                continue
            renewed_at = self.clock()
            for run_id in (set(runs) - kept) & set(held()):  # not those given up meanwhile
                log.error("run %s: another instance holds its lease; no longer driving it", run_id)
                lost(run_id)

    async def scan(self, kick: Callable[[str], None], driving: Callable[[str], bool]) -> None:
        """Kick every run with work that no instance holds, so one of them takes it over."""
        while True:
            await asyncio.sleep(self.scan_every)
            try:
                orphans = [run for run in await self.store.unleased_runs() if not driving(run)]
            except StoreUnavailable as exc:
                log.warning("cannot look for runs to take over: %s", exc)
                continue
            for run_id in orphans:
                kick(run_id)
