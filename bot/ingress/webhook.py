"""Check an incoming GitHub webhook request before anything in it is trusted.

https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.json_codec import decode_json

SIGNATURE_HEADER = "X-Hub-Signature-256"
# GitHub sends the lower-case hex digest; anything else is not a signature it made.
SIGNATURE_FORMAT = re.compile(r"sha256=[0-9a-f]{64}")
# Payloads are capped at 25 MB by GitHub; a larger one is never sent.
MAX_BODY_BYTES = 25 * 1024 * 1024
# GitHub's delivery ids are GUIDs and its event and action names lower-case words; anything
# else is refused before it reaches the store or a log line.
DELIVERY_ID_FORMAT = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces
NAME_FORMAT = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_ID = 2**63 - 1


class WebhookRejected(Exception):
    """The request is not a delivery we accept; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class WebhookDelivery:
    """A delivery whose signature, headers and body have been checked."""

    id: str
    event: str
    action: str | None
    installation_id: int | None
    data: dict[str, Any]
    body: bytes


def sign(secret: str, body: bytes) -> str:
    """Return the `X-Hub-Signature-256` value GitHub would send for *body*."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """Return True if *header* is the HMAC-SHA256 of the raw *body* under *secret*."""
    if header is None or not SIGNATURE_FORMAT.fullmatch(header):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.encode())


def parse_delivery(headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
    """Check the headers and JSON of a signed request; raise `WebhookRejected` (400) if wrong."""
    missing = [name for name in ("X-GitHub-Event", "X-GitHub-Delivery") if not headers.get(name)]
    if missing:
        raise WebhookRejected(400, f"missing required header(s): {', '.join(missing)}")
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise WebhookRejected(
            400,
            f"content type must be application/json, not {content_type or 'missing'!r}"
            " (set the app's webhook content type to JSON)",
        )
    try:
        data = decode_json(body)
    except ValueError:
        raise WebhookRejected(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise WebhookRejected(400, "body is not a JSON object")
    delivery_id, event = headers["X-GitHub-Delivery"], headers["X-GitHub-Event"]
    if not DELIVERY_ID_FORMAT.fullmatch(delivery_id):
        raise WebhookRejected(400, "X-GitHub-Delivery is not a GitHub delivery id")
    if not NAME_FORMAT.fullmatch(event):
        raise WebhookRejected(400, "X-GitHub-Event is not a GitHub event name")
    action = data.get("action")
    if action is not None and not (isinstance(action, str) and NAME_FORMAT.fullmatch(action)):
        raise WebhookRejected(400, "the payload's action is not a GitHub action name")
    return WebhookDelivery(
        id=delivery_id,
        event=event,
        action=action,
        installation_id=_installation_id(data),
        data=data,
        body=body,
    )


def _installation_id(data: Mapping[str, Any]) -> int | None:
    installation = data.get("installation")
    value = installation.get("id") if isinstance(installation, dict) else None
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_ID:
        raise WebhookRejected(400, "the payload's installation id is not a GitHub id")
    return value
