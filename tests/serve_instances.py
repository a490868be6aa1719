"""Several real `box-bot serve` processes on one database, and signed deliveries to them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

from bot.ingress.webhook import sign
from bot.sim.box import BoxSimulator
from bot.sim.github import GitHubSimulator

SERVE = [sys.executable, "-m", "bot.cli", "serve"]
LISTENING = "listening on http://"
SECRET_NAMES = ("APP_ID", "PRIVATE_KEY", "PRIVATE_KEY_PATH", "WEBHOOK_SECRET", "BOX_API_KEY")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def instance_env(
    github: GitHubSimulator,
    box: BoxSimulator,
    database_url: str,
    secret: str,
    **settings: str,
) -> dict[str, str]:
    """The environment an operator gives `box-bot serve` to run between the simulators."""
    inherited = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES}
    inherited = {k: v for k, v in inherited.items() if not k.startswith(("BOX_", "DATABASE_"))}
    return {
        **inherited,
        "APP_ID": str(github.app_id),
        "PRIVATE_KEY": github.private_key_pem,
        "WEBHOOK_SECRET": secret,
        "GITHUB_API_URL": github.base_url,
        "BOX_API_BASE": box.base_url,
        "BOX_API_KEY": box.api_key,
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        **settings,
    }


class Instance:
    """One `box-bot serve` process on a port of its own, logging to a file."""

    def __init__(self, name: str, env: Mapping[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.env = {**env, "PORT": str(self.port)}
        self.log = workdir / f"{name}.log"
        self.workdir = workdir
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "start() first"
        return self.process.pid

    async def start(self, within: float = 30.0) -> None:
        """Start the process and wait until it listens."""
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *SERVE, env=self.env, cwd=self.workdir, stdout=log, stderr=log
            )
        async with asyncio.timeout(within):
            while LISTENING not in self.log.read_text():
                if self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, leaving its leases and claims behind."""
        assert self.process is not None
        self.process.kill()

    async def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not stopped within *grace* seconds."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(grace):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode


async def deliver(
    session: aiohttp.ClientSession,
    instance: Instance,
    event: str,
    payload: Mapping[str, Any],
    secret: str,
    delivery_id: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Post one signed delivery as GitHub would; return its id and the app's answer."""
    body = json.dumps(payload).encode()
    delivery_id = delivery_id or str(uuid.uuid4())
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id,
        "X-Hub-Signature-256": sign(secret, body),
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/tests",
    }
    url = instance.url + "/api/github/webhooks"
    async with session.post(url, data=body, headers=headers) as response:
        answer: dict[str, Any] = await response.json()
        assert response.status == 202, answer
    return delivery_id, answer
