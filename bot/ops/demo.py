"""`box-bot dev --demo`: the whole story told by itself, against the simulators.

Label → box → agent events → pull request → `Box` check → `/box fix` on a line of its diff →
the same box follows up and answers in the review thread → merge → box archived, with the
tracking comment printed each time it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TypeVar

from bot.github.checks import CHECK_NAME
from bot.models import Run, RunState
from bot.ops.dev import (
    DEMO_ISSUE,
    DEMO_REPO,
    MAINTAINER,
    REVIEW_COMMENT,
    REVIEW_LINE,
    REVIEW_PATH,
    TRIGGER_LABEL,
    CommentPrinter,
    DevEnvironment,
    Out,
    demo_timings,
    for_terminal,
)
from bot.ops.send import SendError
from bot.runs.render import Phase

T = TypeVar("T")

DEMO_TIMEOUT = 60.0
POLL_SECONDS = 0.02
LABELLED = "▶ {who} adds the label {label} to {repo}#{number} (issues.labeled)"
LINKED = "▶ Box {box} finished the prompt; pull request #{pr} is linked to run {run}"
CHECKED = "▶ Check run {name!r} on {sha:.7}: {status}, {conclusion}"
REVIEWING = (
    "▶ {who} comments on line {line} of {path} in pull request #{pr}: {comment}"
    " (pull_request_review_comment.created)"
)
ANSWERED = "▶ The app answers in the review thread:\n{answer}"
MERGING = "▶ {who} merges pull request #{pr} (pull_request.closed)"
REFUSED = "the app answered {event} with {answer}"
ARCHIVED = "▶ Box {box} is {state}"
INTRO = (
    "A simulated GitHub and a simulated Box, on this machine: nothing leaves it and nothing"
    " is spent. Each version of the tracking comment is printed as the app edits it."
)
DONE = "✓ The demo completed in {seconds:.1f} s."
NEXT = "Next: `box-bot dev` keeps the app and both simulators running for you to try by hand."
FAILED = "✗ The demo did not complete: {reason}"


class DemoFailed(Exception):
    """The story stopped before its end."""


async def run_demo(out: Out, *, port: int = 0, within: float = DEMO_TIMEOUT) -> int:
    """Tell the whole story against the simulators; return 0 if it completed *within* s."""
    with TemporaryDirectory(prefix="box-bot-demo-") as workdir:
        box, options = demo_timings()
        env = DevEnvironment(Path(workdir), out, port=port, box=box, options=options)
        try:
            await env.start()
        except OSError as exc:
            await env.close()
            out(FAILED.format(reason=f"cannot listen on 127.0.0.1:{port} ({exc.strerror})"))
            return 1
        printer = CommentPrinter(env, out)
        follower = asyncio.create_task(printer.follow(POLL_SECONDS))
        try:
            async with asyncio.timeout(within):
                await tell_story(env, printer, out)
        except TimeoutError:
            out(FAILED.format(reason=f"it took longer than {within:g} s"))
            return 1
        except (DemoFailed, SendError) as exc:
            out(FAILED.format(reason=exc))
            return 1
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            printer.flush()
            await env.close()
    return 0


async def tell_story(env: DevEnvironment, printer: CommentPrinter, out: Out) -> None:
    """Drive the demo from the label to the archived box."""
    started = time.monotonic()
    out(INTRO)
    out(LABELLED.format(who=MAINTAINER, label=TRIGGER_LABEL, repo=DEMO_REPO, number=DEMO_ISSUE))
    await _deliver(env, "issues", env.labeled_payload())
    run = await _run_where(env, lambda run: run.state is RunState.IDLE and run.pr_number)
    await _until(lambda: _shown(printer, Phase.FINISHED))
    out(LINKED.format(box=run.box_id, pr=run.pr_number, run=run.id))
    check = await _until(lambda: _completed_check(env, run))
    out(
        CHECKED.format(
            name=check["name"],
            sha=check["head_sha"],
            status=check["status"],
            conclusion=check["conclusion"],
        )
    )
    await _review_follow_up(env, run, out)
    out(MERGING.format(who=MAINTAINER, pr=run.pr_number))
    await _deliver(env, "pull_request", env.closed_payload(DEMO_ISSUE))
    await _run_where(env, lambda run: run.state is RunState.ARCHIVED)
    await _until(lambda: _shown(printer, Phase.ARCHIVED))
    assert run.box_id is not None  # a run that finished a prompt has a box
    box = await env.box.wait_for_state(run.box_id, "archived")
    out(ARCHIVED.format(box=box.id, state=box.state))
    out(DONE.format(seconds=time.monotonic() - started))
    out(NEXT)


async def _review_follow_up(env: DevEnvironment, run: Run, out: Out) -> None:
    """Ask for a change on a line of the pull request; wait for the answer in its thread."""
    out(
        REVIEWING.format(
            who=MAINTAINER,
            line=REVIEW_LINE,
            path=REVIEW_PATH,
            pr=run.pr_number,
            comment=REVIEW_COMMENT,
        )
    )
    payload = env.review_comment_payload(DEMO_ISSUE)
    await _deliver(env, "pull_request_review_comment", payload)
    answer = await _until(lambda: _thread_answer(env, payload["comment"]["id"]))
    quoted = "\n".join(f"  {line}".rstrip() for line in for_terminal(answer).splitlines())
    out(ANSWERED.format(answer=quoted))


def _thread_answer(env: DevEnvironment, comment_id: int) -> str | None:
    """Return the app's reply in the review thread of *comment_id*, once there is one."""
    for comment in env.github.review_thread(DEMO_REPO, comment_id):
        if comment["user"]["login"] == env.github.bot_login:
            return str(comment["body"])
    return None


async def _deliver(env: DevEnvironment, event: str, data: dict[str, Any]) -> None:
    """Post one delivery to the app; stop the story if the app refused it."""
    sent = await env.send(event, data)
    if not sent.ok:
        raise DemoFailed(REFUSED.format(event=event, answer=f"{sent.status} {sent.body}"))


async def _until(check: Callable[[], T | None]) -> T:
    """Poll *check* until it returns something truthy (the caller bounds the wait)."""
    while True:
        if result := check():
            return result
        await asyncio.sleep(POLL_SECONDS)


async def _run_where(env: DevEnvironment, wanted: Callable[[Run], Any]) -> Run:
    """Wait until the demo issue's run is as *wanted*; stop early if the run failed."""
    while True:
        run = await env.latest_run()
        if run is not None and run.state is RunState.FAILED:
            raise DemoFailed(f"run {run.id} failed: {run.reason}")
        if run is not None and wanted(run):
            return run
        await asyncio.sleep(POLL_SECONDS)


def _shown(printer: CommentPrinter, phase: Phase) -> bool:
    """Return whether the printed tracking comment has reached *phase*."""
    return bool(printer.seen) and phase.title in printer.seen[-1]


def _completed_check(env: DevEnvironment, run: Run) -> Mapping[str, Any] | None:
    """Return the run's completed `Box` check run on its pull request's head, if there is one."""
    for check in env.github.check_runs(DEMO_REPO):
        if (
            check["name"] == CHECK_NAME
            and check["head_sha"] == run.head_sha
            and check["status"] == "completed"
        ):
            return check
    return None
