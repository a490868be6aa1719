"""How long the app waits for boxes, and how often it looks at them."""

from __future__ import annotations

import math
from dataclasses import dataclass

# A poll reads the prompt run and a page of events; the rest covers box checks and backlogs.
CALLS_PER_POLL = 3
USAGE_EVERY_SECONDS = 60.0  # what a box cost is read at most this often while it works


@dataclass(frozen=True)
class Timing:
    """How long to wait for boxes and how often to look at them."""

    ready_timeout: float = 900.0
    ready_poll: float = 3.0
    poll_interval: float = 5.0
    max_poll_interval: float = 30.0
    box_check_every: int = 6
    stop_retry_base: float = 30.0
    stop_retry_max: float = 1800.0
    budget_window: float = 60.0
    sweep_every: float = 300.0
    lease_seconds: float = 30.0  # a run's lease: renewed every lease_renew, scanned lease_scan
    lease_renew: float = 10.0
    lease_scan: float = 5.0
    usage_every: float = USAGE_EVERY_SECONDS

    @classmethod
    def for_poll_interval(cls, interval: float, lease_seconds: float = 30.0) -> Timing:
        """Timing for `BOX_POLL_INTERVAL` and `BOX_LEASE_SECONDS`.

        A quiet run slows to 6 intervals, never under 30 s; a lease is renewed three times and
        scanned for six times per period, so a dead instance's runs move within one lease.
        """
        return cls(
            poll_interval=interval,
            max_poll_interval=max(30.0, 6 * interval),
            lease_seconds=lease_seconds,
            lease_renew=lease_seconds / 3,
            lease_scan=lease_seconds / 6,
        )

    @property
    def calls_per_window(self) -> int:
        """Box calls one run's watcher may make per `budget_window`."""
        return math.ceil(self.budget_window / self.poll_interval) * CALLS_PER_POLL
