"""Boxes set up for the repository, what they cost on GitHub, and dollar and time caps."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import replace
from typing import Any

import pytest

from bot.models import Run, RunState
from bot.settings import Settings
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Say, Wait, success_script
from bot.sim.github import GitHubSimulator
from tests.conftest import REPO, AppFactory, RunningApp, fast_options
from tests.flow import commented, labeled, wait_for_run, wait_until

ISSUE = 52
GHP = "ghp_" + "Z9y8X7w6" * 5
COST = re.compile(r"Box time ([^·]+?) · \$(\d+\.\d\d)")


class ScaledTime:
    """A clock that runs *scale* times faster than the wall, and sleeps that measure it."""

    def __init__(self, scale: float) -> None:
        self.scale, self.start = scale, time.time()

    def __call__(self) -> float:
        return self.start + (time.time() - self.start) * self.scale

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.scale)


def issue(github: GitHubSimulator, number: int = ISSUE) -> None:
    github.add_issue(REPO, number, title=f"Issue {number}", body="Please fix.")


def tracking(github: GitHubSimulator, run: Run, number: int = ISSUE) -> str:
    return next(c["body"] for c in github.comments(REPO, number) if c["id"] == run.comment_id)


def shown_bodies(github: GitHubSimulator, run: Run) -> list[str]:
    """Every body the tracking comment was given, the first one included."""
    edits = github.calls_to("PATCH", rf"/issues/comments/{run.comment_id}$")
    first = github.calls_to("POST", rf"/issues/{ISSUE}/comments$")
    return [c.json["body"] for c in [*first, *edits] if c.json and "box-bot:run=" in c.json["body"]]


def creates(box_sim: BoxSimulator) -> list[Any]:
    return [r.json for r in box_sim.requests_to("POST", r"/boxes$")]


def prompts(box_sim: BoxSimulator) -> list[str]:
    return [r.json["prompt"] for r in box_sim.requests_to("POST", r"/boxes/[^/]+/prompt$")]


async def comment(app: RunningApp, github: GitHubSimulator, body: str) -> None:
    """Post a `/box` command as the maintainer and wait until the worker has handled it."""
    made = github.add_comment(REPO, ISSUE, body=body, user="Codertocat")
    payload = commented(ISSUE, body, comment_id=made["id"])
    await app.post("issue_comment", payload, delivery_id=f"cmd-{made['id']}")
    await app.wait_for(f"cmd-{made['id']}")


def scaled_options(scaled: ScaledTime, **timing: float) -> Any:
    """App options on the scaled clock: polls of 10 s slowing to 60 s while nothing happens."""
    options = fast_options(
        poll_interval=10.0,
        max_poll_interval=60.0,
        budget_window=0.01,
        ready_timeout=900.0,
        **timing,
    )
    options.clock, options.sleep = scaled, scaled.sleep
    return options


# -- setup, machine and environment ------------------------------------------------------------


async def test_boxes_are_created_with_the_setup_script_and_machine_and_wait_for_setup(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(
        REPO, ".github/box.yml", "setup: npm ci\nmachine: large\nmax_dollars_per_run: 2\n"
    )
    box_sim.timings.setup = 0.2
    issue(github_sim)

    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE)

    assert creates(box_sim) == [{"ttlSeconds": 3600, "setupScript": "npm ci", "type": "large"}]
    box = box_sim.boxes[run.box_id or ""]
    assert (box.type, box.setup_script, box.setup_status) == ("large", "npm ci", "done")
    bodies = shown_bodies(github_sim, run)
    setting_up = "⚙️ **Setup:** the box is setting up (the `setup` script of `.github/box.yml`)…"
    assert any(setting_up in body for body in bodies)
    assert "⚙️ **Setup:** done" in tracking(github_sim, run)
    [prompt] = prompts(box_sim)
    assert "## Box setup" in prompt and "it finished successfully" in prompt


async def test_a_failed_setup_is_shown_with_its_error_masked_and_told_to_the_agent(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "setup: npm ci\n")
    error = f"exit code 1\nnpm ERR! 404 Not Found (token {GHP})"
    box_sim.setup_failures["npm ci"] = error
    issue(github_sim)

    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE)

    body = tracking(github_sim, run)
    assert "⚠️ **Setup failed**; the agent was told and works without it:\n\n```text\n" in body
    assert "exit code 1\nnpm ERR! 404 Not Found (token " in body and GHP not in body
    [prompt] = prompts(box_sim)
    assert "it failed, so what it installs may be missing" in prompt
    assert re.search(r"kind=setup-error nonce=\w+>>>\nexit code 1\nnpm ERR! 404 Not Found", prompt)


async def test_the_operator_defaults_set_up_boxes_when_the_repository_does_not(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.environments.add("ci-tools")
    issue(github_sim)
    app = await start_app(
        replace(
            settings,
            box_setup_script="make deps\n",
            box_machine="small",
            box_environment="ci-tools",
        )
    )
    github_sim.set_file(REPO, ".github/box.yml", "env:\n  NODE_ENV: test\n")

    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE)

    assert creates(box_sim) == [
        {
            "ttlSeconds": 3600,
            "setupScript": "make deps\n",
            "type": "small",
            "environment": "ci-tools",
            "env": {"NODE_ENV": "test"},
        }
    ]


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        ("invalid_setup_script", "Fix `setup` in `.github/box.yml`"),
        ("unknown_environment", "Fix `environment` in `.github/box.yml`"),
        ("invalid_env", "Fix `env` in `.github/box.yml`"),
    ],
)
async def test_box_refusing_a_setup_key_ends_the_run_naming_the_key(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator, code: str, fix: str
) -> None:
    github_sim.set_file(REPO, ".github/box.yml", "environment: web\nenv: {CI: '1'}\nsetup: make\n")
    if code != "unknown_environment":  # the simulator refuses an unknown environment itself
        box_sim.environments.add("web")
        envelope = {
            "ok": False,
            "type": "box.error",
            "status": 400,
            "code": code,
            "message": "Box refused it.",
            "error": {"code": code, "message": "Box refused it.", "status": 400},
            "requestId": "req_1",
        }
        box_sim.inject_fault(
            "POST", r"/boxes$", 400, body=json.dumps(envelope), content_type="application/json"
        )
    issue(github_sim)

    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.FAILED)

    assert fix in tracking(github_sim, run)
    assert box_sim.requests_to("POST", r"/boxes/[^/]+/prompt$") == []


# -- cost on GitHub ----------------------------------------------------------------------------


async def test_the_cost_grows_on_the_pull_request_and_is_final_once_stopped(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    scaled = ScaledTime(60.0)
    github_sim.clock = box_sim.clock = scaled
    box_sim.seconds_per_dollar = 360.0  # a default box costs $10 an hour
    box_sim.scripts["long"] = [Say("Working."), Wait(4.0), *success_script()]
    box_sim.default_script = "long"
    issue(github_sim)
    app = await start_app(settings, scaled_options(scaled))

    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.IDLE, timeout=15)
    await comment(app, github_sim, "/box archive")
    run = await wait_for_run(app, ISSUE, RunState.ARCHIVED)

    figures = [float(m.group(2)) for b in shown_bodies(github_sim, run) if (m := COST.search(b))]
    assert len(set(figures)) >= 3 and figures == sorted(figures)
    final = box_sim.boxes[run.box_id or ""]
    dollars = final.billable_seconds() / 360.0
    body = tracking(github_sim, run)
    assert f"· ${dollars:.2f}" in body and re.search(r"Box time \d+ min( \d+ s)? · \$", body)
    assert len(box_sim.requests_to("GET", r"/usage$")) <= 8  # about once a simulated minute

    await comment(app, github_sim, "/box status")
    reply = github_sim.comments(REPO, ISSUE)[-1]["body"]
    assert f"· ${dollars:.2f} · This repository today: ${dollars:.2f}" in reply


async def test_a_box_without_the_usage_endpoint_shows_an_unknown_cost_and_is_not_asked_again(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.usage_supported = False
    issue(github_sim)

    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE)
    await comment(app, github_sim, "/box archive")
    run = await wait_for_run(app, ISSUE, RunState.ARCHIVED)

    body = tracking(github_sim, run)
    assert re.search(r"Box `bx_\w+` · Time \d+ s · cost unknown \(this Box does not report", body)
    assert "$" not in body
    assert len(box_sim.requests_to("GET", r"/usage$")) == 1


# -- limits that act on time -------------------------------------------------------------------


async def test_a_run_passing_its_dollar_cap_is_stopped_on_time_with_its_cost(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    scaled = ScaledTime(60.0)
    github_sim.clock = box_sim.clock = scaled
    box_sim.seconds_per_dollar = 45.0  # a large box reaches $2 after 45 s of billing
    box_sim.timings.setup = 20 / 60  # 20 simulated seconds of billed setup before the prompt
    box_sim.scripts["endless"] = [Say("Thinking."), Wait(3600.0)]
    box_sim.default_script = "endless"
    github_sim.set_file(
        REPO, ".github/box.yml", "setup: npm ci\nmachine: large\nmax_dollars_per_run: 2\n"
    )
    issue(github_sim)
    app = await start_app(settings, scaled_options(scaled))

    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.ARCHIVED, timeout=10)

    # Usage is read once a simulated minute: only the projection stops it near $2.
    match = re.search(
        r"it cost \$(\d+\.\d\d), reaching the limit of \$2\.00 per run", run.notice or ""
    )
    assert match and 2.0 <= float(match.group(1)) <= 2.3
    assert "(this repository's `max_dollars_per_run`: $2.00)" in (run.notice or "")
    assert box_sim.requests_to("POST", rf"/boxes/{run.box_id}/interrupt$")
    assert len(box_sim.requests_to("POST", rf"/boxes/{run.box_id}/stop$")) == 1
    body = tracking(github_sim, run)
    assert f"💸 **The box was stopped: it cost ${match.group(1)}" in body
    final = box_sim.boxes[run.box_id or ""].billable_seconds() * 2 / 45.0
    assert f"· ${final:.2f}" in body
    metrics = await (await app.client.get("/metrics")).text()
    assert 'box_bot_runs_stopped_by_dollar_limit_total{limit="max_dollars_per_run"} 1.0' in metrics
    assert re.search(r'box_bot_box_dollars_total\{installation="4242",repo="[^"]+"\} 2\.', metrics)


async def test_the_run_time_limit_interrupts_a_quiet_box_on_time(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    scaled = ScaledTime(60.0)
    github_sim.clock = box_sim.clock = scaled
    box_sim.scripts["endless"] = [Say("Thinking."), Wait(3600.0)]
    box_sim.default_script = "endless"
    issue(github_sim)
    # Usage read every 45 s, so that its wake-ups do not fall on the minute by chance.
    options = scaled_options(scaled, usage_every=45.0)
    app = await start_app(replace(settings, max_run_minutes=1), options)

    await app.post("issues", labeled(ISSUE))
    run = await wait_for_run(app, ISSUE, RunState.WORKING)
    [prompt] = await app.components.store.prompts(run.id)
    interrupts = rf"/boxes/{run.box_id}/interrupt$"
    await wait_until(lambda: box_sim.requests_to("POST", interrupts), timeout=10)
    late = scaled() - (prompt.sent_at or 0.0) - 60.0

    # Polls of a quiet box slow to a minute apart; the limit still acts within seconds.
    assert 0.0 <= late <= 10.0
    body = tracking(github_sim, run)
    assert r"more than 1 minute (BOX\_MAX\_RUN\_MINUTES)" in body


async def test_a_days_dollar_cap_stops_new_boxes(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.seconds_per_dollar = 0.25  # a default box costs $4 a second
    box_sim.scripts["short"] = [Wait(0.3), *success_script()]
    box_sim.default_script = "short"
    issue(github_sim)
    issue(github_sim, ISSUE + 1)
    app = await start_app(replace(settings, max_dollars_per_day=0.5))

    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE)
    await comment(app, github_sim, "/box archive")
    first = await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    await app.post("issues", labeled(ISSUE + 1))
    refused = await wait_for_run(app, ISSUE + 1, RunState.FAILED)

    assert len(creates(box_sim)) == 1
    tomorrow = time.strftime("%Y-%m-%d 00:00 UTC", time.gmtime(time.time() + 86400))
    assert (
        tracking(github_sim, refused, ISSUE + 1).count(
            "🛑 **No box was started: the limit of $0.50 a day of boxes for this installation is "
            "reached (the operator's `BOX_MAX_DOLLARS_PER_DAY`: $0.50).** It frees up at "
            f"{tomorrow}."
        )
        == 1
    )
    assert COST.search(tracking(github_sim, first))


async def test_a_repositorys_day_cap_stops_its_new_boxes(
    app: RunningApp, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.seconds_per_dollar = 0.25
    box_sim.scripts["short"] = [Wait(0.3), *success_script()]
    box_sim.default_script = "short"
    github_sim.set_file(REPO, ".github/box.yml", "max_dollars_per_day: 0.5\n")
    issue(github_sim)
    issue(github_sim, ISSUE + 1)

    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE)
    await comment(app, github_sim, "/box archive")
    await wait_for_run(app, ISSUE, RunState.ARCHIVED)
    await app.post("issues", labeled(ISSUE + 1))
    refused = await wait_for_run(app, ISSUE + 1, RunState.FAILED)

    assert len(creates(box_sim)) == 1
    assert "the limit of $0.50 a day of boxes for this repository is reached (this " in (
        refused.notice or ""
    )


async def test_an_idle_box_that_keeps_billing_is_stopped_at_its_runs_dollar_cap(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    box_sim.seconds_per_dollar = 0.25  # a default box costs $4 a second, working or not
    github_sim.set_file(REPO, ".github/box.yml", "max_dollars_per_run: 3\n")
    issue(github_sim)
    app = await start_app(settings, fast_options(sweep_every=0.05))

    await app.post("issues", labeled(ISSUE))
    await wait_for_run(app, ISSUE, RunState.IDLE)
    run = await wait_for_run(app, ISSUE, RunState.ARCHIVED)

    match = re.search(
        r"it cost \$(\d+\.\d\d), reaching the limit of \$3\.00 per run", run.notice or ""
    )
    assert match and 3.0 <= float(match.group(1)) <= 3.6
    stops = rf"/boxes/{run.box_id}/stop$"
    await wait_until(lambda: box_sim.requests_to("POST", stops))  # the sweep stops it after
    stopped = f"💸 **The box was stopped: it cost ${match.group(1)}"
    await wait_until(lambda: stopped in tracking(github_sim, run))
    assert len(box_sim.requests_to("POST", stops)) == 1
