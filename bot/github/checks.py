"""The `Box` check run on a pull request's head commit.

Its buttons follow the run's state (Stop while the agent works, Archive while the box is
up, none once it is archived or failed), and its details link is the tracking comment.
https://docs.github.com/en/rest/checks/runs
"""

from __future__ import annotations

import logging

import gidgethub

from bot.github.client import GitHubAppAuth
from bot.models import Run, RunState

log = logging.getLogger(__name__)

CHECK_NAME = "Box"
# GitHub allows three actions; label ≤ 20, description ≤ 40, identifier ≤ 20 characters.
STOP = {"label": "Stop", "description": "Interrupt the agent's current work", "identifier": "stop"}
ARCHIVE = {
    "label": "Archive box",
    "description": "Stop and archive the box",
    "identifier": "archive",
}
CONCLUSIONS = {"finished": "success", "failed": "failure", "interrupted": "cancelled"}


class Checks:
    """Creates and updates a run's check runs."""

    def __init__(self, auth: GitHubAppAuth) -> None:
        self.auth = auth

    async def start(self, run: Run, head_sha: str, output: tuple[str, str, str]) -> int:
        """Create an in-progress `Box` check run on *head_sha*; return its id."""
        gh = self.auth.installation_client(run.installation_id)
        created = await gh.post(
            f"/repos/{run.repo}/check-runs",
            data={
                "name": CHECK_NAME,
                "head_sha": head_sha,
                "status": "in_progress",
                "external_id": run.id,
                "output": _output(output),
                "actions": actions(run, working=True),
                **_details(run),
            },
        )
        return int(created["id"])

    async def update(self, run: Run, output: tuple[str, str, str]) -> None:
        """Refresh the check run's story and buttons; failures are logged and retried on the
        next update."""
        if run.check_run_id is None:
            return
        working = run.state is RunState.WORKING
        await self._patch(
            run, {"output": _output(output), "actions": actions(run, working), **_details(run)}
        )

    async def complete(
        self,
        run: Run,
        conclusion: str,
        output: tuple[str, str, str],
        check_run_id: int | None = None,
    ) -> None:
        """Mark the check run completed with *conclusion*."""
        target = check_run_id or run.check_run_id
        if target is None:
            return
        await self._patch(
            run,
            {
                "status": "completed",
                "conclusion": conclusion,
                "output": _output(output),
                "actions": actions(run, working=False),
                **_details(run),
            },
            target,
        )

    async def _patch(self, run: Run, data: dict[str, object], target: int | None = None) -> None:
        gh = self.auth.installation_client(run.installation_id)
        check_id = target or run.check_run_id
        try:
            await gh.patch(f"/repos/{run.repo}/check-runs/{check_id}", data=data)
        except (gidgethub.GitHubException, OSError, TimeoutError) as exc:
            log.warning("run %s: could not update check run %s: %s", run.id, check_id, exc)


def actions(run: Run, working: bool) -> list[dict[str, str]]:
    """The buttons that make sense now: none once the box is archived or the run failed."""
    if not run.state.active:
        return []
    return [STOP, ARCHIVE] if working and run.state is RunState.WORKING else [ARCHIVE]


def details_url(run: Run) -> str | None:
    """The web address of the run's tracking comment, where the check's details are."""
    if run.comment_id is None:
        return None
    return f"https://github.com/{run.repo}/issues/{run.number}#issuecomment-{run.comment_id}"


def _details(run: Run) -> dict[str, str]:
    url = details_url(run)
    return {"details_url": url} if url else {}


def _output(output: tuple[str, str, str]) -> dict[str, str]:
    title, summary, text = output
    return {"title": title, "summary": summary, "text": text}
