"""The worker: dispatch to the right handler, isolation, retries, restarts, bots."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from gidgethub import sansio
from gidgethub.routing import Router

from bot.ingress.worker import Worker, WorkerPolicy, handler_key
from bot.settings import Settings
from bot.sim.github import GitHubSimulator
from bot.store.connect import open_store
from bot.store.interface import Store
from bot.store.records import DeliveryStatus
from bot.store.sqlite import sqlite_path
from tests.conftest import (
    INSTALLATION_ID,
    REPO,
    AppFactory,
    RunningApp,
    fast_options,
    load_payload,
)
from tests.databases import PG_SERVER, SKIPPED, on_every_backend
from tests.flow import pull_request_event

DISPATCH = [
    ("issues", "issues.labeled.1", ["issues.on_labeled"]),
    ("issues", "issues.labeled.2", ["issues.on_labeled"]),
    ("issue_comment", "issue_comment.created.1", ["comments.on_comment_created"]),
    (
        "pull_request_review_comment",
        "pull_request_review_comment.created.1",
        ["reviews.on_review_comment_created"],
    ),
    (
        "pull_request_review",
        "pull_request_review.submitted.1",
        ["reviews.on_review_submitted"],
    ),
    (
        "pull_request",
        "pull_request.opened.1",
        [
            "config.on_pull_request_changed",
            "pull_requests.on_pull_request_changed",
        ],
    ),
    (
        "pull_request",
        "pull_request.synchronize.1",
        [
            "config.on_pull_request_changed",
            "pull_requests.on_pull_request_changed",
        ],
    ),
    ("pull_request", "pull_request.closed.1", ["pull_requests.on_pull_request_closed"]),
    ("push", "push.event.1", ["config.on_push"]),
    ("check_suite", "check_suite.completed.1", ["ci.on_check_suite_completed"]),
    ("workflow_run", "workflow_run.completed.2", ["ci.on_workflow_run_completed"]),
    ("check_run", "check_run.requested_action.1", ["checks.on_requested_action"]),
    ("check_run", "check_run.rerequested.1", ["checks.on_rerequested"]),
    ("installation", "installation.created.1", ["installations.on_installation_ready"]),
    ("installation", "installation.deleted.1", ["installations.on_installation_gone"]),
    ("installation", "installation.suspend.1", ["installations.on_installation_gone"]),
    ("installation", "installation.unsuspend.1", ["installations.on_installation_ready"]),
]


# What turns these recorded payloads into ones intake keeps: as recorded, no handler would act.
ACTING: dict[str, dict[str, Any]] = {
    "issue_comment.created.1": {"comment": {"body": "Is `/box` the command for this?"}},
    "push.event.1": {"ref": "refs/heads/master"},
    "check_suite.completed.1": {"check_suite": {"conclusion": "failure"}},
    "workflow_run.completed.2": {"workflow_run": {"conclusion": "failure"}},
}


def acting_payload(fixture: str) -> dict[str, Any]:
    """The recorded payload, changed where needed so that it could lead to work."""
    data = load_payload(fixture)
    for key, change in ACTING.get(fixture, {}).items():
        data[key] = {**data[key], **change} if isinstance(change, dict) else change
    return data


@pytest.mark.parametrize(("event", "fixture", "handlers"), DISPATCH)
async def test_real_payload_reaches_its_handler(
    app: RunningApp, event: str, fixture: str, handlers: list[str]
) -> None:
    response = await app.post(event, acting_payload(fixture), delivery_id=fixture)
    assert response.status == 202
    row = await app.wait_for(fixture)
    assert row.status is DeliveryStatus.DONE
    assert list(row.done_handlers) == handlers


@pytest.mark.parametrize(
    ("event", "fixture"),
    [
        ("pull_request_review", "pull_request_review.dismissed.1"),
        ("pull_request_review_comment", "pull_request_review_comment.edited.1"),
        ("status", "status.event.1"),
        ("issues", "issues.opened.1"),
    ],
)
async def test_inbox_delivery_without_handler_is_ignored_with_a_reason(
    app: RunningApp, event: str, fixture: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Intake no longer stores these; an inbox filled before it did still holds some.
    caplog.set_level(logging.INFO, logger="bot.ingress.worker")
    body = (Path(__file__).parent / f"fixtures/webhooks/{fixture}.json").read_bytes()
    action = load_payload(fixture).get("action")
    await app.components.store.add_delivery(fixture, event, action, INSTALLATION_ID, body)
    app.components.worker.wake.set()
    row = await app.wait_for(fixture)
    assert row.status is DeliveryStatus.IGNORED
    assert row.last_error == "no handler for this event"
    assert any(
        f"delivery={fixture}" in r.getMessage() and "ignored" in r.getMessage()
        for r in caplog.records
    )


async def test_inbox_delivery_without_installation_is_ignored_once_with_why(
    app: RunningApp, caplog: pytest.LogCaptureFixture
) -> None:
    # The recorded payload as published: a repository webhook's, with no installation.
    caplog.set_level(logging.INFO, logger="bot.ingress.worker")
    body = (Path(__file__).parent / "fixtures/webhooks/issues.labeled.1.json").read_bytes()
    await app.components.store.add_delivery("no-inst", "issues", "labeled", None, body)
    app.components.worker.wake.set()
    row = await app.wait_for("no-inst")
    assert (row.status, row.attempts) == (DeliveryStatus.IGNORED, 1)
    assert row.last_error == (
        "the payload names no installation, so there is no GitHub App token to act with"
    )
    lines = [r for r in caplog.records if "delivery=no-inst" in r.getMessage()]
    assert [
        (r.levelname, "ignored: the payload names no installation" in r.getMessage()) for r in lines
    ] == [("INFO", True)]


async def test_events_from_bots_and_from_this_app_are_ignored(app: RunningApp) -> None:
    from_bot = load_payload("installation.created.1")
    from_bot["sender"] = {**from_bot["sender"], "login": "box-bot[bot]", "type": "Bot"}
    await app.post("installation", from_bot, delivery_id="own")
    row = await app.wait_for("own")
    assert (row.status, row.last_error) == (DeliveryStatus.IGNORED, "sent by this app")

    comment = load_payload("issue_comment.created.1")
    comment["comment"]["body"] = "/box fix everything"
    comment["sender"] = {**comment["sender"], "login": "evil-app[bot]", "type": "Bot"}
    await app.post("issue_comment", comment, delivery_id="other-bot")
    row = await app.wait_for("other-bot")
    assert (row.status, row.last_error) == (DeliveryStatus.IGNORED, "sent by the bot evil-app[bot]")


async def test_the_apps_own_bot_is_known_by_the_slug_github_gives(
    start_app: AppFactory, github_sim: GitHubSimulator
) -> None:
    github_sim.app_slug = "fixer-x"  # an app registered under another name
    app = await start_app()
    own = load_payload("installation.created.1")
    own["sender"] = {**own["sender"], "login": "fixer-x[bot]", "type": "Bot"}
    await app.post("installation", own, delivery_id="own")
    assert (await app.wait_for("own")).last_error == "sent by this app"

    echo = load_payload("issue_comment.created.1")
    echo["comment"]["body"] = "Comment `/box fix` to start again."
    echo["comment"]["performed_via_github_app"] = {"id": 321, "slug": "fixer-x"}
    await app.post("issue_comment", echo, delivery_id="echo")
    row = await app.wait_for("echo")
    assert (row.status, row.last_error) == (DeliveryStatus.IGNORED, "comment written by this app")


async def test_pull_request_events_from_other_bots_are_still_handled(app: RunningApp) -> None:
    # The PR a box opens may come from another app's bot; it must still be linked and cleaned up.
    opened = load_payload("pull_request.opened.1")
    opened["sender"] = {**opened["sender"], "login": "box-agent[bot]", "type": "Bot"}
    await app.post("pull_request", opened, delivery_id="bot-pr")
    row = await app.wait_for("bot-pr")
    assert row.status is DeliveryStatus.DONE
    assert row.done_handlers == (
        "config.on_pull_request_changed",
        "pull_requests.on_pull_request_changed",
    )


# -- isolation and retries, with a router of our own --------------------------------------

calls: list[str] = []


async def ok_handler(event: sansio.Event, gh: Any, **kwargs: Any) -> None:
    calls.append("ok")


async def flaky_handler(event: sansio.Event, gh: Any, **kwargs: Any) -> None:
    calls.append("flaky")
    if calls.count("flaky") < 2:
        raise RuntimeError("GitHub said no")


async def broken_handler(event: sansio.Event, gh: Any, **kwargs: Any) -> None:
    calls.append("broken")
    raise RuntimeError("always broken")


class NoDeps:
    """The handlers of these tests take no dependencies."""

    def keywords(self) -> dict[str, object]:
        return {}


async def run_worker(store: Store, router: Router, until: str) -> Worker:
    policy = WorkerPolicy(idle_poll=0.01, base_delay=0.01, max_delay=0.02, max_attempts=3)
    worker = Worker(store, router, lambda _id: None, NoDeps(), policy)  # type: ignore[arg-type,return-value]
    task = asyncio.create_task(worker.run("321", "box-bot"))
    async with asyncio.timeout(5):
        while (row := await store.get_delivery(until)) is None or row.status not in (
            DeliveryStatus.DONE,
            DeliveryStatus.FAILED,
        ):
            await asyncio.sleep(0.01)
    await worker.stop(1)
    task.cancel()
    return worker


@pytest.fixture
async def store(tmp_path: Path) -> Store:
    calls.clear()
    return await open_store(f"sqlite:///{tmp_path / 'w.sqlite3'}")


async def test_one_failing_handler_does_not_skip_the_others(store: Store) -> None:
    router = Router()
    router.add(ok_handler, "issues")
    router.add(flaky_handler, "issues")
    await store.add_delivery("d", "issues", "opened", 1, b'{"action": "opened"}')
    await run_worker(store, router, "d")
    row = await store.get_delivery("d")
    assert row is not None
    assert row.status is DeliveryStatus.DONE
    assert row.attempts == 2
    # The handler that succeeded the first time is not run again on the retry.
    assert calls == ["flaky", "ok", "flaky"]
    assert set(row.done_handlers) == {handler_key(ok_handler), handler_key(flaky_handler)}
    await store.close()


async def test_delivery_failing_every_attempt_is_kept_as_failed(store: Store) -> None:
    router = Router()
    router.add(ok_handler, "issues")
    router.add(broken_handler, "issues")
    await store.add_delivery("d", "issues", "opened", 1, b'{"action": "opened"}')
    await run_worker(store, router, "d")
    row = await store.get_delivery("d")
    assert row is not None
    assert row.status is DeliveryStatus.FAILED
    assert row.attempts == 3
    assert row.last_error == f"{handler_key(broken_handler)}: RuntimeError: always broken"
    assert calls.count("broken") == 3 and calls.count("ok") == 1
    await store.close()


# -- restarts --------------------------------------------------------------------------------


@on_every_backend
async def test_pending_deliveries_are_processed_after_a_restart(
    start_app: AppFactory, github_sim: GitHubSimulator
) -> None:
    # GitHub is unreachable while the first process runs: deliveries are stored, not processed.
    github_sim.inject_fault("GET", r"^/app$", status=503, times=1000)
    first = await start_app()
    for n in range(3):
        response = await first.post(
            "installation", load_payload("installation.created.1"), delivery_id=f"pending-{n}"
        )
        assert response.status == 202
    await asyncio.sleep(0.1)
    assert (await first.components.store.delivery_counts()) == {"pending": 3}
    await first.client.close()

    github_sim.clear_faults()
    second = await start_app()
    for n in range(3):
        row = await second.wait_for(f"pending-{n}")
        assert row.status is DeliveryStatus.DONE
        assert row.attempts == 1


async def test_delivery_claimed_by_a_killed_process_is_redone(
    start_app: AppFactory, settings: Settings
) -> None:
    crashed = await open_store(settings.database_url)
    await crashed.add_delivery(
        "mid-flight",
        "installation",
        "created",
        INSTALLATION_ID,
        (Path(__file__).parent / "fixtures/webhooks/installation.created.1.json").read_bytes(),
    )
    claimed = await crashed.claim_deliveries(10, lease_seconds=3600)
    assert [d.id for d in claimed] == ["mid-flight"]
    await crashed.close()  # the process dies here, with the delivery marked processing

    app = await start_app()
    row = await app.wait_for("mid-flight")
    assert row.status is DeliveryStatus.DONE
    assert row.attempts == 2  # the attempt the crash cut short counts


async def test_a_retry_across_a_deploy_skips_handlers_recorded_under_old_names(
    start_app: AppFactory, settings: Settings, github_sim: GitHubSimulator
) -> None:
    # The PR changes `.github/box.yml`: its config handler posted a `Box config` check, then
    # the link handler failed and the delivery waits for its retry. Names were `module.function`.
    github_sim.set_file(REPO, ".github/box.yml", "model: gpt-5.4\n", ref="tune-box")
    github_sim.add_pull(
        REPO,
        51,
        title="Tune the box",
        head="tune-box",
        base="master",
        head_sha="d" * 40,
        files=[".github/box.yml"],
    )
    payload = pull_request_event("pull_request.opened.1", 51, head="tune-box", sha="d" * 40)
    payload["installation"] = {"id": INSTALLATION_ID}
    before = await open_store(settings.database_url)
    await before.add_delivery(
        "mid-retry", "pull_request", "opened", INSTALLATION_ID, json.dumps(payload).encode()
    )
    await before.retry_delivery(
        "mid-retry", ["handlers.config.on_pull_request_changed"], "link: GitHub said no", 0.0
    )
    await before.close()
    with sqlite3.connect(sqlite_path(settings.database_url)) as conn:  # as the last release left it
        # Before migration 11 renamed the handlers; the later box reports (12) go with it.
        conn.execute("DELETE FROM schema_version WHERE version >= 11")
        conn.execute("DROP TABLE box_reports")

    app = await start_app()
    row = await app.wait_for("mid-retry")

    assert row.status is DeliveryStatus.DONE
    assert row.done_handlers == (
        "config.on_pull_request_changed",
        "pull_requests.on_pull_request_changed",
    )
    assert [c for c in github_sim.check_runs(REPO) if c["name"] == "Box config"] == []


async def test_delivery_that_keeps_crashing_the_app_is_given_up(store: Store) -> None:
    router = Router()
    router.add(ok_handler, "issues")
    await store.add_delivery("poison", "issues", "opened", 1, b'{"action": "opened"}')
    for _crash in range(3):  # each time the app died with it claimed
        assert [d.id for d in await store.claim_deliveries(10, lease_seconds=3600)] == ["poison"]
        await store.release_claims(every_instance=True)
    await run_worker(store, router, "poison")
    row = await store.get_delivery("poison")
    assert row is not None
    assert row.status is DeliveryStatus.FAILED
    assert row.last_error == (
        "gave up after 3 attempts; last error: the app stopped while handling it"
    )
    assert calls == []
    await store.close()


@pytest.mark.parametrize(
    "payload", [b'{"action": "opened", "sender": "x"}', b'{"action": "opened", "repository": 7}']
)
async def test_payload_of_an_odd_shape_fails_instead_of_hanging(
    store: Store, payload: bytes
) -> None:
    router = Router()
    router.add(ok_handler, "issues")
    await store.add_delivery("odd", "issues", "opened", 1, payload)
    await run_worker(store, router, "odd")
    row = await store.get_delivery("odd")
    assert row is not None
    assert (row.status, row.attempts) == (DeliveryStatus.DONE, 1)
    assert calls == ["ok"]


@pytest.mark.skipif(not PG_SERVER, reason=SKIPPED)
@pytest.mark.parametrize("database_backend", ["postgresql"], indirect=True)
async def test_a_delivery_another_instance_stored_wakes_this_one(
    start_app: AppFactory, settings: Settings
) -> None:
    options = fast_options()
    options.worker = replace(options.worker, idle_poll=60.0)  # it would not poll in time
    app = await start_app(options=options)
    await asyncio.sleep(0.2)  # its worker is idle, waiting
    intake = await open_store(settings.database_url)  # another instance's webhook intake
    try:
        payload = json.dumps(load_payload("installation.created.1")).encode()
        assert await intake.add_delivery("elsewhere", "installation", "created", 4242, payload)
        row = await app.wait_for("elsewhere", timeout=10.0)
    finally:
        await intake.close()
    assert row.status is DeliveryStatus.DONE
    assert row.done_handlers == ("installations.on_installation_ready",)
