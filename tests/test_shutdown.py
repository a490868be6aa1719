"""SIGTERM: `box-bot serve` stops cleanly with a run in flight, and the next start resumes it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from bot.ingress.webhook import sign
from bot.models import RunState
from bot.settings import Settings
from bot.sim.box import BoxSimulator
from bot.sim.box_agent import Say, Wait
from bot.sim.github import GitHubSimulator
from bot.store.connect import open_store
from tests.conftest import REPO, SECRET, AppFactory
from tests.flow import labeled, wait_for_run, wait_until

ISSUE = 31


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(settings: Settings, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "APP_ID": settings.app_id,
        "PRIVATE_KEY": settings.private_key,
        "WEBHOOK_SECRET": settings.webhook_secret,
        "GITHUB_API_URL": settings.github_api_url,
        "BOX_API_BASE": settings.box_api_base,
        "BOX_API_KEY": settings.box_api_key,
        "DATABASE_URL": settings.database_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "BOX_POLL_INTERVAL": "1",
    }


async def serve_and_label(
    tmp_path: Path, settings: Settings, delivery: str
) -> asyncio.subprocess.Process:
    """Start `box-bot serve`, wait until it is healthy, and deliver the issue's label."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "serve",
        env=serve_env(settings, port),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    body = json.dumps(labeled(ISSUE)).encode()
    headers = {
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(SECRET, body),
        "Content-Type": "application/json",
    }
    async with aiohttp.ClientSession() as http:

        async def healthy() -> bool:
            try:
                async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(healthy, timeout=20)
        async with http.post(
            f"http://127.0.0.1:{port}/api/github/webhooks", data=body, headers=headers
        ) as response:
            assert response.status == 202
    return process


async def stop_within_25_seconds(process: asyncio.subprocess.Process) -> None:
    """Send SIGTERM; the process must exit 0 within 25 seconds."""
    process.send_signal(signal.SIGTERM)
    began = asyncio.get_running_loop().time()
    output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, output.decode()[-2000:]
    assert asyncio.get_running_loop().time() - began < 25


async def test_sigterm_with_a_run_in_flight_loses_nothing(
    tmp_path: Path,
    settings: Settings,
    start_app: AppFactory,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
) -> None:
    github_sim.add_issue(REPO, ISSUE, title="Slow work")
    box_sim.scripts["slow"] = [Say("Working on it."), Wait(2.0), Say("Finished the work.")]
    box_sim.default_script = "slow"
    process = await serve_and_label(tmp_path, settings, "sigterm-1")
    await wait_until(lambda: box_sim.requests_to("POST", r"/prompt$"), timeout=20)

    await stop_within_25_seconds(process)

    app = await start_app()
    run = await wait_for_run(app, ISSUE, RunState.IDLE, timeout=20)
    assert len(box_sim.requests_to("POST", r"/boxes$")) == 1
    assert len(box_sim.requests_to("POST", r"/prompt$")) == 1
    delivery = await app.components.store.get_delivery("sigterm-1")
    assert delivery is not None and delivery.status.value == "done"
    assert "Finished the work." in run.summary.get("last_message", "")


async def test_sigterm_lets_a_delivery_in_flight_finish(
    tmp_path: Path,
    settings: Settings,
    start_app: AppFactory,
    github_sim: GitHubSimulator,
    box_sim: BoxSimulator,
) -> None:
    github_sim.add_issue(REPO, ISSUE, title="Slow GitHub")
    # GitHub takes 3 s to take the tracking comment: the label's handler is mid-flight.
    github_sim.inject_fault("POST", r"/issues/\d+/comments$", status=None, delay=3.0)
    process = await serve_and_label(tmp_path, settings, "sigterm-2")
    await wait_until(lambda: any("/comments" in p for p in github_sim.delayed), timeout=20)

    await stop_within_25_seconds(process)
    store = await open_store(settings.database_url)
    finished = await store.get_delivery("sigterm-2")
    await store.close()
    assert finished is not None and finished.status.value == "done"  # before the next start

    app = await start_app()
    await wait_for_run(app, ISSUE, RunState.IDLE, timeout=20)
    assert len(box_sim.requests_to("POST", r"/boxes$")) == 1
