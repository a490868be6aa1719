"""What a review request keeps from its payload, and how it travels with its prompt."""

from __future__ import annotations

import pytest

from bot.models import PromptKind, PromptState, QueuedPrompt
from bot.runs.review import DiffComment, ReviewRequest, ReviewTrigger, given_instructions
from tests.conftest import load_payload


@pytest.mark.parametrize(
    ("fixture", "place"),
    [
        ("pull_request_review_comment.created.1", "line 1 of the diff hunk"),  # no line numbers
        ("pull_request_review_comment.created.2", "line 265 (right side)"),
        ("pull_request_review_comment.created.3", "line 265 (right side)"),
    ],
)
def test_recorded_comments_are_placed_by_line_or_diff_position(fixture: str, place: str) -> None:
    comment = DiffComment.from_github(load_payload(fixture)["comment"])
    assert comment.place() == place
    assert (comment.id, comment.author, comment.path) == (284312630, "Codertocat", "README.md")
    assert comment.diff_hunk == "@@ -1 +1 @@\n-# Hello-World"
    assert comment.commit_id == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    assert comment.thread_id == comment.id


def test_an_outdated_comment_keeps_its_original_range_and_a_reply_its_thread() -> None:
    data = load_payload("pull_request_review_comment.created.2")["comment"]
    data.update(line=None, start_line=None, original_line=9, original_start_line=7)
    data["in_reply_to_id"] = 284312000
    comment = DiffComment.from_github(data)
    assert comment.place() == "lines 7-9 (right side)"
    assert comment.thread_id == 284312000


@pytest.mark.parametrize(
    ("created", "updated", "grace", "kept"),
    [
        ("2019-05-15T15:20:37Z", "2019-05-15T15:20:38Z", 0.0, True),
        ("2019-05-15T15:20:37Z", "2019-05-15T15:20:39Z", 0.0, False),
        ("2019-05-15T15:20:37Z", "2019-05-15T15:20:42Z", 5.0, True),
        ("2019-05-15T15:20:39Z", "2019-05-15T15:20:39Z", 0.0, False),
    ],
)
def test_only_what_was_written_and_edited_by_the_request_counts(
    created: str, updated: str, grace: float, kept: bool
) -> None:
    data = load_payload("pull_request_review_comment.created.2")["comment"]
    comment = DiffComment.from_github({**data, "created_at": created, "updated_at": updated})
    assert comment.written_by("2019-05-15T15:20:38Z", grace) is kept


def queued(instructions: str, trigger_key: str) -> QueuedPrompt:
    return QueuedPrompt(
        seq=1,
        run_id="run_1",
        kind=PromptKind.FOLLOW_UP,
        requester="Codertocat",
        instructions=instructions,
        state=PromptState.QUEUED,
        trigger_key=trigger_key,
    )


def test_a_request_travels_with_its_prompt_unchanged() -> None:
    data = load_payload("pull_request_review_comment.created.2")["comment"]
    request = ReviewRequest(
        trigger=ReviewTrigger.COMMENT,
        pull_number=2,
        requester="Codertocat",
        instructions="rename this",
        asked_at=data["created_at"],
        comment=DiffComment.from_github(data),
    )
    prompt = queued(request.to_json(), request.trigger_key)
    assert request.trigger_key == "review-comment:284312630"
    assert ReviewRequest.from_prompt(prompt) == request
    assert given_instructions(prompt) == "rename this"


def test_other_prompts_carry_no_review_even_when_their_text_looks_like_one() -> None:
    data = load_payload("pull_request_review.submitted.2")["review"]
    request = ReviewRequest(
        trigger=ReviewTrigger.REVIEW,
        pull_number=2,
        requester="Codertocat",
        instructions="",
        asked_at=data["submitted_at"],
        review_id=data["id"],
    )
    assert request.trigger_key == "review:237895671"
    typed = queued(request.to_json(), "comment:99")  # someone pasted a request in a comment
    assert ReviewRequest.from_prompt(typed) is None
    assert given_instructions(typed) == request.to_json()
