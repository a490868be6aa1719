"""Spending guard rails: which limits apply to a run, and how to say that one stopped it."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass

from bot.repo_config import EffectiveConfig
from bot.settings import Settings

DAY_SECONDS = 24 * 3600


class Limit(enum.StrEnum):
    """A limit the store can find reached, named as the operator or repository sets it."""

    PAUSED = "BOX_PAUSED"
    ACTIVE = "BOX_MAX_ACTIVE"
    PER_INSTALLATION = "BOX_MAX_ACTIVE_PER_INSTALLATION"
    PER_REPO = "max_active_boxes"
    PER_USER_DAY = "max_runs_per_user_per_day"
    BOX_ACCOUNT = "Box account limits"


@dataclass(frozen=True)
class Limits:
    """The limits in force for one run (None means no limit)."""

    paused: bool = False
    active: int | None = None
    per_installation: int | None = None
    per_repo: int | None = None
    per_user_day: int | None = None


@dataclass(frozen=True)
class LimitHit:
    """A limit that stopped a run: which, its value, when it frees up (None: a box ends)."""

    limit: Limit
    value: int
    frees_at: float | None = None


def limits_for(settings: Settings, config: EffectiveConfig | None) -> Limits:
    """Combine the operator's limits with the repository's (the stricter wins)."""
    repo_active = config.max_active_boxes if config else None
    repo_daily = config.max_runs_per_user_per_day if config else None
    return Limits(
        paused=settings.paused,
        active=settings.max_active,
        per_installation=settings.max_active_per_installation,
        per_repo=_stricter(settings.max_active_per_repo, repo_active),
        per_user_day=_stricter(settings.max_runs_per_user_per_day, repo_daily),
    )


def _stricter(first: int | None, second: int | None) -> int | None:
    values = [value for value in (first, second) if value is not None]
    return min(values) if values else None


PAUSED_TEXT = (
    "⏸️ **box-bot is paused by its operator** (`BOX_PAUSED`). Nothing was started and nothing "
    "was spent. Ask again with `/box fix` once it is running again."
)
HIT_TEXT = {
    Limit.ACTIVE: "the limit of {value} active boxes across all installations",
    Limit.PER_INSTALLATION: "the limit of {value} active boxes for this installation",
    Limit.PER_REPO: "the limit of {value} active boxes for this repository",
    Limit.PER_USER_DAY: "the limit of {value} runs per person per day",
    Limit.BOX_ACCOUNT: "the Box account's limit of {value} active boxes",
}


def describe_hit(hit: LimitHit) -> str:
    """Say which limit stopped the run, its value, and when it frees up."""
    if hit.limit is Limit.PAUSED:
        return PAUSED_TEXT
    if hit.frees_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(hit.frees_at + 59))
        frees = f"It frees up at {when}."
    else:
        frees = "It frees up when one of the active boxes is archived (`/box archive`)."
    reached = HIT_TEXT[hit.limit].format(value=hit.value)
    return (
        f"🛑 **No box was started: {reached} (`{hit.limit.value}`) is reached.** {frees} "
        "Then comment `/box fix` to try again."
    )
