"""Comment events: `/box` commands on issues and pull requests."""

from __future__ import annotations

import logging
from typing import Any

from gidgethub import sansio
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router

from bot.config.loader import ConfigLoader
from bot.config.repo import EffectiveConfig
from bot.github.commands import Command, CommandName, help_text, parse_command
from bot.github.permissions import PermissionChecker
from bot.runs.manager import RunManager
from bot.runs.render import render_status_reply
from bot.runs.timeline import Timeline
from bot.store.interface import Store
from handlers.common import Thread, acknowledge, authorised, reply, repo_config, run_request

log = logging.getLogger(__name__)
router = Router()

NO_ACTIVE_RUN = "There is no box working on this {thing} right now. Start one with `/box fix`."
NO_ARCHIVED_RUN = "There is no archived box for this {thing} to resume."


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
    await acknowledge(gh, event.data["repository"]["full_name"], event.data["comment"]["id"])
    asked = Asked(event.data, command, settings, gh)
    where = f"{asked.thread.repo}#{asked.thread.number}"
    log.info("/box %s from %s on %s", command.name.value, asked.login, where)
    await COMMANDS[command.name](asked, runs, store)


class Asked:
    """A command, where it was asked, by whom, and how to answer there."""

    def __init__(
        self, data: dict[str, Any], command: Command, config: EffectiveConfig, gh: GitHubAPI
    ) -> None:
        self.data, self.command, self.config, self.gh = data, command, config, gh
        self.thread = Thread.of(data)
        self.login: str = data["sender"]["login"]

    async def reply(self, body: str) -> None:
        await reply(self.gh, self.thread, body)


async def _fix(asked: Asked, runs: RunManager, store: Store) -> None:
    request = run_request(
        asked.thread,
        asked.data,
        instructions=asked.command.instructions,
        trigger_key=f"comment:{asked.data['comment']['id']}",
        config=asked.config,
    )
    outcome, run = await runs.request(request)
    where = f"{asked.thread.repo}#{asked.thread.number}"
    log.info("/box fix on %s: %s (run %s)", where, outcome.value, run.id)


async def _status(asked: Asked, runs: RunManager, store: Store) -> None:
    run = await store.latest_run(asked.thread.repo_id, asked.thread.number)
    if run is None:
        await asked.reply(render_status_reply(None, None, now=runs.clock()))
        return
    report, today = await runs.spend_today(run)
    timeline = Timeline.from_json(run.summary)
    await asked.reply(
        render_status_reply(run, timeline, now=runs.clock(), box_report=report, repo_today=today)
    )


async def _stop(asked: Asked, runs: RunManager, store: Store) -> None:
    run = await store.active_run(asked.thread.repo_id, asked.thread.number)
    if run is None or run.box_id is None:
        await asked.reply(NO_ACTIVE_RUN.format(thing=asked.thread.thing))
        return
    await runs.interrupt(run)


async def _archive(asked: Asked, runs: RunManager, store: Store) -> None:
    run = await store.active_run(asked.thread.repo_id, asked.thread.number)
    if run is None:
        await asked.reply(NO_ACTIVE_RUN.format(thing=asked.thread.thing))
        return
    await runs.archive(run, f"archived by @{asked.login}")


async def _resume(asked: Asked, runs: RunManager, store: Store) -> None:
    run = await store.latest_run(asked.thread.repo_id, asked.thread.number)
    if run is None or run.box_id is None or run.state.active:
        await asked.reply(NO_ARCHIVED_RUN.format(thing=asked.thread.thing))
        return
    resumed = await runs.resume(run)
    if not resumed.state.active:  # it changed state meanwhile: nothing was resumed
        await asked.reply(NO_ARCHIVED_RUN.format(thing=asked.thread.thing))


async def _help(asked: Asked, runs: RunManager, store: Store) -> None:
    await asked.reply(help_text(asked.config.label, asked.command.unknown))


COMMANDS = {
    CommandName.FIX: _fix,
    CommandName.STATUS: _status,
    CommandName.STOP: _stop,
    CommandName.ARCHIVE: _archive,
    CommandName.RESUME: _resume,
    CommandName.HELP: _help,
}
