"""Helpers the handler modules share: who is asking, where, and polite refusals."""

from __future__ import annotations

import logging
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.config.loader import ConfigLoader
from bot.config.repo import EffectiveConfig, RepoConfigError, format_problems
from bot.github.permissions import PermissionChecker
from bot.runs.failures import CONFIG_PROBLEMS
from bot.runs.render import permission_denied
from bot.store.interface import Store

log = logging.getLogger(__name__)

DENIAL_EVERY_SECONDS = 24 * 3600
NOT_ON_THE_LIST = (
    "@{login} this repository's `.github/box.yml` lets only the people it lists in "
    "`allowed_users` (and not in `denied_users`) use box-bot. Ask one of them to run the "
    "command for you."
)


def thread_of(data: dict[str, Any]) -> tuple[str, int, int, bool, bool]:
    """Return (repo full name, repo id, number, is pull request, private) of an event."""
    repo = data["repository"]
    item = data.get("issue") or data.get("pull_request") or {}
    is_pull = "pull_request" in data or bool(item.get("pull_request"))
    return repo["full_name"], int(repo["id"]), int(item["number"]), is_pull, bool(repo["private"])


async def repo_config(
    gh: GitHubAPI,
    data: dict[str, Any],
    *,
    config: ConfigLoader,
    store: Store,
    key: str,
    report: bool = True,
) -> EffectiveConfig | None:
    """Load the repository's config; if it is broken, list its problems on the thread once."""
    repo, _repo_id, number, _is_pull, _private = thread_of(data)
    try:
        return await config.load(
            data["installation"]["id"], repo, data["repository"]["default_branch"]
        )
    except RepoConfigError as exc:
        log.info("%s has an invalid .github/box.yml: %d problems", repo, len(exc.problems))
        if report and await store.claim_notice(
            f"config:{repo}#{number}:{key}".lower(), DENIAL_EVERY_SECONDS
        ):
            body = CONFIG_PROBLEMS.format(problems=format_problems(exc.problems))
            await gh.post(f"/repos/{repo}/issues/{number}/comments", data={"body": body})
        return None


async def authorised(
    gh: GitHubAPI,
    data: dict[str, Any],
    *,
    permissions: PermissionChecker,
    store: Store,
    config: EffectiveConfig,
) -> bool:
    """Return True if the sender may spend money here; otherwise tell them once a day."""
    repo, _repo_id, number, _is_pull, _private = thread_of(data)
    login = data["sender"]["login"]
    listed = config.user_allowed(login)
    if listed and await permissions.allows(gh, repo, login, config.permission):
        return True
    log.info("%s may not trigger work on %s#%s", login, repo, number)
    if await store.claim_notice(f"denied:{repo}#{number}:{login}".lower(), DENIAL_EVERY_SECONDS):
        reply = (
            permission_denied(login, config.permission)
            if listed
            else NOT_ON_THE_LIST.format(login=login)
        )
        await gh.post(f"/repos/{repo}/issues/{number}/comments", data={"body": reply})
    return False


async def acknowledge(gh: GitHubAPI, repo: str, comment_id: int) -> None:
    """Add 👀 to a command comment; a failure here must not stop the command."""
    try:
        await gh.post(
            f"/repos/{repo}/issues/comments/{comment_id}/reactions", data={"content": "eyes"}
        )
    except gidgethub.GitHubException as exc:
        log.warning("could not react to comment %s on %s: %s", comment_id, repo, exc)
