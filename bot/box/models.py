"""Typed views of Box API objects; each keeps the raw JSON so unknown fields survive."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, NamedTuple

Json = dict[str, Any]

EXIT_CODE_TEXT = re.compile(r"(?i)exit(?:ed with)?[ _-]?code[\"':= ]+(-?\d+)")


class BoxState(StrEnum):
    """Box lifecycle states (REFERENCE.md §5.2)."""

    INIT = "init"
    PROVISIONING = "provisioning"
    PROVISIONED = "provisioned"
    CLONING = "cloning"
    READY = "ready"
    IDLE = "idle"
    RUNNING = "running"
    ARCHIVING = "archiving"
    ARCHIVED = "archived"
    ERROR = "error"


class PromptStatus(StrEnum):
    """Prompt run statuses (REFERENCE.md §5.4; `interrupted` is from the newer SDK)."""

    SENDING = "sending"
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


TERMINAL_PROMPT_STATUSES = frozenset(
    {PromptStatus.FINISHED, PromptStatus.FAILED, PromptStatus.INTERRUPTED}
)
WORKING_BOX_STATES = frozenset({BoxState.READY, BoxState.IDLE, BoxState.RUNNING})


class PromptDelivery(Enum):
    """How a prompt reached the box: accepted now, or found already received after a failure."""

    SENT = "sent"
    FOUND = "found"


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _obj(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Box:
    """A box as the API describes it."""

    id: str
    name: str
    state: str
    url: str | None = None
    ip: str | None = None
    subdomain: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    archive_after: str | None = None
    desktop_available: bool = False
    desktop_url: str | None = field(default=None, repr=False)
    snapshot_available: bool = False
    type: str | None = None
    billing_multiplier: float | None = None
    setup_status: str | None = None
    setup_error: str | None = field(default=None, repr=False)
    environment: str | None = None
    raw: Json = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Box:
        """Build from a `Box` JSON object (possibly partial)."""
        return cls(
            id=str(data.get("id", "")),
            name=str(data.get("name", "")),
            state=str(data.get("state", "")),
            url=_str_or_none(data.get("url")),
            ip=_str_or_none(data.get("ip")),
            subdomain=_str_or_none(data.get("subdomain")),
            created_at=_str_or_none(data.get("createdAt")),
            updated_at=_str_or_none(data.get("updatedAt")),
            archive_after=_str_or_none(data.get("archiveAfter")),
            desktop_available=bool(data.get("desktopAvailable", False)),
            desktop_url=_str_or_none(data.get("desktopUrl")),
            snapshot_available=bool(data.get("snapshotAvailable", False)),
            type=_str_or_none(data.get("type")),
            billing_multiplier=_number_or_none(data.get("billingMultiplier")),
            setup_status=_str_or_none(data.get("setupStatus")),
            setup_error=_str_or_none(data.get("setupError")),
            environment=_str_or_none(data.get("environment")),
            raw=dict(data),
        )


class SetupStatus(StrEnum):
    """How a box's create-time `setupScript` is doing (REFERENCE.md §5.1 `setupStatus`)."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class BoxSetup:
    """What a new box is created with: its setup script, machine type, environment and env."""

    script: str | None = field(default=None, repr=False)
    machine: str | None = None
    environment: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def body(self) -> Json:
        """Return the `POST /boxes` fields for what is set (REFERENCE.md §7)."""
        body: Json = {}
        if self.script is not None:
            body["setupScript"] = self.script
        if self.machine is not None:
            body["type"] = self.machine
        if self.environment is not None:
            body["environment"] = self.environment
        if self.env:
            body["env"] = dict(self.env)
        return body


@dataclass(frozen=True)
class Usage:
    """What a box has cost so far (`GET /boxes/{id}/usage`, REFERENCE.md §7)."""

    box_id: str
    seconds: float
    dollars: float
    seconds_per_dollar: float | None
    billing_multiplier: float
    running: bool
    raw: Json = field(repr=False)

    @property
    def dollars_per_second(self) -> float:
        """Return what one more second of this box costs while it is billed."""
        if not self.seconds_per_dollar:
            return 0.0
        return self.billing_multiplier / self.seconds_per_dollar

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Usage:
        """Build from a usage body."""
        multiplier = _number_or_none(data.get("billingMultiplier"))
        return cls(
            box_id=str(data.get("boxId", "")),
            seconds=_number_or_none(data.get("seconds")) or 0.0,
            dollars=_number_or_none(data.get("dollars")) or 0.0,
            seconds_per_dollar=_number_or_none(data.get("secondsPerDollar")),
            billing_multiplier=1.0 if multiplier is None else multiplier,
            running=bool(data.get("running", False)),
            raw=dict(data),
        )


@dataclass(frozen=True)
class BoxPage:
    """One page of `GET /boxes`."""

    boxes: list[Box]
    next_cursor: str | None
    has_more: bool


@dataclass(frozen=True)
class BoxAction:
    """The answer to stop, resume or interrupt (REFERENCE.md §5.3)."""

    box_id: str
    type: str
    status: str
    box: Box | None
    raw: Json = field(repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> BoxAction:
        """Build from a `BoxActionResponse` body."""
        box = data.get("box")
        return cls(
            box_id=str(data.get("id", "")),
            type=str(data.get("type", "")),
            status=str(data.get("status", "")),
            box=Box.from_api(box) if isinstance(box, Mapping) else None,
            raw=dict(data),
        )


@dataclass(frozen=True)
class Deletion:
    """A finished delete (200 `box.deleted`) or a started deletion operation (202)."""

    box_id: str
    status: str
    operation_id: str | None
    raw: Json = field(repr=False)
    already_deleted: bool = False

    @classmethod
    def already_gone(cls, box_id: str) -> Deletion:
        """Return the result of a repeated delete that found the box gone (404)."""
        return cls(box_id, "deleted", None, {}, already_deleted=True)

    @classmethod
    def from_api(cls, box_id: str, data: Mapping[str, Any]) -> Deletion:
        """Build from either documented delete answer (REFERENCE.md §7 DELETE)."""
        operation = data.get("operation")
        if isinstance(operation, Mapping):
            return cls(
                box_id,
                str(operation.get("status", "")),
                _str_or_none(operation.get("id")),
                dict(data),
            )
        return cls(str(data.get("id", box_id)), str(data.get("status", "")), None, dict(data))


@dataclass(frozen=True)
class PromptRun:
    """The first-class status of one prompt."""

    id: str
    prompt_id: str
    box_id: str
    status: str
    done: bool
    model: str | None = None
    reasoning_effort: str | None = None
    conversation_id: str | None = None
    created_at: str | None = None
    raw: Json = field(default_factory=dict, repr=False)

    @property
    def terminal(self) -> bool:
        """Return whether the run has ended (finished, failed or interrupted)."""
        return self.status in TERMINAL_PROMPT_STATUSES

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> PromptRun:
        """Build from a `PromptRun` JSON object."""
        prompt_id = str(data.get("promptId") or data.get("id") or "")
        return cls(
            id=str(data.get("id") or prompt_id),
            prompt_id=prompt_id,
            box_id=str(data.get("boxId", "")),
            status=str(data.get("status", "")),
            done=bool(data.get("done", False)),
            model=_str_or_none(data.get("model")),
            reasoning_effort=_str_or_none(data.get("reasoningEffort")),
            conversation_id=_str_or_none(data.get("conversationId")),
            created_at=_str_or_none(data.get("createdAt")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class PromptResult:
    """What `prompt()` did: the run, and whether this call sent it or found it already received."""

    run: PromptRun
    delivery: PromptDelivery
    attempts: int


@dataclass(frozen=True, kw_only=True)
class BoxEvent:
    """Any event from `GET /boxes/{id}/events`."""

    id: str | None
    type: str
    timestamp: int | None
    task_id: str | None
    data: Json = field(repr=False)
    raw: Json = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class PromptEvent(BoxEvent):
    """The `prompt` event; its status is updated in place on the server."""

    prompt: str
    status: str


@dataclass(frozen=True)
class ToolUse:
    """One tool call inside a `response` event, with its result when present."""

    id: str | None
    name: str
    input: Json
    is_error: bool
    result_content: str | None
    exit_code: int | None


@dataclass(frozen=True, kw_only=True)
class ResponseEvent(BoxEvent):
    """Agent text (partial when `is_streaming`) and tool-call batches."""

    content: str
    model: str | None
    is_streaming: bool
    tools: list[ToolUse]


@dataclass(frozen=True, kw_only=True)
class GitCheckpointEvent(BoxEvent):
    """A commit the agent made."""

    commit_sha: str
    commit_message: str
    branch: str
    commit_url: str | None
    pushed: bool
    files_changed: int | None


@dataclass(frozen=True, kw_only=True)
class UnknownEvent(BoxEvent):
    """An event type this client does not model; `data` and `raw` hold everything."""


@dataclass(frozen=True)
class EventPage:
    """One page of events."""

    events: list[BoxEvent]
    next_cursor: str | None
    has_more: bool


def event_cursor(event: BoxEvent) -> str:
    """Return the cursor for events after *event*: unpadded base64url of "<timestamp>:<id>"."""
    # Observed in both SDKs' streaming helpers, not a documented contract (REFERENCE.md §2).
    if event.timestamp is None or event.id is None:
        raise ValueError("an event needs an id and a timestamp to build a cursor")
    token = f"{event.timestamp}:{event.id}".encode()
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def _result_text(content: Any) -> str | None:
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [str(part.get("text", "")) for part in content if isinstance(part, Mapping)]
        return "".join(parts)
    return json.dumps(content)


def parse_exit_code(content: str | None) -> int | None:
    """Find a command's exit code in a tool result (`{"exitCode": 0}` JSON or text)."""
    if not content:
        return None
    try:
        decoded = json.loads(content)
    except ValueError:
        decoded = None
    if isinstance(decoded, Mapping):
        for key in ("exitCode", "exit_code"):
            if _int_or_none(decoded.get(key)) is not None:
                return int(decoded[key])
    match = EXIT_CODE_TEXT.search(content)
    return int(match.group(1)) if match else None


def _tool_use(entry: Mapping[str, Any]) -> ToolUse:
    use, result = _obj(entry.get("use")), _obj(entry.get("result"))
    content = _result_text(result.get("content"))
    tool_input = use.get("input")
    return ToolUse(
        id=_str_or_none(use.get("id")),
        name=str(use.get("name", "")),
        input=dict(tool_input) if isinstance(tool_input, Mapping) else {},
        is_error=bool(result.get("is_error", False)),
        result_content=content,
        exit_code=parse_exit_code(content),
    )


def parse_event(raw: Mapping[str, Any]) -> BoxEvent:
    """Turn one event JSON object into the matching typed event; unknown types are kept."""
    data = _obj(raw.get("data"))
    base: dict[str, Any] = {
        "id": _str_or_none(raw.get("id")),
        "type": str(raw.get("type", "")),
        "timestamp": _int_or_none(raw.get("timestamp")),
        "task_id": _str_or_none(raw.get("taskId")),
        "data": data,
        "raw": dict(raw),
    }
    if base["type"] == "prompt":
        return PromptEvent(
            **base, prompt=str(data.get("prompt", "")), status=str(data.get("status", ""))
        )
    if base["type"] == "response":
        tools = data["tools"] if isinstance(data.get("tools"), list) else []
        return ResponseEvent(
            **base,
            content=str(data.get("content") or ""),
            model=_str_or_none(data.get("model")),
            is_streaming=bool(data.get("is_streaming", False)),
            tools=[_tool_use(entry) for entry in tools if isinstance(entry, Mapping)],
        )
    if base["type"] == "git_checkpoint" and "commitSha" in data:
        return GitCheckpointEvent(
            **base,
            commit_sha=str(data["commitSha"]),
            commit_message=str(data.get("commitMessage", "")),
            branch=str(data.get("branch", "")),
            commit_url=_str_or_none(data.get("commitUrl")),
            pushed=bool(data.get("pushed", False)),
            files_changed=_int_or_none(data.get("filesChanged")),
        )
    return UnknownEvent(**base)


@dataclass(frozen=True)
class User:
    """The account behind the API key."""

    login: str
    email: str | None
    raw: Json = field(repr=False)


@dataclass(frozen=True)
class Limits:
    """Quota and billing state from `GET /limits`."""

    can_start: bool
    active_boxes: int
    max_active_boxes: int
    billing_status: str
    max_creation_requests_per_minute: int | None
    raw: Json = field(repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Limits:
        """Build from a `limits.info` body."""
        return cls(
            can_start=bool(data.get("canStart", False)),
            active_boxes=int(data.get("activeBoxes", 0)),
            max_active_boxes=int(data.get("maxActiveBoxes", 0)),
            billing_status=str(data.get("billingStatus", "")),
            max_creation_requests_per_minute=_int_or_none(data.get("maxCreationRequestsPerMinute")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Repository:
    """A GitHub repository Box can clone; `database_id` is what selection takes."""

    database_id: str
    full_name: str
    name: str
    github_id: int | None
    private: bool
    raw: Json = field(repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Repository:
        """Build from a `Repository` JSON object."""
        return cls(
            database_id=str(data.get("databaseId", "")),
            full_name=str(data.get("fullName", "")),
            name=str(data.get("name", "")),
            github_id=_int_or_none(data.get("id")),
            private=bool(data.get("private", False)),
            raw=dict(data),
        )


@dataclass(frozen=True)
class SelectedRepository:
    """A repository selected for future boxes, with its base branch."""

    database_id: str
    full_name: str
    base_branch: str | None
    raw: Json = field(repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> SelectedRepository:
        """Build from a `SelectedRepository` JSON object."""
        return cls(
            database_id=str(data.get("databaseId", "")),
            full_name=str(data.get("fullName", "")),
            base_branch=_str_or_none(data.get("baseBranch")),
            raw=dict(data),
        )


def _selected(data: Mapping[str, Any]) -> list[SelectedRepository]:
    entries = data.get("selectedRepositories")
    entries = entries if isinstance(entries, list) else []
    return [SelectedRepository.from_api(item) for item in entries if isinstance(item, Mapping)]


@dataclass(frozen=True)
class RepoSelection:
    """The account environment's selected repositories after `POST /repos`."""

    environment_id: str | None
    selected: list[SelectedRepository]
    raw: Json = field(repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> RepoSelection:
        """Build from a `repos.updated` body."""
        return cls(_str_or_none(data.get("environmentId")), _selected(data), dict(data))


class BoxAndRepo(NamedTuple):
    """A box and the repository it was started for."""

    box: Box
    repo: SelectedRepository


class StartedBox(BoxAndRepo):
    """What `start_box` made: unpacks as `(box, repo)`; `selected` is the account's whole
    selection when the box was created (selection adds, so it may hold other repositories)."""

    selected: list[SelectedRepository]

    @classmethod
    def of(
        cls, box: Box, repo: SelectedRepository, selected: list[SelectedRepository]
    ) -> StartedBox:
        """Build one; `selected` lives beside the `(box, repo)` pair."""
        started = cls(box, repo)
        started.selected = list(selected)
        return started


@dataclass(frozen=True)
class RepoPage:
    """One page of `GET /repos`, with installations flattened into one list."""

    repositories: list[Repository]
    selected: list[SelectedRepository]
    environment_id: str | None
    next_cursor: str | None
    has_more: bool
    raw: Json = field(repr=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any], next_cursor: str | None, has_more: bool) -> RepoPage:
        """Build from a `GET /repos` body."""
        installations = data.get("installations")
        repos = [
            Repository.from_api(repo)
            for installation in (installations if isinstance(installations, list) else [])
            if isinstance(installation, Mapping)
            for repo in installation.get("repositories") or []
            if isinstance(repo, Mapping)
        ]
        return cls(
            repos,
            _selected(data),
            _str_or_none(data.get("environmentId")),
            next_cursor,
            has_more,
            dict(data),
        )


@dataclass(frozen=True)
class Desktop:
    """A desktop stream link; the URL is a secret."""

    url: str | None = field(repr=False)
    provisioning: bool
    mode: str | None
    raw: Json = field(repr=False)


@dataclass(frozen=True)
class HostedPort:
    """A port opened with `POST /boxes/{id}/host`; the URL may carry a `_token`."""

    port: int
    url: str = field(repr=False)
    is_protected: bool
    access: str | None
    raw: Json = field(repr=False)
