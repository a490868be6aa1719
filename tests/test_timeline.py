"""Folding Box events into a run's timeline summary."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.box.models import BoxEvent, parse_event
from bot.runs.timeline import MAX_PROMPTS, MAX_SEEN_IDS, MAX_STEPS, MESSAGE_LIMIT, Timeline

PREVIEW = "https://frazil-pneuma-rallye-3000.on.ascii.dev/?_token=abc"
GHS = "ghs_" + "A1b2C3d4" * 5

GHS_LIKE = "ghs_" + "Z9y8X7w6" * 5
P1 = "prompt_1"


def prompt(status: str, prompt_id: str = "prompt_1") -> BoxEvent:
    return parse_event(
        {
            "id": prompt_id,
            "type": "prompt",
            "timestamp": 1780347055370,
            "taskId": prompt_id,
            "data": {"prompt": "Fix it.", "status": status, "is_reverted": False},
        }
    )


def tool(
    event_id: str, name: str, tool_input: dict[str, Any], result: Any = None, is_error: bool = False
) -> BoxEvent:
    entry: dict[str, Any] = {
        "use": {"id": f"call_{event_id}", "type": "tool_use", "name": name, "input": tool_input}
    }
    if result is not None:
        entry["result"] = {
            "type": "tool_result",
            "tool_use_id": f"call_{event_id}",
            "is_error": is_error,
            "content": result,
        }
    return parse_event(
        {
            "id": event_id,
            "type": "response",
            "timestamp": 1780347063427,
            "taskId": "prompt_1",
            "data": {"content": "", "model": "gpt-5.4", "tools": [entry]},
        }
    )


def bash(event_id: str, command: Any, exit_code: int | None = 0) -> BoxEvent:
    result = json.dumps({"exitCode": exit_code}) if exit_code is not None else None
    return tool(event_id, "Bash", {"command": command}, result, is_error=bool(exit_code))


def say(event_id: str, content: str, streaming: bool = False) -> BoxEvent:
    data: dict[str, Any] = {"content": content, "model": "gpt-5.4"}
    if streaming:
        data["is_streaming"] = True
    return parse_event(
        {
            "id": event_id,
            "type": "response",
            "timestamp": 1780347065650,
            "taskId": "prompt_1",
            "data": data,
        }
    )


def checkpoint(event_id: str, sha: str = "0123456789abcdef0123", pushed: bool = True) -> BoxEvent:
    return parse_event(
        {
            "id": event_id,
            "type": "git_checkpoint",
            "timestamp": 1780347070000,
            "taskId": "prompt_1",
            "data": {
                "commitSha": sha,
                "commitMessage": "Fix the parser\n\nBody.",
                "branch": "box/issue-7",
                "filesChanged": 2,
                "pushed": pushed,
                "commitUrl": f"https://github.com/o/r/commit/{sha}",
            },
        }
    )


def fold(*events: BoxEvent) -> Timeline:
    timeline = Timeline()
    for event in events:
        timeline.apply(event)
    return timeline


def story() -> list[BoxEvent]:
    return [
        prompt("running"),
        say("response_1-partial1", "I'll read", streaming=True),
        say("response_1", "I'll read the code first."),
        bash("response_2-tools", "git checkout -b box/issue-7"),
        tool("response_3-tools", "Read", {"file_path": "/home/user/r/src/parser.py"}, "text"),
        tool("response_4-tools", "Read", {"file_path": "/home/user/r/src/lexer.py"}, "text"),
        tool(
            "response_5-tools",
            "Edit",
            {"file_path": "/home/user/r/src/parser.py", "old_string": "a", "new_string": "b"},
            "ok",
        ),
        bash("response_6-tools", "pytest -q", exit_code=1),
        tool(
            "response_7-tools",
            "Write",
            {"file_path": "/home/user/r/tests/test_parser.py", "content": "x"},
            "ok",
        ),
        bash("response_8-tools", "pytest -q"),
        checkpoint("git_1"),
        parse_event({"id": "usage_1", "type": "usage_limit", "data": {"limit": "x"}}),
        say("response_9", f"Done.\n\nPreview: {PREVIEW}"),
        prompt("finished"),
    ]


def test_each_event_kind_folds_into_its_step_in_order() -> None:
    timeline = fold(*story())

    assert [step.to_json() for step in timeline.steps] == [
        {
            "kind": "command",
            "text": "git checkout -b box/issue-7",
            "ok": True,
            "exit_code": 0,
            "prompt": P1,
        },
        {"kind": "tool", "text": "Read", "count": 2, "prompt": P1},
        {"kind": "edit", "text": "src/parser.py", "prompt": P1},
        {"kind": "command", "text": "pytest -q", "ok": False, "exit_code": 1, "prompt": P1},
        {"kind": "edit", "text": "tests/test_parser.py", "prompt": P1},
        {"kind": "command", "text": "pytest -q", "ok": True, "exit_code": 0, "prompt": P1},
        {
            "kind": "commit",
            "text": "Fix the parser",
            "sha": "0123456",
            "url": "https://github.com/o/r/commit/0123456789abcdef0123",
            "branch": "box/issue-7",
            "pushed": True,
            "prompt": P1,
        },
    ]
    assert [(test.text, test.ok) for test in timeline.tests] == [
        ("pytest -q", False),
        ("pytest -q", True),
    ]
    assert [commit.sha for commit in timeline.commits] == ["0123456"]
    assert timeline.files_edited == ["src/parser.py", "tests/test_parser.py"]
    assert timeline.last_message == f"Done.\n\nPreview: {PREVIEW.replace('abc', '[redacted]')}"
    assert timeline.previews == [PREVIEW]
    assert (timeline.prompt_id, timeline.prompt_status) == ("prompt_1", "finished")
    assert timeline.event_count == 14


def test_apply_reports_only_visible_changes() -> None:
    timeline = Timeline()

    assert timeline.apply(prompt("running")) is True
    assert timeline.apply(prompt("running")) is False
    assert timeline.apply(say("r1-partial", "Wor", streaming=True)) is False
    assert timeline.apply(parse_event({"id": "x", "type": "compaction_complete"})) is False
    assert timeline.apply(bash("r2", "ls")) is True
    assert timeline.apply(say("r3", "Working on it.")) is True
    assert timeline.apply(say("r4", "Working on it.")) is False


def test_command_outcomes_come_from_exit_code_and_error_flag() -> None:
    timeline = fold(
        bash("r1", "make build", exit_code=2),
        tool("r2", "Bash", {"command": "false"}, "command failed", is_error=True),
        tool("r3", "Bash", {"command": "sleep 600"}),
        tool("r4", "Bash", {"command": "echo hi"}, "Process exited with code 0"),
    )

    assert [(s.text, s.ok, s.exit_code) for s in timeline.steps] == [
        ("make build", False, 2),
        ("false", False, None),
        ("sleep 600", None, None),
        ("echo hi", True, 0),
    ]


def test_codex_shell_calls_and_patches_are_understood() -> None:
    patch = (
        "*** Begin Patch\n*** Update File: src/app.py\n@@\n-a\n+b\n"
        "*** Add File: docs/notes.md\n+hi\n*** End Patch"
    )
    timeline = fold(
        tool("r1", "shell", {"command": ["bash", "-lc", "npm test"]}, '{"exit_code": 0}'),
        tool("r2", "exec_command", {"cmd": "go vet ./..."}, '{"exit_code": 1}'),
        tool("r3", "apply_patch", {"input": patch}, "Done"),
        tool("r4", "str_replace_based_edit_tool", {"command": "view", "path": "/tmp/x"}, "t"),
        tool("r5", "TodoWrite", {"todos": []}, "ok"),
    )

    assert [(s.kind.value, s.text) for s in timeline.steps] == [
        ("command", "npm test"),
        ("command", "go vet ./..."),
        ("edit", "src/app.py"),
        ("edit", "docs/notes.md"),
        ("tool", "str_replace_based_edit_tool"),
        ("tool", "TodoWrite"),
    ]
    assert [t.text for t in timeline.tests] == ["npm test"]
    assert timeline.files_edited == ["src/app.py", "docs/notes.md"]


@pytest.mark.parametrize(
    "command",
    [
        "pytest -q",
        "python -m pytest tests/test_x.py",
        "pip install -e . && pytest",
        "npm test",
        "npm run test -- --ci",
        "yarn test",
        "go test ./...",
        "cargo test --release",
        "make test",
        "tox -e py311",
        "npx jest",
        "npx vitest run",
        "bundle exec rspec",
        "mvn -q test",
        "./gradlew test",
        "gradle test",
        "vendor/bin/phpunit",
        "python -m unittest discover",
    ],
)
def test_test_runs_are_recognised(command: str) -> None:
    timeline = fold(bash("r1", command))

    assert [t.text for t in timeline.tests] == [command]


@pytest.mark.parametrize(
    "command",
    [
        "pip install pytest",
        "cat pytest.ini",
        "ls tests",
        "echo test",
        "go build ./cmd/test",
        "npm install",
        "git status",
    ],
)
def test_other_commands_are_not_test_runs(command: str) -> None:
    assert fold(bash("r1", command)).tests == []


def test_streaming_partials_never_become_the_last_message() -> None:
    timeline = fold(say("r1-p1", "Half a thou", streaming=True))
    assert timeline.last_message is None

    timeline.apply(say("r1", "Half a thought, finished."))
    timeline.apply(say("r2-p1", "Next mess", streaming=True))
    timeline.apply(say("r3", "   "))

    assert timeline.last_message == "Half a thought, finished."


def test_a_partial_finalised_under_the_same_id_is_used() -> None:
    timeline = fold(say("r1", "Draf", streaming=True), say("r1", "Draft done."))

    assert timeline.last_message == "Draft done."


def test_preview_urls_are_found_in_complete_messages_only() -> None:
    timeline = fold(
        say("r1", "Preview: https://partial-3000.on.ascii.dev", streaming=True),
        bash("r2", "host 3000"),
        say("r3", f"**Preview:** {PREVIEW}\nAlso see https://app-8080.on.ascii.dev/docs."),
        say("r4", f"`Preview: http://localhost:5173`\nSame as before: {PREVIEW}"),
    )

    assert timeline.previews == [
        "https://app-8080.on.ascii.dev/docs",
        "http://localhost:5173",
        PREVIEW,
    ]


def current(timeline: Timeline) -> tuple[str | None, str | None]:
    return timeline.prompt_id, timeline.prompt_status


def test_prompt_status_follows_the_current_prompt() -> None:
    timeline = fold(prompt("running", "prompt_1"), prompt("finished", "prompt_1"))
    assert timeline.apply(prompt("running", "prompt_1")) is False
    assert current(timeline) == ("prompt_1", "finished")

    timeline.start_prompt("prompt_2")
    assert current(timeline) == ("prompt_2", None)
    assert timeline.apply(prompt("failed", "prompt_1")) is False
    timeline.apply(prompt("running", "prompt_2"))
    assert current(timeline) == ("prompt_2", "running")

    timeline.apply(prompt("queued", "prompt_3"))
    assert current(timeline) == ("prompt_3", "queued")


def test_replaying_events_after_a_crash_changes_nothing() -> None:
    events = story()
    first = fold(*events)
    restored = Timeline.from_json(json.loads(json.dumps(first.to_json())))

    changed = [restored.apply(event) for event in events]

    assert changed == [False] * len(events)
    after = restored.to_json()
    assert {k: v for k, v in after.items() if k != "event_count"} == {
        k: v for k, v in first.to_json().items() if k != "event_count"
    }


def test_json_round_trip_keeps_everything() -> None:
    timeline = fold(*story())

    data = json.loads(json.dumps(timeline.to_json()))

    assert Timeline.from_json(data) == timeline
    assert Timeline.from_json(data).to_json() == data


def test_empty_or_damaged_summaries_start_empty() -> None:
    assert Timeline.from_json({}) == Timeline()
    damaged = Timeline.from_json(
        {
            "steps": [{"kind": "nonsense"}, "x", {"kind": "edit"}],
            "previews": "https://x",
            "event_count": True,
            "last_message": 5,
            "seen_ids": ["a", 3],
        }
    )
    assert [s.to_json() for s in damaged.steps] == [{"kind": "edit", "text": ""}]
    assert (damaged.previews, damaged.event_count, damaged.last_message) == ([], 0, None)
    assert damaged.seen_ids == ["a"]


def test_size_stays_bounded_however_many_events_arrive() -> None:
    events = [bash(f"r{n}", f"echo {n} " + "x" * 2_000) for n in range(1_000)]
    events += [tool(f"e{n}", "Edit", {"path": f"src/f{n}.py"}, "ok") for n in range(300)]
    events.append(say("last", "é" * 70_000))

    timeline = fold(*events)

    assert len(timeline.steps) == MAX_STEPS
    assert timeline.steps_dropped == 1_300 - MAX_STEPS
    assert timeline.steps[-1].text == "src/f299.py"
    assert len(timeline.seen_ids) == MAX_SEEN_IDS
    assert len(timeline.files_edited) == 100 and timeline.other_file_edits == 200
    assert len(timeline.last_message or "") == MESSAGE_LIMIT
    assert len(json.dumps(timeline.to_json())) < 80_000


def test_secrets_are_masked_before_they_are_stored() -> None:
    timeline = fold(
        bash("r1", f"git push https://x-access-token:{GHS}@github.com/o/r"),
        say("r2", "key: -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"),
    )

    stored = json.dumps(timeline.to_json())
    assert GHS not in stored and "MIIE" not in stored
    assert timeline.steps[0].text == "git push https://x-access-token:[redacted]@github.com/o/r"


def error_event(event_id: str, kind: str, data: dict[str, Any], task: str = "prompt_1") -> BoxEvent:
    return parse_event(
        {"id": event_id, "type": kind, "timestamp": 1780347066000, "taskId": task, "data": data}
    )


@pytest.mark.parametrize(
    ("kind", "data", "reason"),
    [
        (
            "usage_limit",
            {"message": "You have used this month's agent hours."},
            "usage limit reached: You have used this month's agent hours.",
        ),
        (
            "shield",
            {"reason": "The command\nwas blocked."},
            "stopped by Box's shield: The command was blocked.",
        ),
        (
            "error",
            {"error": {"message": "Model overloaded"}},
            "the agent reported an error: Model overloaded",
        ),
        ("usage_limit", {"limit": 3}, "usage limit reached"),
    ],
)
def test_error_events_become_the_failure_reason(
    kind: str, data: dict[str, Any], reason: str
) -> None:
    timeline = fold(prompt("running"), error_event("e1", kind, data), prompt("failed"))

    assert timeline.failure == reason
    assert Timeline.from_json(json.loads(json.dumps(timeline.to_json()))).failure == reason


def test_a_failure_reason_belongs_to_its_prompt() -> None:
    timeline = fold(prompt("running"), error_event("e1", "usage_limit", {}, task="prompt_0"))
    assert timeline.failure is None

    timeline.apply(error_event("e2", "usage_limit", {"message": f"token {GHS_LIKE}"}))
    assert timeline.failure == "usage limit reached: token [redacted]"

    timeline.start_prompt("prompt_2")
    assert timeline.failure is None


def event_at(event: BoxEvent, timestamp: int, task: str) -> BoxEvent:
    return parse_event({**event.raw, "timestamp": timestamp, "taskId": task})


def test_each_step_belongs_to_its_prompt_and_each_prompt_keeps_how_it_ended() -> None:
    timeline = fold(
        event_at(prompt("running", "prompt_1"), 1_000_000, "prompt_1"),
        event_at(bash("r1", "pytest -q"), 1_004_000, "prompt_1"),
        event_at(say("r2", "Done."), 1_010_400, "prompt_1"),
    )
    timeline.prompt_status = "finished"  # as the watcher records it from the prompt run
    timeline.start_prompt("prompt_2")
    timeline.apply(event_at(prompt("running", "prompt_2"), 2_000_000, "prompt_2"))
    timeline.apply(event_at(tool("e1", "Edit", {"path": "a.py"}, "ok"), 2_061_000, "prompt_2"))
    timeline.apply(event_at(tool("e2", "Edit", {"path": "a.py"}, "ok"), 2_062_000, "prompt_2"))
    timeline.apply(event_at(error_event("u1", "usage_limit", {}), 2_066_000, "prompt_2"))

    assert [(step.text, step.prompt, step.count) for step in timeline.steps] == [
        ("pytest -q", "prompt_1", 1),
        ("a.py", "prompt_2", 2),
    ]
    first, second = timeline.log_of("prompt_1"), timeline.log_of("prompt_2")
    assert first is not None and second is not None
    assert (first.status, first.failure, first.work_seconds) == ("finished", None, 10)
    assert (second.status, second.failure) == ("running", "usage limit reached")
    assert second.work_seconds == 66
    restored = Timeline.from_json(json.loads(json.dumps(timeline.to_json())))
    assert [log.to_json() for log in restored.prompts] == [
        {"id": "prompt_1", "status": "finished", "first_ms": 1_000_000, "last_ms": 1_010_400},
        {
            "id": "prompt_2",
            "status": "running",
            "failure": "usage limit reached",
            "first_ms": 2_000_000,
            "last_ms": 2_066_000,
        },
    ]
    assert restored.log_of("prompt_2") == second


def test_a_resumed_box_waits_until_the_next_prompt() -> None:
    timeline = fold(prompt("running"), prompt("finished"))
    timeline.box_resumed()
    assert Timeline.from_json(timeline.to_json()).box_back is True

    timeline.start_prompt("prompt_2")

    assert timeline.box_back is False


def test_a_summary_from_before_prompts_were_told_apart_gives_its_steps_to_its_prompt() -> None:
    old = {
        "steps": [{"kind": "command", "text": "ls", "ok": True}],
        "prompt_id": "prompt_9",
        "prompt_status": "finished",
    }

    timeline = Timeline.from_json(old)

    assert [step.prompt for step in timeline.steps] == ["prompt_9"]
    assert [log.id for log in timeline.prompts] == ["prompt_9"]
    log = timeline.log_of("prompt_9")
    assert log is not None and log.status == "finished"


def test_only_the_latest_prompts_and_their_steps_are_kept() -> None:
    timeline = Timeline()
    for n in range(MAX_PROMPTS + 5):
        timeline.start_prompt(f"prompt_{n}")
        timeline.apply(bash(f"r{n}", f"echo {n}"))

    assert len(timeline.prompts) == MAX_PROMPTS
    assert timeline.prompts[0].id == "prompt_5"
    assert timeline.steps[0].text == "echo 5"
    assert timeline.steps_dropped == 5


def test_steps_dropped_for_size_are_counted_on_their_prompt() -> None:
    timeline = Timeline()
    timeline.start_prompt("prompt_1")
    for n in range(MAX_STEPS):
        timeline.apply(bash(f"a{n}", f"echo {n}"))
    timeline.start_prompt("prompt_2")
    for n in range(3):
        timeline.apply(bash(f"b{n}", f"echo {n}"))

    first = timeline.log_of("prompt_1")
    assert first is not None and first.dropped == 3
    assert timeline.steps_dropped == 3
