"""Check run events: the `Stop` and `Archive box` buttons, and "Re-run"."""

from __future__ import annotations

import logging
from typing import Any

import gidgethub
from gidgethub import sansio
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router

from bot.config.loader import ConfigLoader
from bot.config.repo import EffectiveConfig, RepoConfigError
from bot.github.checks import CHECK_NAME
from bot.github.permissions import PermissionChecker
from bot.models import PromptKind, PromptState, Run
from bot.runs.manager import RunManager
from bot.runs.review import given_instructions
from bot.store.interface import Store
from handlers.common import Thread, run_request

log = logging.getLogger(__name__)
router = Router()


async def _clicked_run(
    event: sansio.Event,
    gh: GitHubAPI,
    store: Store,
    permissions: PermissionChecker,
    config: ConfigLoader,
) -> tuple[Run, EffectiveConfig] | None:
    """The run behind a clicked check, if the sender may act on it under the repo's config."""
    check = event.data["check_run"]
    if check.get("name") != CHECK_NAME or not check.get("external_id"):
        return None
    run = await store.get_run(check["external_id"])
    if run is None or run.repo_id != event.data["repository"]["id"]:
        return None
    login = event.data["sender"]["login"]
    try:
        settings = await config.load(
            run.installation_id, run.repo, event.data["repository"]["default_branch"]
        )
    except (RepoConfigError, gidgethub.GitHubException) as exc:
        log.info("%s clicked a check button on %s; config unreadable: %s", login, run.repo, exc)
        return None
    allowed = settings.user_allowed(login) and await permissions.allows(
        gh, run.repo, login, settings.permission
    )
    if not allowed:
        log.info("%s may not use the check buttons on %s", login, run.repo)
        return None
    return run, settings


@router.register("check_run", action="requested_action")
async def on_requested_action(
    event: sansio.Event,
    gh: GitHubAPI,
    *args: Any,
    runs: RunManager,
    permissions: PermissionChecker,
    config: ConfigLoader,
    store: Store,
    **kwargs: Any,
) -> None:
    """Stop or archive the run's box when a permitted user clicks the check's button."""
    clicked = await _clicked_run(event, gh, store, permissions, config)
    if clicked is None:
        return
    run, _settings = clicked
    action = event.data["requested_action"]["identifier"]
    if action == "stop":
        await runs.interrupt(run)
    elif action == "archive":
        await runs.archive(run, f"archived by @{event.data['sender']['login']}")


@router.register("check_run", action="rerequested")
async def on_rerequested(
    event: sansio.Event,
    gh: GitHubAPI,
    *args: Any,
    runs: RunManager,
    permissions: PermissionChecker,
    config: ConfigLoader,
    store: Store,
    delivery_id: str,
    **kwargs: Any,
) -> None:
    """Send the run's last instructions to its box again."""
    clicked = await _clicked_run(event, gh, store, permissions, config)
    if clicked is None:
        return
    run, settings = clicked
    sent = await store.prompts(
        run.id,
        [PromptState.FINISHED, PromptState.FAILED, PromptState.INTERRUPTED, PromptState.SENT],
    )
    instructions = given_instructions(sent[-1]) if sent else ""
    request = run_request(
        Thread.of_run(run),
        event.data,
        instructions=instructions,
        trigger_key=f"rerun:{delivery_id}",
        config=settings,
        kind=PromptKind.RERUN,
        default_branch=run.default_branch,
    )
    await runs.request(request)
