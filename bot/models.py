"""The records the app keeps about runs and the prompts sent to their boxes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

# The hidden text before a run id in the app's comments (`<!-- box-bot:run=run_… -->`).
MARKER_TEXT = "box-bot:run="


class RunState(enum.StrEnum):
    """Where a run is in its life (see the README's lifecycle diagram)."""

    REQUESTED = "requested"
    PROVISIONING = "provisioning"
    PROMPTING = "prompting"
    WORKING = "working"
    IDLE = "idle"
    ARCHIVED = "archived"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in ACTIVE_STATES


ACTIVE_STATES = frozenset(
    {RunState.REQUESTED, RunState.PROVISIONING, RunState.PROMPTING, RunState.WORKING, RunState.IDLE}
)


class PromptKind(enum.StrEnum):
    INITIAL = "initial"
    FOLLOW_UP = "follow_up"
    RERUN = "rerun"
    CI_FIX = "ci_fix"


class PromptState(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class Run:
    """One request for work on one issue or pull request, and the box that serves it."""

    id: str
    installation_id: int
    repo_id: int
    repo: str
    repo_private: bool
    number: int
    is_pull_request: bool
    state: RunState
    requester: str
    provider: str
    model: str | None = None
    reasoning_effort: str | None = None
    pr_number: int | None = None
    box_id: str | None = None
    comment_id: int | None = None
    pr_comment_id: int | None = None
    head_sha: str | None = None
    check_run_id: int | None = None
    events_cursor: str | None = None
    reason: str | None = None
    notice: str | None = None
    reserved_at: float | None = None
    ttl_seconds: int | None = None
    default_branch: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    finished_at: float | None = None

    @property
    def owner(self) -> str:
        return self.repo.split("/", 1)[0]

    @property
    def repo_name(self) -> str:
        return self.repo.split("/", 1)[1]

    @property
    def marker(self) -> str:
        """The hidden text that lets the app find its tracking comment again."""
        return f"<!-- {MARKER_TEXT}{self.id} -->"


@dataclass(frozen=True)
class QueuedPrompt:
    """A prompt waiting for, or sent to, a run's box."""

    seq: int
    run_id: str
    kind: PromptKind
    requester: str
    instructions: str
    state: PromptState
    box_prompt_id: str | None = None
    trigger_key: str | None = None
    text: str | None = None
    sent_at: float | None = None


@dataclass(frozen=True)
class BoxReport:
    """What Box last said about a run's box: how its setup script went and what it cost.

    `dollars` is None when this Box does not report usage; `final` once the box is stopped
    and the figure no longer grows.
    """

    run_id: str
    box_id: str
    installation_id: int
    repo_id: int
    setup_status: str | None = None
    setup_error: str | None = None
    seconds: float = 0.0
    dollars: float | None = 0.0
    dollars_per_second: float = 0.0
    billed: bool = False
    final: bool = False
    read_at: float = 0.0
