"""Ask GitHub again for the deliveries the app missed while it was down or refusing them.

GitHub never redelivers a failed delivery on its own
(https://docs.github.com/webhooks/using-webhooks/handling-failed-webhook-deliveries). At start
and then hourly, the app lists its recent deliveries (`GET /app/hook/deliveries`, newest first,
app JWT), back to a little before its last look and never more than the three days GitHub
keeps them for redelivery, groups the attempts by GUID (constant across redeliveries), and asks
once (`POST /app/hook/deliveries/{id}/attempts`) for each GUID whose every attempt failed and
that the inbox does not hold.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.store.interface import Store
from bot.store.records import StoreUnavailable

log = logging.getLogger(__name__)

# https://docs.github.com/webhooks/testing-and-troubleshooting-webhooks/redelivering-webhooks
REDELIVERY_WINDOW_SECONDS = 3 * 24 * 3600.0
LOOK_EVERY_SECONDS = 3600.0
# GitHub may record a delivery a while after it was attempted: look back past the last look.
LOOK_OVERLAP_SECONDS = 600.0
MAX_ASKS_PER_PASS = 50
PAGE_SIZE = 100
LOCK_NAME = "redeliver"


@dataclass(frozen=True)
class Attempt:
    """One attempt GitHub made at delivering an event."""

    id: int
    guid: str
    delivered_at: float
    ok: bool
    event: str
    action: str | None

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Attempt:
        """Read one item of `GET /app/hook/deliveries`."""
        at = datetime.datetime.fromisoformat(str(item["delivered_at"]).replace("Z", "+00:00"))
        status = item.get("status_code")
        return cls(
            id=int(item["id"]),
            guid=str(item["guid"]),
            delivered_at=at.timestamp(),
            ok=isinstance(status, int) and 200 <= status < 300,
            event=str(item.get("event") or ""),
            action=item.get("action"),
        )


@dataclass(frozen=True)
class Pass:
    """What one look at the delivery log found and did."""

    listed: int
    asked: tuple[str, ...]
    left: int  # failed GUIDs left for the next pass (over the per-pass bound)


def missed(attempts: Iterable[Attempt]) -> list[Attempt]:
    """The newest attempt of each GUID none of whose attempts succeeded, oldest GUID first."""
    by_guid: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        by_guid.setdefault(attempt.guid, []).append(attempt)
    failed = [
        max(tries, key=lambda a: (a.delivered_at, a.id))
        for tries in by_guid.values()
        if not any(a.ok for a in tries)
    ]
    return sorted(failed, key=lambda a: (a.delivered_at, a.id))


async def list_attempts(gh: GitHubAPI, since: float) -> list[Attempt]:
    """The app's delivery attempts from *since* on (the log is listed newest first)."""
    found: list[Attempt] = []
    async for item in gh.getiter(f"/app/hook/deliveries?per_page={PAGE_SIZE}"):
        attempt = Attempt.from_json(item)
        if attempt.delivered_at < since:
            break
        found.append(attempt)
    return found


async def reconcile(
    gh: GitHubAPI,
    store: Store,
    now: float,
    *,
    max_asks: int = MAX_ASKS_PER_PASS,
) -> Pass:
    """Look at the delivery log once and ask for what was missed, each GUID at most once."""
    since = now - REDELIVERY_WINDOW_SECONDS
    if (horizon := await store.redelivery_horizon()) is not None:
        since = max(since, horizon)
    attempts = await list_attempts(gh, since)
    asked: list[str] = []
    candidates = [a for a in missed(attempts) if not await store.has_delivery(a.guid)]
    for attempt in candidates[:max_asks]:
        if not await store.claim_redelivery(attempt.guid):
            continue
        if await _ask(gh, attempt):
            asked.append(attempt.guid)
    left = candidates[max_asks:]
    # The next look reads back past this one, or to what this one had no room to ask for.
    await store.set_redelivery_horizon(left[0].delivered_at if left else now - LOOK_OVERLAP_SECONDS)
    return Pass(len(attempts), tuple(asked), len(left))


async def _ask(gh: GitHubAPI, attempt: Attempt) -> bool:
    """Ask GitHub to deliver *attempt*'s event again; False when GitHub refuses."""
    try:
        await gh.post(f"/app/hook/deliveries/{attempt.id}/attempts", data=b"")
    except gidgethub.BadRequest as exc:  # e.g. 422: too old to redeliver
        log.warning("GitHub would not redeliver %s (%s): %s", attempt.guid, attempt.event, exc)
        return False
    log.info(
        "asked GitHub to redeliver %s (%s%s), missed on %s",
        attempt.guid,
        attempt.event,
        f".{attempt.action}" if attempt.action else "",
        datetime.datetime.fromtimestamp(attempt.delivered_at, datetime.UTC).isoformat(),
    )
    return True


async def reconcile_forever(
    client: Callable[[], GitHubAPI],
    store: Store,
    clock: Callable[[], float],
    *,
    on_asked: Callable[[int], None] | None = None,
    every: float = LOOK_EVERY_SECONDS,
) -> None:
    """Reconcile at start and then every *every* seconds, until cancelled."""
    while True:
        try:
            async with store.lock(LOCK_NAME):  # one instance at a time reads the log
                done = await reconcile(client(), store, clock())
        except (gidgethub.GitHubException, OSError, TimeoutError, StoreUnavailable) as exc:
            log.warning("could not read the app's delivery log: %s; trying again later", exc)
        else:
            if on_asked is not None:
                on_asked(len(done.asked))
        await asyncio.sleep(every)
