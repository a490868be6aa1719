"""Box's account-wide repository selection, held from select to create across instances."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.box.client import BoxClient
from bot.sim.box import BoxSimulator
from bot.store.connect import open_store
from bot.store.interface import Store
from bot.store.locks import NamedLock
from tests import box_fixtures
from tests.box_fixtures import FakeTime, make_client
from tests.databases import PG_SERVER, SKIPPED, database_url

sim, http, fake_time = box_fixtures.sim, box_fixtures.http, box_fixtures.fake_time

REPOS = [f"acme/repo-{n}" for n in range(4)]


@pytest.fixture
async def instances(tmp_path: Path) -> AsyncIterator[list[Store]]:
    """Two instances' stores on one PostgreSQL database (SQLite has one process per file)."""
    if not PG_SERVER:
        pytest.skip(SKIPPED)
    async with database_url("postgresql", tmp_path) as url:
        stores = [await open_store(url), await open_store(url)]
        try:
            yield stores
        finally:
            for store in stores:
                await store.close()


def clients(
    sim: BoxSimulator,
    http: aiohttp.ClientSession,
    fake_time: FakeTime,
    stores: list[Store],
) -> list[BoxClient]:
    """One Box client per instance, each holding its own instance's lock (as the app does)."""
    return [
        make_client(sim, http, fake_time, account_lock=NamedLock(store, "box-account"))
        for store in stores
    ]


async def test_boxes_started_from_two_instances_each_get_their_own_repo(
    sim: BoxSimulator, http: aiohttp.ClientSession, fake_time: FakeTime, instances: list[Store]
) -> None:
    sim.selection_replaces = True  # the harshest server: only the latest selection counts
    for repo in REPOS:
        sim.add_repo(repo)
    sim.inject_fault("POST", "/boxes$", None, times=len(REPOS), delay=0.05)
    first, second = clients(sim, http, fake_time, instances)

    started = await asyncio.gather(
        *(
            (first if n % 2 else second).start_box(repo, idempotency_key=f"k-{n}")
            for n, repo in enumerate(REPOS)
        )
    )

    for repo, box in zip(REPOS, started, strict=True):
        assert sim.selected_at_create(box.box.id) == [repo]


async def test_a_lock_of_each_instance_alone_lets_the_race_pick_the_wrong_repo(
    sim: BoxSimulator, http: aiohttp.ClientSession, fake_time: FakeTime
) -> None:
    sim.selection_replaces = True
    for repo in REPOS[:2]:
        sim.add_repo(repo)
    sim.inject_fault("POST", "/boxes$", None, times=2, delay=0.05)
    first = make_client(sim, http, fake_time, account_lock=asyncio.Lock())
    second = make_client(sim, http, fake_time, account_lock=asyncio.Lock())

    started = await asyncio.gather(first.start_box(REPOS[0]), second.start_box(REPOS[1]))

    assert [sim.selected_at_create(s.box.id) for s in started] == [[REPOS[1]], [REPOS[1]]]


async def test_a_failed_block_gives_the_lock_back(instances: list[Store]) -> None:
    lock = NamedLock(instances[0], "box-account")
    with pytest.raises(RuntimeError):
        async with lock:
            raise RuntimeError("create failed")
    other = NamedLock(instances[1], "box-account")
    async with asyncio.timeout(2):
        async with other:
            pass
        async with lock:
            pass
