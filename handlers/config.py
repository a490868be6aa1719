"""Repository configuration: a `Box config` check on pull requests that change `.github/box.yml`,
and a fresh read of the file after a push to the default branch changes it.

The PR's copy is read at its head commit to validate it, and for nothing else: runs only
ever use the file on the default branch.
"""

from __future__ import annotations

import logging
from typing import Any

import gidgethub
from gidgethub import sansio
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router

from bot.config.loader import ConfigLoader
from bot.config.repo import CONFIG_PATH, ConfigProblem, RepoConfigError, format_problems

log = logging.getLogger(__name__)
router = Router()

CONFIG_CHECK_NAME = "Box config"
# https://docs.github.com/rest/checks/runs#create-a-check-run: at most 50 annotations a request.
MAX_ANNOTATIONS = 50
MAX_LISTED_PROBLEMS = 100
VALID_TITLE = "`.github/box.yml` is valid"
VALID_SUMMARY = (
    "The `.github/box.yml` in this pull request is valid. It takes effect once it is on the "
    "default branch."
)
REMOVED_TITLE = "`.github/box.yml` is removed"
REMOVED_SUMMARY = (
    "This pull request removes `.github/box.yml`. Once merged, the organisation's file (if any) "
    "and the operator's defaults apply."
)
INVALID_TITLE = "`.github/box.yml` has {count} problem{s}"
INVALID_SUMMARY = (
    "Once this is on the default branch, no box starts until these are fixed:\n\n{problems}"
)
MORE_PROBLEMS = "\n- …and {count} more."
# https://docs.github.com/webhooks/webhook-events-and-payloads#push: at most 2048 commits listed.
MAX_PUSH_COMMITS = 2048


@router.register("pull_request", action="opened")
@router.register("pull_request", action="reopened")
@router.register("pull_request", action="synchronize")
async def on_pull_request_changed(
    event: sansio.Event, gh: GitHubAPI, *args: Any, config: ConfigLoader, **kwargs: Any
) -> None:
    """Validate the PR's `.github/box.yml` in a `Box config` check when the PR changes it."""
    repo, pull = event.data["repository"]["full_name"], event.data["pull_request"]
    change = await _config_change(gh, repo, pull["number"])
    if change is None:
        return
    sha = pull["head"]["sha"]
    if change == "removed":
        output = {"title": REMOVED_TITLE, "summary": REMOVED_SUMMARY}
        await _post_check(gh, repo, sha, "success", output)
        return
    problems = await _problems_at(config, event.data["installation"]["id"], repo, sha)
    conclusion = "failure" if problems else "success"
    await _post_check(gh, repo, sha, conclusion, _check_output(problems))
    log.info("%s#%s: Box config %s on %s", repo, pull["number"], conclusion, sha[:7])


async def _config_change(gh: GitHubAPI, repo: str, number: int) -> str | None:
    """Return how a PR changes `.github/box.yml` (`removed` or another status), or None."""
    # GitHub lists at most 3000 files: https://docs.github.com/rest/pulls/pulls#list-pull-requests-files
    try:
        async for entry in gh.getiter(f"/repos/{repo}/pulls/{number}/files?per_page=100"):
            if entry.get("filename") == CONFIG_PATH:
                return str(entry.get("status") or "modified")
            if entry.get("previous_filename") == CONFIG_PATH:
                return "removed"  # renamed away
    except gidgethub.BadRequest as exc:
        if exc.status_code != 404:
            raise
        log.info("%s#%s is gone; nothing to validate", repo, number)
    return None


async def _problems_at(
    config: ConfigLoader, installation_id: int, repo: str, sha: str
) -> list[ConfigProblem]:
    try:
        await config.load(installation_id, repo, sha)
    except RepoConfigError as exc:
        return exc.problems
    return []


def _check_output(problems: list[ConfigProblem]) -> dict[str, Any]:
    if not problems:
        return {"title": VALID_TITLE, "summary": VALID_SUMMARY}
    listed = format_problems(problems[:MAX_LISTED_PROBLEMS])
    if len(problems) > MAX_LISTED_PROBLEMS:
        listed += MORE_PROBLEMS.format(count=len(problems) - MAX_LISTED_PROBLEMS)
    return {
        "title": INVALID_TITLE.format(count=len(problems), s="" if len(problems) == 1 else "s"),
        "summary": INVALID_SUMMARY.format(problems=listed),
        "annotations": [_annotation(p) for p in problems if p.source == CONFIG_PATH][
            :MAX_ANNOTATIONS
        ],
    }


def _annotation(problem: ConfigProblem) -> dict[str, Any]:
    line = problem.line or 1
    return {
        "path": CONFIG_PATH,
        "start_line": line,
        "end_line": line,
        "annotation_level": "failure",
        "title": CONFIG_CHECK_NAME,
        "message": problem.message,
    }


async def _post_check(
    gh: GitHubAPI, repo: str, sha: str, conclusion: str, output: dict[str, Any]
) -> None:
    await gh.post(
        f"/repos/{repo}/check-runs",
        data={
            "name": CONFIG_CHECK_NAME,
            "head_sha": sha,
            "status": "completed",
            "conclusion": conclusion,
            "output": output,
        },
    )


@router.register("push")
async def on_push(
    event: sansio.Event, gh: GitHubAPI, *args: Any, config: ConfigLoader, **kwargs: Any
) -> None:
    """Forget the cached config of a repository whose default branch changed its file."""
    repo = event.data["repository"]
    if event.data.get("ref") != f"refs/heads/{repo['default_branch']}":
        return
    if not _touches_config(event.data):
        return
    config.forget(repo["full_name"])
    log.info(
        "%s: .github/box.yml changed on %s; cached copy dropped",
        repo["full_name"],
        repo["default_branch"],
    )


def _touches_config(push: dict[str, Any]) -> bool:
    """Whether a push changed `.github/box.yml`; a forced push or a long one may have."""
    commits = push.get("commits") or []
    if push.get("forced") or len(commits) >= MAX_PUSH_COMMITS:
        return True
    return any(
        CONFIG_PATH in (commit.get(kind) or [])
        for commit in commits
        for kind in ("added", "modified", "removed")
    )
