"""What the prompt is told about a thread: the newest comments of a long one."""

from __future__ import annotations

import re

from bot.models import RunState
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from tests.conftest import MAINTAINER, REPO, RunningApp
from tests.flow import labeled, wait_for_run

ISSUE = 77
COMMENT_COUNT = 650
COMMENT_ID = re.compile(r"\[comment (\d{4})\]")


async def test_long_thread_keeps_its_newest_comments(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.add_issue(REPO, ISSUE, title="A long discussion", body="See the comments.")
    for n in range(1, COMMENT_COUNT + 1):
        github_sim.add_comment(REPO, ISSUE, body=f"[comment {n:04d}] More detail.", user=MAINTAINER)
    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE)
    [request] = box_sim.requests_to("POST", r"/boxes/[^/]+/prompt$")
    shown = [int(n) for n in COMMENT_ID.findall(request.json["prompt"])]
    # The newest comments, oldest first, as many as the prompt's size allows.
    assert shown == list(range(shown[0], COMMENT_COUNT + 1))
    assert shown[0] > 1
    assert "older comments were left out" in request.json["prompt"]
    # Only the pages holding the newest 500 comments were read.
    listed = github_sim.calls_to("GET", rf"/repos/{REPO}/issues/{ISSUE}/comments$")
    listed = [call for call in listed if "since" not in call.query]  # the marker look-up
    assert [call.query.get("page") for call in listed] == ["2", "3", "4", "5", "6", "7"]
