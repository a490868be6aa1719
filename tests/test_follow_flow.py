"""Following a box: the live comment, PR linking, the Box check run and cleanup."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace
from typing import Any

import pytest

from bot.models import Run, RunState
from bot.runs.record import settled_conclusion
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Checkpoint, Emit, Fail, RunCommand, Say, Wait, success_script
from bot.sim.github import GitHubSimulator
from tests.conftest import (
    MAINTAINER,
    REPO,
    AppFactory,
    RunningApp,
    fast_options,
    load_payload,
)
from tests.flow import (
    bot_comments,
    commented,
    labeled,
    pull_request_event,
    wait_for_run,
    wait_until,
)

ISSUE = 21
PR = 22
HEAD_SHA = "a" * 40
ASKED = f"### 💬 @{MAINTAINER} asked"  # the heading of the prompt's own section


@pytest.fixture(autouse=True)
def issue(github_sim: GitHubSimulator) -> dict[str, Any]:
    return github_sim.add_issue(REPO, ISSUE, title="Sorting is unstable", body="See the test.")


def tracking(github: GitHubSimulator, comment_id: int | None) -> str:
    return next(c["body"] for c in github.comments(REPO, ISSUE) if c["id"] == comment_id)


async def finished_run(app: RunningApp) -> Any:
    await app.post("issues", labeled(ISSUE))
    return await wait_for_run(app, ISSUE, RunState.IDLE)


async def open_pr(
    app: RunningApp,
    github: GitHubSimulator,
    run_id: str,
    *,
    head: str = f"box/issue-{ISSUE}",
    body: str | None = None,
    delivery: str | None = None,
    sha: str = HEAD_SHA,
) -> None:
    try:
        github.issue(REPO, PR)
    except KeyError:
        github.add_pull(
            REPO,
            PR,
            title="Fix sorting",
            head=head,
            head_sha=sha,
            body=body or "",
            user="box-agent[bot]",
            user_type="Bot",
        )
    text = f"Fixes #{ISSUE}\n\nBox-Run: {run_id}" if body is None else body
    payload = pull_request_event("pull_request.opened.1", PR, head=head, sha=sha, body=text)
    delivery = delivery or f"pr-open-{run_id}-{head}"
    await app.post("pull_request", payload, delivery_id=delivery)
    await app.wait_for(delivery)


# -- the live comment --------------------------------------------------------------------------


async def test_events_become_checklist_lines_in_order(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    run = await finished_run(app)
    body = tracking(github_sim, run.comment_id)
    checklist = section(body, ASKED)
    steps = ["git checkout -b box/issue-21", "pytest -q", "Fix the reported problem", "host 3000"]
    positions = [checklist.index(step) for step in steps]
    assert positions == sorted(positions)
    for step in steps:
        assert checklist.count(step) == 1
    assert "Done: the fix is on" in section(body, "### Latest message from the agent")


def section(body: str, heading: str) -> str:
    """The text of one `###` section of a tracking comment."""
    start = body.index(heading) + len(heading)
    end = body.find("\n###", start)
    return body[start:] if end < 0 else body[start:end]


async def test_events_shown_exactly_once_across_a_restart(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["two-halves"] = [
        RunCommand("echo first-half"),
        Wait(0.6),
        RunCommand("echo second-half"),
        Say("All done."),
    ]
    box_sim.default_script = "two-halves"
    first = await start_app()
    await first.post("issues", labeled(ISSUE))
    run = await wait_for_run(first, ISSUE, RunState.WORKING)
    await wait_until(lambda: "echo first-half" in tracking(github_sim, run.comment_id))
    await first.client.close()

    second = await start_app()
    run = await wait_for_run(second, ISSUE, RunState.IDLE)
    checklist = section(tracking(github_sim, run.comment_id), ASKED)
    assert checklist.count("echo first-half") == 1
    assert checklist.count("echo second-half") == 1
    assert checklist.index("echo first-half") < checklist.index("echo second-half")
    body = tracking(github_sim, run.comment_id)
    assert "All done." in body


async def test_an_unchanged_comment_is_not_written_again_after_a_restart(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["pause"] = [RunCommand("echo one"), Wait(1.5), Say("Done.")]
    box_sim.default_script = "pause"
    first = await start_app()
    await first.post("issues", labeled(ISSUE))
    run = await wait_for_run(first, ISSUE, RunState.WORKING)
    await wait_until(lambda: "echo one" in tracking(github_sim, run.comment_id))
    await first.client.close()
    edits = github_sim.comment_edits(run.comment_id)

    second = await start_app()
    polls = len(box_sim.requests_to("GET", r"/prompts/"))
    await wait_until(lambda: len(box_sim.requests_to("GET", r"/prompts/")) >= polls + 5)
    assert github_sim.comment_edits(run.comment_id) == edits
    await wait_for_run(second, ISSUE, RunState.IDLE)
    assert github_sim.comment_edits(run.comment_id) > edits
    assert "Done." in tracking(github_sim, run.comment_id)


@pytest.mark.parametrize(
    ("script", "words", "conclusion"),
    [("success", "finished", "success"), ("failure", "failed", "failure")],
)
async def test_final_comment_and_check_match_the_outcome(
    app: RunningApp,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
    script: str,
    words: str,
    conclusion: str,
) -> None:
    box_sim.default_script = script
    box_sim.scripts["slow-" + script] = [Wait(0.3), *box_sim.scripts[script]]
    box_sim.default_script = "slow-" + script
    github_sim.add_pull(REPO, PR, title="Fix", head=f"box/issue-{ISSUE}", head_sha=HEAD_SHA)
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    await open_pr(app, github_sim, run.id)
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    await wait_until(lambda: words in tracking(github_sim, run.comment_id).lower())
    await wait_until(lambda: github_sim.check_runs(REPO)[0]["status"] == "completed")
    [check] = [c for c in github_sim.check_runs(REPO) if c["head_sha"] == HEAD_SHA]
    assert (check["name"], check["status"], check["conclusion"]) == ("Box", "completed", conclusion)
    assert check["external_id"] == run.id


async def test_a_failed_prompt_says_why_in_the_comment_and_the_check(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["out-of-hours"] = [
        Wait(0.3),
        Say("Working on it."),
        Emit("usage_limit", {"message": "You have used this month's agent hours."}),
        Fail("I have to stop here."),
    ]
    box_sim.default_script = "out-of-hours"
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    await open_pr(app, github_sim, run.id)
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    reason = "usage limit reached: You have used this month's agent hours."
    result = section(tracking(github_sim, run.comment_id), "### Result")
    assert re.search(rf"\n❌ Failed after \d+ s: {re.escape(reason)}\n", result)
    [check] = github_sim.check_runs(REPO)
    assert check["conclusion"] == "failure"
    assert check["output"]["title"] == f"❌ Failed: {reason}"
    assert f": {reason}\n" in check["output"]["summary"]


async def test_interrupted_run_cancels_the_check(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.default_script = "interrupt"
    github_sim.add_pull(REPO, PR, title="Fix", head=f"box/issue-{ISSUE}", head_sha=HEAD_SHA)
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    await open_pr(app, github_sim, run.id)
    [check] = github_sim.check_runs(REPO)
    assert check["status"] == "in_progress"
    [created] = github_sim.calls_to("POST", r"/check-runs$")
    assert [a["label"] for a in created.json["actions"]] == ["Stop", "Archive box"]
    await app.post("check_run", requested_action(check, "stop"), delivery_id="stop-click")
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    await wait_until(lambda: github_sim.check_runs(REPO)[0]["status"] == "completed")
    [check] = github_sim.check_runs(REPO)
    assert check["conclusion"] == "cancelled"
    assert "interrupted" in tracking(github_sim, run.comment_id).lower()


def requested_action(
    check: dict[str, Any], identifier: str, sender: str = MAINTAINER
) -> dict[str, Any]:
    payload = load_payload("check_run.requested_action.1")
    labeled_payload = load_payload("issues.labeled.1")
    payload["repository"] = labeled_payload["repository"]
    payload["installation"] = labeled_payload["installation"]
    payload["check_run"] = {**payload["check_run"], **check}
    payload["requested_action"] = {"identifier": identifier}
    payload["sender"] = {**payload["sender"], "login": sender}
    return payload


# -- pull requests -------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["branch", "marker"])
async def test_pr_links_by_branch_name_or_body_marker(
    app: RunningApp, github_sim: GitHubSimulator, by: str
) -> None:
    run = await finished_run(app)
    if by == "branch":
        await open_pr(app, github_sim, run.id, body="A fix.")
    else:
        await open_pr(
            app,
            github_sim,
            run.id,
            head="agent/anything",
            body=f"Fixes #{ISSUE}\n\nBox-Run: {run.id}",
        )
    linked = await app.components.store.get_run(run.id)
    assert linked is not None and linked.pr_number == PR
    [pr_comment] = bot_comments(github_sim, PR)
    assert run.marker in pr_comment["body"]
    assert f"/pull/{PR}" in tracking(github_sim, run.comment_id)


async def test_fix_asked_on_a_pr_gets_a_check_on_its_head_and_its_branches_in_the_prompt(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.add_pull(
        REPO,
        PR,
        title="Speed up the sort",
        body="Uses timsort.",
        head="feature/fast-sort",
        base="develop",
        head_sha=HEAD_SHA,
        files=["src/sort.py", "tests/test_sort.py"],
    )
    await app.post("issue_comment", commented(PR, "/box fix make the tests pass", pull=True))
    run = await wait_for_run(app, PR, RunState.IDLE)
    assert run.head_sha == HEAD_SHA
    assert len(github_sim.calls_to("GET", rf"/pulls/{PR}$")) >= 1
    [check] = github_sim.check_runs(REPO)
    assert (check["head_sha"], check["status"], check["conclusion"]) == (
        HEAD_SHA,
        "completed",
        "success",
    )
    [prompt] = [r.json["prompt"] for r in box_sim.requests_to("POST", r"/prompt$")]
    for text in ("feature/fast-sort", "develop", "src/sort.py", "tests/test_sort.py"):
        assert text in prompt
    assert "make the tests pass" in prompt


@pytest.mark.parametrize(
    ("fixture", "action"),
    [("pull_request.reopened.1", "reopened"), ("pull_request.opened.1", "edited")],
)
async def test_pr_links_when_reopened_or_edited(
    app: RunningApp, github_sim: GitHubSimulator, fixture: str, action: str
) -> None:
    run = await finished_run(app)
    github_sim.add_pull(REPO, PR, title="Fix sorting", head="agent/anything", head_sha=HEAD_SHA)
    payload = pull_request_event(
        fixture, PR, head="agent/anything", sha=HEAD_SHA, body=f"Box-Run: {run.id}"
    )
    payload["action"] = action
    payload["installation"] = load_payload("issues.labeled.1")["installation"]
    if action == "edited":
        payload["changes"] = {"body": {"from": "A fix."}}
    await app.post("pull_request", payload, delivery_id=action)
    row = await app.wait_for(action)
    assert row.last_error is None
    linked = await app.components.store.get_run(run.id)
    assert linked is not None and linked.pr_number == PR
    [pr_comment] = bot_comments(github_sim, PR)
    assert run.marker in pr_comment["body"]
    assert f"/pull/{PR}" in tracking(github_sim, run.comment_id)
    assert checks_on(github_sim, HEAD_SHA) == [("completed", "success")]


async def test_the_issue_comment_links_the_pr_while_the_box_works(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.default_script = "interrupt"
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    await open_pr(app, github_sim, run.id)
    body = tracking(github_sim, run.comment_id)
    assert "## 🛠️ Working" in body
    assert f"· Pull request https://github.com/{REPO}/pull/{PR}" in body


async def test_pr_from_a_fork_claiming_a_run_is_not_linked(
    app: RunningApp, github_sim: GitHubSimulator
) -> None:
    run = await finished_run(app)
    payload = pull_request_event(
        "pull_request.opened.1", PR, head="box/issue-21", sha=HEAD_SHA, body=f"Box-Run: {run.id}"
    )
    payload["pull_request"]["head"]["repo"] = {"id": 1, "full_name": "attacker/Hello-World"}
    await app.post("pull_request", payload, delivery_id="fork")
    await app.wait_for("fork")
    stored = await app.components.store.get_run(run.id)
    assert stored is not None and stored.pr_number is None


async def test_follow_up_on_a_linked_pr_reaches_the_same_box_resumed_when_archived(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    run = await finished_run(app)
    await open_pr(app, github_sim, run.id)
    await app.components.runs.archive(run, "archived for the test")
    await box_state(box_sim, run.box_id, "archived")
    await app.post("issue_comment", commented(PR, "/box fix rename the helper", pull=True))
    await wait_until(lambda: len(box_sim.requests_to("POST", r"/prompt$")) == 2)
    again = await wait_for_run(app, ISSUE, RunState.IDLE)
    assert again.id == run.id
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/resume$")) == 1
    assert len(box_sim.requests_to("POST", r"/boxes$")) == 1
    assert "rename the helper" in box_sim.requests_to("POST", r"/prompt$")[1].json["prompt"]


async def test_new_head_commit_while_working_gets_its_own_check(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.default_script = "interrupt"
    github_sim.add_pull(REPO, PR, title="Fix", head=f"box/issue-{ISSUE}", head_sha=HEAD_SHA)
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    await open_pr(app, github_sim, run.id)
    payload = pull_request_event(
        "pull_request.synchronize.1",
        PR,
        head=f"box/issue-{ISSUE}",
        sha="b" * 40,
        body=f"Box-Run: {run.id}",
    )
    await app.post("pull_request", payload, delivery_id="sync")
    await app.wait_for("sync")
    checks = {c["head_sha"]: c for c in github_sim.check_runs(REPO)}
    assert checks["a" * 40]["conclusion"] == "neutral"
    assert checks["b" * 40]["status"] == "in_progress"


def checks_on(github: GitHubSimulator, sha: str) -> list[tuple[str, str | None]]:
    return [(c["status"], c["conclusion"]) for c in github.check_runs(REPO) if c["head_sha"] == sha]


async def test_pr_opened_before_the_prompt_is_sent_gets_one_check(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.timings.provisioning = 0.3
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.PROVISIONING)
    await open_pr(app, github_sim, run.id)
    assert checks_on(github_sim, HEAD_SHA) == []
    await wait_for_run(app, ISSUE, RunState.IDLE)
    assert checks_on(github_sim, HEAD_SHA) == [("completed", "success")]


async def test_a_follow_up_gets_its_own_check_and_leaves_the_last_one_alone(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    run = await finished_run(app)
    await open_pr(app, github_sim, run.id)
    assert checks_on(github_sim, HEAD_SHA) == [("completed", "success")]
    await app.components.runs.archive(run, "archived for the test")
    await box_state(box_sim, run.box_id, "archived")
    box_sim.timings.provisioning = 0.3  # the resume takes a while: the new commit comes first
    await app.post("issue_comment", commented(PR, "/box fix sort by name too", pull=True))
    await wait_for_run(app, ISSUE, RunState.PROVISIONING)
    new_head = "b" * 40
    payload = pull_request_event(
        "pull_request.synchronize.1",
        PR,
        head=f"box/issue-{ISSUE}",
        sha=new_head,
        body=f"Box-Run: {run.id}",
    )
    await app.post("pull_request", payload, delivery_id="sync")
    await app.wait_for("sync")
    await wait_until(lambda: len(box_sim.requests_to("POST", r"/prompt$")) == 2)
    await wait_for_run(app, ISSUE, RunState.IDLE)
    assert checks_on(github_sim, HEAD_SHA) == [("completed", "success")]
    assert checks_on(github_sim, new_head) == [("completed", "success")]


async def test_a_pr_linked_to_a_failed_run_gets_a_failed_check(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.unconfigured_providers.add("codex")
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.FAILED)
    await open_pr(app, github_sim, run.id)
    assert checks_on(github_sim, HEAD_SHA) == [("completed", "failure")]


def test_a_check_made_after_the_work_concludes_from_how_it_ended() -> None:
    def run(state: RunState, status: str | None) -> Any:
        return Run(
            id="run_0123456789ab",
            installation_id=1,
            repo_id=2,
            repo=REPO,
            repo_private=False,
            number=ISSUE,
            is_pull_request=False,
            state=state,
            requester=MAINTAINER,
            provider="codex",
            summary={"prompt_status": status} if status else {},
        )

    assert settled_conclusion(run(RunState.FAILED, "finished")) == "failure"
    assert settled_conclusion(run(RunState.IDLE, "finished")) == "success"
    assert settled_conclusion(run(RunState.IDLE, "interrupted")) == "cancelled"
    assert settled_conclusion(run(RunState.ARCHIVED, "failed")) == "failure"
    assert settled_conclusion(run(RunState.IDLE, None)) == "neutral"


async def test_a_prompt_that_finished_concludes_success_though_the_box_archived_right_after(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    async def archive_when_finished(box_id: str, event: dict[str, Any]) -> None:
        if event["type"] == "prompt" and event["data"]["status"] == "finished":
            async with app.components.session.post(
                f"{box_sim.base_url}/boxes/{box_id}/stop",
                headers={"Authorization": f"Bearer {box_sim.api_key}"},
            ) as response:
                assert response.status == 202

    box_sim.on_agent_event = archive_when_finished
    box_sim.scripts["slow"] = [Wait(0.3), *success_script()]
    box_sim.default_script = "slow"
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    await open_pr(app, github_sim, run.id)
    ended = await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    assert checks_on(github_sim, HEAD_SHA) == [("completed", "success")]
    assert ended.reason == "box archived after its time to live"
    body = tracking(github_sim, run.comment_id)
    assert "🗄️ Box archived after its time to live. The box was up for " in body


async def test_work_stopped_at_the_lifetime_limit_ends_its_check_timed_out(
    start_app: AppFactory, settings: Any, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["endless"] = [Say("Thinking."), Wait(3600.0)]
    box_sim.default_script = "endless"
    clock = SkippingClock()
    github_sim.clock = clock  # tokens and JWTs are checked against the same time
    options = fast_options()
    options.clock = clock
    app = await start_app(replace(settings, max_run_minutes=1), options)
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    await open_pr(app, github_sim, run.id)
    assert checks_on(github_sim, HEAD_SHA) == [("in_progress", None)]
    clock.skip(61 * 60)
    await wait_for_run(app, ISSUE, RunState.IDLE)
    assert checks_on(github_sim, HEAD_SHA) == [("completed", "timed_out")]
    assert "took too long" in tracking(github_sim, run.comment_id)


class SkippingClock:
    """Wall-clock time that a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += seconds


async def test_buttons_and_rerun_are_permission_checked(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_permission(REPO, "stranger", "read")
    run = await finished_run(app)
    await open_pr(app, github_sim, run.id)
    [check] = github_sim.check_runs(REPO)
    await app.post(
        "check_run",
        requested_action(check, "archive", sender="stranger"),
        delivery_id="stranger-archive",
    )
    await app.wait_for("stranger-archive")
    rerun = requested_action(check, "", sender="stranger")
    rerun["action"] = "rerequested"
    await app.post("check_run", rerun, delivery_id="stranger-rerun")
    await app.wait_for("stranger-rerun")
    assert box_sim.requests_to("POST", r"/stop$") == []
    assert len(box_sim.requests_to("POST", r"/prompt$")) == 1

    rerun["sender"]["login"] = MAINTAINER
    await app.post("check_run", rerun, delivery_id="maintainer-rerun")
    await wait_until(lambda: len(box_sim.requests_to("POST", r"/prompt$")) == 2)
    await app.post("check_run", requested_action(check, "archive"), delivery_id="archive")
    await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$")) == 1


async def test_buttons_follow_the_repository_permission_and_user_lists(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(
        REPO, ".github/box.yml", "permission: maintain\ndenied_users: [mallory-admin]\n"
    )
    github_sim.set_permission(REPO, "writer", "write")
    github_sim.set_permission(REPO, "mallory-admin", "admin")
    github_sim.set_permission(REPO, "keeper", "maintain")
    box_sim.default_script = "interrupt"
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    await open_pr(app, github_sim, run.id)
    [check] = github_sim.check_runs(REPO)
    for n, (sender, action) in enumerate(
        [("writer", "stop"), ("mallory-admin", "stop"), ("writer", "archive")]
    ):
        await app.post(
            "check_run", requested_action(check, action, sender=sender), delivery_id=f"no-{n}"
        )
        await app.wait_for(f"no-{n}")
    rerun = requested_action(check, "", sender="mallory-admin")
    rerun["action"] = "rerequested"
    await app.post("check_run", rerun, delivery_id="no-rerun")
    await app.wait_for("no-rerun")
    assert box_sim.requests_to("POST", r"/interrupt$") == []
    assert box_sim.requests_to("POST", r"/stop$") == []
    assert len(box_sim.requests_to("POST", r"/prompt$")) == 1
    stored = await app.components.store.get_run(run.id)
    assert stored is not None and stored.state is RunState.WORKING

    await app.post("check_run", requested_action(check, "stop", sender="keeper"), delivery_id="ok")
    await app.wait_for("ok")
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/interrupt$")) == 1
    await wait_for_run(app, ISSUE, RunState.IDLE)


# -- cleanup ---------------------------------------------------------------------------------


def merged_pr(run_id: str) -> dict[str, Any]:
    """A `pull_request.closed` delivery: the run's PR, merged."""
    return pull_request_event(
        "pull_request.closed.1",
        PR,
        head=f"box/issue-{ISSUE}",
        sha=HEAD_SHA,
        body=f"Box-Run: {run_id}",
        merged=True,
    )


async def test_closing_the_pr_stops_the_box_once_despite_duplicates(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    run = await finished_run(app)
    await open_pr(app, github_sim, run.id)
    closed = merged_pr(run.id)
    await asyncio.gather(
        *(app.post("pull_request", closed, delivery_id=f"close-{n}") for n in range(3))
    )
    for n in range(3):
        await app.wait_for(f"close-{n}")
    archived = await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$")) == 1
    assert "merged" in (archived.reason or "")
    assert "archived" in tracking(github_sim, run.comment_id).lower()


@pytest.mark.parametrize(
    ("env", "repo_file", "deleted"),
    [
        ("delete", None, True),
        ("archive", "on_close: delete\n", True),
        ("delete", "on_close: archive\n", False),
    ],
)
async def test_a_merge_deletes_or_archives_the_box_as_the_config_says(
    start_app: AppFactory,
    settings: Any,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
    env: str,
    repo_file: str | None,
    deleted: bool,
) -> None:
    if repo_file is not None:
        github_sim.set_file(REPO, ".github/box.yml", repo_file)
    app = await start_app(replace(settings, box_on_close=env))
    run = await finished_run(app)
    await open_pr(app, github_sim, run.id)
    merged = merged_pr(run.id)
    await app.post("pull_request", merged, delivery_id="merged")
    await app.wait_for("merged")
    await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    deletes = box_sim.requests_to("DELETE", rf"/boxes/{run.box_id}$")
    stops = box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$")
    [pr_comment] = bot_comments(github_sim, PR)
    issue_comment = tracking(github_sim, run.comment_id)
    if deleted:
        assert [r.headers.get("X-Ascii-Confirm-Delete") for r in deletes] == [run.box_id]
        assert stops == []
        assert box_sim.boxes[run.box_id].deleted
        reason = f"🗄️ Box deleted: pull request \\#{PR} was merged. The box was up for "
    else:
        assert deletes == [] and len(stops) == 1
        reason = f"🗄️ Box archived: pull request \\#{PR} was merged. The box was up for "
    for body in (issue_comment, pr_comment["body"]):
        result = section(body, "### Result")
        assert result.startswith("\n\n✅ Finished in ")
        assert reason in result
        assert body.count(f"https://github.com/{REPO}/pull/{PR}") == 1  # in the info line


@pytest.mark.parametrize(
    ("private", "show_desktop", "shown"),
    [(True, True, True), (False, True, False), (True, False, False)],
)
async def test_the_desktop_link_is_shown_only_where_the_config_allows_it(
    app: RunningApp,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
    private: bool,
    show_desktop: bool,
    shown: bool,
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", f"show_desktop: {str(show_desktop).lower()}\n")
    payload = labeled(ISSUE)
    payload["repository"]["private"] = private
    await app.post("issues", payload)
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    token = box_sim.boxes[run.box_id].desktop_token
    body = tracking(github_sim, run.comment_id)
    assert ("🖥️ **Desktop:** <https://" in body) is shown
    assert (token in body) is shown
    assert bool(box_sim.requests_to("POST", r"/desktop$")) is shown
    if not shown:
        assert all(token not in str(call.json) for call in github_sim.calls)


async def test_closing_the_issue_without_a_pr_archives_the_box(
    app: RunningApp, box_sim: BoxSimulator
) -> None:
    run = await finished_run(app)
    payload = load_payload("issues.labeled.1")
    payload["action"] = "closed"
    payload["issue"] = {**payload["issue"], "number": ISSUE, "state": "closed"}
    await app.post("issues", payload, delivery_id="issue-closed")
    await app.wait_for("issue-closed")
    await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$")) == 1


def issue_closed() -> dict[str, Any]:
    payload = load_payload("issues.labeled.1")
    payload["action"] = "closed"
    payload["issue"] = {**payload["issue"], "number": ISSUE, "state": "closed"}
    return payload


async def box_state(box_sim: BoxSimulator, box_id: str | None, *states: str) -> None:
    assert box_id is not None
    async with asyncio.timeout(5):
        await box_sim.wait_for_state(box_id, *states)


async def pending_stops(app: RunningApp) -> list[str]:
    return [p.run_id for p in await app.components.store.pending_stops()]


async def test_a_stop_that_failed_is_tried_again_after_a_restart(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    first = await start_app(options=fast_options(stop_retry_base=600.0))
    run = await finished_run(first)
    box_sim.inject_fault("POST", r"/stop$", 400)
    await first.post("issues", issue_closed(), delivery_id="closed")
    await first.wait_for("closed")
    archived = await wait_for_run(first, ISSUE, RunState.ARCHIVED)
    assert await pending_stops(first) == [run.id]
    assert box_sim.boxes[run.box_id].state == "idle"
    assert "has not managed to stop the box yet" in tracking(github_sim, run.comment_id)
    assert "has not managed to stop the box yet" in (archived.notice or "")
    await first.client.close()

    second = await start_app()
    await box_state(box_sim, run.box_id, "archived")
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$")) == 2
    await wait_until(lambda: "has not managed" not in tracking(github_sim, run.comment_id))
    assert await pending_stops(second) == []
    stored = await second.components.store.get_run(run.id)
    assert stored is not None and stored.state is RunState.ARCHIVED and stored.notice is None


async def test_a_stop_that_failed_is_tried_again_with_backoff(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    app = await start_app(options=fast_options(stop_retry_base=0.05))
    run = await finished_run(app)
    box_sim.inject_fault("POST", r"/stop$", 400, times=2)
    await app.post("issues", issue_closed(), delivery_id="closed")
    await app.wait_for("closed")
    await box_state(box_sim, run.box_id, "archived")
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$")) == 3
    await wait_until(lambda: "has not managed" not in tracking(github_sim, run.comment_id))
    assert await pending_stops(app) == []


async def test_a_redelivered_close_tries_a_failed_stop_again(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    run = await finished_run(app)
    box_sim.inject_fault("POST", r"/stop$", 400)
    for delivery in ("closed-1", "closed-2"):
        await app.post("issues", issue_closed(), delivery_id=delivery)
        await app.wait_for(delivery)
    await box_state(box_sim, run.box_id, "archived")
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$")) == 2
    assert await pending_stops(app) == []
    assert "has not managed" not in tracking(github_sim, run.comment_id)


async def test_stopping_a_box_that_box_already_archived_is_not_an_error(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    run = await finished_run(app)
    async with app.components.session.post(
        f"{box_sim.base_url}/boxes/{run.box_id}/stop",
        headers={"Authorization": f"Bearer {box_sim.api_key}"},
    ) as response:
        assert response.status == 202
    await box_state(box_sim, run.box_id, "archived")
    box_sim.inject_fault("POST", r"/stop$", 409)
    await app.post("issues", issue_closed(), delivery_id="closed")
    await app.wait_for("closed")
    archived = await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    assert await pending_stops(app) == []
    assert archived.notice is None
    assert "has not managed" not in tracking(github_sim, run.comment_id)


async def test_box_archived_by_its_ttl_ends_the_run(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.default_script = "interrupt"
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    async with app.components.session.post(
        f"{box_sim.base_url}/boxes/{run.box_id}/stop",
        headers={"Authorization": f"Bearer {box_sim.api_key}"},
    ) as response:
        assert response.status == 202
    ended = await wait_for_run(app, ISSUE, RunState.ARCHIVED, RunState.FAILED)
    assert "archiv" in (ended.reason or "")


async def test_an_idle_run_whose_box_expired_is_archived_and_stops_counting(
    start_app: AppFactory, settings: Any, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.add_issue(REPO, ISSUE + 100, title="Another one")
    app = await start_app(replace(settings, max_active=1), fast_options(sweep_every=0.05))
    run = await finished_run(app)
    assert [r.json["ttlSeconds"] for r in box_sim.requests_to("POST", r"/boxes$")] == [3600]
    box_sim.timings.ttl_scale = 1 / 3600  # restart the hour's countdown, a second long now
    async with app.components.session.patch(
        f"{box_sim.base_url}/boxes/{run.box_id}",
        json={"ttlSeconds": 3600},
        headers={"Authorization": f"Bearer {box_sim.api_key}"},
    ) as response:
        assert response.status == 200
    await box_state(box_sim, run.box_id, "archived")
    ended = await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    assert ended.reason == "box archived after its time to live"
    # The sweep saves the state, then edits the comment; no driver task marks the edit done.
    await wait_until(lambda: "Archived" in tracking(github_sim, run.comment_id))
    body = tracking(github_sim, run.comment_id)
    assert "## 🗄️ Archived" in body
    assert "🗄️ Box archived after its time to live. The box was up for " in body
    assert box_sim.requests_to("POST", r"/stop$") == []

    await app.post("issues", labeled(ISSUE + 100))
    other = await wait_for_run(app, ISSUE + 100, RunState.IDLE)
    assert other.box_id != run.box_id
    assert len(box_sim.requests_to("POST", r"/boxes$")) == 2


async def test_a_box_that_goes_to_error_mid_run_fails_the_run_with_the_reason(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.default_script = "interrupt"
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    await open_pr(app, github_sim, run.id)
    assert run.box_id is not None
    box_sim.boxes[run.box_id].set_state("error")  # Box's machine broke down
    failed = await wait_for_run(app, ISSUE, RunState.ARCHIVED, RunState.FAILED, RunState.IDLE)
    assert failed.state is RunState.FAILED
    assert failed.reason == "box went error"
    assert checks_on(github_sim, HEAD_SHA) == [("completed", "failure")]
    body = tracking(github_sim, run.comment_id)
    assert "The box broke down while the agent worked" in body
    assert "❌ Failed after " in body and ": box went error." in body
    assert box_sim.requests_to("POST", r"/stop$") == []


# -- polling ----------------------------------------------------------------------------------


def watcher_calls(box_sim: BoxSimulator, box_id: str) -> int:
    """The GETs made about one box: its prompt run, its events and the box itself."""
    return sum(1 for r in box_sim.requests_to("GET", rf"^/boxes/{box_id}(/|$)"))


async def sample_calls(box_sim: BoxSimulator, box_id: str, until: asyncio.Event) -> list[Any]:
    samples = []
    while not until.is_set():
        samples.append((time.monotonic(), watcher_calls(box_sim, box_id)))
        await asyncio.sleep(0.005)
    return samples


def most_calls_in(samples: list[Any], window: float) -> int:
    """The most calls seen between two samples at most *window* seconds apart."""
    most, first = 0, 0
    for moment, count in samples:
        while moment - samples[first][0] > window:
            first += 1
        most = max(most, count - samples[first][1])
    return most


def calls_between(samples: list[Any], start: float, end: float) -> int:
    inside = [count for moment, count in samples if start <= moment <= end]
    return inside[-1] - inside[0]


async def watch_calls(app: RunningApp, box_sim: BoxSimulator) -> tuple[Run, list[Any]]:
    """Label the issue, sample the watcher's Box calls from WORKING to IDLE."""
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    assert run.box_id is not None
    done = asyncio.Event()
    sampler = asyncio.create_task(sample_calls(box_sim, run.box_id, done))
    run = await wait_for_run(app, ISSUE, RunState.IDLE, timeout=30)
    done.set()
    return run, await sampler


POLLING = {"poll_interval": 0.05, "max_poll_interval": 0.3, "budget_window": 1.0}


async def test_a_busy_run_stays_within_its_box_call_budget_and_misses_nothing(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.timings.agent_step = 0.0
    box_sim.scripts["busy"] = [*(RunCommand(f"echo {n}") for n in range(8_000)), Wait(0.5)]
    box_sim.default_script = "busy"
    app = await start_app(options=fast_options(**POLLING))
    budget = app.components.runs.timing.calls_per_window
    assert budget == 60  # ceil(1 s / 0.05 s) polls of 3 calls
    run, samples = await watch_calls(app, box_sim)
    assert most_calls_in(samples, 1.0) <= budget + 2  # + the final box check, a late arrival
    shown = run.summary["steps_dropped"] + len(run.summary["steps"])
    assert shown == 8_000
    assert "echo 7999" in tracking(github_sim, run.comment_id)


async def test_a_quiet_run_polls_slowly(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["quiet"] = [Say("Thinking."), Wait(2.5), Say("Done.")]
    box_sim.default_script = "quiet"
    app = await start_app(options=fast_options(**POLLING))
    _run, samples = await watch_calls(app, box_sim)
    start = samples[0][0]
    # After backing off, at most one poll (prompt run + one page) per 0.3 s, and a box check.
    assert calls_between(samples, start + 1.2, start + 2.2) <= 2 * 4 + 1


async def test_a_large_poll_interval_never_makes_quiet_polling_faster(
    start_app: AppFactory, settings: Any
) -> None:
    options = fast_options()
    options.timing = None
    for interval, idle in ((5.0, 30.0), (60.0, 360.0)):
        app = await start_app(replace(settings, box_poll_interval=interval), options)
        timing = app.components.runs.timing
        assert (timing.poll_interval, timing.max_poll_interval) == (interval, idle)
        assert timing.calls_per_window == 60 // int(interval) * 3


async def test_a_streaming_partial_finalised_in_place_is_read_again(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["stream"] = [
        Emit("response", {"content": "The whole", "is_streaming": True, "model": "gpt-5.4"}),
        Wait(0.8),
    ]
    box_sim.default_script = "stream"
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    assert run.box_id is not None
    box = box_sim.boxes[run.box_id]
    partial = await wait_until(
        lambda: next((e for e in box.events if e["data"].get("is_streaming")), None)
    )
    reads = len(box_sim.requests_to("GET", r"/events$"))
    await wait_until(lambda: len(box_sim.requests_to("GET", r"/events$")) >= reads + 2)
    partial["data"] = {"content": "The whole answer.", "model": "gpt-5.4", "is_reverted": False}
    await wait_for_run(app, ISSUE, RunState.IDLE)
    message = section(tracking(github_sim, run.comment_id), "### Latest message from the agent")
    assert "The whole answer." in message


async def test_a_partial_never_followed_by_a_message_does_not_stop_the_reading(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.timings.agent_step = 0.0
    box_sim.scripts["stuck"] = [
        Emit("response", {"content": "Half", "is_streaming": True, "model": "gpt-5.4"}),
        *(Emit("compaction_complete", {"n": n}) for n in range(700)),
        Checkpoint("Late commit"),
    ]
    box_sim.default_script = "stuck"
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE, timeout=10)
    body = tracking(github_sim, run.comment_id)
    assert "## ✅ Finished" in body and "Late commit" in body


# -- limits of what is shown -------------------------------------------------------------------


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


async def test_huge_agent_message_is_trimmed_below_githubs_limit(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    wide = "🎉" * 195  # two UTF-16 units each, as GitHub may count them
    box_sim.timings.agent_step = 0.0
    box_sim.scripts["huge"] = [
        Wait(0.3),
        *(RunCommand(f"{n} echo {wide}") for n in range(250)),
        Say("é" * 35_000 + "x" * 35_000),
    ]
    box_sim.default_script = "huge"
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    await open_pr(app, github_sim, run.id)
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    body = tracking(github_sim, run.comment_id)
    assert len(body) < 65_536 and utf16_len(body) <= 60_000
    assert "_…(trimmed)_" in section(body, "### Latest message from the agent")
    kept = len(run.summary["steps"])
    assert kept == 200 and run.summary["steps_dropped"] == 50
    steps = section(body, ASKED)
    shown = steps.count("\n- ✅ ")
    hidden_note = re.search(r"_Earlier steps not shown: (\d+)\._", steps)
    assert hidden_note is not None
    hidden = int(hidden_note.group(1))
    assert 0 < shown < kept  # the size budget, not the timeline, dropped these
    assert shown + hidden == 250
    assert "249 echo" in steps
    [check] = github_sim.check_runs(REPO)
    assert check["conclusion"] == "success"
    output = check["output"]
    assert len(output["summary"]) <= 65_535 and len(output["text"]) <= 65_535
    assert utf16_len(output["text"]) <= 60_000
    assert "_Earlier steps not shown: " in output["text"]
    assert "249 echo" in output["text"]


async def test_token_in_a_preview_url_is_scrubbed_in_a_public_repo(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["preview"] = [
        RunCommand("host 3000"),
        Say("Preview: https://frazil-pneuma-rallye-3000.on.ascii.dev/?_token=tok_s3cr3t_value"),
    ]
    box_sim.default_script = "preview"
    run = await finished_run(app)
    body = tracking(github_sim, run.comment_id)
    assert "https://frazil-pneuma-rallye-3000.on.ascii.dev" in body
    assert "tok_s3cr3t_value" not in body
    assert all("tok_s3cr3t_value" not in str(call.json) for call in github_sim.calls)


async def test_comment_edits_stay_bounded_for_a_200_event_run(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:

    box_sim.scripts["long"] = [*success_script(extra_commands=200), Checkpoint("more")]
    box_sim.default_script = "long"
    app = await start_app(options=fast_options(poll_interval=0.05, max_poll_interval=0.1))
    app.components.runs.tracker.min_interval = 0.2
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE, timeout=15)
    edits = github_sim.comment_edits(run.comment_id)
    events = len(box_sim.boxes[run.box_id].events)
    assert events > 200
    assert edits < 40


async def test_rerun_sends_the_last_instructions_again(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    await app.post("issue_comment", commented(ISSUE, "/box fix keep the XYZZY-7 ordering"))
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    await open_pr(app, github_sim, run.id)
    [check] = github_sim.check_runs(REPO)
    rerun = requested_action(check, "")
    rerun["action"] = "rerequested"
    await app.post("check_run", rerun, delivery_id="rerun-instructions")
    await wait_until(lambda: len(box_sim.requests_to("POST", r"/prompt$")) == 2)
    first, again = (r.json["prompt"] for r in box_sim.requests_to("POST", r"/prompt$"))
    assert "keep the XYZZY-7 ordering" in first
    assert "keep the XYZZY-7 ordering" in again


async def test_a_box_that_cannot_be_read_after_the_work_does_not_fail_the_run(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    async def box_api_falters(box_id: str, event: dict[str, Any]) -> None:
        if event["type"] == "prompt" and event["data"]["status"] == "finished":
            box_sim.inject_fault("GET", rf"/boxes/{box_id}$", 503, times=200)

    box_sim.on_agent_event = box_api_falters
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE, RunState.FAILED, timeout=15)
    assert run.state is RunState.IDLE
    assert box_sim.requests_to("POST", r"/stop$") == []
    assert "✅ Finished" in tracking(github_sim, run.comment_id)
