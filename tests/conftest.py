"""Shared fixtures: the real app on a loopback port, wired to the GitHub simulator."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.ingress.server import COMPONENTS, Components, Options, create_app
from bot.ingress.webhook import sign
from bot.ingress.worker import WorkerPolicy
from bot.runs.timing import Timing
from bot.settings import Settings
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator
from bot.store.records import Delivery, DeliveryStatus
from tests.databases import database_url as new_database
from tests.databases import report_header

FIXTURES = Path(__file__).parent / "fixtures"
WEBHOOKS = FIXTURES / "webhooks"
SECRET = "a-webhook-secret-for-tests-0123456789"
INSTALLATION_ID = 4242
REPO = "Codertocat/Hello-World"
REPO_ID = 186853002
BOX_KEY = "box_live_testkey0123456789abcdef"
MAINTAINER = "Codertocat"
TERMINAL = {DeliveryStatus.DONE, DeliveryStatus.FAILED, DeliveryStatus.IGNORED}


def load_payload(name: str, installation_id: int | None = INSTALLATION_ID) -> dict[str, Any]:
    """Return a recorded payload (`event.action.N`), as an app delivery for *installation_id*."""
    data: dict[str, Any] = json.loads((WEBHOOKS / f"{name}.json").read_text())
    data = copy.deepcopy(data)
    if installation_id is not None and "installation" not in data:
        data["installation"] = {"id": installation_id, "node_id": "MDIzOkludGVncmF0aW9uNDI0Mg=="}
    return data


def fast_options(**timing: float) -> Options:
    """App options for tests: no pacing between writes, a worker and runs that poll often."""
    policy = WorkerPolicy(idle_poll=0.02, base_delay=0.01, max_delay=0.05, max_attempts=3)
    fast = {
        "ready_timeout": 5.0,
        "ready_poll": 0.01,
        "poll_interval": 0.01,
        "max_poll_interval": 0.02,
        **timing,
    }
    return Options(
        box_retry_budget=0.5,
        worker=policy,
        github_write_interval=0.0,
        comment_interval=0.0,
        timing=Timing(**fast),
    )  # type: ignore[arg-type]


@pytest.fixture
async def github_sim() -> AsyncIterator[GitHubSimulator]:
    sim = GitHubSimulator(app_id=321, app_slug="box-bot")
    await sim.start()
    sim.add_installation(INSTALLATION_ID, "Codertocat")
    # The recorded payloads name `master` as this repository's default branch.
    sim.add_repo(
        REPO,
        installation_id=INSTALLATION_ID,
        private=False,
        repo_id=REPO_ID,
        default_branch="master",
    )
    sim.set_permission(REPO, MAINTAINER, "admin")
    yield sim
    await sim.close()


@pytest.fixture
async def box_sim() -> AsyncIterator[BoxSimulator]:
    sim = BoxSimulator(BOX_KEY, seed=11)
    await sim.start()
    sim.add_repo(REPO, github_id=REPO_ID)
    sim.add_repo("Codertocat/other-repo")
    yield sim
    await sim.close()


def pytest_report_header() -> str:
    return report_header()


@pytest.fixture
def database_backend(request: pytest.FixtureRequest) -> str:
    """SQLite, unless a test asks for each backend with `tests.databases.on_every_backend`."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
async def database_url(database_backend: str, tmp_path: Path) -> AsyncIterator[str]:
    async with new_database(database_backend, tmp_path) as url:
        yield url


@pytest.fixture
def settings(database_url: str, github_sim: GitHubSimulator, box_sim: BoxSimulator) -> Settings:
    return Settings(
        app_id="321",
        private_key=github_sim.private_key_pem,
        webhook_secret=SECRET,
        github_api_url=github_sim.base_url,
        box_api_key=BOX_KEY,
        box_api_base=box_sim.base_url,
        database_url=database_url,
    )


class RunningApp:
    """The real app served on a loopback port, with helpers to talk to it."""

    def __init__(self, client: TestClient[web.Request, web.Application]) -> None:
        self.client = client

    @property
    def components(self) -> Components:
        return self.client.app[COMPONENTS]

    async def post(
        self,
        event: str,
        payload: dict[str, Any] | bytes,
        *,
        delivery_id: str | None = None,
        secret: str = SECRET,
        headers: dict[str, str] | None = None,
    ) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent = {
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, body),
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/tests",
            **(headers or {}),
        }
        return await self.client.post("/api/github/webhooks", data=body, headers=sent)

    async def wait_for(self, delivery_id: str, timeout: float = 5.0) -> Delivery:
        """Wait until the worker has finished with a delivery; return its row."""
        async with asyncio.timeout(timeout):
            while True:
                row = await self.components.store.get_delivery(delivery_id)
                if row is not None and row.status in TERMINAL:
                    return row
                await asyncio.sleep(0.01)


AppFactory = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def start_app(settings: Settings) -> AsyncIterator[AppFactory]:
    """Start the real app (several times if a test restarts it); stop them all at the end."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(
        app_settings: Settings = settings, options: Options | None = None
    ) -> RunningApp:
        client = TestClient(TestServer(create_app(app_settings, options or fast_options())))
        await client.start_server()
        clients.append(client)
        return RunningApp(client)

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def app(start_app: AppFactory) -> RunningApp:
    return await start_app()
