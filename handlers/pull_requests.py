"""Pull request events: link the PR a box opened to its run, and clean up when it closes.

These events are not filtered by sender type: the PR may well be opened by Box's own
GitHub App, and it must still be linked and, on close, archive the box.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gidgethub import sansio
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router

from bot.models import Run
from bot.runs.manager import RunManager
from bot.store.interface import Store

log = logging.getLogger(__name__)
router = Router()

BOX_BRANCH = re.compile(r"box/issue-(\d+)")
RUN_MARKER = re.compile(r"^\s*Box-Run:\s*(run_[0-9a-f]{6,32})\s*$", re.M)


async def linked_run(store: Store, data: dict[str, Any]) -> Run | None:
    """Find the run a pull request belongs to: by `Box-Run:` line, head branch, or earlier link."""
    pull, repo = data["pull_request"], data["repository"]
    head_repo = (pull.get("head") or {}).get("repo") or {}
    if head_repo.get("id") != repo["id"]:
        return None  # a fork's PR can claim any marker; only branches of this repo count
    if (marker := RUN_MARKER.search(pull.get("body") or "")) is not None:
        run = await store.get_run(marker.group(1))
        if run is not None and run.repo_id == repo["id"]:
            return run
    if (branch := BOX_BRANCH.fullmatch(pull["head"]["ref"])) is not None:
        run = await store.latest_run(repo["id"], int(branch.group(1)))
        if run is not None and run.number == int(branch.group(1)):
            return run
    return await store.latest_run(repo["id"], pull["number"])


@router.register("pull_request", action="opened")
@router.register("pull_request", action="reopened")
@router.register("pull_request", action="edited")
@router.register("pull_request", action="synchronize")
async def on_pull_request_changed(
    event: sansio.Event, gh: GitHubAPI, *args: Any, runs: RunManager, store: Store, **kwargs: Any
) -> None:
    """Link the pull request to its run and keep its `Box` check on the head commit."""
    pull = event.data["pull_request"]
    run = await linked_run(store, event.data)
    if run is None or pull.get("state") == "closed":
        return
    await runs.link_pr(run, pull["number"], pull["head"]["sha"])


@router.register("pull_request", action="closed")
async def on_pull_request_closed(
    event: sansio.Event, gh: GitHubAPI, *args: Any, runs: RunManager, store: Store, **kwargs: Any
) -> None:
    """Stop and archive (or delete) the box of a run whose pull request closed."""
    pull = event.data["pull_request"]
    run = await linked_run(store, event.data)
    if run is None:
        return
    if run.pr_number is None:
        run = await runs.link_pr(run, pull["number"], pull["head"]["sha"])
    await runs.pr_closed(run, bool(pull.get("merged")))
