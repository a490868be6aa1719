"""Spending guard rails: which limits apply to a run, and how to say that one stopped it."""

from __future__ import annotations

import math
import time

from bot.config.repo import EffectiveConfig
from bot.settings import Settings
from bot.store.records import Bound, Limit, LimitHit, Limits


def limits_for(settings: Settings, config: EffectiveConfig | None) -> Limits:
    """Combine the operator's limits with the repository's."""
    return Limits(
        paused=settings.paused,
        active=_bound(Limit.ACTIVE, settings.max_active),
        per_installation=_bound(Limit.PER_INSTALLATION, settings.max_active_per_installation),
        per_repo=_stricter(
            _bound(Limit.PER_REPO, settings.max_active_per_repo),
            _bound(Limit.REPO_ACTIVE, config.max_active_boxes if config else None),
        ),
        per_user_day=settings.max_runs_per_user_per_day,
        repo_per_user_day=config.max_runs_per_user_per_day if config else None,
    )


def _bound(limit: Limit, value: int | None) -> Bound | None:
    return None if value is None else Bound(limit, value)


def _stricter(operator: Bound | None, repository: Bound | None) -> Bound | None:
    """Return the lower bound; on a tie the operator's, which the repository cannot raise."""
    if operator is None or repository is None:
        return operator or repository
    return repository if repository.value < operator.value else operator


PAUSED_TEXT = (
    "⏸️ **box-bot is paused by its operator** (`BOX_PAUSED`). Nothing was started and nothing "
    "was spent. Ask again with `/box fix` once it is running again."
)
HIT_TEXT = {
    Limit.ACTIVE: "the limit of {value} active boxes across all installations",
    Limit.PER_INSTALLATION: "the limit of {value} active boxes for this installation",
    Limit.PER_REPO: "the limit of {value} active boxes for this repository",
    Limit.REPO_ACTIVE: "the limit of {value} active boxes for this repository",
    Limit.PER_USER_DAY: "the limit of {value} runs per person per day in all repositories",
    Limit.REPO_USER_DAY: "the limit of {value} runs per person per day in this repository",
    Limit.BOX_ACCOUNT: "the Box account's limit of {value} active boxes",
}
SOURCE_TEXT = {
    Limit.ACTIVE: "the operator's `BOX_MAX_ACTIVE`: {value}",
    Limit.PER_INSTALLATION: "the operator's `BOX_MAX_ACTIVE_PER_INSTALLATION`: {value}",
    Limit.PER_REPO: "the operator's `BOX_MAX_ACTIVE_PER_REPO`: {value}",
    Limit.REPO_ACTIVE: "this repository's `max_active_boxes`: {value}",
    Limit.PER_USER_DAY: "the operator's `BOX_MAX_RUNS_PER_USER_PER_DAY`: {value}",
    Limit.REPO_USER_DAY: "this repository's `max_runs_per_user_per_day`: {value}",
    Limit.BOX_ACCOUNT: "as Box's `GET /limits` reports it",
}
LIMIT_TEXT = (
    "🛑 **No box was started: {reached} is reached ({source}).** {frees} "
    "Then comment `/box fix` to try again."
)
FREES_AT = "It frees up at {when}."
FREES_WITH_A_BOX = "It frees up when one of the active boxes is archived (`/box archive`)."


def describe_hit(hit: LimitHit) -> str:
    """Say which limit stopped the run, who set it, its value, and when it frees up."""
    if hit.limit is Limit.PAUSED:
        return PAUSED_TEXT
    if hit.frees_at is None:
        frees = FREES_WITH_A_BOX
    else:
        # Rounded up to the minute, so that the time said is never too early.
        minute = math.ceil(hit.frees_at / 60) * 60
        frees = FREES_AT.format(when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(minute)))
    return LIMIT_TEXT.format(
        reached=HIT_TEXT[hit.limit].format(value=hit.value),
        source=SOURCE_TEXT[hit.limit].format(value=hit.value),
        frees=frees,
    )
