"""The `Box` check run on a pull request's head commit.

Its buttons follow the run's state (Stop while the agent works, Archive while the box is
up, none once it is archived or failed), and its details link is the tracking comment.
https://docs.github.com/en/rest/checks/runs
A check never fails its run: when GitHub cannot create it now, it is created on a later
update (or completed straight away at the end), and every creation first looks for the
run's check on the commit, so a POST whose answer was lost never gives a second one.
Updates and completions go through the installation's outbox, newest version only.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import gidgethub

from bot.github.budget import InstallationPaused
from bot.github.client import GitHubAppAuth
from bot.github.outbox import Edit, Outbox
from bot.models import Run, RunState
from bot.store.interface import Store

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
UNAVAILABLE = (gidgethub.GitHubBroken, aiohttp.ClientError, OSError, TimeoutError)


class Checks:
    """Creates and updates a run's check runs."""

    def __init__(self, auth: GitHubAppAuth, store: Store, outbox: Outbox | None = None) -> None:
        self.auth = auth
        self.store = store
        self.outbox = outbox or Outbox(auth)
        self._unmade: dict[str, str] = {}  # run id -> head commit whose check GitHub refused

    async def start(self, run: Run, head_sha: str, output: tuple[str, str, str]) -> int | None:
        """Create an in-progress `Box` check run on *head_sha*; return its id.

        None when GitHub cannot take it now: a later update creates it.
        """
        try:
            return await self._create(run, head_sha, _in_progress(run, output), look_first=False)
        except (*UNAVAILABLE, gidgethub.BadRequest, InstallationPaused) as exc:
            log.warning("run %s: the check run cannot be created yet: %s", run.id, exc)
            self._unmade[run.id] = head_sha
            return None

    async def update(self, run: Run, output: tuple[str, str, str]) -> None:
        """Refresh the check run's story and buttons (creating it first if GitHub refused it
        before)."""
        if run.check_run_id is None:
            await self._make_late(run, _in_progress(run, output))
            return
        working = run.state is RunState.WORKING
        data = {"output": _output(output), "actions": actions(run, working), **_details(run)}
        await self._queue(run, run.check_run_id, data, final=False)

    async def complete(
        self,
        run: Run,
        conclusion: str,
        output: tuple[str, str, str],
        check_run_id: int | None = None,
    ) -> None:
        """Mark the check run completed with *conclusion*."""
        data: dict[str, Any] = {
            "status": "completed",
            "conclusion": conclusion,
            "output": _output(output),
            "actions": actions(run, working=False),
            **_details(run),
        }
        target = check_run_id or run.check_run_id
        if target is None:
            await self._make_late(run, data)
            return
        await self._queue(run, target, data, final=True)

    async def _make_late(self, run: Run, data: dict[str, Any]) -> None:
        """Create the check GitHub refused earlier, as it stands now."""
        head_sha = self._unmade.get(run.id)
        if head_sha is None or head_sha != run.head_sha:
            return
        try:
            check_id = await self._create(run, head_sha, data, look_first=True)
        except (*UNAVAILABLE, gidgethub.BadRequest, InstallationPaused) as exc:
            log.warning("run %s: the check run still cannot be created: %s", run.id, exc)
            return
        del self._unmade[run.id]
        await self.store.update_run(run.id, check_run_id=check_id)
        if data.get("status") == "completed":
            await self._queue(run, check_id, data, final=True)  # an adopted check was open

    async def _create(
        self, run: Run, head_sha: str, data: dict[str, Any], *, look_first: bool
    ) -> int:
        """POST the run's check on *head_sha*; on a retry, or after an answer was lost, adopt
        the one GitHub may have made already."""
        if look_first and (found := await self._find(run, head_sha)) is not None:
            return found
        gh = self.auth.installation_client(run.installation_id)
        body = {"name": CHECK_NAME, "head_sha": head_sha, "external_id": run.id, **data}
        try:
            created = await gh.post(f"/repos/{run.repo}/check-runs", data=body)
        except UNAVAILABLE:
            if (found := await self._find(run, head_sha)) is not None:
                log.info("run %s: its check run %s was created after all", run.id, found)
                return found
            raise
        return int(created["id"])

    async def _find(self, run: Run, head_sha: str) -> int | None:
        """The run's open `Box` check on *head_sha*, if GitHub has one."""
        gh = self.auth.installation_client(run.installation_id)
        async for check in gh.getiter(
            f"/repos/{run.repo}/commits/{head_sha}/check-runs"
            f"?check_name={CHECK_NAME}&filter=all&per_page=100",
            iterable_key="check_runs",
        ):
            if check.get("external_id") == run.id and check.get("status") != "completed":
                return int(check["id"])
        return None

    async def _queue(self, run: Run, check_id: int, data: dict[str, Any], *, final: bool) -> None:
        await self.outbox.send(
            run.installation_id,
            Edit(
                key=f"check:{check_id}",
                path=f"/repos/{run.repo}/check-runs/{check_id}",
                data=data,
                final=final,
            ),
        )


def _in_progress(run: Run, output: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "status": "in_progress",
        "output": _output(output),
        "actions": actions(run, working=True),
        **_details(run),
    }


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
