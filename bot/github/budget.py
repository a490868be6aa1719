"""What GitHub lets each installation send now: rate-limit pauses, write spacing, low budget.

https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
A secondary limit (403/429 with `retry-after` or a "secondary rate limit" message) pauses
every write of the installation for `retry-after` seconds, or 60 s doubling while it
repeats. A primary limit (`x-ratelimit-remaining: 0`) holds every request of the
installation until `x-ratelimit-reset`. Writes go one at a time, at least
`write_interval` apart. Pauses are kept per process; nothing is sent into one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import gidgethub

from bot.metrics import Metrics
from bot.store.interface import Store

log = logging.getLogger(__name__)

# https://docs.github.com/en/rest/using-the-rest-api/best-practices-for-using-the-rest-api
WRITE_INTERVAL_SECONDS = 1.0
SECONDARY_LIMIT_DEFAULT_WAIT = 60.0
SECONDARY_LIMIT_MAX_WAIT = 30 * 60.0
# Below this share of the hourly limit, progress edits and repeat reads slow down.
LOW_SHARE = 0.10
LOW_READ_INTERVAL_SECONDS = 1.0
RESET_MARGIN_SECONDS = 1.0
PAUSE_CHECK_SECONDS = 0.5

# Requests that create content (GitHub's tighter secondary limit): comments, replies,
# reactions, reviews, check runs and commit statuses.
CONTENT_PATH = re.compile(
    r"/(issues/\d+/comments|comments/\d+/reactions|pulls/\d+/comments/\d+/replies"
    r"|pulls/\d+/reviews|check-runs|statuses/[0-9a-f]+)$"
)

PAUSED = "GitHub asked box-bot to wait ({kind} rate limit) until {until}"


class InstallationPaused(gidgethub.GitHubException):
    """A request was not sent: its installation is rate limited until `until` (epoch seconds)."""

    def __init__(self, installation_id: int, until: float, kind: str) -> None:
        stamp = time.strftime("%H:%M:%S UTC", time.gmtime(until))
        super().__init__(PAUSED.format(kind=kind, until=stamp))
        self.installation_id = installation_id
        self.until = until
        self.kind = kind


@dataclass
class _Installation:
    paused_until: float = 0.0  # secondary limit: no write before (epoch)
    strikes: int = 0  # secondary limits in a row, for the doubling wait
    exhausted_until: float = 0.0  # primary limit: no request at all before (epoch)
    limit: int | None = None
    remaining: int | None = None
    last_write: float = float("-inf")  # monotonic
    last_read: float = float("-inf")  # monotonic
    writing: asyncio.Lock = field(default_factory=asyncio.Lock)
    reading: asyncio.Lock = field(default_factory=asyncio.Lock)


class RateBudget:
    """Per-installation rate-limit state of this process."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        write_interval: float = WRITE_INTERVAL_SECONDS,
        secondary_wait: float = SECONDARY_LIMIT_DEFAULT_WAIT,
        metrics: Metrics | None = None,
    ) -> None:
        self.clock = clock
        self.write_interval = write_interval
        self.secondary_wait = secondary_wait
        self.metrics = metrics
        self._installations: dict[int, _Installation] = {}
        self._on_pause: list[Callable[[int], None]] = []

    def _of(self, installation_id: int) -> _Installation:
        return self._installations.setdefault(installation_id, _Installation())

    def on_pause(self, callback: Callable[[int], None]) -> None:
        """Call *callback(installation_id)* whenever an installation's writes are paused."""
        self._on_pause.append(callback)

    def blocked(self, installation_id: int, *, write: bool) -> InstallationPaused | None:
        """Why a request of the installation may not be sent now (None: it may)."""
        state, now = self._of(installation_id), self.clock()
        if state.exhausted_until > now:
            return InstallationPaused(installation_id, state.exhausted_until, "primary")
        if write and state.paused_until > now:
            return InstallationPaused(installation_id, state.paused_until, "secondary")
        return None

    def low(self, installation_id: int) -> bool:
        """Whether less than a tenth of the installation's hourly requests are left."""
        state = self._of(installation_id)
        if state.limit is None or state.remaining is None or state.limit <= 0:
            return False
        return state.remaining < state.limit * LOW_SHARE

    def observe(self, installation_id: int, status: int, headers: Mapping[str, str]) -> None:
        """Read the primary-limit headers of an answer (every answer carries them)."""
        state = self._of(installation_id)
        limit, remaining = headers.get("x-ratelimit-limit"), headers.get("x-ratelimit-remaining")
        if limit is not None and limit.isdigit():
            state.limit = int(limit)
        if remaining is not None and remaining.isdigit():
            state.remaining = int(remaining)
        reset = headers.get("x-ratelimit-reset", "")
        if state.remaining == 0 and reset.isdigit():
            until = int(reset) + RESET_MARGIN_SECONDS
            if until > state.exhausted_until:
                state.exhausted_until = until
                log.warning(
                    "installation %s used up its GitHub requests; nothing is sent before %s",
                    installation_id,
                    _stamp(until),
                )
                self._count("primary")
        if status < 400 and state.remaining:
            state.exhausted_until = 0.0

    def limited(self, installation_id: int, exception: gidgethub.HTTPException) -> float | None:
        """Record a rate-limit answer; return the seconds to wait, or None if it was not one."""
        kind = limit_kind(exception)
        if kind is None:
            return None
        state, now = self._of(installation_id), self.clock()
        headers: Mapping[str, str] = exception.headers or {}
        if kind == "primary":
            reset = headers.get("x-ratelimit-reset", "")
            until = int(reset) + RESET_MARGIN_SECONDS if reset.isdigit() else now + 60.0
            state.exhausted_until = max(state.exhausted_until, until)
            self._count("primary")
        else:
            retry_after = headers.get("retry-after", "")
            if retry_after.isdigit():
                wait = float(retry_after)
            else:
                wait = min(self.secondary_wait * 2**state.strikes, SECONDARY_LIMIT_MAX_WAIT)
            state.strikes += 1
            until = now + wait
            state.paused_until = max(state.paused_until, until)
            self._count("secondary")
        log.warning(
            "installation %s hit GitHub's %s rate limit; its writes wait until %s",
            installation_id,
            kind,
            _stamp(until),
        )
        for callback in self._on_pause:
            callback(installation_id)
        return max(0.0, until - now)

    def wrote(self, installation_id: int) -> None:
        """A write was accepted: a later secondary limit waits the default again."""
        self._of(installation_id).strikes = 0

    @contextlib.asynccontextmanager
    async def write_slot(self, installation_id: int) -> AsyncIterator[None]:
        """Hold the installation's one write in flight, at least `write_interval` after the last.

        Raises `InstallationPaused` instead of waiting when a pause began meanwhile.
        """
        state = self._of(installation_id)
        async with state.writing:
            wait = state.last_write + self.write_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if (paused := self.blocked(installation_id, write=True)) is not None:
                raise paused
            try:
                yield
            finally:
                state.last_write = time.monotonic()

    async def pace_read(self, installation_id: int) -> None:
        """Space reads while the installation's budget is low."""
        if not self.low(installation_id):
            return
        state = self._of(installation_id)
        async with state.reading:
            wait = state.last_read + LOW_READ_INTERVAL_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            state.last_read = time.monotonic()

    def _count(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.github_rate_limited.labels(kind).inc()


class ContentBudget:
    """Content-creating requests per installation, counted in the database (instances share it)."""

    def __init__(self, store: Store, *, per_minute: int, per_hour: int) -> None:
        self.store = store
        self.per_minute = per_minute
        self.per_hour = per_hour

    async def take(self, installation_id: int, method: str, url: str) -> None:
        """Count a request that creates content, or raise `InstallationPaused` if none is left."""
        if method != "POST" or not CONTENT_PATH.search(url.split("?", 1)[0]):
            return
        frees_at = await self.store.take_content_slot(
            installation_id, self.per_minute, self.per_hour
        )
        if frees_at is not None:
            log.warning(
                "installation %s used its content budget (%d a minute, %d an hour) until %s",
                installation_id,
                self.per_minute,
                self.per_hour,
                _stamp(frees_at),
            )
            raise InstallationPaused(installation_id, frees_at, "content")


async def sleep_until(until: float, clock: Callable[[], float]) -> None:
    """Sleep until *clock* reads *until*, looking at the clock again every so often."""
    while True:
        left = until - clock()
        if left <= 0:
            return
        await asyncio.sleep(min(left, PAUSE_CHECK_SECONDS))


def limit_kind(exception: gidgethub.HTTPException) -> str | None:
    """ "primary", "secondary" or None for an HTTP error from GitHub.

    https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
    """
    if exception.status_code not in (403, 429):
        return None
    headers: Mapping[str, str] = exception.headers or {}
    if "retry-after" in headers:
        return "secondary"
    if headers.get("x-ratelimit-remaining") == "0":
        return "primary"
    if exception.status_code == 429 or "secondary rate" in str(exception).lower():
        return "secondary"
    return None


def _stamp(epoch: float) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch))
