"""Comment events: `/box` commands on issues and pull requests."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from gidgethub import sansio
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router

from bot.commands import Command, CommandName, help_text, parse_command
from bot.config_loader import ConfigLoader
from bot.permissions import PermissionChecker
from bot.render import render_status_reply
from bot.repo_config import EffectiveConfig
from bot.runs import RunManager, RunRequest
from bot.store import Store
from bot.timeline import Timeline
from handlers.common import acknowledge, authorised, repo_config, thread_of

log = logging.getLogger(__name__)
router = Router()

NO_ACTIVE_RUN = "There is no box working on this {thing} right now. Start one with `/box fix`."
NO_ARCHIVED_RUN = "There is no archived box for this {thing} to resume."

Reply = Callable[[str], Awaitable[None]]


@router.register("issue_comment", action="created")
async def on_comment_created(
    event: sansio.Event,
    gh: GitHubAPI,
    *args: Any,
    runs: RunManager,
    config: ConfigLoader,
    permissions: PermissionChecker,
    store: Store,
    **kwargs: Any,
) -> None:
    """Run the `/box` command in a new comment, if its author may spend."""
    command = parse_command(event.data["comment"].get("body") or "")
    if command is None:
        return
    key = f"comment:{event.data['comment']['id']}"
    settings = await repo_config(gh, event.data, config=config, store=store, key=key)
    if settings is None:
        return
    if not await authorised(gh, event.data, permissions=permissions, store=store, config=settings):
        return
    repo, _repo_id, number, _is_pull, _private = thread_of(event.data)
    await acknowledge(gh, repo, event.data["comment"]["id"])
    log.info(
        "/box %s from %s on %s#%s", command.name.value, event.data["sender"]["login"], repo, number
    )

    async def reply(body: str) -> None:
        await gh.post(f"/repos/{repo}/issues/{number}/comments", data={"body": body})

    await COMMANDS[command.name](event.data, command, reply, runs, settings)


async def _fix(
    data: dict[str, Any],
    command: Command,
    reply: Reply,
    runs: RunManager,
    settings: EffectiveConfig,
) -> None:
    repo, repo_id, number, is_pull, private = thread_of(data)
    outcome, run = await runs.request(
        RunRequest(
            installation_id=data["installation"]["id"],
            repo_id=repo_id,
            repo=repo,
            repo_private=private,
            number=number,
            is_pull_request=is_pull,
            requester=data["sender"]["login"],
            instructions=command.instructions,
            trigger_key=f"comment:{data['comment']['id']}",
        )
    )
    log.info("/box fix on %s#%s: %s (run %s)", repo, number, outcome.value, run.id)


async def _status(
    data: dict[str, Any],
    command: Command,
    reply: Reply,
    runs: RunManager,
    settings: EffectiveConfig,
) -> None:
    _repo, repo_id, number, _is_pull, _private = thread_of(data)
    run = await runs.store.latest_run(repo_id, number)
    timeline = Timeline.from_json(run.summary) if run is not None else None
    await reply(render_status_reply(run, timeline, now=runs.clock()))


async def _stop(
    data: dict[str, Any],
    command: Command,
    reply: Reply,
    runs: RunManager,
    settings: EffectiveConfig,
) -> None:
    _repo, repo_id, number, is_pull, _private = thread_of(data)
    run = await runs.store.active_run(repo_id, number)
    if run is None or run.box_id is None:
        await reply(NO_ACTIVE_RUN.format(thing=_thing(is_pull)))
        return
    await runs.interrupt(run)


async def _archive(
    data: dict[str, Any],
    command: Command,
    reply: Reply,
    runs: RunManager,
    settings: EffectiveConfig,
) -> None:
    _repo, repo_id, number, is_pull, _private = thread_of(data)
    run = await runs.store.active_run(repo_id, number)
    if run is None:
        await reply(NO_ACTIVE_RUN.format(thing=_thing(is_pull)))
        return
    await runs.archive(run, f"archived by @{data['sender']['login']}")


async def _resume(
    data: dict[str, Any],
    command: Command,
    reply: Reply,
    runs: RunManager,
    settings: EffectiveConfig,
) -> None:
    _repo, repo_id, number, is_pull, _private = thread_of(data)
    run = await runs.store.latest_run(repo_id, number)
    if run is None or run.box_id is None or run.state.active:
        await reply(NO_ARCHIVED_RUN.format(thing=_thing(is_pull)))
        return
    await runs.resume(run)


async def _help(
    data: dict[str, Any],
    command: Command,
    reply: Reply,
    runs: RunManager,
    settings: EffectiveConfig,
) -> None:
    await reply(help_text(settings.label, command.unknown))


def _thing(is_pull: bool) -> str:
    return "pull request" if is_pull else "issue"


COMMANDS = {
    CommandName.FIX: _fix,
    CommandName.STATUS: _status,
    CommandName.STOP: _stop,
    CommandName.ARCHIVE: _archive,
    CommandName.RESUME: _resume,
    CommandName.HELP: _help,
}
