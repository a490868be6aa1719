"""Each spending limit end to end: what stops a run, and the exact words that say so."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import pytest

from bot.models import Run, RunState
from bot.settings import Settings
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from bot.store.records import DeliveryStatus
from tests.conftest import INSTALLATION_ID, MAINTAINER, REPO, REPO_ID, AppFactory, RunningApp
from tests.databases import on_every_backend
from tests.flow import bot_comments, commented, labeled, wait_for_run, wait_until

FREES_WITH_A_BOX = (
    "It frees up when one of the active boxes is archived (`/box archive`)."
    " Then comment `/box fix` to try again."
)


def issues(github: GitHubSimulator, *numbers: int) -> None:
    for number in numbers:
        github.add_issue(REPO, number, title=f"Issue {number}", body="Please fix.")


def creates(box_sim: BoxSimulator) -> list[dict[str, Any]]:
    return [r.json for r in box_sim.requests_to("POST", r"/boxes$")]


async def start_and_block(app: RunningApp, started: list[int], blocked: int) -> Run:
    """Start runs on the issues *started*, then one on *blocked*; return the blocked run."""
    for number in started:
        await app.post("issues", labeled(number))
        await wait_for_run(app, number, RunState.IDLE)
    await app.post("issues", labeled(blocked))
    return await wait_for_run(app, blocked, RunState.FAILED)


def assert_told(github: GitHubSimulator, run: Run, number: int, notice: str) -> None:
    """The run holds *notice*, and the tracking comment on issue *number* shows it."""
    assert run.notice == notice
    [comment] = bot_comments(github, number)
    assert notice in comment["body"]


@on_every_backend
async def test_all_installations_limit_is_named_with_its_value(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    issues(github_sim, 1, 2)
    app = await start_app(replace(settings, max_active=1))
    blocked = await start_and_block(app, [1], 2)
    assert len(creates(box_sim)) == 1
    assert_told(
        github_sim,
        blocked,
        2,
        "🛑 **No box was started: the limit of 1 active boxes across all installations is"
        " reached (the operator's `BOX_MAX_ACTIVE`: 1).** " + FREES_WITH_A_BOX,
    )


async def test_repository_max_active_boxes_is_named(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "max_active_boxes: 1\n")
    issues(github_sim, 1, 2)
    blocked = await start_and_block(app, [1], 2)
    assert len(creates(box_sim)) == 1
    assert_told(
        github_sim,
        blocked,
        2,
        "🛑 **No box was started: the limit of 1 active boxes for this repository is reached"
        " (this repository's `max_active_boxes`: 1).** " + FREES_WITH_A_BOX,
    )


@pytest.mark.parametrize(
    ("operator", "repository", "named"),
    [
        (3, 2, "this repository's `max_active_boxes`: 2"),
        (2, 3, "the operator's `BOX_MAX_ACTIVE_PER_REPO`: 2"),
        # On a tie the operator's limit is named: raising the repository's would not help.
        (2, 2, "the operator's `BOX_MAX_ACTIVE_PER_REPO`: 2"),
    ],
)
async def test_the_stricter_active_limit_is_the_one_named(
    start_app: AppFactory,
    settings: Settings,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
    operator: int,
    repository: int,
    named: str,
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", f"max_active_boxes: {repository}\n")
    issues(github_sim, 1, 2, 3)
    app = await start_app(replace(settings, max_active_per_repo=operator))
    blocked = await start_and_block(app, [1, 2], 3)
    assert len(creates(box_sim)) == 2
    assert_told(
        github_sim,
        blocked,
        3,
        "🛑 **No box was started: the limit of 2 active boxes for this repository is reached"
        f" ({named}).** " + FREES_WITH_A_BOX,
    )


def frees_a_day_after(run: Run) -> str:
    """The sentence saying that a place frees up a day after *run* reserved, to the minute."""
    assert run.reserved_at is not None
    minute = math.ceil((run.reserved_at + 24 * 3600) / 60) * 60
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(minute))
    return f"It frees up at {when} UTC. Then comment `/box fix` to try again."


async def test_repository_runs_per_day_is_named_with_when_it_frees_up(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "max_runs_per_user_per_day: 1\n")
    issues(github_sim, 1, 2)
    app = await start_app(settings)
    blocked = await start_and_block(app, [1], 2)
    first = await app.components.store.latest_run(REPO_ID, 1)
    assert first is not None and len(creates(box_sim)) == 1
    assert_told(
        github_sim,
        blocked,
        2,
        "🛑 **No box was started: the limit of 1 runs per person per day in this repository is"
        " reached (this repository's `max_runs_per_user_per_day`: 1).** "
        + frees_a_day_after(first),
    )


async def test_operator_runs_per_day_is_named_with_when_it_frees_up(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    issues(github_sim, 1, 2)
    app = await start_app(replace(settings, max_runs_per_user_per_day=1))
    blocked = await start_and_block(app, [1], 2)
    first = await app.components.store.latest_run(REPO_ID, 1)
    assert first is not None and len(creates(box_sim)) == 1
    assert_told(
        github_sim,
        blocked,
        2,
        "🛑 **No box was started: the limit of 1 runs per person per day in all repositories is"
        " reached (the operator's `BOX_MAX_RUNS_PER_USER_PER_DAY`: 1).** "
        + frees_a_day_after(first),
    )


# -- another repository of the same installation ------------------------------------------

OTHER_REPO = "Codertocat/other-repo"
OTHER_REPO_ID = 100_001


def other_repo(github: GitHubSimulator, number: int) -> None:
    """Make OTHER_REPO (known to the Box simulator too) reachable, with issue *number*."""
    github.add_repo(OTHER_REPO, installation_id=INSTALLATION_ID, repo_id=OTHER_REPO_ID)
    github.set_permission(OTHER_REPO, MAINTAINER, "admin")
    github.add_issue(OTHER_REPO, number, title=f"Issue {number}", body="Please fix.")


def labeled_in_other_repo(number: int) -> dict[str, Any]:
    data = labeled(number)
    data["repository"] = {
        **data["repository"],
        "id": OTHER_REPO_ID,
        "name": OTHER_REPO.split("/")[1],
        "full_name": OTHER_REPO,
        "default_branch": "main",
    }
    return data


async def start_in_other_repo(app: RunningApp, number: int) -> None:
    await app.post("issues", labeled_in_other_repo(number))

    async def idle() -> bool:
        run = await app.components.store.latest_run(OTHER_REPO_ID, number)
        return run is not None and run.state is RunState.IDLE

    await wait_until(idle)


async def test_repository_runs_per_day_count_only_that_repository(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "max_runs_per_user_per_day: 1\n")
    other_repo(github_sim, 9)
    issues(github_sim, 1, 2)
    await start_in_other_repo(app, 9)
    blocked = await start_and_block(app, [1], 2)
    first = await app.components.store.latest_run(REPO_ID, 1)
    assert first is not None and len(creates(box_sim)) == 2
    assert_told(
        github_sim,
        blocked,
        2,
        "🛑 **No box was started: the limit of 1 runs per person per day in this repository is"
        " reached (this repository's `max_runs_per_user_per_day`: 1).** "
        + frees_a_day_after(first),
    )


async def test_operator_runs_per_day_count_every_repository(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    other_repo(github_sim, 9)
    issues(github_sim, 1)
    app = await start_app(replace(settings, max_runs_per_user_per_day=1))
    await start_in_other_repo(app, 9)
    elsewhere = await app.components.store.latest_run(OTHER_REPO_ID, 9)
    blocked = await start_and_block(app, [], 1)
    assert elsewhere is not None and len(creates(box_sim)) == 1
    assert_told(
        github_sim,
        blocked,
        1,
        "🛑 **No box was started: the limit of 1 runs per person per day in all repositories is"
        " reached (the operator's `BOX_MAX_RUNS_PER_USER_PER_DAY`: 1).** "
        + frees_a_day_after(elsewhere),
    )


async def test_run_refused_by_box_does_not_count_for_the_day(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.max_active_boxes = 1
    issues(github_sim, 1, 2)
    app = await start_app(replace(settings, max_runs_per_user_per_day=2))
    refused = await start_and_block(app, [1], 2)
    assert refused.box_id is None and len(creates(box_sim)) == 1
    assert_told(
        github_sim,
        refused,
        2,
        "🛑 **No box was started: the Box account's limit of 1 active boxes is reached"
        " (as Box's `GET /limits` reports it).** " + FREES_WITH_A_BOX,
    )
    first = await app.components.store.latest_run(REPO_ID, 1)
    assert first is not None
    await app.components.runs.archive(first, "done")
    # Two runs asked for today, but the refused one spent nothing: the limit of 2 has room.
    await app.post("issue_comment", commented(2, "/box fix"))
    await wait_for_run(app, 2, RunState.IDLE)
    assert len(creates(box_sim)) == 2


# -- per installation -----------------------------------------------------------------------

ORG_INSTALLATION_ID = 5151
ORG_REPO = "octo-org/tools"
ORG_REPO_ID = 300_300


def org_repo(github: GitHubSimulator, box_sim: BoxSimulator, number: int) -> None:
    """Install the app on a second account with one repository and issue *number*."""
    github.add_installation(ORG_INSTALLATION_ID, "octo-org", account_type="Organization")
    github.add_repo(ORG_REPO, installation_id=ORG_INSTALLATION_ID, repo_id=ORG_REPO_ID)
    github.set_permission(ORG_REPO, MAINTAINER, "admin")
    github.add_issue(ORG_REPO, number, title=f"Issue {number}", body="Please fix.")
    box_sim.add_repo(ORG_REPO, github_id=ORG_REPO_ID)


def labeled_in_org_repo(number: int) -> dict[str, Any]:
    data = labeled_in_other_repo(number)
    data["repository"] = {
        **data["repository"],
        "id": ORG_REPO_ID,
        "name": "tools",
        "full_name": ORG_REPO,
        "owner": {**data["repository"]["owner"], "login": "octo-org", "type": "Organization"},
    }
    data["installation"] = {**data["installation"], "id": ORG_INSTALLATION_ID}
    return data


async def test_installation_limit_counts_that_installation_only(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    other_repo(github_sim, 9)
    org_repo(github_sim, box_sim, 5)
    issues(github_sim, 1)
    app = await start_app(replace(settings, max_active_per_installation=1))
    await start_in_other_repo(app, 9)
    # Another installation has room of its own.
    await app.post("issues", labeled_in_org_repo(5))

    async def org_run_idle() -> bool:
        run = await app.components.store.latest_run(ORG_REPO_ID, 5)
        return run is not None and run.state is RunState.IDLE

    await wait_until(org_run_idle)
    # This repository shares the first installation, whose one place is taken.
    blocked = await start_and_block(app, [], 1)
    assert len(creates(box_sim)) == 2
    assert_told(
        github_sim,
        blocked,
        1,
        "🛑 **No box was started: the limit of 1 active boxes for this installation is reached"
        " (the operator's `BOX_MAX_ACTIVE_PER_INSTALLATION`: 1).** " + FREES_WITH_A_BOX,
    )


# -- the kill switch ------------------------------------------------------------------------


async def test_kill_switch_tells_the_user_and_keeps_the_event(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    issues(github_sim, 1)
    app = await start_app(replace(settings, paused=True))
    response = await app.post("issues", labeled(1), delivery_id="while-paused")
    assert response.status == 202
    delivery = await app.wait_for("while-paused")
    assert (delivery.event, delivery.action, delivery.status) == (
        "issues",
        "labeled",
        DeliveryStatus.DONE,
    )
    assert delivery.data()["issue"]["number"] == 1
    run = await wait_for_run(app, 1, RunState.FAILED)
    assert box_sim.requests == []
    assert_told(
        github_sim,
        run,
        1,
        "⏸️ **box-bot is paused by its operator** (`BOX_PAUSED`). Nothing was started and"
        " nothing was spent. Ask again with `/box fix` once it is running again.",
    )
