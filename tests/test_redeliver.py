"""Deliveries missed while the app was down are asked for again, once each."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer, unused_port

from bot.github.client import GitHubAppAuth
from bot.ingress.redeliver import REDELIVERY_WINDOW_SECONDS, reconcile
from bot.ingress.server import create_app
from bot.models import RunState
from bot.settings import Settings
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from bot.store.connect import open_store
from bot.store.interface import Store
from tests.conftest import REPO, RunningApp, fast_options
from tests.flow import labeled, wait_for_run

HOUR = 3600.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'inbox.sqlite3'}")
    yield opened
    await opened.close()


@pytest.fixture
async def auth(github_sim: GitHubSimulator) -> AsyncIterator[GitHubAppAuth]:
    async with aiohttp.ClientSession() as session:
        yield GitHubAppAuth(
            session,
            app_id="321",
            private_key=github_sim.private_key_pem,
            base_url=github_sim.base_url,
        )


async def test_only_guids_whose_every_attempt_failed_and_that_the_inbox_lacks_are_asked(
    github_sim: GitHubSimulator, store: Store, auth: GitHubAppAuth
) -> None:
    now = time.time()
    # Logged oldest first, as GitHub's ids grow with time.
    logged = [
        ("too-old", "issues", "labeled", 502, now - REDELIVERY_WINDOW_SECONDS - HOUR),
        ("recovered", "issue_comment", "created", 502, now - 3 * HOUR),
        ("lost", "issues", "labeled", 502, now - 2 * HOUR),
        ("recovered", "issue_comment", "created", 202, now - 2 * HOUR),
        ("lost", "issues", "labeled", 504, now - HOUR),
        ("stored", "issues", "closed", 503, now - HOUR),
        ("fine", "push", None, 202, now - HOUR),
    ]
    for guid, event, action, status, at in logged:
        github_sim.record_delivery(guid, event, action, status, at)
    await store.add_delivery("stored", "issues", "closed", 1, b"{}")

    first = await reconcile(auth.app_client(), store, now)
    again = await reconcile(auth.app_client(), store, now + HOUR)

    assert first.asked == ("lost",) and again.asked == ()
    assert github_sim.redelivery_requests == ["lost"]
    (ask,) = github_sim.calls_to("POST", r"^/app/hook/deliveries/\d+/attempts$")
    newest = max((d for d in github_sim.deliveries() if d["guid"] == "lost"), key=lambda d: d["id"])
    assert ask.path == f"/app/hook/deliveries/{newest['id']}/attempts"
    assert ask.headers["authorization"].lower().startswith("bearer ")


async def test_a_later_look_reads_back_only_to_a_little_before_the_last_one(
    github_sim: GitHubSimulator, store: Store, auth: GitHubAppAuth
) -> None:
    now = time.time()
    for n in range(250):  # three pages of the log, newest first
        github_sim.record_delivery(f"ok-{n}", "issues", "opened", 202, now - 48 * HOUR + n * 60)
    await reconcile(auth.app_client(), store, now)
    pages_before = len(github_sim.calls_to("GET", r"^/app/hook/deliveries$"))

    github_sim.record_delivery("new-failure", "issues", "labeled", 502, now + 30 * 60)
    later = await reconcile(auth.app_client(), store, now + HOUR)

    assert pages_before == 3
    assert len(github_sim.calls_to("GET", r"^/app/hook/deliveries$")) == pages_before + 1
    assert later.asked == ("new-failure",) and later.listed == 1


async def test_a_pass_asks_for_at_most_its_bound_and_leaves_the_rest_for_the_next(
    github_sim: GitHubSimulator, store: Store, auth: GitHubAppAuth
) -> None:
    now = time.time()
    for n in range(5):
        github_sim.record_delivery(f"lost-{n}", "issues", "labeled", 502, now - HOUR + n)

    first = await reconcile(auth.app_client(), store, now, max_asks=3)
    second = await reconcile(auth.app_client(), store, now + 60, max_asks=3)

    assert first.asked == ("lost-0", "lost-1", "lost-2") and first.left == 2
    assert second.asked == ("lost-3", "lost-4") and second.left == 0


async def test_a_label_missed_while_the_app_was_down_starts_its_run_at_start(
    github_sim: GitHubSimulator, box_sim: BoxSimulator, settings: Settings
) -> None:
    github_sim.add_issue(REPO, 7, title="Crash on start")
    github_sim.record_delivery(
        "missed-label", "issues", "labeled", 502, payload=labeled(7), installation_id=4242
    )
    port = unused_port()
    github_sim.webhook_url = f"http://127.0.0.1:{port}/api/github/webhooks"
    github_sim.webhook_secret = settings.webhook_secret
    client = TestClient(TestServer(create_app(settings, fast_options()), port=port))
    await client.start_server()
    try:
        app = RunningApp(client)
        run = await wait_for_run(app, 7, RunState.IDLE, timeout=10.0)
        metrics = await (await client.get("/metrics")).text()
    finally:
        await client.close()

    assert github_sim.redelivery_requests == ["missed-label"]
    assert run.number == 7 and len(box_sim.boxes) == 1
    assert "box_bot_redeliveries_asked_total 1.0" in metrics
