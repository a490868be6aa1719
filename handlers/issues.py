"""Issue events: the trigger label starts a run."""

from __future__ import annotations

import logging
from typing import Any

from gidgethub import sansio
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router

from bot.config.loader import ConfigLoader
from bot.github.permissions import PermissionChecker
from bot.runs.manager import RunManager
from bot.store.interface import Store
from handlers.common import Thread, authorised, repo_config, run_request

log = logging.getLogger(__name__)
router = Router()


@router.register("issues", action="labeled")
async def on_labeled(
    event: sansio.Event,
    gh: GitHubAPI,
    *args: Any,
    runs: RunManager,
    config: ConfigLoader,
    permissions: PermissionChecker,
    store: Store,
    delivery_id: str,
    **kwargs: Any,
) -> None:
    """Start a run when the trigger label is added by someone allowed to spend."""
    label = str((event.data.get("label") or {}).get("name", ""))
    if event.data["issue"].get("state") == "closed" or not label:
        return
    # A broken config is reported only for labels that look meant for this app.
    ours = label.lower() == config.defaults.label.lower() or label.lower().startswith("box")
    settings = await repo_config(
        gh, event.data, config=config, store=store, key=delivery_id, report=ours
    )
    if settings is None or label.lower() != settings.label.lower():
        return
    if not await authorised(gh, event.data, permissions=permissions, store=store, config=settings):
        return
    thread = Thread.of(event.data)
    request = run_request(
        thread, event.data, instructions="", trigger_key=f"label:{delivery_id}", config=settings
    )
    outcome, run = await runs.request(request)
    log.info(
        "label %r on %s#%s: %s (run %s)", label, thread.repo, thread.number, outcome.value, run.id
    )


@router.register("issues", action="closed")
async def on_closed(
    event: sansio.Event, gh: GitHubAPI, *args: Any, runs: RunManager, store: Store, **kwargs: Any
) -> None:
    """Archive the box of an issue's run when the issue closes before any PR was linked.

    The newest run counts whatever its state: a failed run's box may still be up, and a
    stop that did not go through is tried again.
    """
    thread = Thread.of(event.data)
    run = await store.latest_run(thread.repo_id, thread.number)
    if run is None or run.pr_number is not None or run.number != thread.number:
        return
    await runs.archive(run, f"box archived: issue #{thread.number} was closed")
