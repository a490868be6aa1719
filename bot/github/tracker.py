"""The one tracking comment of a run: posted once, then edited in place.

Edits are skipped when the text did not change (a hash of the last body is kept
in the store, so this holds across restarts), and are spaced a few seconds apart
per comment (GitHub's secondary rate limits); a final state is always written.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable

import gidgethub

from bot.github.client import GitHubAppAuth
from bot.models import Run
from bot.store.interface import Store

log = logging.getLogger(__name__)

MIN_EDIT_INTERVAL = 3.0


class Tracker:
    """Writes a run's tracking comment(s) on GitHub."""

    def __init__(
        self,
        auth: GitHubAppAuth,
        store: Store,
        *,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = MIN_EDIT_INTERVAL,
    ) -> None:
        self.auth = auth
        self.store = store
        self.clock = clock
        self.min_interval = min_interval
        self._shown: dict[int, tuple[str, float]] = {}
        self.edits = 0

    async def ensure_comment(self, run: Run, body: str, *, new: bool = False) -> Run:
        """Post the tracking comment unless it exists (found by its hidden marker after a crash).

        A run created just now cannot have a comment yet, so *new* skips the search.
        """
        if run.comment_id is not None:
            return run
        gh = self.auth.installation_client(run.installation_id)
        comment_id = None if new else await self._find_marker(run)
        if comment_id is None:
            posted = await gh.post(
                f"/repos/{run.repo}/issues/{run.number}/comments", data={"body": body}
            )
            comment_id = int(posted["id"])
            await self._shown_now(comment_id, body)
        updated = await self.store.update_run(run.id, comment_id=comment_id)
        return updated or run

    async def ensure_pr_comment(self, run: Run, body: str) -> Run:
        """Post the tracking comment on the run's linked pull request, once."""
        if run.pr_comment_id is not None or run.pr_number is None or run.pr_number == run.number:
            return run
        gh = self.auth.installation_client(run.installation_id)
        comment_id = await self._find_marker(run, run.pr_number)
        if comment_id is None:
            posted = await gh.post(
                f"/repos/{run.repo}/issues/{run.pr_number}/comments", data={"body": body}
            )
            comment_id = int(posted["id"])
            await self._shown_now(comment_id, body)
        updated = await self.store.update_run(run.id, pr_comment_id=comment_id)
        return updated or run

    async def _find_marker(self, run: Run, number: int | None = None) -> int | None:
        gh = self.auth.installation_client(run.installation_id)
        async for comment in gh.getiter(
            f"/repos/{run.repo}/issues/{number or run.number}/comments?per_page=100"
        ):
            if run.marker in (comment.get("body") or ""):
                return int(comment["id"])
        return None

    async def show(self, run: Run, body: str, *, final: bool = False) -> bool:
        """Edit the run's comments to *body* where it changed; return whether GitHub was called."""
        edited = False
        for comment_id in (run.comment_id, run.pr_comment_id):
            if comment_id is None:
                continue
            last = self._shown.get(comment_id)
            if last is None and await self.store.shown_hash(comment_id) == body_hash(body):
                self._shown[comment_id] = last = (body, self.clock())  # written before a restart
            if last is not None and last[0] == body:
                continue
            if last is not None and not final and self.clock() - last[1] < self.min_interval:
                continue
            edited = await self.edit(run, comment_id, body) or edited
        return edited

    async def edit(self, run: Run, comment_id: int, body: str) -> bool:
        """Replace a comment's body; a GitHub failure is logged and tried again on the next edit."""
        gh = self.auth.installation_client(run.installation_id)
        try:
            await gh.patch(f"/repos/{run.repo}/issues/comments/{comment_id}", data={"body": body})
        except (gidgethub.GitHubException, OSError, TimeoutError) as exc:
            log.warning("run %s: could not edit comment %s: %s", run.id, comment_id, exc)
            return False
        self.edits += 1
        await self._shown_now(comment_id, body)
        return True

    async def _shown_now(self, comment_id: int, body: str) -> None:
        self._shown[comment_id] = (body, self.clock())
        await self.store.set_shown_hash(comment_id, body_hash(body))


def body_hash(body: str) -> str:
    """A short fingerprint of a comment body."""
    return hashlib.sha256(body.encode()).hexdigest()
