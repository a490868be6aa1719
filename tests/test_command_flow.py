"""Each `/box` command through the real app, with the simulators."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bot.ingress.screen import Skip
from bot.models import RunState
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Say, Wait
from bot.sim.github import GitHubSimulator
from tests.conftest import REPO, RunningApp, load_payload
from tests.flow import (
    bot_comments,
    commented,
    labeled,
    post_not_stored,
    wait_for_run,
    wait_until,
)

ISSUE = 11


@pytest.fixture(autouse=True)
def issue(github_sim: GitHubSimulator) -> dict[str, Any]:
    return github_sim.add_issue(REPO, ISSUE, title="Typo in README", body="`teh` → `the`")


@pytest.fixture
def slow_agent(box_sim: BoxSimulator) -> None:
    box_sim.scripts["slow"] = [Say("Looking into it."), Wait(30.0), Say("Done.")]
    box_sim.default_script = "slow"


Send = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def send(app: RunningApp, github_sim: GitHubSimulator) -> Send:
    """Post a comment on the issue (in the simulator and as a webhook); wait for the worker."""

    async def post(body: str, **kwargs: Any) -> dict[str, Any]:
        sender = kwargs.get("sender", "Codertocat")
        comment = github_sim.add_comment(REPO, ISSUE, body=body, user=sender)
        payload = commented(ISSUE, body, comment_id=comment["id"], **kwargs)
        delivery = f"cmd-{payload['comment']['id']}"
        await app.post("issue_comment", payload, delivery_id=delivery)
        await app.wait_for(delivery)
        return payload

    return post


async def test_every_command_is_acknowledged_with_eyes(
    send: Send, app: RunningApp, github_sim: GitHubSimulator
) -> None:
    payload = await send("/box help")
    reactions = github_sim.reactions(REPO, payload["comment"]["id"])
    assert [r["content"] for r in reactions] == ["eyes"]


async def test_help_and_unknown_command(
    send: Send, app: RunningApp, github_sim: GitHubSimulator
) -> None:
    await send("/box help")
    await send("/box frobnicate")
    help_reply, unknown_reply = bot_comments(github_sim, ISSUE)
    for command in ("/box fix", "/box status", "/box stop", "/box archive", "/box resume"):
        assert command in help_reply["body"]
    assert "`/box frobnicate`" in unknown_reply["body"]
    assert "/box fix" in unknown_reply["body"]


async def test_status_without_and_with_a_run(
    send: Send, app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    await send("/box status")
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    await send("/box status")
    first, _tracking, second = bot_comments(github_sim, ISSUE)
    assert "no" in first["body"].lower()
    assert run.box_id is not None and run.box_id in second["body"]


async def test_stop_interrupts_the_current_work(
    send: Send,
    app: RunningApp,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
    slow_agent: None,
) -> None:
    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.WORKING)
    await send("/box stop")
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/interrupt$")) == 1
    tracking = next(c for c in bot_comments(github_sim, ISSUE) if c["id"] == run.comment_id)
    assert "interrupted" in tracking["body"].lower()


async def test_archive_then_resume(
    send: Send, app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    await send("/box archive")
    await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$")) == 1
    await box_sim.wait_for_state(run.box_id, "archived")

    await send("/box resume")
    resumed = await wait_for_run(app, ISSUE, RunState.IDLE)
    assert resumed.id == run.id
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/resume$")) == 1
    assert len(box_sim.requests_to("POST", r"/boxes$")) == 1


async def test_stop_without_a_run_says_so(
    send: Send, app: RunningApp, github_sim: GitHubSimulator
) -> None:
    await send("/box stop")
    [reply] = bot_comments(github_sim, ISSUE)
    assert "no box" in reply["body"].lower()


async def test_edited_and_deleted_comments_never_trigger(
    send: Send, app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    for fixture in ("issue_comment.edited.1", "issue_comment.deleted.1"):
        payload = load_payload(fixture)
        payload["issue"]["number"] = ISSUE
        payload["comment"]["body"] = "/box fix"
        await post_not_stored(app, "issue_comment", payload, fixture, Skip.UNHANDLED_ACTION)
    assert box_sim.requests == []


async def test_fix_on_an_archived_run_resumes_its_box(
    send: Send, app: RunningApp, box_sim: BoxSimulator
) -> None:
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    await send("/box archive")
    await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    await box_sim.wait_for_state(run.box_id, "archived")
    await send("/box fix now the other typo")
    await wait_until(lambda: len(box_sim.requests_to("POST", r"/prompt$")) == 2)
    again = await wait_for_run(app, ISSUE, RunState.IDLE)
    assert again.id == run.id and again.box_id == run.box_id
    assert len(box_sim.requests_to("POST", r"/boxes$")) == 1


async def test_resume_brings_back_the_box_of_a_failed_run(
    send: Send, app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    # GitHub refuses to show the issue once the box exists: the run fails and its box is stopped.
    github_sim.inject_fault(
        "GET", rf"/issues/{ISSUE}$", status=403, body={"message": "no"}, times=5
    )
    await app.post("issues", labeled(ISSUE))
    failed = await wait_for_run(app, ISSUE, RunState.FAILED)
    assert failed.box_id is not None
    await box_sim.wait_for_state(failed.box_id, "archived")
    await send("/box resume")
    await wait_until(lambda: box_sim.requests_to("POST", r"/resume$"))
    resumed = await wait_for_run(
        app, ISSUE, RunState.IDLE, RunState.PROVISIONING, RunState.PROMPTING
    )
    assert resumed.id == failed.id and resumed.box_id == failed.box_id
