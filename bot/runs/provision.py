"""Getting a run's box ready: whether the Box account may start one, and waiting until it is up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bot.box.client import BoxClient
from bot.box.errors import BoxBillingError
from bot.box.models import WORKING_BOX_STATES, BoxState
from bot.box.models import Limits as BoxLimits
from bot.runs.failures import BoxCannotStart, BoxGone, BoxStartsUsedUp, LimitReached, ReadyTimeout
from bot.runs.timing import Timing
from bot.store.records import Limit, LimitHit

START_WINDOWS = (("minute", 60.0), ("hour", 3600.0), ("day", 86400.0))
BILLING_OK = ("active", "trialing", "")


def account_refusal(limits: BoxLimits, now: float) -> Exception | None:
    """Why `GET /limits` says no box can start now, as the error to report (None: it can)."""
    full = limits.max_active_boxes <= 0 or limits.active_boxes >= limits.max_active_boxes
    used_up = starts_used_up(limits.raw, now)
    if limits.can_start and not full and used_up is None:
        return None
    if limits.billing_status not in BILLING_OK:
        return BoxBillingError(
            f"Box says this account cannot start boxes (billing status {limits.billing_status!r})",
            status=402,
            code="cannot_start",
        )
    if full:
        return LimitReached(LimitHit(Limit.BOX_ACCOUNT, limits.max_active_boxes))
    if used_up is not None:
        return used_up
    reason = limits.raw.get("startBlockedReason") or limits.raw.get("blockedReason")
    return BoxCannotStart(str(reason) if reason else "Box says the account cannot start boxes")


def starts_used_up(raw: Mapping[str, Any], now: float) -> BoxStartsUsedUp | None:
    """The first start window (minute, hour, day) with nothing left, from `starts`."""
    starts = raw.get("starts")
    if not isinstance(starts, Mapping) or starts.get("unlimited") is True:
        return None
    for window, seconds in START_WINDOWS:
        counts = starts.get(window)
        if not isinstance(counts, Mapping):
            continue
        limit, remaining = counts.get("limit"), counts.get("remaining")
        if isinstance(remaining, int) and remaining <= 0:
            return BoxStartsUsedUp(window, limit if isinstance(limit, int) else None, now + seconds)
    return None


async def check_account(box: BoxClient, now: float) -> None:
    """Ask Box whether the account may start (or resume) a box, rather than fail the call."""
    refusal = account_refusal(await box.limits(), now)
    if refusal is not None:
        raise refusal


async def wait_ready(
    box: BoxClient,
    box_id: str,
    timing: Timing,
    clock: Callable[[], float],
    before_resume: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Wait until the box can take prompts, resuming it once if Box archived it.

    *before_resume* may refuse the resume (a daily dollar cap) by raising.
    """
    deadline = clock() + timing.ready_timeout
    resumed = False
    while True:
        state = (await box.get_box(box_id)).state
        if state in WORKING_BOX_STATES:
            return
        if state == BoxState.ARCHIVED and not resumed:
            if before_resume is not None:
                await before_resume()
            await check_account(box, clock())  # a resume counts as a start
            await box.resume_box(box_id)
            resumed = True
        elif state == BoxState.ERROR:
            raise BoxGone(state)
        if clock() > deadline:
            raise ReadyTimeout(f"box {box_id} was still {state}")
        await asyncio.sleep(timing.ready_poll)
