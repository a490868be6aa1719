"""Who may trigger work: the collaborator permission API, its short cache, and failing closed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from gidgethub.abc import GitHubAPI

from bot.github.client import GitHubAppAuth
from bot.github.permissions import CACHE_SECONDS, PermissionChecker
from bot.runs.render import permission_denied
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from tests.conftest import INSTALLATION_ID, REPO, RunningApp
from tests.flow import bot_comments, commented

ISSUE = 31
DEVELOPER = "dev-with-write"
PERMISSION_PATH = rf"/repos/{REPO}/collaborators/{DEVELOPER}/permission$"
# Longer than the permission check waits, much shorter than the client's own timeout.
SLOW_ANSWER_SECONDS = 10.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def gh(github_sim: GitHubSimulator) -> AsyncIterator[GitHubAPI]:
    """A real installation client talking to the GitHub simulator."""
    async with aiohttp.ClientSession() as session:
        auth = GitHubAppAuth(
            session,
            app_id="321",
            private_key=github_sim.private_key_pem,
            base_url=github_sim.base_url,
            write_interval=0.0,
        )
        yield auth.installation_client(INSTALLATION_ID)


def permission_calls(github_sim: GitHubSimulator) -> int:
    return len(github_sim.calls_to("GET", PERMISSION_PATH))


# -- end to end -----------------------------------------------------------------------------


async def ask_for_a_fix(app: RunningApp, github_sim: GitHubSimulator, *, timeout: float) -> None:
    """Post `/box fix` from a developer with write access and wait until it is handled."""
    github_sim.add_issue(REPO, ISSUE, title="Broken build", body="It fails.")
    github_sim.set_permission(REPO, DEVELOPER, "write")
    await app.post(
        "issue_comment", commented(ISSUE, "/box fix", sender=DEVELOPER), delivery_id="asked"
    )
    await app.wait_for("asked", timeout=timeout)


def assert_denied_without_spending(github_sim: GitHubSimulator, box_sim: BoxSimulator) -> None:
    assert box_sim.requests == []
    assert [c["body"] for c in bot_comments(github_sim, ISSUE)] == [permission_denied(DEVELOPER)]
    assert github_sim.calls_to("POST", r"/reactions$") == []


@pytest.mark.parametrize("status", [404, 403, 500])
async def test_permission_error_denies_after_one_attempt(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, status: int
) -> None:
    # A 403 that is not a rate limit (a rate limit is asked again later: test_github_limits).
    body = {"message": "Resource not accessible by integration"} if status == 403 else None
    github_sim.inject_fault("GET", PERMISSION_PATH, status=status, times=3, body=body)
    await ask_for_a_fix(app, github_sim, timeout=5.0)
    assert_denied_without_spending(github_sim, box_sim)
    assert [call.status for call in github_sim.calls_to("GET", PERMISSION_PATH)] == [status]


async def test_permission_timeout_denies_before_the_client_gives_up(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.inject_fault("GET", PERMISSION_PATH, status=None, delay=SLOW_ANSWER_SECONDS)
    # The client's own timeout is 30 s; the permission check gives up long before.
    await ask_for_a_fix(app, github_sim, timeout=SLOW_ANSWER_SECONDS - 2)
    assert_denied_without_spending(github_sim, box_sim)


async def test_writer_is_allowed_once_github_answers(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.add_issue(REPO, ISSUE, title="Broken build", body="It fails.")
    github_sim.set_permission(REPO, DEVELOPER, "write")
    await app.post(
        "issue_comment", commented(ISSUE, "/box status", sender=DEVELOPER), delivery_id="asked"
    )
    await app.wait_for("asked")
    [reply] = bot_comments(github_sim, ISSUE)
    assert reply["body"] != permission_denied(DEVELOPER)
    assert len(github_sim.calls_to("POST", r"/reactions$")) == 1


# -- the cache ------------------------------------------------------------------------------


async def test_answer_is_cached_for_a_minute(gh: GitHubAPI, github_sim: GitHubSimulator) -> None:
    github_sim.set_permission(REPO, DEVELOPER, "write")
    clock = Clock()
    checker = PermissionChecker(clock=clock)
    assert await checker.allows(gh, REPO, DEVELOPER)
    clock.now += CACHE_SECONDS - 1
    github_sim.set_permission(REPO, DEVELOPER, "read")
    assert await checker.allows(gh, REPO, DEVELOPER)
    assert await checker.allows(gh, REPO.upper(), DEVELOPER.upper())
    assert permission_calls(github_sim) == 1
    clock.now += 2
    assert not await checker.allows(gh, REPO, DEVELOPER)
    assert permission_calls(github_sim) == 2


async def test_failure_is_never_cached(gh: GitHubAPI, github_sim: GitHubSimulator) -> None:
    github_sim.set_permission(REPO, DEVELOPER, "write")
    checker = PermissionChecker(clock=Clock())
    github_sim.inject_fault("GET", PERMISSION_PATH, status=502)
    assert not await checker.allows(gh, REPO, DEVELOPER)
    assert await checker.allows(gh, REPO, DEVELOPER)
    assert permission_calls(github_sim) == 2


async def test_each_repository_and_login_is_asked_for_separately(
    gh: GitHubAPI, github_sim: GitHubSimulator
) -> None:
    github_sim.set_permission(REPO, DEVELOPER, "write")
    github_sim.set_permission(REPO, "reader", "read")
    checker = PermissionChecker(clock=Clock())
    assert await checker.allows(gh, REPO, DEVELOPER)
    assert not await checker.allows(gh, REPO, "reader")
    assert await checker.level(gh, REPO, "reader") == ("read", "read")
    assert len(github_sim.calls_to("GET", r"/collaborators/[^/]+/permission$")) == 2


async def test_minimum_permission_is_applied_to_the_cached_answer(
    gh: GitHubAPI, github_sim: GitHubSimulator
) -> None:
    github_sim.set_permission(REPO, DEVELOPER, "write")
    checker = PermissionChecker(clock=Clock())
    assert await checker.allows(gh, REPO, DEVELOPER, "write")
    assert not await checker.allows(gh, REPO, DEVELOPER, "maintain")
    assert not await checker.allows(gh, REPO, DEVELOPER, "admin")
    assert permission_calls(github_sim) == 1
