"""Building blocks for end-to-end tests: real payloads shaped for a scenario, and waits."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from bot.ingress.screen import EXPLANATIONS, Skip
from bot.models import Run, RunState
from bot.sim.github import GitHubSimulator
from tests.conftest import MAINTAINER, REPO, REPO_ID, RunningApp, load_payload

_ids = itertools.count(9_000_000)


def labeled(number: int, *, sender: str = MAINTAINER, label: str = "box:fix") -> dict[str, Any]:
    """An `issues.labeled` delivery adding *label* to issue *number*."""
    data = load_payload("issues.labeled.1")
    data["issue"]["number"] = number
    data["label"] = {**data["label"], "name": label}
    data["sender"] = {**data["sender"], "login": sender}
    return data


def commented(
    number: int,
    body: str,
    *,
    sender: str = MAINTAINER,
    pull: bool = False,
    comment_id: int | None = None,
    sender_type: str = "User",
) -> dict[str, Any]:
    """An `issue_comment.created` delivery of *body* on issue or PR *number*."""
    data = load_payload("issue_comment.created.1")
    data["issue"]["number"] = number
    if pull:
        data["issue"]["pull_request"] = {
            "url": f"https://api.github.com/repos/{REPO}/pulls/{number}"
        }
    data["comment"] = {
        **data["comment"],
        "id": comment_id or next(_ids),
        "body": body,
        "user": {**data["comment"]["user"], "login": sender, "type": sender_type},
        "performed_via_github_app": None,
    }
    data["sender"] = {**data["sender"], "login": sender, "type": sender_type}
    return data


def pull_request_event(
    fixture: str,
    number: int,
    *,
    head: str,
    sha: str,
    body: str = "",
    merged: bool = False,
) -> dict[str, Any]:
    """A `pull_request` delivery for PR *number* with head branch *head* at *sha*."""
    data = load_payload(fixture)
    pull = data["pull_request"]
    pull.update(number=number, body=body, merged=merged)
    pull["head"] = {**pull["head"], "ref": head, "sha": sha}
    pull["head"]["repo"] = {**pull["head"]["repo"], "id": REPO_ID, "full_name": REPO}
    data["sender"] = {**data["sender"], "login": "box-agent[bot]", "type": "Bot"}
    return data


async def wait_until(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll *check* (sync or async) until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(0.01)


async def wait_for_run(
    app: RunningApp, number: int, *states: RunState, timeout: float = 5.0
) -> Run:
    """Wait until the newest run on *number* is in one of *states*."""

    async def check() -> Run | None:
        run = await app.components.store.latest_run(REPO_ID, number)
        return run if run is not None and run.state in states else None

    result: Run = await wait_until(check, timeout)
    if not result.state.active or result.state is RunState.IDLE:
        # Let the driver write the comment and check run for this state before tests read them.
        await wait_until(lambda: not app.components.runs.is_driving(result.id), timeout)
        result = await app.components.store.get_run(result.id) or result
    return result


def bot_comments(github: GitHubSimulator, number: int) -> list[dict[str, Any]]:
    """The comments this app wrote on issue or PR *number*."""
    return [c for c in github.comments(REPO, number) if c["user"]["login"] == "box-bot[bot]"]


async def post_not_stored(
    app: RunningApp, event: str, payload: dict[str, Any], delivery_id: str, reason: Skip
) -> None:
    """Post a delivery that intake must answer without storing, for *reason*."""
    response = await app.post(event, payload, delivery_id=delivery_id)
    answer = await response.json()
    explanation = EXPLANATIONS[reason].format(event=event, action=payload.get("action"))
    assert (response.status, answer["stored"], answer["reason"]) == (202, False, explanation)
    assert await app.components.store.get_delivery(delivery_id) is None
