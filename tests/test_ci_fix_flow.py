"""Sending failing CI on a linked pull request back to its box (`auto_fix_ci`)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.ingress.screen import Skip
from bot.models import Run, RunState
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from tests.conftest import REPO, REPO_ID, RunningApp, load_payload
from tests.flow import labeled, post_not_stored, pull_request_event, wait_for_run, wait_until

ISSUE = 71
PR = 72
BRANCH = f"box/issue-{ISSUE}"
SHA_A, SHA_B, SHA_C, SHA_D = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)
ENABLED = "auto_fix_ci:\n  enabled: true\n  max_attempts: 2\n"
CI_APP_ID, CI_APP_SLUG = 5555, "circle-ci"
FENCED = re.compile(
    r"<<<UNTRUSTED-DATA kind=ci-failures nonce=(\w+)>>>\n(.*?)\n"
    r"<<<END-UNTRUSTED-DATA kind=ci-failures nonce=\1>>>",
    re.S,
)


@pytest.fixture
async def linked(app: RunningApp, github_sim: GitHubSimulator) -> Run:
    """A run whose box finished and opened PR #72, at head SHA_A, with auto_fix_ci on."""
    github_sim.set_file(REPO, ".github/box.yml", ENABLED)
    github_sim.add_issue(REPO, ISSUE, title="Sorting is unstable", body="See the test.")
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE)
    github_sim.add_pull(REPO, PR, title="Fix sorting", head=BRANCH, base="master", head_sha=SHA_A)
    await move_head(app, github_sim, run, SHA_A, "opened")
    return run


async def move_head(
    app: RunningApp, github: GitHubSimulator, run: Run, sha: str, action: str = "synchronize"
) -> None:
    github.push_branch(REPO, BRANCH, sha)
    payload = pull_request_event(
        f"pull_request.{action}.1", PR, head=BRANCH, sha=sha, body=f"Box-Run: {run.id}"
    )
    payload["installation"] = {"id": 4242}
    await app.post("pull_request", payload, delivery_id=f"pr-{action}-{sha[:4]}")
    await app.wait_for(f"pr-{action}-{sha[:4]}")


def workflow_run(
    run_id: int, sha: str, *, conclusion: str = "failure", actor: str = "Codertocat"
) -> dict[str, Any]:
    """A `workflow_run.completed` delivery for GitHub Actions run *run_id* on *sha*."""
    data = load_payload("workflow_run.completed.3")
    data["repository"] = load_payload("issues.labeled.1")["repository"]
    del data["organization"]
    workflow = data["workflow_run"]
    workflow.update(
        id=run_id, head_sha=sha, head_branch=BRANCH, status="completed", conclusion=conclusion
    )
    workflow["actor"] = {**workflow["actor"], "login": actor}
    workflow["triggering_actor"] = {**workflow["triggering_actor"], "login": actor}
    workflow["pull_requests"][0].update(number=PR)
    workflow["pull_requests"][0]["head"].update(ref=BRANCH, sha=sha)
    return data


def check_suite(
    suite_id: int,
    sha: str,
    *,
    app_id: int = CI_APP_ID,
    slug: str = CI_APP_SLUG,
    conclusion: str = "failure",
) -> dict[str, Any]:
    """A `check_suite.completed` delivery for suite *suite_id* of an app on *sha*."""
    data = load_payload("check_suite.completed.1")
    suite = data["check_suite"]
    suite.update(id=suite_id, head_sha=sha, head_branch=BRANCH, conclusion=conclusion)
    suite["app"] = {**suite["app"], "id": app_id, "slug": slug}
    suite["pull_requests"][0].update(number=PR)
    suite["pull_requests"][0]["head"].update(ref=BRANCH, sha=sha)
    return data


def failing_job(github: GitHubSimulator, run_id: int, sha: str, lines: int = 500) -> None:
    log = "".join(f"2024-05-01T10:00:00.0000000Z line {n}: {'x' * 80}\n" for n in range(lines))
    log += "2024-05-01T10:00:01.0000000Z E   AssertionError: sorted order lost\n"
    github.add_workflow_job(REPO, run_id, name="tests (3.12)", log=log, head_sha=sha)
    github.add_workflow_job(
        REPO, run_id, name="lint", log="ok\n", conclusion="success", head_sha=sha
    )


def prompts(box_sim: BoxSimulator) -> list[str]:
    return [r.json["prompt"] for r in box_sim.requests_to("POST", r"/boxes/[^/]+/prompt$")]


def tracking(github: GitHubSimulator, run: Run) -> str:
    return next(c["body"] for c in github.comments(REPO, ISSUE) if c["id"] == run.comment_id)


HANDLERS = {
    "check_suite": "ci.on_check_suite_completed",
    "workflow_run": "ci.on_workflow_run_completed",
}


async def deliver(app: RunningApp, event: str, payload: dict[str, Any], delivery: str) -> None:
    """Post a delivery and wait until the CI handler has dealt with it."""
    await app.post(event, payload, delivery_id=delivery)
    row = await app.wait_for(delivery)
    assert row.done_handlers == (HANDLERS[event],)


async def fixed_once_more(app: RunningApp, box_sim: BoxSimulator, count: int) -> None:
    """Wait until the box got its *count*th prompt and finished it."""
    await wait_until(lambda: len(prompts(box_sim)) == count)
    await wait_for_run(app, ISSUE, RunState.IDLE)


# -- a failure is sent -----------------------------------------------------------------------


async def test_failed_workflow_on_the_pr_head_sends_its_log_tail_to_the_same_box(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, linked: Run
) -> None:
    failing_job(github_sim, 801, SHA_A)
    await deliver(app, "workflow_run", workflow_run(801, SHA_A), "wf-801")
    await fixed_once_more(app, box_sim, 2)
    assert len(box_sim.requests_to("POST", rf"^/boxes/{linked.box_id}/prompt$")) == 2
    assert len(box_sim.requests_to("POST", r"^/boxes$")) == 1
    [(_nonce, failures)] = FENCED.findall(prompts(box_sim)[1])
    assert failures.startswith(f"CI failed on commit {SHA_A}. Failing checks: tests (3.12).")
    assert "### tests (3.12) (failure)" in failures
    assert failures.rstrip().endswith("E   AssertionError: sorted order lost")
    assert "line 499: " in failures and "line 0: " not in failures
    assert "\n\nline " in failures  # the tail starts at a whole line
    assert "2024-05-01T" not in failures and "lint" not in failures
    log_lines = [line for line in failures.splitlines() if line.startswith(("line ", "E  "))]
    assert len(log_lines) <= 100
    assert len(failures.encode()) < 8 * 1024 + 500
    redirect = github_sim.calls_to("GET", r"/actions/jobs/\d+/logs$")
    assert [call.status for call in redirect] == [302]
    body = tracking(github_sim, linked)
    assert "🔁 CI failed on `aaaaaaa`: sent the failures to the box (attempt 1 of 2)." in body


async def test_failed_suite_of_another_app_sends_its_check_outputs(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, linked: Run
) -> None:
    output = {"title": "2 tests failed", "summary": "See below.", "text": "FAILED test_stable"}
    build = github_sim.add_check_run(
        REPO,
        name="build",
        head_sha=SHA_A,
        conclusion="failure",
        app_id=CI_APP_ID,
        app_slug=CI_APP_SLUG,
        output=output,
    )
    github_sim.add_check_run(
        REPO,
        name="style",
        head_sha=SHA_A,
        conclusion="success",
        app_id=CI_APP_ID,
        app_slug=CI_APP_SLUG,
    )
    suite_id = build["check_suite"]["id"]
    await deliver(app, "check_suite", check_suite(suite_id, SHA_A), "suite-1")
    await fixed_once_more(app, box_sim, 2)
    [(_nonce, failures)] = FENCED.findall(prompts(box_sim)[1])
    assert "Failing checks: build." in failures
    assert "### build (failure)" in failures
    assert "2 tests failed\n\nSee below.\n\nFAILED test_stable" in failures
    assert "style" not in failures


# -- nothing is sent -------------------------------------------------------------------------


async def test_successful_workflow_sends_nothing(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, linked: Run
) -> None:
    passed = workflow_run(802, SHA_A, conclusion="success")
    await post_not_stored(app, "workflow_run", passed, "ok", Skip.CI_NOT_FAILED)
    assert len(prompts(box_sim)) == 1
    assert github_sim.calls_to("GET", r"/actions/") == []


async def test_failure_on_another_commit_sends_nothing(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, linked: Run
) -> None:
    failing_job(github_sim, 803, SHA_B)
    await deliver(app, "workflow_run", workflow_run(803, SHA_B), "other-sha")
    assert len(prompts(box_sim)) == 1
    assert github_sim.calls_to("GET", r"/actions/") == []


async def test_our_own_suite_and_workflows_we_started_send_nothing(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, linked: Run
) -> None:
    own = check_suite(9001, SHA_A, app_id=321, slug="box-bot")
    await post_not_stored(app, "check_suite", own, "own", Skip.OWN_SUITE)
    failing_job(github_sim, 804, SHA_A)
    await deliver(app, "workflow_run", workflow_run(804, SHA_A, actor="box-bot[bot]"), "ours")
    assert len(prompts(box_sim)) == 1
    assert github_sim.calls_to("GET", r"/check-runs$|/actions/") == []


async def test_github_actions_suite_is_left_to_its_workflow_run(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, linked: Run
) -> None:
    actions = check_suite(9002, SHA_A, app_id=15368, slug="github-actions")
    await post_not_stored(app, "check_suite", actions, "actions-suite", Skip.ACTIONS_SUITE)
    assert len(prompts(box_sim)) == 1
    assert github_sim.calls_to("GET", r"/check-runs$") == []


async def test_nothing_is_sent_when_auto_fix_ci_is_off(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, linked: Run
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "auto_fix_ci: {enabled: false}\n")
    failing_job(github_sim, 805, SHA_A)
    await deliver(app, "workflow_run", workflow_run(805, SHA_A), "disabled")
    assert len(prompts(box_sim)) == 1
    assert github_sim.calls_to("GET", r"/actions/") == []
    assert "CI failed" not in tracking(github_sim, linked)


# -- the bound -----------------------------------------------------------------------------


async def test_the_loop_stops_at_max_attempts_and_says_so(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, linked: Run
) -> None:
    for number, sha in enumerate((SHA_A, SHA_B), start=1):
        if sha != SHA_A:
            await move_head(app, github_sim, linked, sha)
        failing_job(github_sim, 810 + number, sha)
        await deliver(app, "workflow_run", workflow_run(810 + number, sha), f"wf-{number}")
        await fixed_once_more(app, box_sim, 1 + number)
        notice = f"sent the failures to the box (attempt {number} of 2)."
        assert notice in tracking(github_sim, linked)

    for sha, run_id in ((SHA_C, 813), (SHA_D, 814)):
        await move_head(app, github_sim, linked, sha)
        failing_job(github_sim, run_id, sha)
        await deliver(app, "workflow_run", workflow_run(run_id, sha), f"wf-{run_id}")
    assert len(prompts(box_sim)) == 3
    assert github_sim.calls_to("GET", r"/actions/runs/81[34]/jobs") == []
    body = tracking(github_sim, linked)
    assert "🛑 CI still failing after 2 attempts; not sending more." in body
    attempts = await app.components.store.ci_fix_attempts(REPO_ID, PR)
    assert attempts == {SHA_A: 1, SHA_B: 2, SHA_C: 0, SHA_D: 0}


async def test_redelivery_and_a_second_suite_on_one_commit_count_once(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, linked: Run
) -> None:
    failing_job(github_sim, 821, SHA_A)
    await deliver(app, "workflow_run", workflow_run(821, SHA_A), "wf-821")
    await deliver(app, "workflow_run", workflow_run(821, SHA_A), "wf-821")  # same GUID
    await deliver(app, "workflow_run", workflow_run(821, SHA_A), "wf-821-redelivered")
    build = github_sim.add_check_run(
        REPO,
        name="build",
        head_sha=SHA_A,
        conclusion="failure",
        app_id=CI_APP_ID,
        app_slug=CI_APP_SLUG,
    )
    await deliver(app, "check_suite", check_suite(build["check_suite"]["id"], SHA_A), "suite")
    await fixed_once_more(app, box_sim, 2)
    assert len(github_sim.calls_to("GET", r"/actions/runs/821/jobs")) == 1
    assert await app.components.store.ci_fix_attempts(REPO_ID, PR) == {SHA_A: 1}

    await move_head(app, github_sim, linked, SHA_B)
    failing_job(github_sim, 822, SHA_B)
    await deliver(app, "workflow_run", workflow_run(822, SHA_B), "wf-822")
    await fixed_once_more(app, box_sim, 3)
    assert "(attempt 2 of 2)." in tracking(github_sim, linked)
