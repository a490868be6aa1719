"""Intake stores only what can lead to work: the handlers' routes and a look at the payload."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bot.ingress.screen import Skip
from handlers import build_router
from tests.conftest import WEBHOOKS, RunningApp, load_payload
from tests.test_metrics import value

ROUTES = build_router().routes
# Recorded payloads of handled (event, action) pairs that no handler would act on, and why.
SKIPPED_THOUGH_HANDLED = {
    "issue_comment.created.1": Skip.NO_COMMAND,
    "issue_comment.created.2": Skip.NO_COMMAND,
    "issue_comment.created.3": Skip.NO_COMMAND,
    "issue_comment.created.4": Skip.NO_COMMAND,
    "issue_comment.created.5": Skip.NO_COMMAND,
    "push.event.1": Skip.OTHER_BRANCH,  # a tag
    "check_suite.completed.1": Skip.CI_NOT_FAILED,
    "check_suite.completed.2": Skip.ACTIONS_SUITE,
    "check_suite.completed.3": Skip.CI_NOT_FAILED,
    "check_suite.completed.4": Skip.CI_NOT_FAILED,
    "workflow_run.completed.1": Skip.CI_NOT_FAILED,  # still running: no conclusion
    "workflow_run.completed.2": Skip.CI_NOT_FAILED,
    "workflow_run.completed.3": Skip.CI_NOT_FAILED,
}
FIXTURES = sorted(p.stem for p in WEBHOOKS.glob("*.json") if not p.stem.startswith("ping."))


def event_of(fixture: str) -> str:
    return fixture.split(".", 1)[0]


def handled(fixture: str) -> bool:
    """Whether some handler registers for the fixture's (event, action)."""
    event, action = event_of(fixture), load_payload(fixture).get("action")
    return (event, None) in ROUTES or (event, action) in ROUTES


def expected_skip(fixture: str) -> Skip | None:
    if not handled(fixture):
        event = event_of(fixture)
        known = any(e == event for e, _action in ROUTES)
        return Skip.UNHANDLED_ACTION if known else Skip.UNHANDLED_EVENT
    return SKIPPED_THOUGH_HANDLED.get(fixture)


async def _stored(app: RunningApp, delivery_id: str) -> bool:
    return await app.components.store.get_delivery(delivery_id) is not None


@pytest.mark.parametrize("fixture", FIXTURES)
async def test_each_recorded_payload_is_stored_only_if_it_could_lead_to_work(
    app: RunningApp, fixture: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot.ingress.server")
    skip = expected_skip(fixture)
    response = await app.post(event_of(fixture), load_payload(fixture), delivery_id=fixture)
    assert response.status == 202
    answer = await response.json()
    if skip is None:
        assert answer == {"ok": True, "delivery": fixture, "stored": True, "duplicate": False}
        assert await _stored(app, fixture)
        return
    assert answer["stored"] is False, answer
    assert not await _stored(app, fixture)
    text = await (await app.client.get("/metrics")).text()
    counted = value(
        text, "box_bot_deliveries_skipped_total", event=event_of(fixture), reason=skip.value
    )
    assert counted == 1
    [line] = [r for r in caplog.records if fixture in r.getMessage()]
    assert line.levelname == "DEBUG"
    assert answer["reason"] in line.getMessage()


def _comment(body: str | None) -> dict[str, Any]:
    data = load_payload("issue_comment.created.1")
    data["comment"]["body"] = body
    return data


def _push(ref: str) -> dict[str, Any]:
    data = load_payload("push.event.1")
    data["ref"] = ref
    return data


def _suite(conclusion: str | None, app: dict[str, Any] | None = None) -> dict[str, Any]:
    data = load_payload("check_suite.completed.1")
    data["check_suite"]["conclusion"] = conclusion
    if app is not None:
        data["check_suite"]["app"] = {**(data["check_suite"]["app"] or {}), **app}
    return data


def _workflow(conclusion: str | None) -> dict[str, Any]:
    data = load_payload("workflow_run.completed.2")
    data["workflow_run"]["conclusion"] = conclusion
    return data


@pytest.mark.parametrize(
    ("event", "payload", "skip"),
    [
        ("issue_comment", _comment("/box fix the tests"), None),
        ("issue_comment", _comment("Thanks!\n\n/BOX status"), None),
        ("issue_comment", _comment("> /box fix\nquoted: the handler decides"), None),
        ("issue_comment", _comment("/\u200bbox fix"), None),  # an invisible character inside
        ("issue_comment", _comment("see https://example.com/boxes"), None),  # cheap, not exact
        ("issue_comment", _comment("Thanks, this looks good"), Skip.NO_COMMAND),
        ("issue_comment", _comment("box fix"), Skip.NO_COMMAND),
        ("issue_comment", _comment(None), Skip.NO_COMMAND),
        ("push", _push("refs/heads/master"), None),
        ("push", _push("refs/heads/feature"), Skip.OTHER_BRANCH),
        ("check_suite", _suite("failure"), None),
        ("check_suite", _suite("timed_out"), None),
        ("check_suite", _suite("neutral"), Skip.CI_NOT_FAILED),
        ("check_suite", _suite("failure", {"slug": "github-actions"}), Skip.ACTIONS_SUITE),
        ("check_suite", _suite("failure", {"id": 321, "slug": "box-bot"}), Skip.OWN_SUITE),
        ("workflow_run", _workflow("failure"), None),
        ("workflow_run", _workflow("cancelled"), Skip.CI_NOT_FAILED),
    ],
)
async def test_the_payload_tests_keep_what_a_handler_would_act_on(
    app: RunningApp, event: str, payload: dict[str, Any], skip: Skip | None
) -> None:
    response = await app.post(event, payload, delivery_id="varied")
    answer = await response.json()
    assert response.status == 202
    assert answer["stored"] is (skip is None)
    assert await _stored(app, "varied") is (skip is None)
    text = await (await app.client.get("/metrics")).text()
    if skip is not None:
        assert value(text, "box_bot_deliveries_skipped_total", event=event, reason=skip) == 1
    else:
        assert value(text, "box_bot_deliveries_received_total", event=event) == 1


async def test_an_unhandled_event_or_action_is_skipped_without_decoding_the_body(
    app: RunningApp,
) -> None:
    # Signed, so it is GitHub's; no handler takes `status`, so the body is never decoded.
    response = await app.post("status", b"not json at all", delivery_id="s-1")
    assert response.status == 202
    assert await response.json() == {
        "ok": True,
        "delivery": "s-1",
        "stored": False,
        "reason": "no handler takes status events",
    }
    response = await app.post("issues", b"not json at all", delivery_id="s-2")
    assert response.status == 400
    # GitHub writes the action first: one no handler takes is answered from there alone.
    response = await app.post("issues", b'{"action": "edited", "issue": {', delivery_id="s-3")
    assert (response.status, (await response.json())["reason"]) == (
        202,
        "no handler takes issues.edited",
    )
    response = await app.post("issues", b'{"action": "labeled", "issue": {', delivery_id="s-4")
    assert response.status == 400
    assert not await _stored(app, "s-3") and not await _stored(app, "s-4")


async def test_a_delivery_without_installation_is_ignored_with_one_line_saying_why(
    app: RunningApp, caplog: pytest.LogCaptureFixture
) -> None:
    # `box-bot send issues tests/fixtures/webhooks/issues.labeled.1.json`: the file as
    # published, with no installation, as a repository webhook would send it.
    caplog.set_level(logging.DEBUG)
    raw = (WEBHOOKS / "issues.labeled.1.json").read_bytes()
    assert "installation" not in json.loads(raw)
    response = await app.post("issues", raw, delivery_id="raw-1")
    assert response.status == 202
    answer = await response.json()
    assert answer["stored"] is False
    assert "names no installation" in answer["reason"]
    assert not await _stored(app, "raw-1")
    lines = [r for r in caplog.records if "raw-1" in r.getMessage()]
    assert [r.levelname for r in lines] == ["WARNING"]
    assert "ignored: the payload names no installation" in lines[0].getMessage()
    text = await (await app.client.get("/metrics")).text()
    assert (
        value(text, "box_bot_deliveries_skipped_total", event="issues", reason="no_installation")
        == 1
    )
    # Installation events carry theirs, and ping (which has none) is still answered.
    raw_installation = (WEBHOOKS / "installation.created.1.json").read_bytes()
    response = await app.post("installation", raw_installation, delivery_id="inst-1")
    assert (await response.json())["stored"] is True
    row = await app.wait_for("inst-1")
    assert row.done_handlers == ("installations.on_installation_ready",)
    ping = (WEBHOOKS / "ping.event.1.json").read_bytes()
    assert (await app.post("ping", ping)).status == 200


def test_the_router_table_is_the_handlers_registrations() -> None:
    assert ("issues", "labeled") in ROUTES
    assert ("issues", "opened") not in ROUTES
    assert ("push", None) in ROUTES  # every push: the handler reads the branch itself
    assert {action for event, action in ROUTES if event == "installation"} == {
        "created",
        "deleted",
        "suspend",
        "unsuspend",
        "new_permissions_accepted",
    }
