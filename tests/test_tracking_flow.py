"""The tracking comment and the Box check over a run's life, as GitHub shows them."""

from __future__ import annotations

from typing import Any

import pytest

from bot.models import Run, RunState
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from tests.conftest import MAINTAINER, REPO, RunningApp
from tests.flow import commented, labeled, pull_request_event, wait_for_run, wait_until
from tests.markdown_view import Seen, seen

ISSUE = 31
PR = 32
HEAD_SHA = "c" * 40
ASKED = f"💬 @{MAINTAINER} asked"
BOX_BACK = (
    "💤 The box is back and waits for instructions. "
    "To give it work, comment /box fix <instructions>."
)


@pytest.fixture(autouse=True)
def issue(github_sim: GitHubSimulator) -> dict[str, Any]:
    return github_sim.add_issue(REPO, ISSUE, title="Dates are off by one", body="See #30.")


async def command(app: RunningApp, github: GitHubSimulator, body: str) -> None:
    """Comment *body* on the issue, as a maintainer, and wait until the app has handled it."""
    comment = github.add_comment(REPO, ISSUE, body=body, user=MAINTAINER)
    payload = commented(ISSUE, body, comment_id=comment["id"])
    delivery = f"cmd-{comment['id']}"
    await app.post("issue_comment", payload, delivery_id=delivery)
    await app.wait_for(delivery)


def versions(github: GitHubSimulator, run: Run) -> list[str]:
    """Every body the tracking comment had, in order: as posted, then each edit."""
    posted = [
        call.json["body"]
        for call in github.calls_to("POST", rf"/issues/{ISSUE}/comments$")
        if call.status == 201 and "box-bot:run=" in call.json["body"]
    ]
    edits = github.calls_to("PATCH", rf"/issues/comments/{run.comment_id}$")
    return posted + [call.json["body"] for call in edits if call.status == 200]


def header(body: str) -> str:
    return seen(body).headings()[0][1]


def result(view: Seen) -> list[str]:
    """The paragraphs of the Result section."""
    blocks = view.root.blocks
    start = next(n for n, b in enumerate(blocks) if b.tag == "h3" and b.text == "Result")
    return [b.text for b in blocks[start + 1 :] if b.tag == "p"]


async def finished(app: RunningApp) -> Run:
    await app.post("issues", labeled(ISSUE))
    return await wait_for_run(app, ISSUE, RunState.IDLE)


async def test_a_follow_up_gets_its_own_section_and_the_box_is_not_started_again(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    first = await finished(app)
    before = len(versions(github_sim, first))

    await command(app, github_sim, "/box fix also cover leap years\n\n- in `dates.py`")
    await wait_until(lambda: len(box_sim.requests_to("POST", r"/prompt$")) == 2)
    run = await wait_for_run(app, ISSUE, RunState.IDLE)

    later = [header(body) for body in versions(github_sim, run)[before:]]
    assert "⏳ Starting a box" not in later
    assert later[0] == "📨 Sending a follow-up" and later[-1] == "✅ Finished"
    view = seen(versions(github_sim, run)[-1])
    assert [text for _, text in view.headings()] == [
        "✅ Finished",
        ASKED,
        "Latest message from the agent",
        "Preview",
        "Result",
    ]
    blocks = view.root.blocks
    newest = next(n for n, b in enumerate(blocks) if b.tag == "h3" and b.text == ASKED)
    quote, steps = blocks[newest + 1], blocks[newest + 2]
    assert quote.tag == "blockquote" and quote.find("p")[0].text == "also cover leap years"
    assert [li.text for li in quote.find("li")] == ["in dates.py"]
    assert steps.tag == "ul" and "✅ pytest -q (exit 0)" in [li.text for li in steps.find("li")]
    [older] = view.details()
    assert older.parent is view.root
    summary = older.find("summary")[0].text
    assert summary.startswith(f"{ASKED} · ✅ finished in ") and summary.endswith(" s")
    assert "✅ git checkout -b box/issue-31 (exit 0)" in [li.text for li in older.find("li")]
    assert result(view)[0].startswith("✅ Finished in ")


async def test_resume_says_the_box_is_back_and_waiting(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    run = await finished(app)
    await command(app, github_sim, "/box archive")
    await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    await box_sim.wait_for_state(run.box_id, "archived")
    before = len(versions(github_sim, run))

    await command(app, github_sim, "/box resume")
    await wait_until(lambda: box_sim.requests_to("POST", r"/resume$"))
    resumed = await wait_for_run(app, ISSUE, RunState.IDLE)

    later = [header(body) for body in versions(github_sim, resumed)[before:]]
    assert later[0] == "⏳ Resuming the box"
    assert "⏳ Starting a box" not in later and "✅ Finished" not in later
    assert later[-1] == "💤 Box resumed, waiting for instructions"
    view = seen(versions(github_sim, resumed)[-1])
    assert view.headings()[1][1].startswith(f"{ASKED} · ✅ finished in ")
    assert result(view) == [BOX_BACK]
    assert box_sim.requests_to("POST", r"/prompt$")[1:] == []  # no work was asked


async def open_pr(app: RunningApp, github: GitHubSimulator, run: Run) -> None:
    github.add_pull(
        REPO,
        PR,
        title="Fix dates",
        head=f"box/issue-{ISSUE}",
        head_sha=HEAD_SHA,
        user="box-agent[bot]",
        user_type="Bot",
    )
    payload = pull_request_event(
        "pull_request.opened.1",
        PR,
        head=f"box/issue-{ISSUE}",
        sha=HEAD_SHA,
        body=f"Fixes #{ISSUE}\n\nBox-Run: {run.id}",
    )
    await app.post("pull_request", payload, delivery_id=f"pr-{run.id}")
    await app.wait_for(f"pr-{run.id}")


async def test_archiving_marks_previews_gone_and_the_check_follows(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    run = await finished(app)
    await open_pr(app, github_sim, run)
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    live = seen(versions(github_sim, run)[-1])
    [preview] = [url for url in live.links() if url.endswith(".on.ascii.dev")]
    [check] = github_sim.check_runs(REPO)
    tracking_url = f"https://github.com/{REPO}/issues/{ISSUE}#issuecomment-{run.comment_id}"
    assert (check["conclusion"], check["output"]["title"]) == ("success", "✅ Finished")
    assert [a["identifier"] for a in check["actions"]] == ["archive"]
    assert check["details_url"] == tracking_url

    await command(app, github_sim, "/box archive")
    archived = await wait_for_run(app, ISSUE, RunState.ARCHIVED)

    view = seen(versions(github_sim, archived)[-1])
    assert preview not in view.links()
    assert "The box is archived, so these previews are gone." in view.paragraphs()
    assert preview in [code.text for code in view.root.find("code")]
    [check] = github_sim.check_runs(REPO)
    assert check["conclusion"] == "success"  # how the prompt ended does not change
    assert check["output"]["title"] == "🗄️ Archived"
    assert check["actions"] == [] and check["details_url"] == tracking_url
    summary = seen(check["output"]["summary"])
    assert any(p.startswith("🗄️ Archived by @") for p in summary.paragraphs())
    assert "Archive box" not in check["output"]["summary"]

    await box_sim.wait_for_state(run.box_id, "archived")
    await command(app, github_sim, "/box resume")
    await wait_for_run(app, ISSUE, RunState.IDLE)
    [check] = github_sim.check_runs(REPO)
    assert check["output"]["title"] == "✅ Finished"
    assert [a["identifier"] for a in check["actions"]] == ["archive"]


async def test_replies_read_well_on_github(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_permission(REPO, "mallory", "read")
    for body in ("/box help", "/box frob*nicate_", "/box status", "/box stop", "/box resume"):
        await command(app, github_sim, body)
    refused = commented(ISSUE, "/box fix **now**", sender="mallory")
    await app.post("issue_comment", refused, delivery_id="refused")
    await app.wait_for("refused")
    run = await finished(app)
    await command(app, github_sim, "/box status")

    replies = [
        seen(c["body"])
        for c in github_sim.comments(REPO, ISSUE)
        if c["user"]["login"] == "box-bot[bot]" and c["id"] != run.comment_id
    ]
    help_reply, unknown, no_run, no_active, no_archived, refusal, status = replies
    for reply in replies:
        assert reply.leaked_markdown() == [] and reply.comments == []
    commands = [li.find("code")[0].text for li in help_reply.root.find("li")]
    assert commands == [
        "/box fix [instructions]",
        "/box status",
        "/box stop",
        "/box archive",
        "/box resume",
        "/box help",
    ]
    assert unknown.paragraphs()[0] == "I don't know the command /box frob*nicate_."
    assert unknown.root.find("code")[0].text == "/box frob*nicate_"
    assert no_run.paragraphs() == [
        "No box is working on this issue or pull request. "
        "Comment /box fix <instructions> to start one."
    ]
    assert no_active.paragraphs()[0].startswith("There is no box working on this issue")
    assert no_archived.paragraphs()[0].startswith("There is no archived box for this issue")
    assert refusal.paragraphs()[0].startswith("@mallory only people with write, maintain or admin")
    assert status.root.find("strong")[0].text == "✅ Finished"
    assert f"#issuecomment-{run.comment_id}" in status.links()
