"""Answer a review's request where it was made, once the prompt it started has ended."""

from __future__ import annotations

import logging

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.models import QueuedPrompt, Run
from bot.runs.render import render_review_answer
from bot.runs.review import ReviewRequest
from bot.runs.timeline import Timeline

log = logging.getLogger(__name__)


async def answer_review(gh: GitHubAPI, run: Run, prompt: QueuedPrompt, timeline: Timeline) -> None:
    """Reply in the review thread (or, for a whole review, on the pull request) with the outcome.

    Nothing for prompts no review asked for; a refused reply is logged, the run goes on.
    """
    request = ReviewRequest.from_prompt(prompt)
    if request is None:
        return
    body = render_review_answer(run, timeline, request.pull_number)
    if request.comment is not None:
        url = (
            f"/repos/{run.repo}/pulls/{request.pull_number}/comments/"
            f"{request.comment.thread_id}/replies"
        )
    else:
        url = f"/repos/{run.repo}/issues/{request.pull_number}/comments"
    try:
        await gh.post(url, data={"body": body})
    except (gidgethub.GitHubException, OSError, TimeoutError) as exc:
        log.warning("run %s: could not answer %s: %s", run.id, request.trigger_key, exc)
