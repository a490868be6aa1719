"""Sign and post a webhook delivery the way GitHub does, to replay a payload at an app.

https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.ingress.webhook import SIGNATURE_HEADER, sign
from bot.settings import SettingsError, read_dotenv

DEFAULT_URL = "http://127.0.0.1:3000/api/github/webhooks"
USER_AGENT = "GitHub-Hookshot/box-bot-send"
TIMEOUT = aiohttp.ClientTimeout(total=30)
NO_SECRET = "no webhook secret: pass --secret or set WEBHOOK_SECRET (environment or .env)"


class SendError(Exception):
    """The delivery could not be sent; the message says why."""


@dataclass(frozen=True)
class SendResult:
    """What the app answered to one delivery."""

    delivery: str
    status: int
    reason: str
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def describe(self) -> str:
        """Return the status line and the response body, as the command prints them."""
        line = f"{self.status} {self.reason} (delivery {self.delivery})"
        return f"{line}\n{self.body}" if self.body else line


def webhook_headers(event: str, body: bytes, secret: str, delivery: str) -> dict[str, str]:
    """Return the headers GitHub sends with a delivery of *body*."""
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        SIGNATURE_HEADER: sign(secret, body),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }


def secret_from_environment(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = None
) -> str | None:
    """Return WEBHOOK_SECRET from the environment over `.env`, or None when unset."""
    env = {**read_dotenv(dotenv or Path.cwd() / ".env"), **(environ or os.environ)}
    return env.get("WEBHOOK_SECRET") or None


async def post_webhook(
    session: aiohttp.ClientSession,
    url: str,
    event: str,
    body: bytes,
    secret: str,
    delivery: str | None = None,
) -> SendResult:
    """Post *body* exactly as given, signed with *secret*, and return the answer."""
    delivery = delivery or str(uuid.uuid4())
    headers = webhook_headers(event, body, secret, delivery)
    try:
        async with session.post(url, data=body, headers=headers) as response:
            text = await response.text(errors="replace")
            return SendResult(delivery, response.status, response.reason or "", text)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SendError(f"cannot reach {url}: {exc or type(exc).__name__}") from None


async def send_file(
    event: str,
    payload: Path,
    *,
    url: str = DEFAULT_URL,
    secret: str | None = None,
    delivery: str | None = None,
) -> SendResult:
    """Read *payload* and post it as an *event* delivery; raise `SendError` if that fails."""
    try:
        secret = secret or secret_from_environment()
    except SettingsError as exc:
        raise SendError(str(exc)) from None
    if not secret:
        raise SendError(NO_SECRET)
    try:
        body = await asyncio.to_thread(payload.read_bytes)
    except OSError as exc:
        raise SendError(f"cannot read {payload}: {exc.strerror}") from None
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        return await post_webhook(session, url, event, body, secret, delivery)
