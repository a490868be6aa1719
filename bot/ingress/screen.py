"""Decide at intake that a delivery cannot lead to work, so it is answered without being stored.

The decision is conservative: a delivery is dropped only when no handler is registered for its
(event, action), when it names no installation to act through, or when a cheap look at the
payload shows what its only handler would see first and return on (a comment without `/box`, a
push to another branch, CI that did not fail). Everything else is stored and left to the
handlers, which keep every other check (the trigger label, permissions, the repository's
config). A payload of an unexpected shape is stored too: the worker records what is wrong.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.github.ci_logs import FAILING_CONCLUSIONS, GITHUB_ACTIONS_SLUG
from bot.github.text import normalize

# Any case, as the command grammar reads it; normalising first drops invisible characters
# that could sit inside the word.
COMMAND_WORD = "/box"


class Skip(enum.StrEnum):
    """Why a delivery was not stored, as counted in `/metrics`."""

    UNHANDLED_EVENT = "unhandled_event"
    UNHANDLED_ACTION = "unhandled_action"
    NO_INSTALLATION = "no_installation"
    NO_COMMAND = "no_command"
    OTHER_BRANCH = "not_default_branch"
    CI_NOT_FAILED = "ci_not_failed"
    ACTIONS_SUITE = "actions_suite"
    OWN_SUITE = "own_suite"


EXPLANATIONS = {
    Skip.UNHANDLED_EVENT: "no handler takes {event} events",
    Skip.UNHANDLED_ACTION: "no handler takes {event}.{action}",
    Skip.NO_INSTALLATION: (
        "the payload names no installation, so there is no GitHub App token to act with"
        " (a repository or organisation webhook, not the app's?)"
    ),
    Skip.NO_COMMAND: "the comment has no /box command",
    Skip.OTHER_BRANCH: "the push is not to the repository's default branch",
    Skip.CI_NOT_FAILED: "the CI run did not fail",
    Skip.ACTIONS_SUITE: "GitHub Actions suites are read through their workflow_run",
    Skip.OWN_SUITE: "the check suite is this app's own",
}


@dataclass(frozen=True)
class Skipped:
    """A delivery that cannot lead to work, and why."""

    reason: Skip
    explanation: str


PayloadRule = Callable[[Mapping[str, Any], str], Skip | None]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _comment_without_command(data: Mapping[str, Any], app_id: str) -> Skip | None:
    body = _mapping(data.get("comment")).get("body")
    if body is None:
        return Skip.NO_COMMAND if isinstance(data.get("comment"), dict) else None
    if not isinstance(body, str):
        return None
    lowered = body.lower()
    if COMMAND_WORD in lowered or (
        "/" in body and COMMAND_WORD in normalize(body).lower()  # an invisible character inside
    ):
        return None
    return Skip.NO_COMMAND


def _push_elsewhere(data: Mapping[str, Any], app_id: str) -> Skip | None:
    branch = _mapping(data.get("repository")).get("default_branch")
    if not isinstance(branch, str) or data.get("ref") == f"refs/heads/{branch}":
        return None
    return Skip.OTHER_BRANCH


def _suite_that_cannot_fail_a_pr(data: Mapping[str, Any], app_id: str) -> Skip | None:
    suite = data.get("check_suite")
    if not isinstance(suite, dict):
        return None
    app = _mapping(suite.get("app"))
    if app.get("slug") == GITHUB_ACTIONS_SLUG:
        return Skip.ACTIONS_SUITE
    if str(app.get("id")) == app_id:
        return Skip.OWN_SUITE
    return None if suite.get("conclusion") in FAILING_CONCLUSIONS else Skip.CI_NOT_FAILED


def _workflow_that_passed(data: Mapping[str, Any], app_id: str) -> Skip | None:
    workflow = data.get("workflow_run")
    if not isinstance(workflow, dict) or workflow.get("conclusion") in FAILING_CONCLUSIONS:
        return None
    return Skip.CI_NOT_FAILED


# What each handled (event, action) is first checked for by its handler (handlers.comments,
# handlers.config, handlers.ci); a route another handler adds for the same pair must be
# reflected here, or that handler would never see what this drops.
PAYLOAD_RULES: dict[tuple[str, str | None], PayloadRule] = {
    ("issue_comment", "created"): _comment_without_command,
    ("push", None): _push_elsewhere,
    ("check_suite", "completed"): _suite_that_cannot_fail_a_pr,
    ("workflow_run", "completed"): _workflow_that_passed,
}


class Screen:
    """Tells, from the handlers' routes and a look at the payload, what cannot lead to work."""

    def __init__(self, routes: Iterable[tuple[str, str | None]], app_id: str) -> None:
        self.routes = frozenset(routes)
        self.app_id = app_id
        self.events = frozenset(event for event, _action in self.routes)
        self._any_action = frozenset(event for event, action in self.routes if action is None)

    def by_event(self, event: str) -> Skipped | None:
        """Say why no delivery of *event* can lead to work, or None; reads no payload."""
        if event in self.events:
            return None
        return Skipped(Skip.UNHANDLED_EVENT, EXPLANATIONS[Skip.UNHANDLED_EVENT].format(event=event))

    def by_action(self, event: str, action: str) -> Skipped | None:
        """Say why no delivery of a handled *event* with *action* can lead to work, or None."""
        if event in self._any_action or (event, action) in self.routes:
            return None
        explanation = EXPLANATIONS[Skip.UNHANDLED_ACTION].format(event=event, action=action)
        return Skipped(Skip.UNHANDLED_ACTION, explanation)

    def by_payload(
        self, event: str, action: str | None, installation_id: int | None, data: Mapping[str, Any]
    ) -> Skipped | None:
        """Say why this delivery of a handled event cannot lead to work, or None."""
        route = (event, None) if event in self._any_action else (event, action)
        if route not in self.routes:
            reason = Skip.UNHANDLED_ACTION
        elif installation_id is None:
            reason = Skip.NO_INSTALLATION
        else:
            rule = PAYLOAD_RULES.get(route)
            found = rule(data, self.app_id) if rule is not None else None
            if found is None:
                return None
            reason = found
        return Skipped(reason, EXPLANATIONS[reason].format(event=event, action=action))
