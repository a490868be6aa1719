"""GitHub's rate limits and faults, through the running app with its real write pacing."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import replace
from typing import Any

import pytest

from bot.ingress.server import Options
from bot.models import RunState
from bot.settings import Settings
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Say, Wait, success_script
from bot.sim.github import Call, GitHubSimulator
from bot.store.records import DeliveryStatus
from tests.conftest import INSTALLATION_ID, MAINTAINER, REPO, AppFactory, fast_options
from tests.flow import (
    bot_comments,
    commented,
    labeled,
    pull_request_event,
    wait_for_run,
    wait_until,
)

ISSUE = 61
WRITE_INTERVAL = 1.0  # GitHub's own advice, not scaled
COMMENT_EDITS = r"^/repos/[^/]+/[^/]+/issues/comments/\d+$"
SECONDARY = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}


def paced(**knobs: Any) -> Options:
    """The test options with GitHub writes paced as in production."""
    return replace(
        fast_options(),
        github_write_interval=WRITE_INTERVAL,
        comment_interval=1.0,
        **knobs,
    )


@pytest.fixture(autouse=True)
def issue(github_sim: GitHubSimulator) -> dict[str, Any]:
    return github_sim.add_issue(REPO, ISSUE, title="Dates drift", body="Off by one day.")


def writes(github: GitHubSimulator) -> list[Call]:
    """Every request of the installation that changes something on GitHub, oldest first."""
    return [
        c
        for c in github.calls
        if c.method not in ("GET", "HEAD") and c.installation_id == INSTALLATION_ID
    ]


def sent_between(calls: list[Call], start: float, end: float) -> list[Call]:
    return [c for c in calls if start <= c.at < end]


def tracking_body(github: GitHubSimulator) -> str:
    [comment] = bot_comments(github, ISSUE)
    return str(comment["body"])


async def test_writes_of_one_installation_are_a_second_apart_and_one_at_a_time(
    start_app: AppFactory, github_sim: GitHubSimulator
) -> None:
    app = await start_app(options=paced())
    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE, timeout=30)
    sent = writes(github_sim)
    assert len(sent) >= 4
    for before, after in itertools.pairwise(sent):
        assert after.at >= before.answered_at  # never two in flight
        assert after.at - before.at >= WRITE_INTERVAL * 0.95


async def test_a_secondary_limit_pauses_every_write_but_not_an_archive(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["slow"] = [Say("Reading the date code."), Wait(30), *success_script()]
    box_sim.default_script = "slow"
    app = await start_app(options=paced())
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING, timeout=20)
    github_sim.inject_fault(
        "PATCH", COMMENT_EDITS, status=403, headers={"retry-after": "4"}, body=SECONDARY
    )
    archive = commented(ISSUE, "/box archive")
    github_sim.add_comment(REPO, ISSUE, body="/box archive", user=MAINTAINER)
    refused = await wait_until(lambda: [c for c in github_sim.calls if c.status == 403], timeout=20)
    paused_at = refused[0].answered_at
    await app.post("issue_comment", archive, delivery_id="archive-in-pause")
    await wait_until(lambda: box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$"))
    assert time.monotonic() < paused_at + 4  # the archive did not wait for the pause
    await wait_until(lambda: "## 🗄️ Archived" in tracking_body(github_sim), timeout=20)
    assert sent_between(writes(github_sim), paused_at, paused_at + 4) == []
    after = [c for c in writes(github_sim) if c.at >= paused_at]
    assert after[0].path.endswith(f"/issues/comments/{run.comment_id}")
    assert github_sim.check_runs(REPO) == []  # an issue: no check


async def test_a_secondary_limit_without_retry_after_waits_longer_each_time(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    # GitHub's advice is 60 s, doubling; scaled down here to 0.5 s.
    app = await start_app(options=paced(github_secondary_wait=0.5))
    github_sim.inject_fault("PATCH", COMMENT_EDITS, status=403, body=SECONDARY, times=3)
    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE, timeout=30)
    await wait_until(lambda: "✅ Finished" in tracking_body(github_sim), timeout=30)
    sent = writes(github_sim)
    refusals = [i for i, c in enumerate(sent) if c.status == 403]
    assert len(refusals) == 3
    waits = [sent[i + 1].at - sent[i].answered_at for i in refusals]
    for wait, least in zip(waits, (0.5, 1.0, 2.0), strict=True):
        assert wait >= least * 0.95


async def test_a_write_refused_again_and_again_is_given_up_and_counted(
    start_app: AppFactory,
    github_sim: GitHubSimulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = await start_app(options=paced(github_secondary_wait=0.1))
    github_sim.inject_fault("PATCH", COMMENT_EDITS, status=429, body=SECONDARY, times=1000)
    caplog.set_level(logging.ERROR, logger="bot.github.outbox")
    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE, timeout=30)
    await wait_until(lambda: "gave up on comment:" in caplog.text, timeout=30)
    page = await (await app.client.get("/metrics")).text()
    assert 'box_bot_github_writes_given_up_total{reason="rate_limited"}' in page
    assert 'box_bot_github_rate_limited_total{limit="secondary"}' in page
    refused = [c for c in writes(github_sim) if c.status == 429]
    assert 5 <= len(refused) <= 10
    for before, after in itertools.pairwise(refused):
        assert after.at - before.answered_at >= 0.1 * 0.95


async def test_a_permission_check_refused_by_a_used_up_limit_is_asked_again_after_the_reset(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    app = await start_app(options=paced())
    reset = int(time.time()) + 2
    github_sim.inject_fault(
        "GET",
        r"/collaborators/[^/]+/permission$",
        status=403,
        headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
        body={"message": "API rate limit exceeded for installation ID 4242."},
    )
    comment = github_sim.add_comment(REPO, ISSUE, body="/box fix", user=MAINTAINER)
    payload = commented(ISSUE, "/box fix", comment_id=comment["id"])
    await app.post("issue_comment", payload, delivery_id="fix-at-the-limit")
    row = await app.wait_for("fix-at-the-limit", timeout=20)
    assert (row.status, row.attempts) == (DeliveryStatus.DONE, 2)
    await wait_for_run(app, ISSUE, RunState.IDLE, timeout=30)
    assert len(box_sim.requests_to("POST", r"/prompt$")) == 1
    assert [c["body"] for c in bot_comments(github_sim, ISSUE)] == [tracking_body(github_sim)]
    refused = next(c for c in github_sim.calls if c.status == 403)
    reset_at = reset - (time.time() - time.monotonic())  # the reset on the monotonic clock
    ours = [c for c in github_sim.calls if c.installation_id == INSTALLATION_ID]
    assert sent_between(ours, refused.answered_at, reset_at) == []
    # The daily refusal notice was not used up.
    store = app.components.store
    assert await store.claim_notice(f"denied:{REPO}#{ISSUE}:{MAINTAINER}".lower(), 86400)


# -- reads -------------------------------------------------------------------------------------


async def test_a_read_answered_5xx_is_retried_with_backoff(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    app = await start_app(options=paced())
    github_sim.inject_fault("GET", rf"/issues/{ISSUE}$", status=502, times=2)
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE, RunState.FAILED, timeout=30)
    assert run.state is RunState.IDLE
    reads = github_sim.calls_to("GET", rf"/issues/{ISSUE}$")
    assert [c.status for c in reads] == [502, 502, 200, 200]  # a look before the box, the prompt
    assert reads[1].at - reads[0].answered_at >= 1.0 * 0.95
    assert reads[2].at - reads[1].answered_at >= 4.0 * 0.95
    [prompt] = box_sim.requests_to("POST", r"/prompt$")
    assert "Dates drift" in prompt.json["prompt"]


async def test_a_hung_read_is_cut_at_the_client_timeout_and_asked_again(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    app = await start_app(options=paced(github_timeout=0.5))
    github_sim.inject_fault("GET", rf"/issues/{ISSUE}$", status=None, delay=20.0)
    started = time.monotonic()
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE, RunState.FAILED, timeout=30)
    assert run.state is RunState.IDLE
    assert time.monotonic() - started < 15  # not the 20 s GitHub hung for
    arrived = [p for p in github_sim.delayed if p.endswith(f"/issues/{ISSUE}")]
    assert len(arrived) == 1
    [prompt] = box_sim.requests_to("POST", r"/prompt$")
    assert "Dates drift" in prompt.json["prompt"]


async def test_a_validation_error_is_not_retried_and_logged_with_githubs_message(
    start_app: AppFactory, github_sim: GitHubSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    app = await start_app(options=paced())
    message = "Body is too long (maximum is 65536 characters)"
    github_sim.inject_fault(
        "POST",
        rf"/issues/{ISSUE}/comments$",
        status=422,
        body={
            "message": "Validation Failed",
            "errors": [{"resource": "IssueComment", "code": "custom", "message": message}],
        },
    )
    comment = github_sim.add_comment(REPO, ISSUE, body="/box help", user=MAINTAINER)
    await app.post(
        "issue_comment",
        commented(ISSUE, "/box help", comment_id=comment["id"]),
        delivery_id="help-refused",
    )
    row = await app.wait_for("help-refused", timeout=10)
    assert (row.status, row.attempts) == (DeliveryStatus.FAILED, 1)
    assert len(github_sim.calls_to("POST", rf"/issues/{ISSUE}/comments$")) == 1
    assert "refused the request (422): Validation Failed" in caplog.text
    assert message in caplog.text


async def test_redirects_are_followed_for_reads_and_writes(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    app = await start_app(options=paced())
    issue_path = f"/repos/{REPO}/issues/{ISSUE}"
    github_sim.inject_fault(
        "GET",
        rf"/issues/{ISSUE}$",
        status=301,
        headers={"location": f"{github_sim.base_url}{issue_path}"},
    )
    github_sim.inject_fault(
        "PATCH",
        COMMENT_EDITS,
        status=307,
        headers={"location": f"{github_sim.base_url}/repos/{REPO}/issues/comments/1000002"},
    )
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE, timeout=30)
    assert [c.status for c in github_sim.calls_to("GET", rf"/issues/{ISSUE}$")] == [301, 200, 200]
    moved = github_sim.calls_to("PATCH", COMMENT_EDITS)
    assert moved[0].status == 307 and moved[1].status == 200
    assert moved[1].json == moved[0].json  # the same edit, sent where GitHub said
    assert run.comment_id == 1000002
    [prompt] = box_sim.requests_to("POST", r"/prompt$")
    assert "Dates drift" in prompt.json["prompt"]


# -- lost answers and check runs -------------------------------------------------------------

PR = 62
HEAD_SHA = "c" * 40


async def open_pr(app: Any, github: GitHubSimulator, run_id: str) -> str:
    github.add_pull(
        REPO,
        PR,
        title="Fix the date drift",
        head=f"box/issue-{ISSUE}",
        head_sha=HEAD_SHA,
        user="box-agent[bot]",
        user_type="Bot",
    )
    body = f"Fixes #{ISSUE}\n\nBox-Run: {run_id}"
    payload = pull_request_event(
        "pull_request.opened.1", PR, head=f"box/issue-{ISSUE}", sha=HEAD_SHA, body=body
    )
    delivery = f"pr-open-{run_id}"
    await app.post("pull_request", payload, delivery_id=delivery)
    return delivery


async def test_answers_lost_after_every_post_never_give_a_duplicate(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["slow"] = [Say("Reading the date code."), Wait(4), *success_script()]
    box_sim.default_script = "slow"
    app = await start_app(options=paced())
    for path in (
        rf"/issues/{ISSUE}/comments$",
        rf"/issues/{PR}/comments$",
        r"/issues/comments/\d+/reactions$",
        r"/check-runs$",
    ):
        github_sim.inject_fault("POST", path, status=502, after=True)
    comment = github_sim.add_comment(REPO, ISSUE, body="/box fix", user=MAINTAINER)
    await app.post("issue_comment", commented(ISSUE, "/box fix", comment_id=comment["id"]))
    run = await wait_for_run(app, ISSUE, RunState.WORKING, timeout=30)
    await app.wait_for(await open_pr(app, github_sim, run.id), timeout=30)
    run = await wait_for_run(app, ISSUE, RunState.IDLE, timeout=40)
    await wait_until(lambda: github_sim.check_runs(REPO)[0]["status"] == "completed", timeout=20)

    failed = [c.path for c in github_sim.calls if c.status == 502]
    assert len(failed) == 4  # every fault struck after its request took effect
    [tracking] = bot_comments(github_sim, ISSUE)
    [on_pr] = bot_comments(github_sim, PR)
    assert run.marker in tracking["body"] and run.marker in on_pr["body"]
    stored = await app.components.store.get_run(run.id)
    assert stored is not None
    assert (stored.comment_id, stored.pr_comment_id) == (tracking["id"], on_pr["id"])
    assert [r["content"] for r in github_sim.reactions(REPO, comment["id"])] == ["eyes"]
    [check] = github_sim.check_runs(REPO)
    assert (check["external_id"], check["conclusion"]) == (run.id, "success")
    assert stored.check_run_id == check["id"]


async def test_a_comment_not_listed_yet_after_a_lost_answer_is_not_posted_again(
    start_app: AppFactory, github_sim: GitHubSimulator
) -> None:
    app = await start_app(options=paced())
    github_sim.inject_fault("POST", rf"/issues/{ISSUE}/comments$", status=502, after=True)
    # The listings before the POST and right after it do not show the new comment yet.
    github_sim.inject_fault("GET", rf"/issues/{ISSUE}/comments$", status=200, body=[], times=2)
    await app.post("issues", labeled(ISSUE), delivery_id="label-lost")
    assert (await app.wait_for("label-lost", timeout=20)).attempts == 1
    run = await wait_for_run(app, ISSUE, RunState.IDLE, timeout=30)
    [tracking] = bot_comments(github_sim, ISSUE)
    assert run.comment_id == tracking["id"]
    assert len(github_sim.calls_to("POST", rf"/issues/{ISSUE}/comments$")) == 1


async def test_a_check_github_cannot_create_is_made_later_and_only_once(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["slow"] = [Say("Reading the date code."), Wait(2), *success_script()]
    box_sim.default_script = "slow"
    github_sim.add_pull(
        REPO, PR, title="Fix the date drift", head="fix/dates", head_sha=HEAD_SHA, user=MAINTAINER
    )
    app = await start_app(options=paced())
    github_sim.inject_fault("POST", r"/check-runs$", status=503)
    await app.post("issue_comment", commented(PR, "/box fix", pull=True))
    run = await wait_for_run(app, PR, RunState.IDLE, RunState.FAILED, timeout=40)
    assert run.state is RunState.IDLE  # the check's failure did not fail the paid run
    assert box_sim.requests_to("POST", r"/stop$") == []
    await wait_until(lambda: github_sim.check_runs(REPO), timeout=20)
    await wait_until(lambda: github_sim.check_runs(REPO)[0]["status"] == "completed", timeout=20)
    [check] = github_sim.check_runs(REPO)
    assert (check["head_sha"], check["conclusion"]) == (HEAD_SHA, "success")
    posts = github_sim.calls_to("POST", r"/check-runs$")
    assert [c.status for c in posts] == [503, 201]
    lookups = github_sim.calls_to("GET", rf"/commits/{HEAD_SHA}/check-runs$")
    assert lookups and posts[0].at < lookups[0].at < posts[1].at


@pytest.mark.parametrize("status", [404, 410])
async def test_an_issue_github_no_longer_shows_starts_no_box(
    start_app: AppFactory,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    app = await start_app(options=paced())
    github_sim.inject_fault("GET", rf"/issues/{ISSUE}$", status=status, times=10)
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.FAILED, timeout=20)
    assert box_sim.requests == []
    assert f"#{ISSUE} cannot be read (GitHub answers {status})" in (run.reason or "")
    assert f"{REPO}#{ISSUE} answers {status}" in caplog.text


async def test_a_run_step_refused_by_a_rate_limit_waits_for_it_instead_of_failing(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_permission(REPO, "dev-with-write", "write")
    github_sim.add_comment(REPO, ISSUE, body="It drifts at midnight UTC.", user="dev-with-write")
    app = await start_app(options=paced())
    github_sim.inject_fault(
        "GET",
        r"/collaborators/dev-with-write/permission$",
        status=429,
        headers={"retry-after": "2"},
        body=SECONDARY,
    )
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE, RunState.FAILED, timeout=30)
    assert run.state is RunState.IDLE
    asked = github_sim.calls_to("GET", r"/collaborators/dev-with-write/permission$")
    assert [c.status for c in asked] == [429, 200]
    assert asked[1].at - asked[0].answered_at >= 2 * 0.95
    [prompt] = box_sim.requests_to("POST", r"/prompt$")
    assert "It drifts at midnight UTC." in prompt.json["prompt"]


# -- final states and the content budget -------------------------------------------------------


async def test_final_states_refused_until_a_restart_land_after_it(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["slow"] = [Say("Reading the date code."), Wait(2), *success_script()]
    box_sim.default_script = "slow"
    github_sim.add_pull(
        REPO, PR, title="Fix the date drift", head="fix/dates", head_sha=HEAD_SHA, user=MAINTAINER
    )
    first = await start_app(options=paced())
    await first.post("issue_comment", commented(PR, "/box fix", pull=True))
    await wait_for_run(first, PR, RunState.WORKING, timeout=30)
    await wait_until(lambda: github_sim.check_runs(REPO), timeout=20)
    # GitHub pauses the app for longer than the work takes: its last states wait in the store.
    github_sim.inject_fault(
        "PATCH", r".", status=403, headers={"retry-after": "600"}, body=SECONDARY
    )
    run = await wait_for_run(first, PR, RunState.IDLE, timeout=30)
    await wait_until(lambda: [c for c in github_sim.calls if c.status == 403], timeout=20)
    [comment] = bot_comments(github_sim, PR)
    assert "✅ Finished" not in comment["body"]
    assert github_sim.check_runs(REPO)[0]["status"] == "in_progress"
    pending = {w.key for w in await first.components.store.pending_writes()}
    assert pending == {f"comment:{run.comment_id}", f"check:{run.check_run_id}"}
    await first.client.close()

    second = await start_app(options=paced())
    await wait_until(lambda: "✅ Finished" in bot_comments(github_sim, PR)[0]["body"], timeout=20)
    await wait_until(lambda: github_sim.check_runs(REPO)[0]["status"] == "completed", timeout=20)
    [check] = github_sim.check_runs(REPO)
    assert check["conclusion"] == "success"

    async def nothing_pending() -> bool:
        return await second.components.store.pending_writes() == []

    await wait_until(nothing_pending, timeout=5)


async def test_content_beyond_the_installations_budget_waits_for_a_free_slot(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator
) -> None:
    app = await start_app(replace(settings, github_content_per_minute=3), paced())
    for n in (1, 2):
        comment = github_sim.add_comment(REPO, ISSUE, body="/box help", user=MAINTAINER)
        payload = commented(ISSUE, "/box help", comment_id=comment["id"])
        await app.post("issue_comment", payload, delivery_id=f"help-{n}")
        if n == 1:
            assert (await app.wait_for("help-1", timeout=10)).status is DeliveryStatus.DONE

    async def refused_once() -> bool:
        row = await app.components.store.get_delivery("help-2")
        return row is not None and row.attempts >= 1 and row.last_error is not None

    await wait_until(refused_once, timeout=10)
    created = [c for c in writes(github_sim) if c.method == "POST"]
    assert len(created) == 3  # two reactions and the first reply; the second reply waits
    assert len(bot_comments(github_sim, ISSUE)) == 1
    row = await app.components.store.get_delivery("help-2")
    assert row is not None and row.status is DeliveryStatus.PENDING
    assert "content rate limit" in (row.last_error or "")


# -- Box outages while a box works -------------------------------------------------------------


def box_reads_fail(box_sim: BoxSimulator, box_id: str) -> None:
    """Every read of the box, its events and its prompt runs fails: a dropped connection or
    a 503, until `clear_faults`."""
    box_sim.inject_fault("GET", rf"/boxes/{box_id}/events", "drop", rate=0.5)
    for path in (rf"/boxes/{box_id}$", rf"/boxes/{box_id}/events", rf"/boxes/{box_id}/prompts"):
        box_sim.inject_fault("GET", path, 503, rate=1.0)


async def test_a_box_outage_while_the_agent_works_is_ridden_out(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["through-an-outage"] = [
        Say("Reading the date code."),
        Wait(3),
        *success_script(),
    ]
    box_sim.default_script = "through-an-outage"
    app = await start_app(options=paced())
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING, timeout=30)
    assert run.box_id is not None
    await wait_until(lambda: "Reading the date code." in tracking_body(github_sim), timeout=20)
    box_reads_fail(box_sim, run.box_id)
    await wait_until(lambda: "Box has not answered since" in tracking_body(github_sim), timeout=20)
    await asyncio.sleep(3)  # a few seconds more of Box not answering
    box_sim.clear_faults()
    run = await wait_for_run(app, ISSUE, RunState.IDLE, RunState.FAILED, timeout=30)
    assert run.state is RunState.IDLE
    assert box_sim.requests_to("POST", r"/stop$") == []
    await wait_until(lambda: "✅ Finished" in tracking_body(github_sim), timeout=20)
    body = tracking_body(github_sim)
    assert "Box has not answered since" not in body
    assert "12 passed in 0.42s" in body or "pytest -q" in body  # the story went on
    edits = [c.json["body"] for c in github_sim.calls_to("PATCH", COMMENT_EDITS) if c.json]
    shown = [b for b in edits if "Box has not answered since" in b]
    assert shown and all(b.count("Box has not answered since") == 1 for b in shown)


async def test_a_box_that_does_not_answer_for_the_outage_limit_fails_the_run_and_is_stopped(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["slow"] = [Say("Reading the date code."), Wait(30), *success_script()]
    box_sim.default_script = "slow"
    app = await start_app(replace(settings, box_outage_minutes=0.03), paced())
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING, timeout=30)
    assert run.box_id is not None
    box_reads_fail(box_sim, run.box_id)
    started = time.monotonic()
    run = await wait_for_run(app, ISSUE, RunState.FAILED, timeout=30)
    assert time.monotonic() - started >= 0.03 * 60 * 0.95
    assert "Box did not answer for 0.03 minutes (BOX_OUTAGE_MINUTES)" in (run.reason or "")
    await wait_until(lambda: box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$"))


async def test_reads_slow_down_when_less_than_a_tenth_of_the_hour_is_left(
    start_app: AppFactory, github_sim: GitHubSimulator
) -> None:
    github_sim.use_requests(INSTALLATION_ID, github_sim.rate_limit - 400)  # 8 % left
    app = await start_app(options=paced())
    for n in (1, 2):
        comment = github_sim.add_comment(REPO, ISSUE, body="/box status", user=MAINTAINER)
        payload = commented(ISSUE, "/box status", comment_id=comment["id"])
        await app.post("issue_comment", payload, delivery_id=f"status-{n}")
        assert (await app.wait_for(f"status-{n}", timeout=20)).status is DeliveryStatus.DONE
    reads = [
        c for c in github_sim.calls if c.method == "GET" and c.installation_id == INSTALLATION_ID
    ]
    assert len(reads) >= 3
    for before, after in itertools.pairwise(reads[1:]):  # the first told the app it is low
        assert after.at - before.at >= 1.0 * 0.95


async def test_the_pull_requests_comment_follows_phase_changes_only(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["busy"] = [
        Say("Reading the date code."),
        Wait(1),
        *(step for n in range(4) for step in (Say(f"Step {n} of the work."), Wait(1))),
        *success_script(20),
    ]
    box_sim.default_script = "busy"
    app = await start_app(options=paced())
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING, timeout=30)
    await app.wait_for(await open_pr(app, github_sim, run.id), timeout=30)
    run = await wait_for_run(app, ISSUE, RunState.IDLE, timeout=40)
    await wait_until(lambda: "✅ Finished" in bot_comments(github_sim, PR)[0]["body"], timeout=20)
    [on_pr] = bot_comments(github_sim, PR)
    pr_edits = github_sim.calls_to("PATCH", rf"/issues/comments/{on_pr['id']}$")
    issue_edits = github_sim.calls_to("PATCH", rf"/issues/comments/{run.comment_id}$")
    linked_at = github_sim.calls_to("POST", rf"/issues/{PR}/comments$")[0].at
    progress = [c for c in issue_edits if c.at > linked_at]
    assert len(pr_edits) <= 2  # the phase changes after it was posted: the end
    assert len(progress) > len(pr_edits)  # while the issue's comment told the story


async def test_a_pull_request_linked_during_a_pause_gets_its_comment_and_check_after_it(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.scripts["slow"] = [Say("Reading the date code."), Wait(6), *success_script()]
    box_sim.default_script = "slow"
    app = await start_app(options=paced())
    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING, timeout=30)
    github_sim.inject_fault(
        "PATCH", COMMENT_EDITS, status=403, headers={"retry-after": "3"}, body=SECONDARY
    )
    await wait_until(lambda: [c for c in github_sim.calls if c.status == 403], timeout=20)
    await open_pr(app, github_sim, run.id)
    run = await wait_for_run(app, ISSUE, RunState.IDLE, timeout=40)
    await wait_until(lambda: bot_comments(github_sim, PR), timeout=20)
    await wait_until(lambda: "✅ Finished" in bot_comments(github_sim, PR)[0]["body"], timeout=20)
    await wait_until(lambda: github_sim.check_runs(REPO), timeout=20)
    await wait_until(lambda: github_sim.check_runs(REPO)[0]["status"] == "completed", timeout=20)
    [check] = github_sim.check_runs(REPO)
    assert (check["head_sha"], check["conclusion"]) == (HEAD_SHA, "success")
    assert len(bot_comments(github_sim, PR)) == 1
