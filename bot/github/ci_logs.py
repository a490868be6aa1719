"""Failing CI on a commit: which checks failed and the tails of their logs, bounded for a prompt.

A check suite of another app is read through its check runs, whose output stands in for a
log; a GitHub Actions workflow run through its failed jobs and their logs.
https://docs.github.com/rest/checks/runs, https://docs.github.com/rest/actions/workflow-jobs
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

log = logging.getLogger(__name__)

FAILING_CONCLUSIONS = frozenset({"failure", "timed_out"})
GITHUB_ACTIONS_SLUG = "github-actions"
TAIL_LINES = 100
TAIL_BYTES = 8 * 1024
MAX_CHECKS = 10
MAX_NAME_CHARS = 100
MAX_REPORT_CHARS = 24_000
# Room for the report's header line, section headings and the "more checks" line.
REPORT_OVERHEAD = 3_000

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
# GitHub Actions starts every log line with an ISO 8601 timestamp.
LOG_TIMESTAMP = re.compile(r"^\ufeff?\d{4}-\d\d-\d\dT[\d:.]+Z ", re.M)

REPORT_HEADER = "CI failed on commit {sha}. Failing checks: {names}."
CHECK_SECTION = "### {name} ({conclusion})\n\nThe last lines of its log:\n\n{log}"
NO_LOG = "(no log could be read)"
MORE_CHECKS = "({count} more failing checks are not shown.)"


@dataclass(frozen=True)
class FailedCheck:
    """A check run or job that failed, with the tail of its log ("" when not read)."""

    name: str
    conclusion: str
    log_tail: str = ""


def log_tail(text: str, lines: int = TAIL_LINES, limit: int = TAIL_BYTES) -> str:
    """Return the last *lines* whole lines of *text*, at most *limit* bytes, without colours."""
    text = LOG_TIMESTAMP.sub("", ANSI_ESCAPE.sub("", text.replace("\r\n", "\n")))
    raw = "\n".join(text.rstrip().split("\n")[-lines:]).encode()
    if len(raw) > limit:
        raw = raw[-limit:]
        raw = raw[raw.find(b"\n") + 1 :]  # start at a whole line, when there is one
    return raw.decode("utf-8", "ignore")


async def failed_check_runs(gh: GitHubAPI, repo: str, sha: str, suite_id: int) -> list[FailedCheck]:
    """Return the failing check runs of one check suite on *sha*."""
    failed: list[FailedCheck] = []
    url = f"/repos/{repo}/commits/{sha}/check-runs?per_page=100"
    async for check in gh.getiter(url, iterable_key="check_runs"):
        suite = check.get("check_suite") or {}
        if suite.get("id") != suite_id or check.get("conclusion") not in FAILING_CONCLUSIONS:
            continue
        output = check.get("output") or {}
        text = "\n\n".join(str(output[k]) for k in ("title", "summary", "text") if output.get(k))
        failed.append(FailedCheck(str(check.get("name")), check["conclusion"], log_tail(text)))
    return failed


async def failed_jobs(gh: GitHubAPI, repo: str, run_id: int) -> list[FailedCheck]:
    """Return the failing jobs of a workflow run, with the log tails of the first few."""
    failed: list[FailedCheck] = []
    url = f"/repos/{repo}/actions/runs/{run_id}/jobs?per_page=100"
    async for job in gh.getiter(url, iterable_key="jobs"):
        if job.get("conclusion") not in FAILING_CONCLUSIONS:
            continue
        tail = await _job_log_tail(gh, repo, job["id"]) if len(failed) < MAX_CHECKS else ""
        failed.append(FailedCheck(str(job.get("name")), job["conclusion"], tail))
    return failed


async def _job_log_tail(gh: GitHubAPI, repo: str, job_id: int) -> str:
    """Read a job's log: GitHub answers 302 with a short-lived URL, which the client follows."""
    try:
        text: Any = await gh.getitem(f"/repos/{repo}/actions/jobs/{job_id}/logs")
    except (gidgethub.GitHubException, UnicodeDecodeError) as exc:
        log.warning("could not read the log of job %s on %s: %s", job_id, repo, exc)
        return ""
    return log_tail(text) if isinstance(text, str) else ""


def describe_failures(sha: str, failed: list[FailedCheck]) -> str:
    """Return what the box is told: each failing check with its log tail, in bounded size."""
    shown = failed[:MAX_CHECKS]
    share = (MAX_REPORT_CHARS - REPORT_OVERHEAD) // max(1, len(shown))
    names = ", ".join(_name(check) for check in shown)
    parts = [REPORT_HEADER.format(sha=sha, names=names)]
    for check in shown:
        tail = check.log_tail[-share:] if check.log_tail.strip() else NO_LOG
        parts.append(CHECK_SECTION.format(name=_name(check), conclusion=check.conclusion, log=tail))
    if len(failed) > len(shown):
        parts.append(MORE_CHECKS.format(count=len(failed) - len(shown)))
    return "\n\n".join(parts)[:MAX_REPORT_CHARS]


def _name(check: FailedCheck) -> str:
    name = " ".join(check.name.split())
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"
