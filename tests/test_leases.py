"""One instance drives each run: leases taken, renewed, lost, given up and taken over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.models import RunState
from bot.runs.leases import Leases
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Say, Wait
from bot.sim.github import GitHubSimulator
from bot.store.connect import open_store
from bot.store.interface import Store
from bot.store.records import LeaseTaken
from tests.conftest import MAINTAINER, REPO, REPO_ID, AppFactory, fast_options
from tests.flow import wait_for_run, wait_until
from tests.test_store_contract import created, make_prompt, make_run, sibling


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await open_store(f"sqlite:///{tmp_path / 'leases.sqlite3'}")
    yield opened
    await opened.close()


async def test_renewal_failing_gives_up_every_run_before_the_lease_can_expire(
    store: Store,
) -> None:
    run = await created(store, make_run(7))
    leases = Leases(store, seconds=0.6, renew_every=0.15, clock=time.monotonic)
    assert await leases.take(run.id)
    lost: list[tuple[str, float]] = []
    started = time.monotonic()
    keeper = asyncio.create_task(
        leases.keep(lambda: [run.id], lambda r: lost.append((r, time.monotonic() - started)))
    )
    await asyncio.sleep(0.2)  # one renewal went through
    await store.close()  # from now on every renewal fails

    await wait_until(lambda: lost, timeout=2.0)
    keeper.cancel()

    (run_id, after), *_ = lost
    assert run_id == run.id
    # The last renewal was at ≈0.15 s: its lease runs to ≈0.75 s, and the run is given up first.
    assert after + 0.05 >= 0.15 + 0.6 - 0.15 and after < 0.15 + 0.6


async def test_a_run_another_instance_held_is_taken_over_once_its_lease_expires(
    start_app: AppFactory, github_sim: GitHubSimulator, box_sim: BoxSimulator
) -> None:
    github_sim.add_issue(REPO, 41, title="Flaky test")
    box_sim.scripts["steady"] = [Wait(0.2), Say("Fixed it.")]
    box_sim.default_script = "steady"
    app = await start_app(options=fast_options(lease_seconds=1.0, lease_renew=0.3, lease_scan=0.1))
    store = app.components.store
    run = make_run(
        41,
        MAINTAINER,
        id="run_0123456789ab",
        repo_id=REPO_ID,
        provider="codex",
        default_branch="master",
    )
    await store.create_run(run, make_prompt(run.id, "label:taken-over"))
    other = sibling(store)  # an instance that took the run, then died without a word
    assert await other.take_lease(run.id, 1.0) is LeaseTaken.FREE
    before = time.monotonic()

    app.components.runs.kick(run.id)
    await asyncio.sleep(0.5)
    assert (await store.get_run(run.id)).state is RunState.REQUESTED  # type: ignore[union-attr]
    assert box_sim.boxes == {}
    finished = await wait_for_run(app, 41, RunState.IDLE, timeout=10.0)

    assert time.monotonic() - before >= 1.0  # nothing moved while the other lease was alive
    assert finished.id == run.id and len(box_sim.boxes) == 1
    assert app.components.runs.leases.taken_over == 1
    metrics = await (await app.client.get("/metrics")).text()
    assert "box_bot_leases_taken_over_total 1.0" in metrics
    assert "box_bot_runs_driven 0.0" in metrics
    assert len([c for c in github_sim.comments(REPO, 41)]) == 1


async def test_a_stopping_instance_gives_back_every_lease_it_holds(
    start_app: AppFactory, github_sim: GitHubSimulator
) -> None:
    app = await start_app()
    store = app.components.store
    run = make_run(42, MAINTAINER, id="run_00000000cafe", repo_id=REPO_ID, state=RunState.IDLE)
    await store.create_run(run, make_prompt(run.id, "label:held"))
    # A lease taken but never handed back: its driver was cancelled in the middle of taking it.
    assert await store.take_lease(run.id, 30.0) is LeaseTaken.FREE
    other = sibling(store)

    await app.components.runs.stop(1.0)

    assert await other.take_lease(run.id, 30.0) is LeaseTaken.FREE
