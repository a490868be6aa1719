"""Spending guard rails: which limits apply to a run, and how to say that one stopped it.

Counts of boxes and runs are reserved in the store; dollars are what Box reports the boxes
cost, read as they run (`bot.runs.spend`).
"""

from __future__ import annotations

import math
import time

from bot.config.repo import EffectiveConfig
from bot.settings import Settings
from bot.store.records import DAY_SECONDS, Bound, Limit, LimitHit, Limits


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
        run_dollars=_stricter(
            _bound(Limit.RUN_DOLLARS, settings.max_dollars_per_run),
            _bound(Limit.REPO_RUN_DOLLARS, config.max_dollars_per_run if config else None),
        ),
        day_dollars=_bound(Limit.DAY_DOLLARS, settings.max_dollars_per_day),
        repo_day_dollars=_bound(
            Limit.REPO_DAY_DOLLARS, config.max_dollars_per_day if config else None
        ),
    )


def day_start(now: float) -> float:
    """The start of the UTC day *now* falls in: dollars per day count from there."""
    return now - now % DAY_SECONDS


def day_dollars_hit(
    limits: Limits, installation_spent: float, repo_spent: float, now: float
) -> LimitHit | None:
    """The daily dollar cap that today's spend reaches (it frees up at the next UTC day)."""
    tomorrow = day_start(now) + DAY_SECONDS
    for bound, spent in (
        (limits.day_dollars, installation_spent),
        (limits.repo_day_dollars, repo_spent),
    ):
        if bound is not None and spent >= bound.value:
            return LimitHit(bound.limit, bound.value, tomorrow)
    return None


def _bound(limit: Limit, value: float | None) -> Bound | None:
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
    Limit.RUN_DOLLARS: "the limit of {dollars} per run",
    Limit.REPO_RUN_DOLLARS: "the limit of {dollars} per run in this repository",
    Limit.DAY_DOLLARS: "the limit of {dollars} a day of boxes for this installation",
    Limit.REPO_DAY_DOLLARS: "the limit of {dollars} a day of boxes for this repository",
}
SOURCE_TEXT = {
    Limit.ACTIVE: "the operator's `BOX_MAX_ACTIVE`: {value}",
    Limit.PER_INSTALLATION: "the operator's `BOX_MAX_ACTIVE_PER_INSTALLATION`: {value}",
    Limit.PER_REPO: "the operator's `BOX_MAX_ACTIVE_PER_REPO`: {value}",
    Limit.REPO_ACTIVE: "this repository's `max_active_boxes`: {value}",
    Limit.PER_USER_DAY: "the operator's `BOX_MAX_RUNS_PER_USER_PER_DAY`: {value}",
    Limit.REPO_USER_DAY: "this repository's `max_runs_per_user_per_day`: {value}",
    Limit.BOX_ACCOUNT: "as Box's `GET /limits` reports it",
    Limit.RUN_DOLLARS: "the operator's `BOX_MAX_DOLLARS_PER_RUN`: {dollars}",
    Limit.REPO_RUN_DOLLARS: "this repository's `max_dollars_per_run`: {dollars}",
    Limit.DAY_DOLLARS: "the operator's `BOX_MAX_DOLLARS_PER_DAY`: {dollars}",
    Limit.REPO_DAY_DOLLARS: "this repository's `max_dollars_per_day`: {dollars}",
}
LIMIT_TEXT = (
    "🛑 **No box was started: {reached} is reached ({source}).** {frees} "
    "Then comment `/box fix` to try again."
)
FREES_AT = "It frees up at {when}."
FREES_WITH_A_BOX = "It frees up when one of the active boxes is archived (`/box archive`)."
DOLLAR_STOP_TEXT = (
    "💸 **The box was stopped: it cost {cost}, reaching {reached} ({source}).** Its work so far "
    "is kept in its snapshot. To go on, raise the limit, then comment "
    "`/box fix <more instructions>`."
)


def dollars(value: float) -> str:
    """Return an amount of dollars as shown on GitHub, e.g. `$2.00`."""
    return f"${value:,.2f}"


def describe_dollar_stop(bound: Bound, cost: float) -> str:
    """Say that a run's box was stopped at its dollar cap, and what it had cost."""
    return DOLLAR_STOP_TEXT.format(
        cost=dollars(cost),
        reached=HIT_TEXT[bound.limit].format(dollars=dollars(bound.value)),
        source=SOURCE_TEXT[bound.limit].format(dollars=dollars(bound.value)),
    )


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
    amount = dollars(hit.value)
    return LIMIT_TEXT.format(
        reached=HIT_TEXT[hit.limit].format(value=hit.value, dollars=amount),
        source=SOURCE_TEXT[hit.limit].format(value=hit.value, dollars=amount),
        frees=frees,
    )
