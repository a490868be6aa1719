"""How the error that ended a run is told: one kind per failure, each with its own notice."""

from __future__ import annotations

from http import HTTPStatus

import gidgethub
import pytest

from bot.box.errors import BoxConflictError, BoxRateLimitedError, BoxServerError
from bot.config.repo import ConfigProblem, RepoConfigError
from bot.runs.failures import (
    BoxGone,
    BoxStartsUsedUp,
    LimitReached,
    ReadyTimeout,
    describe_failure,
)
from bot.runs.render import FAILURE_TEXT, FailureKind
from bot.store.records import Limit, LimitHit

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("error", "kind", "message"),
    [
        (
            BoxConflictError("too many", code="active_box_limit"),
            FailureKind.ACTIVE_LIMIT,
            "too many",
        ),
        (BoxConflictError("again", code="box_starting"), FailureKind.BOX_STARTING, "again"),
        (BoxConflictError("odd", code="something_new"), FailureKind.CONFLICT, "odd"),
        (BoxServerError("down", status=503), FailureKind.BOX_UNAVAILABLE, "down"),
        (
            ReadyTimeout("box bx_1 was still starting"),
            FailureKind.NOT_READY,
            "box bx_1 was still starting",
        ),
        (BoxGone("error"), FailureKind.NOT_READY, "box went error"),
        (BoxGone("error", started=True), FailureKind.BOX_ERROR, "box went error"),
        (BoxGone("archived", started=True), FailureKind.ARCHIVED, "box went archived"),
        (
            gidgethub.BadRequest(HTTPStatus.UNPROCESSABLE_ENTITY),
            FailureKind.GITHUB_ERROR,
            "Unprocessable Entity",
        ),
        (KeyError("number"), FailureKind.INTERNAL, "KeyError: 'number'"),
    ],
)
def test_each_error_is_one_kind_of_failure(
    error: Exception, kind: FailureKind, message: str
) -> None:
    failure = describe_failure(error, NOW)
    assert (failure.kind, failure.message) == (kind, message)
    assert failure.notice().startswith(FAILURE_TEXT[kind])


def test_a_rate_limit_says_when_to_try_again() -> None:
    told = describe_failure(BoxRateLimitedError("slow down", retry_after=90), NOW)
    used_up = describe_failure(BoxStartsUsedUp("hour", 20, NOW + 3600), NOW)
    assert (told.kind, told.retry_at) == (FailureKind.RATE_LIMITED, NOW + 90)
    assert (used_up.kind, used_up.retry_at) == (FailureKind.RATE_LIMITED, NOW + 3600)
    assert "Try again after 08:02 UTC" in told.notice()


def test_a_limit_is_told_by_naming_it() -> None:
    failure = describe_failure(LimitReached(LimitHit(Limit.PER_REPO, 2)), NOW)
    assert (failure.kind, failure.message) == (
        FailureKind.LIMIT,
        "limit BOX_MAX_ACTIVE_PER_REPO reached",
    )
    assert "the limit of 2 active boxes for this repository" in failure.notice()
    assert "BOX_MAX_ACTIVE_PER_REPO" in failure.notice()


def test_a_broken_config_is_told_by_listing_its_problems() -> None:
    problem = ConfigProblem(".github/box.yml", 3, "unknown key `modle`")
    failure = describe_failure(RepoConfigError([problem]), NOW)
    assert (failure.kind, failure.message) == (FailureKind.CONFIG, "invalid .github/box.yml")
    assert failure.notice().startswith(
        "⚠️ **`.github/box.yml` has problems, so no box was started.**"
    )
    assert "unknown key `modle`" in failure.notice()


def test_every_other_kind_has_words_of_its_own() -> None:
    assert set(FailureKind) - set(FAILURE_TEXT) == {FailureKind.LIMIT, FailureKind.CONFIG}
