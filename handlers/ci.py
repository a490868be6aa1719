"""CI events: failing checks on a linked PR's head commit go back to its box (`auto_fix_ci`).

A check suite of another app is read through its check runs. GitHub Actions suites are left to
`workflow_run`, whose jobs have logs: both name the same commit, and a commit is handled once,
so a redelivery or a second failing suite never counts twice. This app's own suite (the `Box`
and `Box config` checks) never counts at all.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from gidgethub import sansio
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router

from bot.config.loader import ConfigLoader
from bot.config.repo import EffectiveConfig, RepoConfigError
from bot.github.ci_logs import (
    FAILING_CONCLUSIONS,
    GITHUB_ACTIONS_SLUG,
    FailedCheck,
    describe_failures,
    failed_check_runs,
    failed_jobs,
)
from bot.models import Run
from bot.runs.manager import RunManager
from bot.settings import Settings
from bot.store.interface import Store
from bot.store.records import CIFixClaim, CIFixOutcome

log = logging.getLogger(__name__)
router = Router()

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
SENT_NOTICE = (
    "🔁 CI failed on `{sha}`: sent the failures to the box (attempt {attempt} of {limit})."
)
GIVEN_UP_NOTICE = (
    "🛑 CI still failing after {limit} attempts; not sending more. "
    "Comment `/box fix <instructions>` to continue by hand."
)

Gather = Callable[[], Awaitable[list[FailedCheck]]]


@router.register("check_suite", action="completed")
async def on_check_suite_completed(
    event: sansio.Event,
    gh: GitHubAPI,
    *args: Any,
    runs: RunManager,
    config: ConfigLoader,
    store: Store,
    settings: Settings,
    **kwargs: Any,
) -> None:
    """Send the failing check runs of another app's suite to the linked PR's box."""
    suite = event.data["check_suite"]
    app = suite.get("app") or {}
    if str(app.get("id")) == settings.app_id or app.get("slug") == GITHUB_ACTIONS_SLUG:
        return
    if suite.get("conclusion") not in FAILING_CONCLUSIONS:
        return
    repo, sha = event.data["repository"]["full_name"], str(suite["head_sha"])

    async def gather() -> list[FailedCheck]:
        return await failed_check_runs(gh, repo, sha, suite["id"])

    await _send_failures(event.data, sha, runs, store, config, gather)


@router.register("workflow_run", action="completed")
async def on_workflow_run_completed(
    event: sansio.Event,
    gh: GitHubAPI,
    *args: Any,
    runs: RunManager,
    config: ConfigLoader,
    store: Store,
    **kwargs: Any,
) -> None:
    """Send the failing jobs of a workflow run, with their log tails, to the linked PR's box."""
    workflow = event.data["workflow_run"]
    if workflow.get("conclusion") not in FAILING_CONCLUSIONS:
        return
    if _started_by(workflow, f"{runs.app_slug}[bot]"):
        return
    repo, sha = event.data["repository"]["full_name"], str(workflow["head_sha"])

    async def gather() -> list[FailedCheck]:
        return await failed_jobs(gh, repo, workflow["id"])

    await _send_failures(event.data, sha, runs, store, config, gather)


def _started_by(workflow: dict[str, Any], login: str) -> bool:
    actors = (workflow.get(key) or {} for key in ("actor", "triggering_actor"))
    return any(str(actor.get("login", "")).lower() == login.lower() for actor in actors)


async def _send_failures(
    data: dict[str, Any],
    sha: str,
    runs: RunManager,
    store: Store,
    config: ConfigLoader,
    gather: Gather,
) -> None:
    """Queue the failures on *sha* for its run's box, once per commit, within the PR's bound."""
    run = await store.linked_run_at(data["repository"]["id"], sha)
    if run is None or run.pr_number is None or not COMMIT_SHA.fullmatch(sha):
        return
    repo_config = await _auto_fix_config(config, data)
    if repo_config is None:
        return
    limit = repo_config.auto_fix_ci_max_attempts
    handled = await store.ci_fix_attempts(run.repo_id, run.pr_number)
    if sha in handled:
        return
    used = sum(1 for attempt in handled.values() if attempt)
    failed = await gather() if used < limit else []
    if used < limit and not failed:
        log.info("run %s: CI on %s failed without a failing check to show", run.id, sha[:7])
        return
    report = describe_failures(sha, failed)
    claim = await runs.queue_ci_fix(run, run.pr_number, sha, report, limit)
    await _announce(runs, run, claim, sha, limit)


async def _auto_fix_config(config: ConfigLoader, data: dict[str, Any]) -> EffectiveConfig | None:
    """The repository's config when it turns `auto_fix_ci` on; None otherwise."""
    repo = data["repository"]
    try:
        loaded = await config.load(
            data["installation"]["id"], repo["full_name"], repo["default_branch"]
        )
    except RepoConfigError as exc:
        log.info("%s: invalid .github/box.yml (%d problems)", repo["full_name"], len(exc.problems))
        return None
    return loaded if loaded.auto_fix_ci_enabled else None


async def _announce(runs: RunManager, run: Run, claim: CIFixClaim, sha: str, limit: int) -> None:
    """Say on the tracking comment what became of the failure (nothing for a repeat)."""
    if claim.outcome is CIFixOutcome.QUEUED:
        notice = SENT_NOTICE.format(sha=sha[:7], attempt=claim.attempt, limit=limit)
    elif claim.outcome is CIFixOutcome.LIMIT_REACHED:
        notice = GIVEN_UP_NOTICE.format(limit=limit)
    else:
        return
    log.info("run %s: %s", run.id, notice)
    await runs.announce(run, notice)
