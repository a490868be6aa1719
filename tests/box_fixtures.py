"""Fixtures for the Box client and simulator tests: a running simulator, a client, fake time."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.box.client import BoxClient
from bot.box.models import Box, PromptRun
from bot.sim.box import BoxSimulator, SimRun

API_KEY = "box_live_k3y5ecretValue0123456789"
WAIT_SECONDS = 5.0


class FakeTime:
    """A clock that only moves when the client sleeps, so retry tests run instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def sim() -> AsyncIterator[BoxSimulator]:
    simulator = BoxSimulator(API_KEY, seed=7)
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def make_client(
    sim: BoxSimulator, http: aiohttp.ClientSession, fake_time: FakeTime, **options: object
) -> BoxClient:
    """Build a client for *sim* with fake time and short timeouts."""
    settings: dict[str, object] = {
        "timeout": aiohttp.ClientTimeout(total=2, connect=1),
        "sleep": fake_time.sleep,
        "clock": fake_time.clock,
        "rng": random.Random(3),
    }
    return BoxClient(http, sim.base_url, API_KEY, **{**settings, **options})  # type: ignore[arg-type]


@pytest.fixture
def client(sim: BoxSimulator, http: aiohttp.ClientSession, fake_time: FakeTime) -> BoxClient:
    return make_client(sim, http, fake_time)


async def ready_box(sim: BoxSimulator, client: BoxClient) -> Box:
    """Create a box and wait until it is ready."""
    box = await client.create_box()
    async with asyncio.timeout(WAIT_SECONDS):
        await sim.wait_for_state(box.id, "ready")
    return box


async def wait_run(sim: BoxSimulator, box_id: str, prompt_id: str) -> SimRun:
    """Wait until a prompt run ends in the simulator."""
    async with asyncio.timeout(WAIT_SECONDS):
        return await sim.wait_for_run(box_id, prompt_id)


async def finished_run(sim: BoxSimulator, client: BoxClient, box_id: str, prompt: str) -> PromptRun:
    """Send *prompt*, wait for its run to end, and return the run as the client sees it."""
    result = await client.prompt(box_id, prompt, "codex")
    await wait_run(sim, box_id, result.run.prompt_id)
    return await client.prompt_run(box_id, result.run.prompt_id)
