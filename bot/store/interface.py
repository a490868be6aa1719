"""The store as the rest of the app sees it: every operation, whatever database is behind."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from bot.models import BoxReport, PromptState, QueuedPrompt, Run, RunState
from bot.store.records import (
    CIFixClaim,
    CreateOutcome,
    Delivery,
    DeliveryStatus,
    LeaseTaken,
    LimitHit,
    Limits,
    PendingStop,
    Pruned,
)


class Store(Protocol):
    """Async access to the app's tables; every method raises `StoreUnavailable` on failure."""

    clock: Callable[[], float]
    instance_id: str
    """Names this process in the claims it makes."""

    async def migrate(self) -> int:
        """Apply pending migrations; return the schema version."""
        ...

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the database answers a query."""
        ...

    async def close(self) -> None:
        """Finish what is queued, then close; closing twice is harmless."""
        ...

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Hold the lock *name*, across every instance on this database, for the block."""
        ...

    # -- the webhook inbox -------------------------------------------------

    async def add_delivery(
        self,
        delivery_id: str,
        event: str,
        action: str | None,
        installation_id: int | None,
        payload: bytes,
    ) -> bool:
        """Store a delivery; return False when this delivery id is already in the inbox."""
        ...

    async def listen_deliveries(self, callback: Callable[[], None]) -> None:
        """Call *callback* whenever any instance stores a new delivery, until the store closes."""
        ...

    async def prune_inbox(self, retention_seconds: float) -> Pruned:
        """Drop what the inbox no longer needs; failed deliveries are kept for inspection.

        Handled and ignored deliveries lose their payload *retention_seconds* after they
        finished, and are forgotten once their payload is gone and their id is too old to
        come back as a redelivery; so are the redeliveries asked that long ago.
        """
        ...

    async def claim_deliveries(self, limit: int, lease_seconds: float) -> list[Delivery]:
        """Mark up to *limit* due deliveries as processing and return them, oldest first."""
        ...

    async def release_claims(self, every_instance: bool = False) -> int:
        """Hand back what this instance (or, after an unclean stop, any) was processing.

        Work handed back on a clean stop does not count as an attempt; work left behind by
        a crash does, so a delivery that brings the app down is not tried for ever.
        """
        ...

    async def finish_delivery(
        self,
        delivery_id: str,
        status: DeliveryStatus,
        done_handlers: Sequence[str] = (),
        error: str | None = None,
    ) -> None:
        """Record the final outcome of a delivery."""
        ...

    async def retry_delivery(
        self, delivery_id: str, done_handlers: Sequence[str], error: str, delay: float
    ) -> None:
        """Put a failed delivery back in the queue to be tried again after *delay* seconds."""
        ...

    async def get_delivery(self, delivery_id: str) -> Delivery | None: ...

    async def delivery_counts(self) -> dict[str, int]:
        """Return the number of deliveries in each status."""
        ...

    async def next_due_in(self) -> float | None:
        """Seconds until the next pending delivery is due (None when nothing is pending)."""
        ...

    # -- runs ----------------------------------------------------------------------------

    async def create_run(self, run: Run, first: QueuedPrompt) -> tuple[CreateOutcome, Run]:
        """Insert a run with its first prompt, unless that trigger was seen or a run is active."""
        ...

    async def get_run(self, run_id: str) -> Run | None: ...

    async def active_run(self, repo_id: int, number: int) -> Run | None:
        """Return the active run asked on this issue or PR, or linked to this PR."""
        ...

    async def latest_run(self, repo_id: int, number: int) -> Run | None:
        """Return the newest run asked on, or linked to, this issue or PR, whatever its state."""
        ...

    async def runs_in(self, states: Sequence[RunState]) -> list[Run]: ...

    async def update_run(
        self, run_id: str, *, expect: Sequence[RunState] | None = None, **fields: Any
    ) -> Run | None:
        """Change a run's fields; with *expect*, only if it is in one of those states."""
        ...

    async def count_runs(self) -> dict[str, int]: ...

    async def reserve(self, run_id: str, limits: Limits) -> LimitHit | None:
        """Count this run against the spending limits, atomically; return the limit it hits.

        Active runs that have reserved are the boxes in use; a run that ends (archived or
        failed) stops counting. Runs per person per day count the reservations of the last
        day that are active or got a box.
        """
        ...

    # -- prompts --------------------------------------------------------------------------

    async def queue_prompt(self, prompt: QueuedPrompt) -> bool:
        """Queue a prompt for a run; False when its trigger was already queued."""
        ...

    async def prompts(self, run_id: str, states: Sequence[PromptState] = ()) -> list[QueuedPrompt]:
        """Return a run's prompts, oldest first, optionally only those in *states*."""
        ...

    async def update_prompt(
        self,
        seq: int,
        state: PromptState,
        *,
        box_prompt_id: str | None = None,
        text: str | None = None,
    ) -> None:
        """Move a prompt to *state*, recording the text sent and the box's prompt id once known.

        `sent_at` is when sending first began, so a prompt looked for after a restart is
        never confused with an older one of the same text.
        """
        ...

    async def has_delivery(self, delivery_id: str) -> bool:
        """Whether the inbox holds (or still remembers) a delivery with this GUID."""
        ...

    # -- leases: one instance drives each run -------------------------------------------

    async def take_lease(self, run_id: str, seconds: float) -> LeaseTaken | None:
        """Hold *run_id*'s lease for *seconds*, unless another instance holds it unexpired."""
        ...

    async def renew_leases(self, run_ids: Sequence[str], seconds: float) -> set[str]:
        """Extend this instance's leases on *run_ids*; return those it still holds."""
        ...

    async def release_lease(self, run_id: str) -> None:
        """Give up this instance's lease on *run_id* (nothing left to drive now)."""
        ...

    async def release_leases(self, every_instance: bool = False) -> int:
        """Give up this instance's leases (or, on a database one process owns, everyone's)."""
        ...

    async def unleased_runs(self) -> list[str]:
        """Active runs with work to do that no instance holds an unexpired lease on."""
        ...

    # -- redeliveries ---------------------------------------------------------------------

    async def claim_redelivery(self, guid: str) -> bool:
        """Remember that GitHub was asked to redeliver *guid*; False if it was asked before."""
        ...

    async def redelivery_horizon(self) -> float | None:
        """How far back the next read of the delivery log goes (None: as far as it may)."""
        ...

    async def set_redelivery_horizon(self, at: float) -> None:
        """Remember how far back the next read of the delivery log goes."""
        ...

    # -- notices --------------------------------------------------------------------------

    async def claim_notice(self, key: str, every: float) -> bool:
        """Remember a notice; False if one with *key* was sent in the last *every* seconds."""
        ...

    # -- pending stops ----------------------------------------------------------------------

    async def add_pending_stop(self, run_id: str, box_id: str, *, delete: bool) -> PendingStop:
        """Record that the run's box must be stopped (or deleted), due now; return the record."""
        ...

    async def pending_stop(self, run_id: str) -> PendingStop | None: ...

    async def pending_stops(self) -> list[PendingStop]:
        """Return every stop still to be done, the earliest due first."""
        ...

    async def stop_failed(self, run_id: str, error: str, retry_at: float) -> None:
        """Count a failed attempt and say when to try again."""
        ...

    async def clear_pending_stop(self, run_id: str) -> None:
        """Forget a stop that went through."""
        ...

    # -- box reports: setup and spend --------------------------------------------

    async def save_box_report(self, report: BoxReport) -> None:
        """Record the latest about a run's box, replacing the previous record."""
        ...

    async def box_report(self, run_id: str) -> BoxReport | None:
        """Return the latest recorded about a run's box, if anything."""
        ...

    async def dollars_since(
        self, since: float, installation_id: int, repo_id: int | None = None
    ) -> float:
        """Dollars of the boxes read since *since*, and of active runs' boxes whenever read.

        A box still running counts with its latest reading, a stopped one with its final;
        *repo_id* narrows it to one repository of the installation.
        """
        ...

    # -- tracking comments ------------------------------------------------------------------

    async def shown_hash(self, comment_id: int) -> str | None:
        """Return the hash of the body last written to a comment, if any."""
        ...

    async def set_shown_hash(self, comment_id: int, body_hash: str) -> None:
        """Remember the hash of the body just written to a comment."""
        ...

    # -- CI fixes -------------------------------------------------------------------------

    async def linked_run_at(self, repo_id: int, head_sha: str) -> Run | None:
        """Return the active run whose linked pull request's head is *head_sha*."""
        ...

    async def ci_fix_attempts(self, repo_id: int, pr_number: int) -> dict[str, int]:
        """Return the PR's head commits handled so far and their attempt (0: refused)."""
        ...

    async def claim_ci_fix(
        self, prompt: QueuedPrompt, repo_id: int, pr_number: int, head_sha: str, limit: int
    ) -> CIFixClaim:
        """Count one attempt for *head_sha* and queue *prompt*, atomically, within *limit*."""
        ...
