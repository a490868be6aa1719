"""State of the Box simulator: boxes, prompt runs, recorded requests, faults and paging."""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

Json = dict[str, Any]
T = TypeVar("T")

API_PREFIX = "/api/box/v1"
PROMPTABLE_STATES = frozenset({"ready", "idle", "running"})
BILLED_STATES = frozenset({"provisioned", "cloning", "ready", "idle", "running"})
# Box's machine types and what each is billed at (REFERENCE.md §5.1 `type`).
BILLING_MULTIPLIERS = {"small": 0.5, "default": 1.0, "large": 2.0, "xlarge": 50 / 9}
TERMINAL_RUN_STATUSES = frozenset({"finished", "failed", "interrupted"})
MAX_TTL_SECONDS = 2_592_000


@dataclass
class BoxTimings:
    """Seconds each simulated phase takes; tiny by default so tests run in milliseconds."""

    provisioning: float = 0.01
    cloning: float = 0.01
    agent_step: float = 0.002
    archiving: float = 0.01
    create_latency: float = 0.0
    ttl_scale: float = 1.0
    setup: float = 0.01


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulator saw it."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]

    @property
    def route(self) -> str:
        """Return the path below the API prefix, e.g. `/boxes/bx_23456789`."""
        return self.path.removeprefix(API_PREFIX)


@dataclass
class Fault:
    """An injected failure for requests whose method and path match."""

    method: str
    pattern: re.Pattern[str]
    status: int | Literal["drop"] | None
    remaining: float  # failures left to give (math.inf: until cleared)
    delay: float
    retry_after: float | None
    after: bool
    body: str | None
    content_type: str
    rate: float | None = None  # chance that a matching request fails; None: every one
    headers: dict[str, str] = field(default_factory=dict)  # extra response headers


@dataclass
class IdempotencyRecord:
    """What an `Idempotency-Key` stands for: the request, and its answer once it succeeded."""

    fingerprint: str
    answer: Json | None = None  # None while running, or after a failure
    expires_at: float = math.inf  # when the key is forgotten (simulator clock)


class SimApiError(Exception):
    """Answer with an error envelope (REFERENCE.md §1.2)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Json | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details
        self.headers = headers or {}


@dataclass
class SimRun:
    """One prompt run."""

    id: str
    box_id: str
    prompt: str
    provider: str
    model: str
    reasoning_effort: str | None
    status: str
    created_at: str
    event: Json = field(repr=False)

    def to_api(self) -> Json:
        """Return the `PromptRun` JSON object."""
        return {
            "id": self.id,
            "promptId": self.id,
            "boxId": self.box_id,
            "status": self.status,
            "done": self.status in TERMINAL_RUN_STATUSES,
            "createdAt": self.created_at,
            "model": self.model,
            "reasoningEffort": self.reasoning_effort,
        }


@dataclass
class SimBox:
    """A simulated box and everything that happened in it."""

    id: str
    name: str
    subdomain: str
    ttl_seconds: int | None
    selected: list[str]
    ip: str
    state: str = "provisioning"
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    archive_after: datetime | None = None
    events: list[Json] = field(default_factory=list, repr=False)
    last_timestamp: int = 0
    runs: dict[str, SimRun] = field(default_factory=dict, repr=False)
    pending: deque[SimRun] = field(default_factory=deque, repr=False)
    current: SimRun | None = None
    run_task: asyncio.Task[None] | None = field(default=None, repr=False)
    lifecycle: asyncio.Task[None] | None = field(default=None, repr=False)
    ttl_task: asyncio.Task[None] | None = field(default=None, repr=False)
    was_ready: bool = False
    snapshot_available: bool = False
    desktop_token: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    hosted: dict[int, Json] = field(default_factory=dict, repr=False)
    deleted: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    type: str = "default"
    environment: str | None = "base"
    env: dict[str, str] = field(default_factory=dict, repr=False)
    setup_script: str | None = field(default=None, repr=False)
    setup_status: str | None = None
    setup_error: str | None = None
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    billed_seconds: float = 0.0  # billed time before `billed_since`
    billed_since: float | None = None  # when the current billed stretch began (clock)

    @property
    def billing_multiplier(self) -> float:
        """Return what one second of this box's machine type costs in base seconds."""
        return BILLING_MULTIPLIERS[self.type]

    def set_state(self, state: str) -> None:
        """Move to *state* and note the time; billing starts and stops with the state."""
        self.state, self.updated = state, datetime.now(UTC)
        self.was_ready = self.was_ready or state == "ready"
        billed = state in BILLED_STATES
        if billed and self.billed_since is None:
            self.billed_since = self.clock()
        elif not billed and self.billed_since is not None:
            self.billed_seconds += self.clock() - self.billed_since
            self.billed_since = None
        self.changed.set()

    def billable_seconds(self) -> float:
        """Return the seconds this box has been in a billed state so far."""
        running = 0.0 if self.billed_since is None else self.clock() - self.billed_since
        return self.billed_seconds + running

    @property
    def machine_up(self) -> bool:
        """Return whether the machine is running and reachable."""
        return self.state in PROMPTABLE_STATES

    def to_api(self) -> Json:
        """Return the `Box` JSON object."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "type": self.type,
            "billingMultiplier": self.billing_multiplier,
            "setupStatus": self.setup_status,
            "setupError": self.setup_error,
            "environment": self.environment,
            "environmentVersion": 1 if self.environment is not None else None,
            "url": f"https://{self.subdomain}.on.ascii.dev" if self.was_ready else None,
            "ip": self.ip if self.machine_up else None,
            "subdomain": self.subdomain,
            "createdAt": iso(self.created),
            "updatedAt": iso(self.updated),
            "archiveAfter": iso(self.archive_after) if self.archive_after else None,
            "desktopAvailable": self.machine_up,
            "desktopUrl": self.desktop_url() if self.machine_up else None,
            "snapshotAvailable": self.snapshot_available,
            "snapshotCompletedAt": iso(self.updated) if self.snapshot_available else None,
        }

    def desktop_url(self, vnc: bool = False) -> str:
        """Return the secret desktop stream URL."""
        page = "vnc.html" if vnc else "stream.html"
        return f"https://{self.subdomain}-desktop.on.ascii.dev/{page}?token={self.desktop_token}"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_cursor(key: tuple[int, str]) -> str:
    """Encode a sort key the way the SDKs build event cursors: base64url("<n>:<id>"), unpadded."""
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Decode a cursor made by `encode_cursor` (padding optional); raise `SimApiError` if bad."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        number, _, ident = text.partition(":")
        return int(number), ident
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise SimApiError(400, "invalid_cursor", "The cursor is not valid.") from exc


def paginate(
    query: Any, items: Iterable[T], key: Callable[[T], tuple[int, str]], default_sort: str = "desc"
) -> tuple[list[T], Json]:
    """Apply `limit`, `sort` and `cursor` (REFERENCE.md §2); return the page and `pageInfo`."""
    try:
        limit = int(query.get("limit", 100))
    except ValueError as exc:
        raise SimApiError(400, "invalid_limit", "limit must be an integer from 1 to 200.") from exc
    if not 1 <= limit <= 200:
        raise SimApiError(400, "invalid_limit", "limit must be an integer from 1 to 200.")
    sort = query.get("sort", default_sort)
    if sort not in ("asc", "desc"):
        raise SimApiError(400, "invalid_sort", "sort must be asc or desc.")
    ordered = sorted(items, key=key, reverse=sort == "desc")
    if cursor := query.get("cursor"):
        after = decode_cursor(cursor)
        ordered = [i for i in ordered if (key(i) > after if sort == "asc" else key(i) < after)]
    page, has_more = ordered[:limit], len(ordered) > limit
    next_cursor = encode_cursor(key(page[-1])) if has_more else None
    return page, {"nextCursor": next_cursor, "hasMore": has_more, "limit": limit}


def error_body(error: SimApiError, request_id: str) -> Json:
    inner: Json = {"code": error.code, "message": error.message, "status": error.status}
    if error.details:
        inner["details"] = error.details
    return {
        "ok": False,
        "type": "box.error",
        "status": error.status,
        "code": error.code,
        "message": error.message,
        "error": inner,
        "requestId": request_id,
    }


def parse_ttl(value: Any) -> int | None:
    if value is None or value == "infinite":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TTL_SECONDS:
        raise SimApiError(400, "invalid_ttl", "ttlSeconds must be an integer from 1 to 2592000.")
    return value
