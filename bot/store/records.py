"""The values the store takes and returns, beside the run models in `bot.models`."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from bot.json_codec import decode_json

DAY_SECONDS = 24 * 3600


class StoreUnavailable(Exception):
    """The database cannot be reached or written."""


class StoreInUse(StoreUnavailable):
    """Another process has the database open, and only one process may."""


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    IGNORED = "ignored"


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery as kept in the inbox."""

    id: str
    event: str
    action: str | None
    installation_id: int | None
    payload: bytes
    status: DeliveryStatus
    attempts: int
    done_handlers: tuple[str, ...]
    last_error: str | None

    def data(self) -> dict[str, Any]:
        """Return the decoded JSON payload."""
        decoded: dict[str, Any] = decode_json(self.payload)
        return decoded


@dataclass(frozen=True)
class Pruned:
    """What one pass over the inbox dropped: payloads emptied, deliveries forgotten, and
    redeliveries asked of GitHub too long ago to be asked again."""

    payloads: int
    deliveries: int
    redeliveries: int = 0


@dataclass(frozen=True)
class PendingStop:
    """A box the app has to stop (or delete) and has not managed to yet."""

    run_id: str
    box_id: str
    delete: bool
    attempts: int
    next_attempt_at: float


class CreateOutcome(enum.Enum):
    """What `Store.create_run` did."""

    CREATED = "created"
    SAME_TRIGGER = "same trigger already handled"
    ACTIVE_EXISTS = "another run is active"


class LeaseTaken(enum.Enum):
    """How `Store.take_lease` got a run's lease."""

    FREE = "nobody held it"
    OURS = "this instance held it already"
    EXPIRED = "taken over from an instance whose lease expired"


class CIFixOutcome(enum.Enum):
    """What `Store.claim_ci_fix` did."""

    QUEUED = "queued"
    LIMIT_REACHED = "limit reached"
    SEEN = "commit already handled"


@dataclass(frozen=True)
class CIFixClaim:
    """The outcome of a CI fix claim and the attempt it was (or the attempts used)."""

    outcome: CIFixOutcome
    attempt: int


class Limit(enum.StrEnum):
    """A limit the store can find reached, named as the operator or repository sets it."""

    PAUSED = "BOX_PAUSED"
    ACTIVE = "BOX_MAX_ACTIVE"
    PER_INSTALLATION = "BOX_MAX_ACTIVE_PER_INSTALLATION"
    PER_REPO = "BOX_MAX_ACTIVE_PER_REPO"
    REPO_ACTIVE = "max_active_boxes"
    PER_USER_DAY = "BOX_MAX_RUNS_PER_USER_PER_DAY"
    REPO_USER_DAY = "max_runs_per_user_per_day"
    BOX_ACCOUNT = "Box account limits"
    RUN_DOLLARS = "BOX_MAX_DOLLARS_PER_RUN"
    REPO_RUN_DOLLARS = "max_dollars_per_run"
    DAY_DOLLARS = "BOX_MAX_DOLLARS_PER_DAY"
    REPO_DAY_DOLLARS = "max_dollars_per_day"


@dataclass(frozen=True)
class Bound:
    """One limit in force and its value (a count, or dollars for the dollar limits)."""

    limit: Limit
    value: float


@dataclass(frozen=True)
class Limits:
    """The limits in force for one run (None means no limit).

    The operator's and the repository's limits on active boxes count the same boxes, so only
    the stricter is kept, with the name of the setting it came from. Their runs per person
    per day do not: the operator's count every repository, the repository's only its own,
    so both are kept.
    """

    paused: bool = False
    active: Bound | None = None
    per_installation: Bound | None = None
    per_repo: Bound | None = None
    per_user_day: int | None = None
    repo_per_user_day: int | None = None
    run_dollars: Bound | None = None
    day_dollars: Bound | None = None
    repo_day_dollars: Bound | None = None


@dataclass(frozen=True)
class LimitHit:
    """A limit that stopped a run: which, its value, when it frees up (None: a box ends)."""

    limit: Limit
    value: float
    frees_at: float | None = None
