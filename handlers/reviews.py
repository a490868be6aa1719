"""Review events: `/box` commands on lines of a pull request's diff, and reviews for the box.

An inline review comment holding a `/box` command acts like one on the pull request's
conversation, with the same grammar and permission rules: `/box fix` goes to the box of the run
the pull request belongs to (resumed first if archived) or starts a run on it, carrying the
comment's file, lines, diff hunk and commit. Other commands answer in the review thread. A
submitted review whose body holds `/box fix` goes to the box as one prompt with every inline
comment of the review; with `auto_fix_reviews`, so does a review requesting changes on a pull
request linked to a run, at most `max_rounds` per pull request.

Only the text of the triggering payload is used: edited and deleted comments never trigger
(only `created` and `submitted` are routed), and the context read later stops at the trigger.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import gidgethub
from gidgethub import sansio
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router

from bot.config.loader import ConfigLoader
from bot.github.commands import Command, CommandName, parse_command
from bot.github.permissions import PermissionChecker
from bot.models import Run
from bot.runs.manager import RunManager
from bot.runs.review import DiffComment, ReviewRequest, ReviewTrigger
from bot.store.interface import Store
from handlers.comments import COMMANDS, Asked
from handlers.common import authorised, repo_config, run_request

log = logging.getLogger(__name__)
router = Router()

# Rounds are claimed once and for good: a notice that never comes due again.
FOREVER = 100 * 365 * 24 * 3600.0
ROUND_SENT_NOTICE = (
    "🔁 Changes requested by `{login}`: sent the review to the box (round {round} of {limit})."
)
ROUNDS_USED_NOTICE = (
    "🛑 Changes requested again after {limit} rounds; not sending more reviews. "
    "Comment `/box fix <instructions>` to continue by hand."
)


class AskedInThread(Asked):
    """A command in an inline review comment: answers go to its review thread."""

    @functools.cached_property
    def comment(self) -> DiffComment:
        return DiffComment.from_github(self.data["comment"])

    async def reply(self, body: str) -> None:
        thread = self.thread
        url = (
            f"/repos/{thread.repo}/pulls/{thread.number}/comments/{self.comment.thread_id}/replies"
        )
        await self.gh.post(url, data={"body": body})


@router.register("pull_request_review_comment", action="created")
async def on_review_comment_created(
    event: sansio.Event,
    gh: GitHubAPI,
    *args: Any,
    runs: RunManager,
    config: ConfigLoader,
    permissions: PermissionChecker,
    store: Store,
    **kwargs: Any,
) -> None:
    """Run the `/box` command of a new comment on a line of the diff, if its author may spend."""
    data = event.data
    command = parse_command(data["comment"].get("body") or "")
    if command is None:
        return
    key = f"review-comment:{data['comment']['id']}"
    settings = await repo_config(gh, data, config=config, store=store, key=key)
    if settings is None:
        return
    if not await authorised(gh, data, permissions=permissions, store=store, config=settings):
        return
    asked = AskedInThread(data, command, settings, gh)
    if await _answered_with_its_review(asked, store):
        return
    await _acknowledge(gh, asked.thread.repo, asked.comment.id)
    where = f"{asked.thread.repo}#{asked.thread.number}"
    log.info(
        "/box %s from %s on %s, %s", command.name.value, asked.login, where, asked.comment.path
    )
    if command.name is not CommandName.FIX:
        await COMMANDS[command.name](asked, runs, store)
        return
    request = ReviewRequest(
        trigger=ReviewTrigger.COMMENT,
        pull_number=asked.thread.number,
        requester=asked.login,
        instructions=command.instructions,
        asked_at=asked.comment.created_at,
        comment=asked.comment,
    )
    await _send(asked, runs, request)


@router.register("pull_request_review", action="submitted")
async def on_review_submitted(
    event: sansio.Event,
    gh: GitHubAPI,
    *args: Any,
    runs: RunManager,
    config: ConfigLoader,
    permissions: PermissionChecker,
    store: Store,
    **kwargs: Any,
) -> None:
    """Send a review to the box: on `/box fix` in its body, or when it requests changes."""
    data = event.data
    command = parse_command(data["review"].get("body") or "")
    if command is not None:
        await _review_command(gh, data, command, runs, config, permissions, store)
    elif str(data["review"].get("state", "")).lower() == "changes_requested":
        await _auto_fix(gh, data, runs, config, permissions, store)


async def _review_command(
    gh: GitHubAPI,
    data: dict[str, Any],
    command: Command,
    runs: RunManager,
    config: ConfigLoader,
    permissions: PermissionChecker,
    store: Store,
) -> None:
    key = f"review:{data['review']['id']}"
    settings = await repo_config(gh, data, config=config, store=store, key=key)
    if settings is None:
        return
    if not await authorised(gh, data, permissions=permissions, store=store, config=settings):
        return
    asked = Asked(data, command, settings, gh)
    where = f"{asked.thread.repo}#{asked.thread.number}"
    log.info("/box %s in a review by %s on %s", command.name.value, asked.login, where)
    if command.name is not CommandName.FIX:
        await COMMANDS[command.name](asked, runs, store)
        return
    await _send(asked, runs, _review_request(data, ReviewTrigger.REVIEW, command.instructions))


async def _auto_fix(
    gh: GitHubAPI,
    data: dict[str, Any],
    runs: RunManager,
    config: ConfigLoader,
    permissions: PermissionChecker,
    store: Store,
) -> None:
    """Send a review requesting changes to the linked run's box, within the PR's rounds."""
    run = await _linked_run(store, data)
    if run is None:
        return
    key = f"review:{data['review']['id']}"
    settings = await repo_config(gh, data, config=config, store=store, key=key, report=False)
    if settings is None or not settings.auto_fix_reviews_enabled:
        return
    login = str(data["review"]["user"]["login"])
    repo = data["repository"]["full_name"]
    allowed = settings.user_allowed(login) and await permissions.allows(
        gh, repo, login, settings.permission
    )
    if not allowed:
        log.info("review by %s on %s#%s is not sent: not allowed", login, repo, run.pr_number)
        return
    request = _review_request(data, ReviewTrigger.CHANGES_REQUESTED, "")
    if any(p.trigger_key == request.trigger_key for p in await store.prompts(run.id)):
        return  # a redelivery of a review already sent
    limit = settings.auto_fix_reviews_max_rounds
    taken = await _take_round(store, run, request.pull_number, limit)
    if taken is None:
        if await store.claim_notice(_round_key(run, request.pull_number, "used-up"), FOREVER):
            await runs.announce(run, ROUNDS_USED_NOTICE.format(limit=limit))
        return
    asked = Asked(data, Command(CommandName.FIX), settings, gh)
    await _send(asked, runs, request)
    notice = ROUND_SENT_NOTICE.format(login=login, round=taken, limit=limit)
    await runs.announce(await store.get_run(run.id) or run, notice)


async def _take_round(store: Store, run: Run, pr_number: int, limit: int) -> int | None:
    """Claim the pull request's next free round (atomic in the store); None when all are used."""
    for number in range(1, limit + 1):
        if await store.claim_notice(_round_key(run, pr_number, str(number)), FOREVER):
            return number
    return None


def _round_key(run: Run, pr_number: int, part: str) -> str:
    return f"review-round:{run.repo_id}#{pr_number}:{part}"


async def _linked_run(store: Store, data: dict[str, Any]) -> Run | None:
    """The run whose box opened, or works on, this pull request."""
    number = int(data["pull_request"]["number"])
    run = await store.latest_run(int(data["repository"]["id"]), number)
    if run is None or number not in (run.pr_number, run.number if run.is_pull_request else None):
        return None
    return run


async def _answered_with_its_review(asked: AskedInThread, store: Store) -> bool:
    """Whether the comment belongs to a review that goes to the box whole (it is in that one)."""
    review_id = asked.data["comment"].get("pull_request_review_id")
    if not review_id:
        return False
    url = f"/repos/{asked.thread.repo}/pulls/{asked.thread.number}/reviews/{review_id}"
    try:
        review = await asked.gh.getitem(url)
    except gidgethub.BadRequest:
        return False
    command = parse_command(review.get("body") or "")
    if command is not None and command.name is CommandName.FIX:
        return True
    requested = str(review.get("state", "")).lower() == "changes_requested"
    return (
        requested
        and asked.config.auto_fix_reviews_enabled
        and await _linked_run(store, asked.data) is not None
    )


def _review_request(data: dict[str, Any], trigger: ReviewTrigger, text: str) -> ReviewRequest:
    review = data["review"]
    return ReviewRequest(
        trigger=trigger,
        pull_number=int(data["pull_request"]["number"]),
        requester=str(review["user"]["login"]),
        instructions=text,
        asked_at=str(review["submitted_at"]),
        review_id=int(review["id"]),
        review_body=str(review.get("body") or ""),
    )


async def _send(asked: Asked, runs: RunManager, request: ReviewRequest) -> None:
    """Queue the review's prompt for the pull request's run (or start one on the PR)."""
    outcome, run = await runs.request(
        run_request(
            asked.thread,
            asked.data,
            instructions=request.to_json(),
            trigger_key=request.trigger_key,
            config=asked.config,
        )
    )
    where = f"{asked.thread.repo}#{asked.thread.number}"
    log.info("%s on %s: %s (run %s)", request.trigger_key, where, outcome.value, run.id)


async def _acknowledge(gh: GitHubAPI, repo: str, comment_id: int) -> None:
    """Add 👀 to a review comment; a failure here must not stop the command."""
    try:
        await gh.post(
            f"/repos/{repo}/pulls/comments/{comment_id}/reactions", data={"content": "eyes"}
        )
    except gidgethub.GitHubException as exc:
        log.warning("could not react to review comment %s on %s: %s", comment_id, repo, exc)
