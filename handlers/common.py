"""Helpers the handler modules share: who is asking, where, and polite refusals."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.config.loader import ConfigLoader
from bot.config.repo import EffectiveConfig, RepoConfigError, format_problems
from bot.github.permissions import PermissionChecker
from bot.models import PromptKind, Run
from bot.runs.failures import CONFIG_PROBLEMS
from bot.runs.render import permission_denied
from bot.runs.requests import RunRequest
from bot.store.interface import Store

log = logging.getLogger(__name__)

DENIAL_EVERY_SECONDS = 24 * 3600
NOT_ON_THE_LIST = (
    "@{login} this repository's `.github/box.yml` lets only the people it lists in "
    "`allowed_users` (and not in `denied_users`) use box-bot. Ask one of them to run the "
    "command for you."
)


@dataclass(frozen=True)
class Thread:
    """The issue or pull request an event is about, and the installation it is seen through."""

    installation_id: int
    repo: str
    repo_id: int
    number: int
    is_pull_request: bool
    private: bool

    @classmethod
    def of(cls, data: dict[str, Any]) -> Thread:
        """The thread of an issue, comment or pull request event."""
        repo = data["repository"]
        item = data.get("issue") or data.get("pull_request") or {}
        return cls(
            installation_id=int(data["installation"]["id"]),
            repo=repo["full_name"],
            repo_id=int(repo["id"]),
            number=int(item["number"]),
            is_pull_request="pull_request" in data or bool(item.get("pull_request")),
            private=bool(repo["private"]),
        )

    @classmethod
    def of_run(cls, run: Run) -> Thread:
        """The thread a run's work shows on now: its pull request once it has one."""
        return cls(
            installation_id=run.installation_id,
            repo=run.repo,
            repo_id=run.repo_id,
            number=run.pr_number or run.number,
            is_pull_request=run.pr_number is not None,
            private=run.repo_private,
        )

    @property
    def thing(self) -> str:
        """What the thread is, in words."""
        return "pull request" if self.is_pull_request else "issue"


def run_request(
    thread: Thread,
    data: dict[str, Any],
    *,
    instructions: str,
    trigger_key: str,
    config: EffectiveConfig,
    kind: PromptKind = PromptKind.INITIAL,
    default_branch: str | None = None,
) -> RunRequest:
    """The sender's request for work on *thread* (on the repository's default branch)."""
    return RunRequest(
        installation_id=thread.installation_id,
        repo_id=thread.repo_id,
        repo=thread.repo,
        repo_private=thread.private,
        number=thread.number,
        is_pull_request=thread.is_pull_request,
        requester=data["sender"]["login"],
        instructions=instructions,
        trigger_key=trigger_key,
        kind=kind,
        default_branch=default_branch or data["repository"]["default_branch"],
        config=config,
    )


async def reply(gh: GitHubAPI, thread: Thread, body: str) -> None:
    """Post *body* as a new comment on the thread."""
    await gh.post(f"/repos/{thread.repo}/issues/{thread.number}/comments", data={"body": body})


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
    thread = Thread.of(data)
    try:
        return await config.load(
            thread.installation_id, thread.repo, data["repository"]["default_branch"]
        )
    except RepoConfigError as exc:
        log.info("%s has an invalid .github/box.yml: %d problems", thread.repo, len(exc.problems))
        if report and await store.claim_notice(
            f"config:{thread.repo}#{thread.number}:{key}".lower(), DENIAL_EVERY_SECONDS
        ):
            await reply(gh, thread, CONFIG_PROBLEMS.format(problems=format_problems(exc.problems)))
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
    thread = Thread.of(data)
    repo, number, login = thread.repo, thread.number, data["sender"]["login"]
    listed = config.user_allowed(login)
    if listed and await permissions.allows(gh, repo, login, config.permission):
        return True
    log.info("%s may not trigger work on %s#%s", login, repo, number)
    if await store.claim_notice(f"denied:{repo}#{number}:{login}".lower(), DENIAL_EVERY_SECONDS):
        refusal = (
            permission_denied(login, config.permission)
            if listed
            else NOT_ON_THE_LIST.format(login=login)
        )
        await reply(gh, thread, refusal)
    return False


async def acknowledge(gh: GitHubAPI, repo: str, comment_id: int) -> None:
    """Add 👀 to a command comment; a failure here must not stop the command."""
    try:
        await gh.post(
            f"/repos/{repo}/issues/comments/{comment_id}/reactions", data={"content": "eyes"}
        )
    except gidgethub.GitHubException as exc:
        log.warning("could not react to comment %s on %s: %s", comment_id, repo, exc)
