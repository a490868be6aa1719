"""Scripted coding agent for the Box simulator: steps that emit the events a real run shows."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Json = dict[str, Any]
EmitFn = Callable[[str, Json, str], Awaitable[Json]]

BRANCH_IN_PROMPT = re.compile(r"\bbox/issue-\d+\b")
DEFAULT_BRANCH = "box/work"
PREVIEW_PORT = 3000


class AgentFailed(Exception):
    """A script step ended the run as failed."""


@dataclass
class AgentContext:
    """What a step sees: the prompt, the box it runs in, and a way to emit events."""

    box_id: str
    prompt_id: str
    prompt: str
    model: str
    subdomain: str
    repo_full_name: str | None
    step_seconds: float
    emit_event: EmitFn = field(repr=False)
    counter: int = 0

    @property
    def branch(self) -> str:
        """Return the branch named in the prompt (`box/issue-<N>`), else the default one."""
        match = BRANCH_IN_PROMPT.search(self.prompt)
        return match.group(0) if match else DEFAULT_BRANCH

    @property
    def preview_url(self) -> str:
        """Return the public URL of the preview port, as `host` prints it."""
        return f"https://{self.subdomain}-{PREVIEW_PORT}.on.ascii.dev"

    def render(self, text: str) -> str:
        """Fill `{branch}`, `{preview_url}`, `{subdomain}`, `{box_id}` and `{repo}` in *text*."""
        values = {
            "branch": self.branch,
            "preview_url": self.preview_url,
            "subdomain": self.subdomain,
            "box_id": self.box_id,
            "repo": self.repo_full_name or "",
        }
        for name, value in values.items():
            text = text.replace("{" + name + "}", value)
        return text

    def next_id(self, prefix: str) -> str:
        """Return a new id unique within this run."""
        self.counter += 1
        return f"{prefix}_{self.prompt_id.removeprefix('prompt_')}_{self.counter}"

    async def pause(self, steps: float = 1.0) -> None:
        """Let simulated time pass."""
        await asyncio.sleep(self.step_seconds * steps)

    async def emit(self, event_type: str, data: Json, event_id: str) -> Json:
        """Record one event for this run."""
        return await self.emit_event(event_type, data, event_id)

    async def respond(self, data: Json, event_id: str | None = None) -> Json:
        """Record a `response` event carrying the run's model."""
        return await self.emit(
            "response",
            {"model": self.model, "is_reverted": False, **data},
            event_id or self.next_id("response"),
        )


class AgentStep(Protocol):
    """One thing the scripted agent does."""

    async def perform(self, ctx: AgentContext) -> None:
        """Do the step, emitting events through *ctx*."""


@dataclass(frozen=True)
class Say:
    """Write a message, first as `partials` streaming fragments, then in full."""

    text: str
    partials: int = 0

    async def perform(self, ctx: AgentContext) -> None:
        """Emit the streaming partials and the final message."""
        text = ctx.render(self.text)
        message_id = ctx.next_id("response")
        for part in range(1, self.partials + 1):
            cut = len(text) * part // (self.partials + 1)
            await ctx.respond(
                {"content": text[:cut], "is_streaming": True}, f"{message_id}-partial{part}"
            )
            await ctx.pause()
        await ctx.respond({"content": text}, message_id)


@dataclass(frozen=True)
class RunCommand:
    """Run a shell command through the agent's Bash tool."""

    command: str
    exit_code: int = 0
    output: str = ""

    async def perform(self, ctx: AgentContext) -> None:
        """Emit a tool-use `response` with the command and its result."""
        call_id = ctx.next_id("call")
        result = {"exitCode": self.exit_code, "output": ctx.render(self.output)}
        tool = {
            "use": {
                "id": call_id,
                "type": "tool_use",
                "name": "Bash",
                "input": {"command": ctx.render(self.command)},
            },
            "result": {
                "type": "tool_result",
                "tool_use_id": call_id,
                "is_error": self.exit_code != 0,
                "content": json.dumps(result),
            },
        }
        await ctx.respond({"content": "", "tools": [tool]}, f"{call_id}-tools")


@dataclass(frozen=True)
class Checkpoint:
    """Commit (and by default push) the work on the run's branch."""

    message: str = "Apply the requested change"
    files_changed: int = 2
    additions: int = 12
    deletions: int = 3
    pushed: bool = True

    async def perform(self, ctx: AgentContext) -> None:
        """Emit a `git_checkpoint` event with a stable fake sha."""
        event_id = ctx.next_id("git")
        sha = hashlib.sha1(f"{ctx.box_id}:{event_id}".encode()).hexdigest()
        data: Json = {
            "commitSha": sha,
            "commitMessage": ctx.render(self.message),
            "branch": ctx.branch,
            "filesChanged": self.files_changed,
            "additions": self.additions,
            "deletions": self.deletions,
            "pushed": self.pushed,
        }
        if ctx.repo_full_name:
            data["commitUrl"] = f"https://github.com/{ctx.repo_full_name}/commit/{sha}"
        await ctx.emit("git_checkpoint", data, event_id)


@dataclass(frozen=True)
class Emit:
    """Emit any event type, e.g. `usage_limit`, to exercise unknown-event handling."""

    type: str
    data: Json = field(default_factory=dict)

    async def perform(self, ctx: AgentContext) -> None:
        """Emit the event as given."""
        await ctx.emit(self.type, dict(self.data), ctx.next_id(self.type))


@dataclass(frozen=True)
class Wait:
    """Work quietly for *seconds* (real time, not scaled by the step timing)."""

    seconds: float

    async def perform(self, ctx: AgentContext) -> None:
        """Sleep; an interrupt cancels the run here."""
        await asyncio.sleep(self.seconds)


@dataclass(frozen=True)
class Fail:
    """Give up: say why, and end the run as failed."""

    message: str

    async def perform(self, ctx: AgentContext) -> None:
        """Emit the final message and stop the script."""
        await ctx.respond({"content": ctx.render(self.message)})
        raise AgentFailed(self.message)


Script = Sequence[AgentStep]


def success_script(extra_commands: int = 0) -> list[AgentStep]:
    """Return the default happy path, with *extra_commands* more tool calls in the middle."""
    return [
        Say("I'll read the code and reproduce the problem first.", partials=2),
        RunCommand("git checkout -b {branch}", output="Switched to a new branch '{branch}'"),
        *(RunCommand(f"rg -n 'TODO' src --max-count {n + 1}") for n in range(extra_commands)),
        RunCommand("pytest -q", output="12 passed in 0.42s"),
        Checkpoint("Fix the reported problem"),
        RunCommand("host 3000", output="{preview_url}?_token=tok_preview_4f9c2a7e1b"),
        Say("Done: the fix is on `{branch}` and the tests pass.\n\nPreview: {preview_url}"),
    ]


FAILURE_SCRIPT: Script = (
    Say("Running the test suite."),
    RunCommand("pytest -q", exit_code=1, output="1 failed, 11 passed"),
    Fail("The tests still fail and I could not find a fix."),
)
INTERRUPTIBLE_SCRIPT: Script = (
    Say("Starting a long job.", partials=1),
    RunCommand("make long-job &"),
    Wait(3600.0),
    Say("The long job finished."),
)


def default_scripts() -> dict[str, Script]:
    """Return the built-in scripts by name."""
    return {
        "success": success_script(),
        "failure": FAILURE_SCRIPT,
        "interrupt": INTERRUPTIBLE_SCRIPT,
    }


async def run_script(script: Script, ctx: AgentContext) -> str:
    """Perform every step, pausing between them; return the run's final status."""
    try:
        for step in script:
            await ctx.pause()
            await step.perform(ctx)
    except AgentFailed:
        return "failed"
    return "finished"
