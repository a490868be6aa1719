"""The one tracking comment of a run (and the one on its pull request): posted once, then edited.

One code path creates both, and it looks for the run's hidden marker (every page) before
any POST, so a POST whose answer was lost, a retry or a restart never gives a second
comment. Edits go through the installation's outbox: they are skipped when the text did
not change (a hash of the last body is kept in the store, so this holds across restarts),
spaced a few seconds apart per comment (GitHub's secondary rate limits, more while the
installation's budget is low), and a final state is always written.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import gidgethub

from bot.github.client import GitHubAppAuth
from bot.github.outbox import Edit, Outbox
from bot.models import Run
from bot.store.interface import Store

log = logging.getLogger(__name__)

MIN_EDIT_INTERVAL = 3.0
# While an installation has less than a tenth of its requests left, progress edits slow down.
LOW_BUDGET_SLOWDOWN = 4.0
# After a POST whose answer was lost, GitHub's listing may lag behind: look a few times.
LOST_LOOKUPS = 3
LOST_LOOKUP_DELAY_SECONDS = 0.5
# The marker is looked for among comments written since the run began, less this for clocks.
MARKER_SINCE_MARGIN_SECONDS = 600.0


class Tracker:
    """Writes a run's tracking comment(s) on GitHub."""

    def __init__(
        self,
        auth: GitHubAppAuth,
        store: Store,
        outbox: Outbox | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_EDIT_INTERVAL,
    ) -> None:
        self.auth = auth
        self.store = store
        self.outbox = outbox or Outbox(auth)
        self.clock = clock
        self.min_interval = min_interval
        self._shown: dict[int, tuple[str, float]] = {}  # last body handed to the outbox
        self._posting: dict[tuple[str, int], asyncio.Lock] = {}
        self.edits = 0

    async def ensure_comment(self, run: Run, body: str) -> Run:
        """Post the run's tracking comment on its issue or pull request unless it exists."""
        return await self._ensure(run, run.number, "comment_id", body)

    async def ensure_pr_comment(self, run: Run, body: str) -> Run:
        """Post the tracking comment on the run's linked pull request, once."""
        if run.pr_number is None or run.pr_number == run.number:
            return run
        return await self._ensure(run, run.pr_number, "pr_comment_id", body)

    async def _ensure(self, run: Run, number: int, field: str, body: str) -> Run:
        if getattr(run, field) is not None:
            return run
        if (paused := self.auth.budget.blocked(run.installation_id, write=True)) is not None:
            raise paused
        key = (run.id, number)
        async with self._posting.setdefault(key, asyncio.Lock()):
            current = await self.store.get_run(run.id) or run
            if getattr(current, field) is not None:  # posted while we waited
                return current
            comment_id = await self._find_marker(run, number)
            if comment_id is None:
                comment_id = await self._post(run, number, body)
            fields: dict[str, Any] = {field: comment_id}
            updated = await self.store.update_run(run.id, **fields)
        self._posting.pop(key, None)
        return updated or current

    async def _post(self, run: Run, number: int, body: str) -> int:
        """POST the tracking comment; after a lost answer, look for it before anything else."""
        gh = self.auth.installation_client(run.installation_id)
        try:
            posted = await gh.post(
                f"/repos/{run.repo}/issues/{number}/comments", data={"body": body}
            )
        except (gidgethub.GitHubBroken, aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("run %s: no answer to posting its comment: %s", run.id, exc)
            for _ in range(LOST_LOOKUPS):
                await asyncio.sleep(LOST_LOOKUP_DELAY_SECONDS)
                if (found := await self._find_marker(run, number)) is not None:
                    return found
            raise
        comment_id = int(posted["id"])
        await self._shown_now(comment_id, body)
        return comment_id

    async def _find_marker(self, run: Run, number: int) -> int | None:
        """The run's comment on #number: every page of those written since the run began."""
        gh = self.auth.installation_client(run.installation_id)
        since = time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.created_at - MARKER_SINCE_MARGIN_SECONDS)
        )
        async for comment in gh.getiter(
            f"/repos/{run.repo}/issues/{number}/comments?since={since}&per_page=100"
        ):
            if run.marker in (comment.get("body") or ""):
                log.info("run %s: found its comment %s on #%s", run.id, comment["id"], number)
                return int(comment["id"])
        return None

    async def show(self, run: Run, body: str, *, final: bool = False) -> bool:
        """Edit the run's comments to *body* where it changed; return whether an edit was made.

        The issue's comment follows the live story; the pull request's is edited only when the
        phase changes (final edits), so one busy run does not edit two comments all along.
        """
        edited = False
        interval = self.min_interval
        if self.auth.budget.low(run.installation_id):
            interval *= LOW_BUDGET_SLOWDOWN
        for comment_id in (run.comment_id, run.pr_comment_id):
            if comment_id is None or (comment_id == run.pr_comment_id and not final):
                continue
            last = self._shown.get(comment_id)
            if last is None and await self.store.shown_hash(comment_id) == body_hash(body):
                self._shown[comment_id] = last = (body, self.clock())  # written before a restart
            if last is not None and last[0] == body:
                continue
            if last is not None and not final and self.clock() - last[1] < interval:
                continue
            edited = await self.edit(run, comment_id, body, final=final) or edited
        return edited

    async def edit(self, run: Run, comment_id: int, body: str, *, final: bool = False) -> bool:
        """Queue a comment's new body; wait for it unless the installation is paused.

        Returns whether GitHub took it (False: it stays queued, or was given up and is tried
        again on the next edit).
        """
        self._shown[comment_id] = (body, self.clock())

        async def sent() -> None:
            self.edits += 1
            await self.store.set_shown_hash(comment_id, body_hash(body))

        async def given_up() -> None:
            if self._shown.get(comment_id, ("", 0.0))[0] == body:
                del self._shown[comment_id]

        return await self.outbox.send(
            run.installation_id,
            Edit(
                key=f"comment:{comment_id}",
                path=f"/repos/{run.repo}/issues/comments/{comment_id}",
                data={"body": body},
                final=final,
                sent=sent,
                given_up=given_up,
            ),
        )

    async def _shown_now(self, comment_id: int, body: str) -> None:
        self._shown[comment_id] = (body, self.clock())
        await self.store.set_shown_hash(comment_id, body_hash(body))


def body_hash(body: str) -> str:
    """A short fingerprint of a comment body."""
    return hashlib.sha256(body.encode()).hexdigest()
