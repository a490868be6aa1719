"""Why a run could not go on: the errors its steps raise, and how each kind of failure is told."""

from __future__ import annotations

from dataclasses import dataclass

import gidgethub

from bot.box.errors import (
    BoxAPIError,
    BoxBillingError,
    BoxConflictError,
    BoxRateLimitedError,
    BoxRepoNotAvailableError,
)
from bot.config.repo import ConfigProblem, RepoConfigError, format_problems
from bot.runs.limits import describe_hit
from bot.runs.render import FailureKind, render_failure
from bot.store.records import LimitHit

CONFIG_PROBLEMS = (
    "⚠️ **`.github/box.yml` has problems, so no box was started.** Fix them on the default "
    "branch, then comment `/box fix` to try again.\n\n{problems}"
)
CONFLICT_KINDS = {
    "active_box_limit": FailureKind.ACTIVE_LIMIT,
    "idempotency_key_reused": FailureKind.IDEMPOTENCY_KEY_REUSED,
    "idempotency_in_progress": FailureKind.IDEMPOTENCY_IN_PROGRESS,
    "box_starting": FailureKind.BOX_STARTING,
}
# Box's answers to create fields it refuses, each told with the `.github/box.yml` key to fix.
SETUP_REFUSALS = {
    "invalid_setup_script": FailureKind.INVALID_SETUP_SCRIPT,
    "unknown_environment": FailureKind.UNKNOWN_ENVIRONMENT,
    "invalid_env": FailureKind.INVALID_ENV,
}


class LimitReached(Exception):
    """A spending limit stopped the run before a box was started."""

    def __init__(self, hit: LimitHit) -> None:
        super().__init__(hit.limit.value)
        self.hit = hit


class BoxStartsUsedUp(Exception):
    """Box's limit on box starts per minute, hour or day is used up (`GET /limits`)."""

    def __init__(self, window: str, limit: int | None, retry_at: float) -> None:
        allowed = f"{limit} box starts" if limit is not None else "only so many box starts"
        super().__init__(f"Box allows {allowed} per {window} and they are used up")
        self.retry_at = retry_at


class BoxCannotStart(Exception):
    """`GET /limits` says the account cannot start boxes, for a reason Box names."""


class ReadyTimeout(Exception):
    """The box did not become ready in time."""


class BoxGone(Exception):
    """The box went to `error` or `archived` while the run needed it."""

    def __init__(self, state: str, *, started: bool = False) -> None:
        super().__init__(state)
        self.state = state
        self.started = started  # the box had been ready: it broke down, not failed to start


@dataclass(frozen=True)
class Failure:
    """A failure as the tracking comment tells it: its kind, a plain message, and its notice."""

    kind: FailureKind
    message: str
    setup_url: str | None = None
    retry_at: float | None = None

    def notice(self) -> str:
        """What happened and what to do next, shown prominently on the tracking comment."""
        return render_failure(
            self.kind, self.message, setup_url=self.setup_url, retry_at=self.retry_at
        )


@dataclass(frozen=True, kw_only=True)
class LimitFailure(Failure):
    """A spending limit stopped the run: the notice names it, who set it and when it frees."""

    hit: LimitHit

    def notice(self) -> str:
        return describe_hit(self.hit)


@dataclass(frozen=True, kw_only=True)
class ConfigFailure(Failure):
    """The repository's `.github/box.yml` is broken: the notice lists every problem."""

    problems: list[ConfigProblem]

    def notice(self) -> str:
        return CONFIG_PROBLEMS.format(problems=format_problems(self.problems))


def describe_failure(exc: Exception, now: float) -> Failure:
    """Tell the error that ended a run as one kind of failure."""
    if isinstance(exc, LimitReached):
        message = f"limit {exc.hit.limit.value} reached"
        return LimitFailure(FailureKind.LIMIT, message, retry_at=exc.hit.frees_at, hit=exc.hit)
    if isinstance(exc, RepoConfigError):
        return ConfigFailure(FailureKind.CONFIG, "invalid .github/box.yml", problems=exc.problems)
    if isinstance(exc, BoxRepoNotAvailableError):
        return Failure(FailureKind.REPO_NOT_AVAILABLE, exc.message)
    if isinstance(exc, BoxConflictError) and exc.code == "provider_not_configured":
        setup = exc.details.get("setupUrl") if exc.details else None
        return Failure(FailureKind.PROVIDER_NOT_CONFIGURED, exc.message, setup_url=setup)
    if isinstance(exc, BoxBillingError):
        return Failure(FailureKind.BILLING, exc.message)
    if isinstance(exc, BoxRateLimitedError):
        retry = now + exc.retry_after if exc.retry_after is not None else None
        return Failure(FailureKind.RATE_LIMITED, exc.message, retry_at=retry)
    if isinstance(exc, BoxConflictError):
        return Failure(CONFLICT_KINDS.get(exc.code or "", FailureKind.CONFLICT), exc.message)
    if isinstance(exc, BoxStartsUsedUp):
        return Failure(FailureKind.RATE_LIMITED, str(exc), retry_at=exc.retry_at)
    if isinstance(exc, BoxCannotStart):
        return Failure(FailureKind.CANNOT_START, str(exc))
    if isinstance(exc, BoxAPIError) and exc.code in SETUP_REFUSALS:
        return Failure(SETUP_REFUSALS[exc.code], exc.message)
    if isinstance(exc, BoxAPIError):
        return Failure(FailureKind.BOX_UNAVAILABLE, exc.message)
    if isinstance(exc, ReadyTimeout):
        return Failure(FailureKind.NOT_READY, str(exc))
    if isinstance(exc, BoxGone):
        return Failure(_gone_kind(exc), f"box went {exc.state}")
    if isinstance(exc, gidgethub.GitHubException):
        return Failure(FailureKind.GITHUB_ERROR, str(exc) or type(exc).__name__)
    return Failure(FailureKind.INTERNAL, f"{type(exc).__name__}: {exc}")


def _gone_kind(exc: BoxGone) -> FailureKind:
    if exc.state != "error":
        return FailureKind.ARCHIVED
    return FailureKind.BOX_ERROR if exc.started else FailureKind.NOT_READY
