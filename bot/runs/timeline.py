"""Fold a box's events into a small summary of what its agent did.

The summary is stored as JSON in the run's `summary` column and updated as
events arrive, so every list in it is bounded and every text is capped,
however long the run goes on. Each step remembers the prompt it was taken for,
and each prompt how it ended and when it worked (on Box's clock), so a run that
was given several prompts can show them apart.
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bot.box.models import (
    TERMINAL_PROMPT_STATUSES,
    BoxEvent,
    GitCheckpointEvent,
    PromptEvent,
    ResponseEvent,
    ToolUse,
)
from bot.redact import redact

MAX_STEPS = 200
MAX_TESTS = 20
MAX_COMMITS = 20
MAX_FILES = 100
MAX_PREVIEWS = 10
MAX_SEEN_IDS = 500
MAX_PROMPTS = 50
TEXT_LIMIT = 200
MESSAGE_LIMIT = 4_000
URL_LIMIT = 1_000
SHORT_SHA = 7

EDIT_TOOL = re.compile(r"(?i)edit|write|patch|str_replace|create_file")
COMMAND_TOOL = re.compile(
    r"(?i)(?:bash|shell|sh|zsh|terminal|local_shell|run_command|run_shell_command"
    r"|exec_command|execute_command|container\.exec)"
)
PATH_KEYS = ("path", "file_path", "filename", "notebook_path")
COMMAND_KEYS = ("command", "cmd")
PATCH_KEYS = ("input", "patch")
PATCH_FILE = re.compile(r"(?m)^\*\*\* (?:Update|Add|Delete) File: (.+)$")
# Repositories are cloned into /home/user/<repo-name> (REFERENCE.md §10); show paths inside it.
BOX_REPO_DIR = re.compile(r"^/home/user/[^/]+/")
SHELL_WRAPPERS = frozenset({"bash", "sh", "zsh", "/bin/bash", "/bin/sh", "/bin/zsh"})
COMMAND_SEPARATOR = re.compile(r"&&|\|\||[;|\n]")
TEST_COMMAND = re.compile(
    r"(?i)(?:^|[\s/(])(?:pytest|py\.test|tox|nox|jest|vitest|rspec|phpunit)(?=\s|$)"
    r"|\b(?:npm|yarn|pnpm|bun)\s+(?:run\s+)?test\b"
    r"|\b(?:go|cargo|make|mvn|gradle|gradlew|dotnet|mix)\b.*?(?<![\w/.-])test(?![\w/.])"
    r"|-m\s+unittest\b"
)
INSTALL_COMMAND = re.compile(
    r"(?i)\b(?:pip3?|npm|yarn|pnpm|bun|uv|poetry|apt(?:-get)?|brew|gem)\s+(?:install|add|i)\b"
)
URL_CHARS = r"[^\s<>()`'\"*\[\]{}|\\^]+"
PREVIEW_LINE = re.compile(rf"(?im)^[\s>*_`#-]*preview[\s*_`]*:[\s*_`]*<?(https?://{URL_CHARS})")
ASCII_DEV_URL = re.compile(
    rf"https://[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.on\.ascii\.dev(?::\d+)?(?:[/?#]{URL_CHARS})?"
)
URL_TRAILING_PUNCTUATION = ".,;:!?"
# Events that say why the agent could not go on (REFERENCE.md §8 event types).
ERROR_EVENTS = {
    "usage_limit": "usage limit reached",
    "shield": "stopped by Box's shield",
    "error": "the agent reported an error",
}
ERROR_TEXT_KEYS = ("message", "reason", "error", "detail", "description")

T = TypeVar("T")


class StepKind(enum.StrEnum):
    """What kind of thing the agent did."""

    COMMAND = "command"
    EDIT = "edit"
    COMMIT = "commit"
    TOOL = "tool"


@dataclass
class Step:
    """One thing the agent did; repeated uses of the same tool or file collapse into a count."""

    kind: StepKind
    text: str
    ok: bool | None = None
    exit_code: int | None = None
    sha: str | None = None
    url: str | None = None
    branch: str | None = None
    pushed: bool | None = None
    count: int = 1
    prompt: str | None = None  # the Box prompt the agent was working on

    def to_json(self) -> dict[str, Any]:
        """Return the step as plain JSON, leaving out empty fields."""
        data: dict[str, Any] = {"kind": self.kind.value, "text": self.text}
        for name in ("ok", "exit_code", "sha", "url", "branch", "pushed", "prompt"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.count != 1:
            data["count"] = self.count
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Step | None:
        """Rebuild a step from `to_json` output; None when *data* is not a step."""
        try:
            kind = StepKind(str(data.get("kind")))
        except ValueError:
            return None
        return cls(
            kind=kind,
            text=str(data.get("text", "")),
            ok=_opt(data.get("ok"), bool),
            exit_code=_opt(data.get("exit_code"), int),
            sha=_opt(data.get("sha"), str),
            url=_opt(data.get("url"), str),
            branch=_opt(data.get("branch"), str),
            pushed=_opt(data.get("pushed"), bool),
            count=_opt(data.get("count"), int) or 1,
            prompt=_opt(data.get("prompt"), str),
        )


@dataclass
class PromptLog:
    """One prompt the box was given: how it ended and when its events came (Box's clock, ms)."""

    id: str
    status: str | None = None
    failure: str | None = None
    first_ms: int | None = None
    last_ms: int | None = None
    dropped: int = 0  # its steps no longer kept

    @property
    def work_seconds(self) -> int | None:
        """How long the agent worked on it, from its first event to its last."""
        if self.first_ms is None or self.last_ms is None:
            return None
        return max(0, round((self.last_ms - self.first_ms) / 1000))

    def to_json(self) -> dict[str, Any]:
        """Return the log as plain JSON, leaving out empty fields."""
        data: dict[str, Any] = {"id": self.id}
        for name in ("status", "failure", "first_ms", "last_ms"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.dropped:
            data["dropped"] = self.dropped
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PromptLog | None:
        """Rebuild a log from `to_json` output; None when *data* is not one."""
        prompt_id = data.get("id")
        if not isinstance(prompt_id, str):
            return None
        return cls(
            id=prompt_id,
            status=_opt(data.get("status"), str),
            failure=_opt(data.get("failure"), str),
            first_ms=_opt(data.get("first_ms"), int),
            last_ms=_opt(data.get("last_ms"), int),
            dropped=_opt(data.get("dropped"), int) or 0,
        )


@dataclass
class Timeline:
    """What the agent of one run has done so far, bounded in size."""

    steps: list[Step] = field(default_factory=list)
    steps_dropped: int = 0
    tests: list[Step] = field(default_factory=list)
    commits: list[Step] = field(default_factory=list)
    files_edited: list[str] = field(default_factory=list)
    other_file_edits: int = 0
    last_message: str | None = None
    previews: list[str] = field(default_factory=list)
    prompt_id: str | None = None
    prompt_status: str | None = None
    event_count: int = 0
    seen_ids: list[str] = field(default_factory=list)
    failure: str | None = None
    # Every prompt so far, oldest first; the current one (`prompt_id`) last. The current
    # prompt's status and failure are the fields above; a log keeps them once it is left.
    prompts: list[PromptLog] = field(default_factory=list)
    box_back: bool = False  # the box was resumed after its last prompt; nothing asked since

    def start_prompt(self, prompt_id: str) -> None:
        """Follow *prompt_id* from now on; its status is unknown until its event arrives."""
        if prompt_id != self.prompt_id:
            self._switch(prompt_id)
            self._remember(prompt_id)

    def box_resumed(self) -> None:
        """Note that the box came back after its last prompt, with no new work asked yet."""
        self.box_back = True

    def log_of(self, prompt_id: str | None) -> PromptLog | None:
        """The log of *prompt_id*, with the current prompt's status and failure filled in."""
        log = next((log for log in self.prompts if log.id == prompt_id), None)
        if log is not None and log.id == self.prompt_id:
            log.status, log.failure = self.prompt_status, self.failure
        return log

    def _switch(self, prompt_id: str) -> None:
        """Leave the current prompt (its log keeps how it ended) and follow *prompt_id*."""
        self.log_of(self.prompt_id)
        self.prompt_id, self.prompt_status, self.failure = prompt_id, None, None
        self.box_back = False
        if self.log_of(prompt_id) is None:
            self.prompts.append(PromptLog(prompt_id))
        if len(self.prompts) > MAX_PROMPTS:
            gone = {log.id for log in self.prompts[:-MAX_PROMPTS]}
            del self.prompts[:-MAX_PROMPTS]
            kept = [step for step in self.steps if step.prompt not in gone]
            self.steps_dropped += len(self.steps) - len(kept)
            self.steps = kept

    def apply(self, event: BoxEvent) -> bool:
        """Fold one event in; return True when something people see changed."""
        if isinstance(event, PromptEvent):
            self.event_count += 1
            changed = self._apply_prompt(event)
            self._note_time(event)
            return changed
        if event.id is not None and event.id in self.seen_ids:
            return False
        self.event_count += 1
        self._note_time(event)
        if isinstance(event, ResponseEvent):
            if event.is_streaming:  # a partial: the final text may come later under the same id
                return False
            self._remember(event.id)
            return self._apply_response(event)
        self._remember(event.id)
        if isinstance(event, GitCheckpointEvent):
            return self._apply_commit(event)
        if event.type in ERROR_EVENTS and event.task_id in (None, self.prompt_id):
            self.failure = error_reason(event)
            return True
        return False

    def _note_time(self, event: BoxEvent) -> None:
        log = self.log_of(event.task_id or self.prompt_id) or self.log_of(self.prompt_id)
        if log is None or event.timestamp is None:
            return
        log.first_ms = min(log.first_ms or event.timestamp, event.timestamp)
        log.last_ms = max(log.last_ms or event.timestamp, event.timestamp)

    def _remember(self, event_id: str | None) -> None:
        if event_id is not None:
            self.seen_ids.append(event_id)
            del self.seen_ids[:-MAX_SEEN_IDS]

    def _apply_prompt(self, event: PromptEvent) -> bool:
        # The prompt event is updated in place: same id, new status (REFERENCE.md §8).
        if event.id is not None and event.id != self.prompt_id:
            if event.id in self.seen_ids:
                return False
            self._switch(event.id)
            self._remember(event.id)
        status = event.status or None
        ended = TERMINAL_PROMPT_STATUSES
        if self.prompt_status in ended and status not in ended:
            return False  # an older copy of the event: a prompt that ended does not start again
        changed = status != self.prompt_status
        self.prompt_status = status
        return changed

    def _apply_response(self, event: ResponseEvent) -> bool:
        changed = False
        for tool in event.tools:
            changed = self._apply_tool(tool) or changed
        if event.content.strip():
            changed = self._apply_message(event.content.strip()) or changed
        return changed

    def _apply_message(self, text: str) -> bool:
        before = (self.last_message, list(self.previews))
        for url in find_previews(text):
            if url in self.previews:
                self.previews.remove(url)
            self.previews.append(url)
        del self.previews[:-MAX_PREVIEWS]
        self.last_message = redact(text)[:MESSAGE_LIMIT]
        return (self.last_message, self.previews) != before

    def _apply_tool(self, tool: ToolUse) -> bool:
        paths = edit_paths(tool)
        if paths:
            for path in paths:
                self._add_step(Step(StepKind.EDIT, path))
                self._note_file(path)
            return True
        command = command_text(tool)
        if command is None:
            self._add_step(Step(StepKind.TOOL, _cap(tool.name or "unknown tool")))
            return True
        step = Step(StepKind.COMMAND, _cap(redact(command)), tool_ok(tool), tool.exit_code)
        self._add_step(step)
        if is_test_command(command):
            self.tests.append(step)
            del self.tests[:-MAX_TESTS]
        return True

    def _apply_commit(self, event: GitCheckpointEvent) -> bool:
        sha = event.commit_sha[:SHORT_SHA]
        if any(commit.sha == sha for commit in self.commits):
            return False
        message = event.commit_message.strip().split("\n", 1)[0]
        url = event.commit_url if event.commit_url and len(event.commit_url) <= URL_LIMIT else None
        step = Step(
            StepKind.COMMIT,
            _cap(redact(message)),
            sha=sha,
            url=url,
            branch=_cap(event.branch),
            pushed=event.pushed,
        )
        self._add_step(step)
        self.commits.append(step)
        del self.commits[:-MAX_COMMITS]
        return True

    def _add_step(self, step: Step) -> None:
        step.prompt = self.prompt_id
        last = self.steps[-1] if self.steps else None
        if (
            last is not None
            and step.kind in (StepKind.EDIT, StepKind.TOOL)
            and (last.kind, last.text, last.prompt) == (step.kind, step.text, step.prompt)
        ):
            last.count += 1
            return
        self.steps.append(step)
        if len(self.steps) > MAX_STEPS:
            for gone in self.steps[:-MAX_STEPS]:
                if (log := self.log_of(gone.prompt)) is not None:
                    log.dropped += 1
            self.steps_dropped += len(self.steps) - MAX_STEPS
            del self.steps[:-MAX_STEPS]

    def _note_file(self, path: str) -> None:
        if path in self.files_edited:
            return
        if len(self.files_edited) < MAX_FILES:
            self.files_edited.append(path)
        else:
            self.other_file_edits += 1

    def to_json(self) -> dict[str, Any]:
        """Return the timeline as plain JSON for the run's `summary`."""
        self.log_of(self.prompt_id)  # the current prompt's log says where it is too
        return {
            "steps": [step.to_json() for step in self.steps],
            "steps_dropped": self.steps_dropped,
            "tests": [step.to_json() for step in self.tests],
            "commits": [step.to_json() for step in self.commits],
            "files_edited": list(self.files_edited),
            "other_file_edits": self.other_file_edits,
            "last_message": self.last_message,
            "previews": list(self.previews),
            "prompt_id": self.prompt_id,
            "prompt_status": self.prompt_status,
            "event_count": self.event_count,
            "seen_ids": list(self.seen_ids),
            "failure": self.failure,
            "prompts": [log.to_json() for log in self.prompts],
            "box_back": self.box_back,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Timeline:
        """Rebuild a timeline from `to_json` output; missing or malformed parts start empty.

        A summary from before prompts were told apart gives its steps to its last prompt.
        """
        prompt_id = _opt(data.get("prompt_id"), str)
        prompts = [
            log
            for item in _items(data.get("prompts"))
            if isinstance(item, Mapping) and (log := PromptLog.from_json(item)) is not None
        ]
        if prompt_id is not None and all(log.id != prompt_id for log in prompts):
            prompts.append(PromptLog(prompt_id))
        steps = list(_steps(data.get("steps")))
        for step in steps:
            step.prompt = step.prompt or prompt_id
        return cls(
            steps=steps,
            steps_dropped=_opt(data.get("steps_dropped"), int) or 0,
            tests=list(_steps(data.get("tests"))),
            commits=list(_steps(data.get("commits"))),
            files_edited=list(_strings(data.get("files_edited"))),
            other_file_edits=_opt(data.get("other_file_edits"), int) or 0,
            last_message=_opt(data.get("last_message"), str),
            previews=list(_strings(data.get("previews"))),
            prompt_id=prompt_id,
            prompt_status=_opt(data.get("prompt_status"), str),
            event_count=_opt(data.get("event_count"), int) or 0,
            seen_ids=list(_strings(data.get("seen_ids"))),
            failure=_opt(data.get("failure"), str),
            prompts=prompts,
            box_back=data.get("box_back") is True,
        )


def error_reason(event: BoxEvent) -> str:
    """Say why an error-type event stopped the agent, with Box's own words when it gave any."""
    label = ERROR_EVENTS.get(event.type, event.type)
    details = [event.data, *(v for v in event.data.values() if isinstance(v, Mapping))]
    for source in details:
        for key in ERROR_TEXT_KEYS:
            text = source.get(key)
            if isinstance(text, str) and text.strip():
                return _cap(f"{label}: {redact(' '.join(text.split()))}")
    return label


def edit_paths(tool: ToolUse) -> list[str]:
    """Return the files an editing tool call changed (none for other tools or a mere view)."""
    if not EDIT_TOOL.search(tool.name) or tool.input.get("command") == "view":
        return []
    paths = [tool.input[key] for key in PATH_KEYS if isinstance(tool.input.get(key), str)]
    for key in PATCH_KEYS:  # apply_patch carries the file names inside the patch text
        if isinstance(tool.input.get(key), str):
            paths.extend(PATCH_FILE.findall(tool.input[key]))
    return list(dict.fromkeys(_cap(BOX_REPO_DIR.sub("", path.strip())) for path in paths if path))


def command_text(tool: ToolUse) -> str | None:
    """Return the shell command a command-running tool call ran, or None for other tools."""
    if not COMMAND_TOOL.fullmatch(tool.name):
        return None
    for key in COMMAND_KEYS:
        value = tool.input.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
            if len(value) == 3 and value[0] in SHELL_WRAPPERS and value[1] in ("-c", "-lc"):
                return str(value[2]).strip()
            return shlex.join(value)
    return None


def tool_ok(tool: ToolUse) -> bool | None:
    """Return whether a command succeeded, or None when its result has not arrived."""
    if tool.is_error or tool.exit_code not in (None, 0):
        return False
    if tool.exit_code is None and tool.result_content is None:
        return None
    return True


def is_test_command(command: str) -> bool:
    """Return whether any part of a shell command runs a test suite."""
    return any(
        TEST_COMMAND.search(part) and not INSTALL_COMMAND.search(part)
        for part in COMMAND_SEPARATOR.split(command)
    )


def find_previews(text: str) -> list[str]:
    """Return preview URLs in an agent message: `Preview: <url>` lines and Box-hosted links."""
    found = [match.group(1) for match in PREVIEW_LINE.finditer(text)]
    found += [match.group(0) for match in ASCII_DEV_URL.finditer(text)]
    urls = (url.rstrip(URL_TRAILING_PUNCTUATION) for url in found)
    return list(dict.fromkeys(url for url in urls if len(url) <= URL_LIMIT))


def _cap(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def _opt(value: Any, kind: type[T]) -> T | None:
    if kind is not bool and isinstance(value, bool):
        return None
    return value if isinstance(value, kind) else None


def _strings(value: Any) -> Iterator[str]:
    yield from (item for item in _items(value) if isinstance(item, str))


def _steps(value: Any) -> Iterator[Step]:
    for item in _items(value):
        step = Step.from_json(item) if isinstance(item, Mapping) else None
        if step is not None:
            yield step


def _items(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list) else ()


def resumed(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The *summary* of a run whose box is brought back, with nothing asked of it yet."""
    timeline = Timeline.from_json(summary)
    timeline.box_resumed()
    return timeline.to_json()
