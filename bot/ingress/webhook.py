"""Check an incoming GitHub webhook request before anything in it is trusted.

https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
"""

from __future__ import annotations

import enum
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
# GitHub writes the action as a payload's first member; reading it there spares decoding a
# delivery that no handler takes. A body laid out otherwise is decoded as usual.
LEADING_ACTION = re.compile(rb'\A\s*\{\s*"action"\s*:\s*"([a-z][a-z0-9_]{0,63})"\s*[,}]')


class Refusal(enum.StrEnum):
    """Why a request was refused, as counted in `/metrics`."""

    BAD_SIGNATURE = "bad_signature"
    TOO_LARGE = "too_large"
    BAD_HEADERS = "bad_headers"
    BAD_CONTENT_TYPE = "bad_content_type"
    MALFORMED = "malformed"
    STORE_UNAVAILABLE = "store_unavailable"


class WebhookRejected(Exception):
    """The request is not a delivery we accept (answered 400); `reason` is how it is counted."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class DeliveryHeaders:
    """The delivery id and event name of a signed request, checked."""

    id: str
    event: str


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


def read_headers(headers: Mapping[str, str]) -> DeliveryHeaders:
    """Check the GitHub headers of a signed request; raise `WebhookRejected` (400) if wrong."""
    missing = [name for name in ("X-GitHub-Event", "X-GitHub-Delivery") if not headers.get(name)]
    if missing:
        raise WebhookRejected(
            Refusal.BAD_HEADERS, f"missing required header(s): {', '.join(missing)}"
        )
    delivery_id, event = headers["X-GitHub-Delivery"], headers["X-GitHub-Event"]
    if not DELIVERY_ID_FORMAT.fullmatch(delivery_id):
        raise WebhookRejected(Refusal.BAD_HEADERS, "X-GitHub-Delivery is not a GitHub delivery id")
    if not NAME_FORMAT.fullmatch(event):
        raise WebhookRejected(Refusal.BAD_HEADERS, "X-GitHub-Event is not a GitHub event name")
    content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise WebhookRejected(
            Refusal.BAD_CONTENT_TYPE,
            f"content type must be application/json, not {content_type or 'missing'!r}"
            " (set the app's webhook content type to JSON)",
        )
    return DeliveryHeaders(delivery_id, event)


def leading_action(body: bytes) -> str | None:
    """Return the action a signed body names as its first member, without decoding the rest."""
    found = LEADING_ACTION.match(body)
    return found.group(1).decode() if found else None


def parse_delivery(headers: DeliveryHeaders, body: bytes) -> WebhookDelivery:
    """Check the JSON of a signed request; raise `WebhookRejected` (400) if wrong."""
    try:
        data = decode_json(body)
    except ValueError:
        raise WebhookRejected(Refusal.MALFORMED, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise WebhookRejected(Refusal.MALFORMED, "body is not a JSON object")
    action = data.get("action")
    if action is not None and not (isinstance(action, str) and NAME_FORMAT.fullmatch(action)):
        raise WebhookRejected(Refusal.MALFORMED, "the payload's action is not a GitHub action name")
    return WebhookDelivery(
        id=headers.id,
        event=headers.event,
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
        raise WebhookRejected(Refusal.MALFORMED, "the payload's installation id is not a GitHub id")
    return value
