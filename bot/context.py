"""Gather from GitHub what the agent needs to know about an issue or pull request."""

from __future__ import annotations

from typing import Any

from gidgethub.abc import GitHubAPI

from bot.models import PromptKind, QueuedPrompt, Run
from bot.permissions import PermissionChecker
from bot.prompt import CommentText, PromptContext

MAX_COMMENT_PAGES = 5
MAX_CHANGED_FILES = 300
COMMENTS_PER_PAGE = 100


def issue_branch(number: int) -> str:
    """Return the branch the agent works on for an issue."""
    return f"box/issue-{number}"


async def trusted_comments(
    gh: GitHubAPI, permissions: PermissionChecker, run: Run, app_slug: str
) -> list[CommentText]:
    """Return the thread's comments written by people with write access, oldest first."""
    comments: list[dict[str, Any]] = []
    async for comment in gh.getiter(
        f"/repos/{run.repo}/issues/{run.number}/comments?per_page={COMMENTS_PER_PAGE}"
    ):
        comments.append(comment)
        if len(comments) >= MAX_COMMENT_PAGES * COMMENTS_PER_PAGE:
            break
    kept = []
    for comment in comments:
        user = comment.get("user") or {}
        login = str(user.get("login", ""))
        if user.get("type") == "Bot" or login.lower() == f"{app_slug}[bot]".lower():
            continue
        if await permissions.allows(gh, run.repo, login):
            kept.append(CommentText(login, comment.get("body") or "", comment["created_at"]))
    return kept


async def gather_context(
    gh: GitHubAPI, permissions: PermissionChecker, run: Run, prompt: QueuedPrompt, app_slug: str
) -> PromptContext:
    """Read the issue or PR, its trusted comments and (for a PR) its branches and files."""
    issue = await gh.getitem(f"/repos/{run.repo}/issues/{run.number}")
    branch, base, files = issue_branch(run.number), None, []
    if run.is_pull_request:
        pull = await gh.getitem(f"/repos/{run.repo}/pulls/{run.number}")
        branch, base = pull["head"]["ref"], pull["base"]["ref"]
        async for entry in gh.getiter(f"/repos/{run.repo}/pulls/{run.number}/files?per_page=100"):
            files.append(entry["filename"])
            if len(files) >= MAX_CHANGED_FILES:
                break
    follow_up = prompt.kind is not PromptKind.INITIAL
    ci_fix = prompt.kind is PromptKind.CI_FIX
    return PromptContext(
        repo_full_name=run.repo,
        repo_name=run.repo_name,
        number=run.number,
        is_pull_request=run.is_pull_request,
        title=issue.get("title") or "",
        body=issue.get("body") or "",
        labels=[label["name"] for label in issue.get("labels") or [] if isinstance(label, dict)],
        comments=[] if follow_up else await trusted_comments(gh, permissions, run, app_slug),
        requester=prompt.requester,
        instructions="" if ci_fix else prompt.instructions,
        run_id=run.id,
        branch=branch,
        base_branch=base,
        changed_files=files,
        follow_up=follow_up,
        ci_failures=prompt.instructions if ci_fix else "",
    )
