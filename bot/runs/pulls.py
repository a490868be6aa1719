"""A run's pull request: tying it to the run, and keeping the run's `Box` check on its head."""

from __future__ import annotations

import logging

import gidgethub

from bot.github.client import GitHubAppAuth
from bot.models import Run, RunState
from bot.runs.record import RunRecord, settled_conclusion

log = logging.getLogger(__name__)

BEFORE_WORK = frozenset({RunState.REQUESTED, RunState.PROVISIONING, RunState.PROMPTING})


class PullRequests:
    """Links pull requests to runs and gives each prompt's work its check on the head commit."""

    def __init__(self, auth: GitHubAppAuth, record: RunRecord) -> None:
        self.auth = auth
        self.record = record

    async def link(self, run: Run, pr_number: int, head_sha: str) -> Run:
        """Tie a pull request to its run: its own tracking comment, and a check on its head."""
        record = self.record
        async with record.lock(run.id):
            current = await record.store.get_run(run.id) or run
            if current.pr_number != pr_number:
                current = await record.save(current, pr_number=pr_number)
                current = await record.tracker.ensure_pr_comment(
                    current, await record.render(current)
                )
                await record.show(current, final=True)
                log.info("run %s: linked to pull request #%s", run.id, pr_number)
            if head_sha != current.head_sha:
                current = await self._new_head(current, head_sha)
            return current

    async def _new_head(self, run: Run, head_sha: str) -> Run:
        """Give a new head commit its check (call with the run's lock held).

        While a prompt runs (WORKING) its check is open: it moves to the new commit. Before
        the prompt is sent, the check is started when it is. After the work, a pull request
        that has no check yet gets one that is completed at once.
        """
        record, checks = self.record, self.record.checks
        if run.state is RunState.WORKING:
            if run.check_run_id is not None:
                superseded = (
                    "Superseded",
                    f"A newer commit ({head_sha[:7]}) has its own check.",
                    "",
                )
                await checks.complete(run, "neutral", superseded)
            run = await record.save(run, head_sha=head_sha, check_run_id=None)
            return await self.open_check(run)
        if run.state in BEFORE_WORK or run.check_run_id is not None:
            return await record.save(run, head_sha=head_sha)
        check_id = await checks.start(run, head_sha, record.check_output(run))
        run = await record.save(run, head_sha=head_sha, check_run_id=check_id)
        await checks.complete(run, settled_conclusion(run), record.check_output(run))
        return run

    async def open_check(self, run: Run) -> Run:
        """Start the check of the prompt run now working, on the head commit, once."""
        if run.state is not RunState.WORKING or run.head_sha is None or run.check_run_id:
            return run
        check_id = await self.record.checks.start(run, run.head_sha, self.record.check_output(run))
        return await self.record.save(run, check_run_id=check_id)

    async def head_of(self, run: Run) -> str | None:
        """The head commit of the pull request a run was asked on (None if GitHub won't say)."""
        gh = self.auth.installation_client(run.installation_id)
        try:
            pull = await gh.getitem(f"/repos/{run.repo}/pulls/{run.number}")
        except (gidgethub.GitHubException, OSError, TimeoutError) as exc:
            log.warning("run %s: head of pull request #%s unknown: %s", run.id, run.number, exc)
            return None
        sha = (pull.get("head") or {}).get("sha")
        return sha if isinstance(sha, str) and sha else None
