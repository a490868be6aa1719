"""What handlers ask of the run manager: a request for work, the run it starts, what it led to."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

from bot.config.repo import EffectiveConfig
from bot.models import PromptKind, Run, RunState
from bot.settings import Settings


@dataclass(frozen=True)
class RunRequest:
    """Someone with write access asked for work on an issue or pull request."""

    installation_id: int
    repo_id: int
    repo: str
    repo_private: bool
    number: int
    is_pull_request: bool
    requester: str
    instructions: str
    trigger_key: str
    kind: PromptKind = PromptKind.INITIAL
    default_branch: str | None = None
    config: EffectiveConfig | None = None


class Outcome(enum.Enum):
    """What a request led to."""

    STARTED = "started"
    QUEUED = "queued as a follow-up"
    RESUMED = "resumed the archived box"
    DUPLICATE = "already handled"


def new_run_id() -> str:
    """Return a short, unguessable run id."""
    return "run_" + secrets.token_hex(6)


def new_run(req: RunRequest, settings: Settings, now: float) -> Run:
    """The run a request starts, with its repository's box settings (the operator's without)."""
    config = req.config
    return Run(
        id=new_run_id(),
        installation_id=req.installation_id,
        repo_id=req.repo_id,
        repo=req.repo,
        repo_private=req.repo_private,
        number=req.number,
        is_pull_request=req.is_pull_request,
        state=RunState.REQUESTED,
        requester=req.requester,
        provider=config.provider if config else settings.box_provider,
        model=config.model if config else settings.box_model,
        reasoning_effort=config.reasoning_effort if config else settings.box_reasoning_effort,
        ttl_seconds=config.ttl_seconds if config else settings.box_ttl_seconds,
        default_branch=req.default_branch,
        created_at=now,
        updated_at=now,
    )
