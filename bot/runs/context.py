"""Gather from GitHub what the agent needs to know about an issue or pull request."""

from __future__ import annotations

from collections import deque
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.github.permissions import PermissionChecker
from bot.models import PromptKind, QueuedPrompt, Run
from bot.runs.prompt import CommentText, PromptContext
from bot.runs.review import REVIEW_STAMP_GRACE, DiffComment, ReviewContext, ReviewRequest

MAX_COMMENTS = 500
MAX_CHANGED_FILES = 300
COMMENTS_PER_PAGE = 100
MAX_THREAD_COMMENTS = 50
MAX_REVIEW_COMMENTS = 100
MAX_PULL_COMMENTS_READ = 3_000


def issue_branch(number: int) -> str:
    """Return the branch the agent works on for an issue."""
    return f"box/issue-{number}"


async def trusted_comments(
    gh: GitHubAPI, permissions: PermissionChecker, run: Run, app_slug: str, total: int
) -> list[CommentText]:
    """Return the newest of the thread's *total* comments by people with write access.

    Oldest first, like the thread.
    """
    kept = []
    for comment in await newest_comments(gh, run.repo, run.number, total):
        user = comment.get("user") or {}
        login = str(user.get("login", ""))
        if user.get("type") == "Bot" or login.lower() == f"{app_slug}[bot]".lower():
            continue
        if await permissions.allows(gh, run.repo, login):
            kept.append(CommentText(login, comment.get("body") or "", comment["created_at"]))
    return kept


async def newest_comments(
    gh: GitHubAPI, repo: str, number: int, total: int
) -> list[dict[str, Any]]:
    """Return the thread's newest MAX_COMMENTS comments, reading only the pages they are on.

    GitHub lists comments oldest first, so reading starts at the page holding the
    MAX_COMMENTS-th newest of the *total* the issue counts, and follows `next` to the end,
    which also picks up comments posted since.
    """
    first_page = max(1, (total - MAX_COMMENTS) // COMMENTS_PER_PAGE + 1)
    url = f"/repos/{repo}/issues/{number}/comments?per_page={COMMENTS_PER_PAGE}"
    comments: deque[dict[str, Any]] = deque(maxlen=MAX_COMMENTS)
    async for comment in gh.getiter(f"{url}&page={first_page}"):
        comments.append(comment)
    return list(comments)


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
    total = int(issue.get("comments") or 0)
    ci_fix = prompt.kind is PromptKind.CI_FIX
    review = ReviewRequest.from_prompt(prompt)
    return PromptContext(
        repo_full_name=run.repo,
        repo_name=run.repo_name,
        number=run.number,
        is_pull_request=run.is_pull_request,
        title=issue.get("title") or "",
        body=issue.get("body") or "",
        labels=[label["name"] for label in issue.get("labels") or [] if isinstance(label, dict)],
        comments=[] if follow_up else await trusted_comments(gh, permissions, run, app_slug, total),
        requester=prompt.requester,
        instructions=review.instructions if review else "" if ci_fix else prompt.instructions,
        run_id=run.id,
        branch=branch,
        base_branch=base,
        changed_files=files,
        follow_up=follow_up,
        ci_failures=prompt.instructions if ci_fix else "",
        review=await review_context(gh, permissions, run, review) if review else None,
    )


async def review_context(
    gh: GitHubAPI, permissions: PermissionChecker, run: Run, request: ReviewRequest
) -> ReviewContext:
    """Read what a review request points at, as it stood when the request was made."""
    context = ReviewContext(request)
    if request.comment is not None:
        context.thread = await earlier_in_thread(gh, permissions, run, request)
    elif request.review_id is not None:
        url = (
            f"/repos/{run.repo}/pulls/{request.pull_number}/reviews/{request.review_id}"
            f"/comments?per_page={COMMENTS_PER_PAGE}"
        )
        async for data in gh.getiter(url):
            comment = DiffComment.from_github(data)
            if comment.written_by(request.asked_at, REVIEW_STAMP_GRACE):
                context.review_comments.append(comment)
            if len(context.review_comments) >= MAX_REVIEW_COMMENTS:
                break
    return context


async def earlier_in_thread(
    gh: GitHubAPI, permissions: PermissionChecker, run: Run, request: ReviewRequest
) -> list[DiffComment]:
    """The review thread's comments before the request, by people with write access.

    Oldest first; comments written or edited after the request are left out.
    """
    assert request.comment is not None
    trigger, thread = request.comment, request.comment.thread_id
    url = f"/repos/{run.repo}/pulls/{request.pull_number}/comments?per_page={COMMENTS_PER_PAGE}"
    found: deque[DiffComment] = deque(maxlen=MAX_THREAD_COMMENTS)
    read = 0
    async for data in gh.getiter(url):
        comment = DiffComment.from_github(data)
        # Ids grow with time: a comment written after the request has a greater one.
        in_thread = thread in (comment.id, comment.in_reply_to_id) and comment.id < trigger.id
        if in_thread and comment.written_by(request.asked_at):
            found.append(comment)
        read += 1
        if read >= MAX_PULL_COMMENTS_READ:
            break
    kept = []
    for comment in found:
        # Apps (this one's earlier answers among them) are no people with write access.
        if not comment.author.endswith("[bot]") and await permissions.allows(
            gh, run.repo, comment.author
        ):
            kept.append(comment)
    return kept
