"""Getting a run's box ready: what it is created with, whether the Box account may start one,
waiting until it is up and set up, and its desktop link."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import gidgethub

from bot.box.client import BoxClient
from bot.box.errors import BoxAPIError, BoxBillingError
from bot.box.models import WORKING_BOX_STATES, BoxSetup, BoxState, SetupStatus
from bot.box.models import Limits as BoxLimits
from bot.config.repo import EffectiveConfig, RepoConfigError
from bot.models import Run
from bot.runs.configs import RunConfigs
from bot.runs.failures import BoxCannotStart, BoxGone, BoxStartsUsedUp, LimitReached, ReadyTimeout
from bot.runs.record import RunRecord
from bot.runs.spend import SpendTracker
from bot.runs.timing import Timing
from bot.settings import Settings
from bot.store.records import Limit, LimitHit

START_WINDOWS = (("minute", 60.0), ("hour", 3600.0), ("day", 86400.0))
BILLING_OK = ("active", "trialing", "")

log = logging.getLogger(__name__)


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


def box_setup(settings: Settings, config: EffectiveConfig | None) -> BoxSetup:
    """What a new box is created with: the repository's keys over the operator's."""
    if config is None:
        return BoxSetup(settings.box_setup_script, settings.box_machine, settings.box_environment)
    return BoxSetup(config.setup, config.machine, config.environment, dict(config.env))


async def remember_desktop(
    box: BoxClient, configs: RunConfigs, desktops: MutableMapping[str, str], run: Run
) -> None:
    """Fetch the desktop link once, where the repository shows it (private repos only)."""
    if run.box_id is None or run.id in desktops:
        return
    try:
        config = await configs.of(run)
    except (RepoConfigError, gidgethub.GitHubException):
        return
    if config is None or not config.desktop_allowed(run.repo_private):
        return
    try:
        desktop = await box.desktop(run.box_id)
    except BoxAPIError as exc:
        log.warning("run %s: no desktop link: %s", run.id, exc)
        return
    if desktop.url:
        desktops[run.id] = desktop.url


async def wait_setup(
    box: BoxClient,
    spend: SpendTracker,
    record: RunRecord,
    timing: Timing,
    clock: Callable[[], float],
    run: Run,
    enforce: Callable[[Run], Awaitable[None]],
) -> None:
    """Wait until the box's setup script (if it has one) has ended, showing how it goes.

    The box bills meanwhile: *enforce* holds the run's dollar cap on every look.
    """
    assert run.box_id is not None
    deadline = clock() + timing.ready_timeout
    shown: str | None = None
    while True:
        current = await box.get_box(run.box_id)
        if current.state not in WORKING_BOX_STATES:
            raise BoxGone(current.state, started=True)
        report = await spend.note_setup(run, current)
        if report.setup_status != shown and report.setup_status is not None:
            log.info("run %s: setup of box %s %s", run.id, current.id, report.setup_status)
            async with record.lock(run.id):
                await record.show(run, final=True)
        shown = report.setup_status
        if current.setup_status not in (SetupStatus.PENDING, SetupStatus.RUNNING):
            return
        await enforce(run)
        if clock() > deadline:
            raise ReadyTimeout(f"box {run.box_id} was still setting up")
        await asyncio.sleep(timing.ready_poll)
