"""Repository configuration and spending limits through the real app."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from bot.models import RunState
from bot.runs.render import permission_denied
from bot.settings import Settings
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Say, Wait
from bot.sim.github import GitHubSimulator
from handlers.common import NOT_ON_THE_LIST
from tests.conftest import REPO, AppFactory, RunningApp, fast_options
from tests.flow import bot_comments, commented, labeled, wait_for_run, wait_until

ISSUE = 41


def issue(github: GitHubSimulator, number: int = ISSUE) -> dict[str, Any]:
    return github.add_issue(REPO, number, title=f"Issue {number}", body="Please fix.")


def prompts(box_sim: BoxSimulator) -> list[dict[str, Any]]:
    return [r.json for r in box_sim.requests_to("POST", r"/boxes/[^/]+/prompt$")]


# -- .github/box.yml ------------------------------------------------------------------------


async def test_repo_config_wins_over_org_over_environment(
    start_app: AppFactory,
    settings: Settings,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
) -> None:
    github_sim.add_repo("Codertocat/.github", installation_id=4242)
    github_sim.set_file(
        "Codertocat/.github",
        ".github/box.yml",
        "provider: claude-code\nmodel: opus\ninstructions: Org rule.\n",
    )
    github_sim.set_file(
        REPO, ".github/box.yml", "model: sonnet\nreasoning_effort: low\nprompt_file: AGENTS.md\n"
    )
    github_sim.set_file(REPO, "AGENTS.md", "Run `make check` before committing.")
    issue(github_sim)
    app = await start_app(replace(settings, box_provider="codex", box_model="gpt-5.4"))
    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE)
    [sent] = prompts(box_sim)
    assert (sent["provider"], sent["model"], sent["reasoningEffort"]) == (
        "claude-code",
        "sonnet",
        "low",
    )
    assert "Org rule." in sent["prompt"]
    assert "Run `make check` before committing." in sent["prompt"]


async def test_fix_command_uses_the_repository_config(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(
        REPO,
        ".github/box.yml",
        "provider: claude-code\nmodel: haiku\ninstructions: Say which tests you ran.\n",
    )
    issue(github_sim)
    await app.post("issue_comment", commented(ISSUE, "/box fix the typo"))
    await wait_for_run(app, ISSUE, RunState.IDLE)
    [sent] = prompts(box_sim)
    assert (sent["provider"], sent["model"]) == ("claude-code", "haiku")
    assert "Say which tests you ran." in sent["prompt"]


async def test_repository_instructions_reach_every_prompt_and_draft_pr_the_first(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(
        REPO, ".github/box.yml", "instructions: Always add a XYZZY-3 test.\ndraft_pr: true\n"
    )
    issue(github_sim)
    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE)
    await app.post("issue_comment", commented(ISSUE, "/box fix also handle empty input"))
    await wait_until(lambda: len(prompts(box_sim)) == 2)
    first, follow_up = (p["prompt"] for p in prompts(box_sim))
    assert "Always add a XYZZY-3 test." in first and "as a draft" in first
    assert "Always add a XYZZY-3 test." in follow_up and "also handle empty input" in follow_up


async def test_invalid_config_is_reported_with_lines_and_starts_nothing(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "label: box:fix\nmodle: opus\nttl_minutes: soon\n")
    issue(github_sim)
    await app.post("issues", labeled(ISSUE), delivery_id="bad-config")
    await app.wait_for("bad-config")
    assert box_sim.requests == []
    [comment] = bot_comments(github_sim, ISSUE)
    assert "line 2" in comment["body"] and "`model`" in comment["body"]
    assert "line 3" in comment["body"] and "ttl_minutes" in comment["body"]
    # A label that is clearly not ours does not repeat the report.
    await app.post("issues", labeled(ISSUE, label="bug"), delivery_id="other-label")
    await app.wait_for("other-label")
    assert len(bot_comments(github_sim, ISSUE)) == 1


async def test_repo_label_and_user_lists(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(
        REPO, ".github/box.yml", "label: agent-please\ndenied_users: [Codertocat]\n"
    )
    github_sim.set_permission(REPO, "trusted-dev", "write")
    issue(github_sim)
    await app.post("issues", labeled(ISSUE), delivery_id="default-label")
    await app.wait_for("default-label")
    await app.post("issues", labeled(ISSUE, label="agent-please"), delivery_id="denied")
    await app.wait_for("denied")
    assert box_sim.requests == []
    [refusal] = bot_comments(github_sim, ISSUE)
    assert "@Codertocat" in refusal["body"]
    await app.post("issues", labeled(ISSUE, label="agent-please", sender="trusted-dev"))
    await wait_for_run(app, ISSUE, RunState.IDLE)
    assert len(prompts(box_sim)) == 1


async def test_allowed_users_let_only_those_listed_start_a_box(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "allowed_users: [trusted-dev]\n")
    github_sim.set_permission(REPO, "trusted-dev", "write")
    issue(github_sim)
    # An admin who is not on the list is refused before GitHub is even asked.
    await app.post("issues", labeled(ISSUE), delivery_id="admin")
    await app.wait_for("admin")
    assert box_sim.requests == []
    assert github_sim.calls_to("GET", r"/collaborators/Codertocat/permission$") == []
    [refusal] = bot_comments(github_sim, ISSUE)
    assert refusal["body"] == NOT_ON_THE_LIST.format(login="Codertocat")
    await app.post(
        "issue_comment", commented(ISSUE, "/box fix", sender="trusted-dev"), delivery_id="listed"
    )
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    assert run.requester == "trusted-dev"
    assert len(prompts(box_sim)) == 1


async def test_listed_user_still_needs_write_access(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "allowed_users: [listed-reader]\n")
    github_sim.set_permission(REPO, "listed-reader", "read")
    issue(github_sim)
    await app.post(
        "issue_comment", commented(ISSUE, "/box fix", sender="listed-reader"), delivery_id="reader"
    )
    await app.wait_for("reader")
    assert box_sim.requests == []
    [refusal] = bot_comments(github_sim, ISSUE)
    assert refusal["body"] == permission_denied("listed-reader")


async def test_ttl_minutes_reaches_the_box_create_request(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "ttl_minutes: 15\n")
    issue(github_sim)
    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE)
    [create] = box_sim.requests_to("POST", r"/boxes$")
    assert create.json["ttlSeconds"] == 15 * 60


async def test_minimum_permission_from_config(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "permission: maintain\n")
    github_sim.set_permission(REPO, "writer", "write")
    issue(github_sim)
    await app.post(
        "issue_comment", commented(ISSUE, "/box fix", sender="writer"), delivery_id="writer"
    )
    await app.wait_for("writer")
    assert box_sim.requests == []
    [reply] = bot_comments(github_sim, ISSUE)
    assert reply["body"] == permission_denied("writer", "maintain")
    assert reply["body"].startswith("@writer only people with maintain or admin permission")


# -- limits -------------------------------------------------------------------------------------


async def test_concurrent_requests_never_exceed_the_active_limit(
    start_app: AppFactory,
    settings: Settings,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
) -> None:
    box_sim.scripts["long"] = [Say("Working."), Wait(30.0)]
    box_sim.default_script = "long"
    numbers = range(100, 120)
    for number in numbers:
        issue(github_sim, number)
    options = fast_options()
    options.worker = replace(options.worker, concurrency=20)
    app = await start_app(replace(settings, max_active=3), options)
    await asyncio.gather(*(app.post("issues", labeled(n)) for n in numbers))

    async def settled() -> bool:
        counts = await app.components.store.count_runs()
        return counts.get("failed", 0) + counts.get("working", 0) == 20

    await wait_until(settled, timeout=15)
    assert len(box_sim.requests_to("POST", r"/boxes$")) == 3
    counts = await app.components.store.count_runs()
    assert counts == {"working": 3, "failed": 17}
    failed = [await app.components.store.latest_run(186853002, n) for n in numbers]
    notices = {run.notice for run in failed if run is not None and run.notice}
    assert len(notices) == 1
    [notice] = notices
    assert "limit of 3 active boxes across all installations" in notice
    assert "`BOX_MAX_ACTIVE`" in notice and "frees up when" in notice


async def test_ended_run_releases_its_reservation(
    start_app: AppFactory,
    settings: Settings,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
) -> None:
    issue(github_sim, 51)
    issue(github_sim, 52)
    app = await start_app(replace(settings, max_active_per_repo=1))
    await app.post("issues", labeled(51))
    first = await wait_for_run(app, 51, RunState.IDLE)
    await app.post("issues", labeled(52))
    blocked = await wait_for_run(app, 52, RunState.FAILED)
    # Only the operator's BOX_MAX_ACTIVE_PER_REPO is set, so that is the limit named.
    assert blocked.notice == (
        "🛑 **No box was started: the limit of 1 active boxes for this repository is reached"
        " (the operator's `BOX_MAX_ACTIVE_PER_REPO`: 1).** It frees up when one of the active"
        " boxes is archived (`/box archive`). Then comment `/box fix` to try again."
    )
    await app.components.runs.archive(first, "done")
    await app.post("issue_comment", commented(52, "/box fix"))
    await wait_until(lambda: len(box_sim.requests_to("POST", r"/boxes$")) == 2)


async def test_runs_per_person_per_day(
    start_app: AppFactory,
    settings: Settings,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
) -> None:
    issue(github_sim, 61)
    issue(github_sim, 62)
    app = await start_app(replace(settings, max_runs_per_user_per_day=1))
    await app.post("issues", labeled(61))
    await wait_for_run(app, 61, RunState.IDLE)
    await app.post("issues", labeled(62))
    blocked = await wait_for_run(app, 62, RunState.FAILED)
    assert "limit of 1 runs per person per day" in (blocked.notice or "")
    assert "frees up at" in (blocked.notice or "")
    assert len(box_sim.requests_to("POST", r"/boxes$")) == 1


async def test_kill_switch_stores_events_and_starts_nothing(
    start_app: AppFactory,
    settings: Settings,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
) -> None:
    issue(github_sim)
    app = await start_app(replace(settings, paused=True))
    response = await app.post("issues", labeled(ISSUE), delivery_id="paused")
    assert response.status == 202
    run = await wait_for_run(app, ISSUE, RunState.FAILED)
    assert box_sim.requests == []
    assert "paused" in (run.notice or "")
    [comment] = bot_comments(github_sim, ISSUE)
    assert "BOX_PAUSED" in comment["body"]


async def test_box_limits_refusal_is_explained_before_any_create(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.credit = False
    issue(github_sim)
    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.FAILED)
    assert box_sim.requests_to("GET", r"/limits$")
    assert box_sim.requests_to("POST", r"/boxes$") == []
    [comment] = bot_comments(github_sim, ISSUE)
    assert "needs credit" in comment["body"]


async def test_work_past_the_lifetime_is_interrupted_and_reported(
    start_app: AppFactory,
    settings: Settings,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
) -> None:
    box_sim.scripts["endless"] = [Say("Thinking."), Wait(3600.0)]
    box_sim.default_script = "endless"
    issue(github_sim)
    clock = FastClock()
    options = fast_options()
    options.clock = clock
    github_sim.clock = clock  # tokens it mints must not look expired after the jump
    app = await start_app(replace(settings, max_run_minutes=1), options)
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    clock.skip(61 * 60)
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/interrupt$")) == 1
    assert "took too long" in (run.notice or "")
    limit = r"more than 1 minute (BOX\_MAX\_RUN\_MINUTES)"  # as Markdown: underscores escaped
    await wait_until(lambda: limit in bot_comments(github_sim, ISSUE)[0]["body"])


class FastClock:
    """Wall-clock time that a test can jump forward."""

    def __init__(self) -> None:
        import time

        self._time = time.time
        self.offset = 0.0

    def __call__(self) -> float:
        return self._time() + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += seconds
