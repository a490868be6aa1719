"""What a pull request review asked of the box, as the triggering payload said it.

A review request is taken from the webhook payload when it arrives (time of check = time of
use): the comment's text, place in the diff and commit are never read again later. It travels
with its queued prompt as JSON in the prompt's `instructions`, which the trigger key marks as a
review's; the thread's earlier comments and a review's inline comments are read when the prompt
is built, keeping only those written and last edited before the request.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from bot.models import QueuedPrompt

REVIEW_COMMENT_KEY = "review-comment:"
REVIEW_KEY = "review:"
# GitHub stamps a review's comments when the review is submitted, a moment apart from it.
REVIEW_STAMP_GRACE = 5.0


class ReviewTrigger(enum.StrEnum):
    """What sent a review to the box."""

    COMMENT = "comment"  # a `/box` command in an inline review comment
    REVIEW = "review"  # `/box fix` in the body of a submitted review
    CHANGES_REQUESTED = "changes_requested"  # a review requesting changes, with auto_fix_reviews


@dataclass(frozen=True)
class DiffComment:
    """One inline review comment: who wrote what, where in the diff, on which commit."""

    id: int
    author: str
    body: str
    path: str
    line: int | None
    start_line: int | None
    side: str | None
    position: int | None  # older payloads place a comment by its line in the diff only
    diff_hunk: str
    commit_id: str
    created_at: str
    updated_at: str
    in_reply_to_id: int | None = None

    @classmethod
    def from_github(cls, data: Mapping[str, Any]) -> DiffComment:
        """Read a review comment as GitHub's API or a webhook shows it."""
        line = _int(data.get("line"))
        start = _int(data.get("start_line"))
        if line is None:  # outdated or older comments keep their place as `original_*`
            line, start = _int(data.get("original_line")), _int(data.get("original_start_line"))
        created = str(data.get("created_at") or "")
        return cls(
            id=int(data["id"]),
            author=str((data.get("user") or {}).get("login", "")),
            body=str(data.get("body") or ""),
            path=str(data.get("path") or ""),
            line=line,
            start_line=start if start != line else None,
            side=_str(data.get("side")),
            position=_int(data.get("position")) or _int(data.get("original_position")),
            diff_hunk=str(data.get("diff_hunk") or ""),
            commit_id=str(data.get("commit_id") or data.get("original_commit_id") or ""),
            created_at=created,
            updated_at=str(data.get("updated_at") or created),
            in_reply_to_id=_int(data.get("in_reply_to_id")),
        )

    @property
    def thread_id(self) -> int:
        """The id of the thread's first comment, which replies answer."""
        return self.in_reply_to_id or self.id

    def place(self) -> str:
        """Say where in the diff the comment is: its line or range, else its diff position."""
        side = f" ({self.side.lower()} side)" if self.side else ""
        if self.line is not None and self.start_line is not None:
            return f"lines {self.start_line}-{self.line}{side}"
        if self.line is not None:
            return f"line {self.line}{side}"
        if self.position is not None:
            return f"line {self.position} of the diff hunk"
        return "the whole file"

    def written_by(self, moment: str, grace: float = 0.0) -> bool:
        """Whether the comment was written and last edited by *moment* (plus *grace* seconds)."""
        limit = parse_time(moment) + timedelta(seconds=grace)
        return parse_time(self.created_at) <= limit and parse_time(self.updated_at) <= limit


@dataclass(frozen=True)
class ReviewRequest:
    """A request from a review; `asked_at` is when it was made, context is cut there."""

    trigger: ReviewTrigger
    pull_number: int
    requester: str
    instructions: str
    asked_at: str
    comment: DiffComment | None = None
    review_id: int | None = None
    review_body: str = ""

    @property
    def trigger_key(self) -> str:
        """The prompt's trigger key: one prompt per review comment or per review."""
        if self.comment is not None:
            return f"{REVIEW_COMMENT_KEY}{self.comment.id}"
        return f"{REVIEW_KEY}{self.review_id}"

    def to_json(self) -> str:
        """Serialise for the queued prompt's `instructions`."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_prompt(cls, prompt: QueuedPrompt) -> ReviewRequest | None:
        """The review request a queued prompt carries; None for any other prompt."""
        key = prompt.trigger_key or ""
        if not key.startswith((REVIEW_COMMENT_KEY, REVIEW_KEY)):
            return None
        data = json.loads(prompt.instructions)
        comment = data.pop("comment", None)
        return cls(
            **{**data, "trigger": ReviewTrigger(data["trigger"])},
            comment=DiffComment(**comment) if comment is not None else None,
        )


def given_instructions(prompt: QueuedPrompt) -> str:
    """The instructions a person gave with a prompt (a review's are inside its request)."""
    review = ReviewRequest.from_prompt(prompt)
    return review.instructions if review is not None else prompt.instructions


@dataclass
class ReviewContext:
    """A review request with what GitHub held about it when the prompt was built."""

    request: ReviewRequest
    thread: list[DiffComment] = field(default_factory=list)
    review_comments: list[DiffComment] = field(default_factory=list)


def parse_time(value: str) -> datetime:
    """Read GitHub's ISO 8601 timestamps (`Z` or an offset)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
