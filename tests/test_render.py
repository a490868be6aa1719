"""The tracking comment, check run output and replies people read on GitHub."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from bot.box.models import parse_event
from bot.models import BoxReport, Run, RunState
from bot.runs.render import (
    FailureKind,
    permission_denied,
    render_check_output,
    render_comment,
    render_failure,
    render_review_answer,
    render_status_reply,
)
from bot.runs.timeline import Step, StepKind, Timeline

T0 = 1_780_347_050.0  # 5 s before the events below, on the same clock
GITHUB_LIMIT = 65_536
PREVIEW = "https://frazil-pneuma-rallye-3000.on.ascii.dev/?_token=abc"
DESKTOP = "https://desktop.ascii.dev/bx_23456789?token=deskSecret123"
GHS = "ghs_" + "A1b2C3d4" * 5
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret\n-----END RSA PRIVATE KEY-----"
PR_URL = "https://github.com/octo/app/pull/12"
PROMPT_AT = 1_780_347_055.370  # when the prompt event of `worked()` came, on Box's clock


def make_run(**changes: Any) -> Run:
    run = Run(
        id="run_abc123",
        installation_id=1,
        repo_id=2,
        repo="octo/app",
        repo_private=False,
        number=7,
        is_pull_request=False,
        state=RunState.WORKING,
        requester="alice",
        provider="codex",
        box_id="bx_23456789",
        created_at=T0,
        updated_at=T0,
    )
    return dataclasses.replace(run, **changes)


def response(
    event_id: str,
    content: str = "",
    tools: list[dict[str, Any]] | None = None,
    streaming: bool = False,
) -> dict[str, Any]:
    data: dict[str, Any] = {"content": content, "model": "gpt-5.4", "is_reverted": False}
    if tools:
        data["tools"] = tools
    if streaming:
        data["is_streaming"] = True
    return {
        "id": event_id,
        "type": "response",
        "timestamp": 1780347063427,
        "taskId": "prompt_1",
        "data": data,
    }


def bash(event_id: str, command: str, exit_code: int = 0) -> dict[str, Any]:
    return response(
        f"{event_id}-tools",
        tools=[
            {
                "use": {
                    "id": event_id,
                    "type": "tool_use",
                    "name": "Bash",
                    "input": {"command": command},
                },
                "result": {
                    "type": "tool_result",
                    "tool_use_id": event_id,
                    "is_error": exit_code != 0,
                    "content": json.dumps({"exitCode": exit_code}),
                },
            }
        ],
    )


def edit(event_id: str, path: str) -> dict[str, Any]:
    return response(
        f"{event_id}-tools",
        tools=[
            {
                "use": {
                    "id": event_id,
                    "type": "tool_use",
                    "name": "Edit",
                    "input": {"file_path": path},
                },
                "result": {"type": "tool_result", "tool_use_id": event_id, "content": "ok"},
            }
        ],
    )


def commit(event_id: str, message: str = "Fix the parser\n\nDetails.") -> dict[str, Any]:
    sha = "0123456789abcdef0123456789abcdef01234567"
    return {
        "id": event_id,
        "type": "git_checkpoint",
        "timestamp": 1780347070000,
        "taskId": "prompt_1",
        "data": {
            "commitSha": sha,
            "commitMessage": message,
            "branch": "box/issue-7",
            "commitUrl": f"https://github.com/octo/app/commit/{sha}",
            "pushed": True,
        },
    }


def prompt(status: str) -> dict[str, Any]:
    return {
        "id": "prompt_1",
        "type": "prompt",
        "timestamp": 1780347055370,
        "taskId": "prompt_1",
        "data": {"prompt": "Fix it.", "status": status},
    }


def timeline_of(*events: dict[str, Any]) -> Timeline:
    timeline = Timeline()
    for event in events:
        timeline.apply(parse_event(event))
    return timeline


def worked(final_status: str | None = None, message: str = "All done.") -> Timeline:
    events = [
        prompt("running"),
        bash("c1", "git checkout -b box/issue-7"),
        edit("c2", "/home/user/app/src/parser.py"),
        bash("c3", "pytest -q", exit_code=1),
        bash("c4", "pytest -q"),
        commit("g1"),
        response("r5", message),
    ]
    if final_status:
        events.append(prompt(final_status))
    return timeline_of(*events)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def test_comment_opens_with_marker_header_and_who_asked() -> None:
    body = render_comment(make_run(), worked(), now=T0 + 185)

    assert body.split("\n")[:4] == [
        "<!-- box-bot:run=run_abc123 -->",
        "## 🛠️ Working",
        "",
        "Agent `codex` (model: account default) · Box `bx_23456789`",
    ]
    assert "\n### 💬 @alice asked · 🛠️ working for 3 min\n" in body


@pytest.mark.parametrize(
    ("state", "status", "header"),
    [
        (RunState.REQUESTED, None, "## ⏳ Starting a box"),
        (RunState.PROVISIONING, None, "## ⏳ Starting a box"),
        (RunState.PROMPTING, None, "## 📦 Box ready"),
        (RunState.WORKING, "running", "## 🛠️ Working"),
        (RunState.IDLE, "finished", "## ✅ Finished"),
        (RunState.IDLE, "failed", "## ❌ Failed"),
        (RunState.IDLE, "interrupted", "## ⏹️ Stopped (interrupted)"),
        (RunState.IDLE, None, "## 💤 Waiting for instructions"),
        (RunState.FAILED, None, "## ❌ Failed"),
        (RunState.ARCHIVED, "finished", "## 🗄️ Archived"),
    ],
)
def test_header_says_where_the_run_is(state: RunState, status: str | None, header: str) -> None:
    timeline = Timeline(prompt_status=status)

    body = render_comment(make_run(state=state), timeline, now=T0 + 10)

    assert body.split("\n")[1] == header


def test_model_and_effort_are_named_when_set() -> None:
    run = make_run(model="gpt-5.4", reasoning_effort="high", box_id=None)

    body = render_comment(run, Timeline(), now=T0)

    assert "Agent `codex` (model `gpt-5.4`, effort `high`) · Box not created yet\n" in body


def test_checklist_shows_commands_files_commits_and_tests() -> None:
    body = render_comment(make_run(), worked(), now=T0 + 60)
    commit_link = (
        "[`0123456`](https://github.com/octo/app/commit/"
        "0123456789abcdef0123456789abcdef01234567) Fix the parser on `box/issue-7` "
        "(pushed)"
    )

    assert (
        "- **Files edited:** `src/parser.py`\n"
        "- **Tests:** ❌ `pytest -q` (exit 1), ✅ `pytest -q` (exit 0)\n"
        f"- **Commits:** {commit_link}\n"
        "\n"
        "### 💬 @alice asked · 🛠️ working for under a minute\n"
        "\n"
        "- ✅ `git checkout -b box/issue-7` (exit 0)\n"
        "- ✏️ Edited `src/parser.py`\n"
        "- ❌ `pytest -q` (exit 1)\n"
        "- ✅ `pytest -q` (exit 0)\n"
        f"- 📌 Committed {commit_link}\n"
        "\n"
        "### Latest message from the agent\n"
        "\n"
        "> All done."
    ) in body


def test_work_time_is_rounded_while_the_agent_works() -> None:
    active = make_run(created_at=T0 - 3_000)  # the box was asked for long before this prompt

    assert "· 🛠️ working for 2 min\n" in render_comment(active, worked(), now=PROMPT_AT + 125)
    assert "· 🛠️ working for 1 h 1 min\n" in render_comment(active, worked(), now=PROMPT_AT + 3_665)


def test_work_time_and_the_boxs_life_are_shown_apart_once_each() -> None:
    run = make_run(
        state=RunState.ARCHIVED,
        reason="box archived: pull request #12 was merged",
        finished_at=T0 + 84,
    )

    body = render_comment(run, worked("finished"), now=T0 + 9_999, pr_url=PR_URL)

    assert body.endswith(
        "### Result\n\n✅ Finished in 15 s.\n\n"
        "🗄️ Box archived: pull request \\#12 was merged. The box was up for 1 min 24 s.\n\n"
        "To continue, comment `/box fix <more instructions>`: the box is resumed first."
    )
    assert body.count("15 s") == 1 and body.count("1 min 24 s") == 1
    assert "Time" not in body and "Archived after" not in body


def test_a_run_that_failed_says_after_how_long() -> None:
    ended = make_run(state=RunState.FAILED, reason="box went error", finished_at=T0 + 125)

    body = render_comment(ended, Timeline(), now=T0 + 9_999)

    assert "❌ Failed after 2 min 5 s: box went error." in body


def test_finished_run_shows_result_duration_and_follow_up_and_the_pr_once() -> None:
    run = make_run(state=RunState.IDLE, updated_at=T0 + 305)

    body = render_comment(run, worked("finished"), now=T0 + 9_000, pr_url=PR_URL)

    assert body.endswith(
        "### Result\n\n✅ Finished in 15 s.\n\n"
        "To ask for more, comment `/box fix <more instructions>`."
    )
    assert body.count(PR_URL) == 1


@pytest.mark.parametrize(
    ("state", "status", "reason", "result", "hint"),
    [
        (
            RunState.IDLE,
            "interrupted",
            None,
            "⏹️ Interrupted.",
            "To ask for more, comment `/box fix <more instructions>`.",
        ),
        (
            RunState.IDLE,
            "failed",
            None,
            "❌ Failed.",
            "To ask for more, comment `/box fix <more instructions>`.",
        ),
        (
            RunState.FAILED,
            "running",
            "The box did not become ready",
            "❌ Failed after 1 min: The box did not become ready.",
            "To try again, comment `/box fix <instructions>`.",
        ),
        (
            RunState.ARCHIVED,
            "finished",
            "pull request closed",
            "✅ Finished.\n\n🗄️ Pull request closed. The box was up for 1 min.",
            "To continue, comment `/box fix <more instructions>`: the box is resumed first.",
        ),
    ],
)
def test_final_states_say_how_the_run_ended(
    state: RunState, status: str, reason: str | None, result: str, hint: str
) -> None:
    run = make_run(state=state, reason=reason, finished_at=T0 + 60)

    body = render_comment(run, Timeline(prompt_status=status), now=T0 + 500)

    assert body.endswith(f"### Result\n\n{result}\n\n{hint}")


def test_active_runs_have_no_result_section() -> None:
    body = render_comment(make_run(), worked(), now=T0 + 60, pr_url=PR_URL)

    assert "### Result" not in body


@pytest.mark.parametrize("state", list(RunState))
def test_the_pull_request_is_linked_in_the_info_line_in_every_state(state: RunState) -> None:
    body = render_comment(make_run(state=state), worked(), now=T0 + 60, pr_url=PR_URL)

    info = next(line for line in body.split("\n") if line.startswith("Agent `codex`"))
    assert info.endswith(f"· Box `bx_23456789` · Pull request {PR_URL}")


def test_an_unsafe_pull_request_url_is_left_out() -> None:
    body = render_comment(make_run(), worked(), now=T0, pr_url="javascript:alert(1)")

    assert "Pull request" not in body and "javascript" not in body


def test_notice_is_shown_under_the_header() -> None:
    notice = "Box rate limit reached: try again after 12:05 UTC"

    body = render_comment(make_run(), Timeline(), now=T0, notice=notice)

    assert body.split("\n")[1:5] == ["## 🛠️ Working", "", f"> {notice}", ""]


def test_preview_token_is_removed_in_public_repositories() -> None:
    timeline = timeline_of(response("r1", f"Done.\n\nPreview: {PREVIEW}"))

    body = render_comment(make_run(), timeline, now=T0)

    assert (
        "### Preview\n- <https://frazil-pneuma-rallye-3000.on.ascii.dev/>\n\n"
        "_Access tokens are removed from preview links in public repositories; "
        "a protected preview asks you to sign in to Box._"
    ) in body
    assert "_token=abc" not in body
    assert "abc" not in render_check_output(make_run(), timeline, now=T0)[2]


def test_preview_token_is_kept_in_private_repositories() -> None:
    timeline = timeline_of(response("r1", f"Done.\n\nPreview: {PREVIEW}"))

    body = render_comment(make_run(repo_private=True), timeline, now=T0)

    assert f"### Preview\n- <{PREVIEW}>" in body
    assert "removed" not in body


def test_desktop_link_only_in_private_repositories() -> None:
    public = render_comment(make_run(), Timeline(), now=T0, desktop_url=DESKTOP)
    private = render_comment(make_run(repo_private=True), Timeline(), now=T0, desktop_url=DESKTOP)

    assert "deskSecret123" not in public and "Desktop" not in public
    assert f"🖥️ **Desktop:** <{DESKTOP}>" in private


def test_a_70000_character_message_and_1000_steps_stay_under_the_limit() -> None:
    message = ("Résumé 🎉 完成了 <b>x</b> `code` @someone\n" * 2_000)[:70_000]
    timeline = timeline_of(
        *[bash(f"c{n}", f"echo {n}") for n in range(1_000)], response("r", message)
    )

    body = render_comment(make_run(), timeline, now=T0)

    assert utf16_len(body) < GITHUB_LIMIT
    assert "_Earlier steps not shown: 800._" in body
    assert "- ✅ `echo 999` (exit 0)" in body
    assert "_…(trimmed)_" in body


def test_a_huge_timeline_built_directly_still_fits() -> None:
    long = "🎉完" * 150
    steps = [Step(StepKind.COMMAND, f"{n} {long}", ok=True, exit_code=0) for n in range(1_000)]
    timeline = Timeline(
        steps=steps,
        tests=steps[:50],
        commits=[Step(StepKind.COMMIT, long, sha="abc1234")] * 50,
        files_edited=[f"{n}/{long}" for n in range(500)],
        last_message=("<a>\n🎉" * 40_000),
        previews=[f"https://p{n}-3000.on.ascii.dev/{'x' * 900}" for n in range(10)],
    )
    run = make_run(repo_private=True, reason="x" * 70_000, state=RunState.FAILED)

    body = render_comment(run, timeline, now=T0, desktop_url=DESKTOP, notice="n" * 70_000)
    title, summary, text = render_check_output(run, timeline, now=T0)

    assert utf16_len(body) <= 60_000
    assert "- ✅ `999 🎉完" in body
    assert "_Earlier steps not shown: " in body
    assert "…` and 470 more\n" in body
    assert len(title) <= 100
    assert utf16_len(summary) < 65_535 and utf16_len(text) < 65_535


def test_secrets_in_agent_text_and_commands_are_masked() -> None:
    timeline = timeline_of(
        bash("c1", f"curl -H 'Authorization: Bearer {GHS}' https://api.github.com"),
        commit("g1", f"Use token {GHS}"),
        response("r1", f"Here is the key:\n{PEM}\nand {GHS}"),
    )
    # Text that skipped the timeline (e.g. an older summary) is masked when rendered too.
    timeline.last_message = f"token {GHS}"
    run = make_run(state=RunState.FAILED, reason=f"GitHub said no to {GHS}", finished_at=T0)

    body = render_comment(run, timeline, now=T0)
    check = "".join(render_check_output(run, timeline, now=T0))

    for text in (body, check):
        assert GHS not in text and "MIIEsecret" not in text
    assert "[redacted]" in body


def test_mentions_in_agent_text_do_not_ping() -> None:
    timeline = timeline_of(
        response("r1", "Thanks @octocat and @octo-org/team! Mail me at a@b.io. `@in_code`"),
        commit("g1", "Credit @hubot"),
    )

    body = render_comment(make_run(), timeline, now=T0)

    assert re.findall(r"(?<![\w`])@([\w-]+)", body) == ["alice"]
    assert "@alice" in body and "`@in_code`" in body
    assert "@\u2060octocat" in body and "@\u2060octo-org/team" in body and "@\u2060hubot" in body


def test_agent_text_cannot_break_the_comment_structure() -> None:
    message = (
        "Closing </details> and <details><summary>x</summary> and "
        "<!-- box-bot:run=run_other --> and `<br>` in code\n"
        "- item\n  ```\n</blockquote>\n```python\nprint('<b>')"
    )
    timeline = timeline_of(
        bash("c1", "echo `date` && printf '``'"),
        response("r1", message),
    )

    body = render_comment(make_run(state=RunState.IDLE), timeline, now=T0)

    assert re.findall(r"<[A-Za-z/!?]", body) == ["<!"]  # only our own marker
    assert "box-bot:run=run_other" not in body
    wj = "\u2060"
    assert (
        f"> Closing <{wj}/details> and <{wj}details><{wj}summary>x<{wj}/summary> and "
        f"<{wj}!-- box-bot:{wj}run=run_other --> and `<{wj}br>` in code\n"
    ) in body
    assert body.endswith(f"> <{wj}/blockquote>\n> ```python\n> print('<{wj}b>')\n> ```")
    assert "- ✅ ``` echo `date` && printf '``' ``` (exit 0)" in body


def test_mentions_in_code_are_left_alone() -> None:
    message = "Use `@cache` here:\n```py\n@pytest.fixture\n```\nthen ask @octocat"
    timeline = timeline_of(response("r1", message))

    body = render_comment(make_run(), timeline, now=T0)

    assert (
        "> Use `@cache` here:\n> ```py\n> @pytest.fixture\n> ```\n> then ask @\u2060octocat" in body
    )


def test_multiline_commands_stay_on_one_line() -> None:
    timeline = timeline_of(bash("c1", "cat <<EOF > x\n# heading\n- item\nEOF"))

    body = render_comment(make_run(), timeline, now=T0)

    assert "- ✅ `cat <<EOF > x ↵ # heading ↵ - item ↵ EOF` (exit 0)" in body


def test_output_is_deterministic_and_stable_within_a_minute() -> None:
    run, timeline = make_run(), worked()

    first = render_comment(run, timeline, now=PROMPT_AT + 61)
    assert render_comment(run, Timeline.from_json(timeline.to_json()), now=PROMPT_AT + 61) == first
    assert render_comment(run, timeline, now=PROMPT_AT + 119) == first
    assert render_comment(run, timeline, now=PROMPT_AT + 120) != first

    ended = make_run(state=RunState.IDLE, updated_at=T0 + 90)
    done = worked("finished")
    assert render_comment(ended, done, now=T0 + 100) == render_comment(ended, done, now=T0 + 9e5)


def test_check_output_has_title_summary_and_details() -> None:
    run = make_run(state=RunState.IDLE, updated_at=T0 + 65, repo_private=True)

    title, summary, text = render_check_output(run, worked("finished"), now=T0 + 999)

    assert title == "✅ Finished"
    assert summary.startswith("Agent `codex` (model: account default) · Box `bx_23456789`")
    assert "✅ Finished in 15 s." in summary
    assert "<!--" not in summary + text
    assert "### What the agent did\n\n- ✅ `git checkout -b box/issue-7` (exit 0)" in text
    assert "> All done." in text


def test_check_title_names_the_failure() -> None:
    run = make_run(state=RunState.FAILED, reason="Box can't see\nthe repo", finished_at=T0)

    assert render_check_output(run, Timeline(), now=T0)[0] == "❌ Failed: Box can't see the repo"


def test_a_failed_prompt_shows_why_in_the_comment_and_the_check() -> None:
    run = make_run(state=RunState.IDLE, updated_at=T0 + 60)
    timeline = worked("failed")
    timeline.failure = "usage limit reached: No agent hours left."

    body = render_comment(run, timeline, now=T0 + 999)
    title, summary, _text = render_check_output(run, timeline, now=T0 + 999)

    assert "❌ Failed after 15 s: usage limit reached: No agent hours left." in body
    assert title == "❌ Failed: usage limit reached: No agent hours left."
    assert "❌ Failed after 15 s: usage limit reached: No agent hours left." in summary


def test_status_reply_is_short() -> None:
    run = make_run(comment_id=991)

    reply = render_status_reply(run, worked(), now=T0 + 200)

    assert reply == (
        "**🛠️ Working** · box `bx_23456789` · 3 min since it was asked for\n\n"
        "Last step: 📌 Committed [`0123456`](https://github.com/octo/app/commit/"
        "0123456789abcdef0123456789abcdef01234567) Fix the parser on `box/issue-7` (pushed)\n\n"
        "Details are in the [tracking comment](#issuecomment-991)."
    )


def test_status_reply_without_a_run_or_after_the_end() -> None:
    assert render_status_reply(None, None, now=T0) == (
        "No box is working on this issue or pull request. "
        "Comment `/box fix <instructions>` to start one."
    )
    run = make_run(state=RunState.IDLE, box_id=None, updated_at=T0 + 7)
    assert render_status_reply(run, Timeline(prompt_status="finished"), now=T0) == (
        "**✅ Finished** · box not created yet · 7 s since it was asked for\n\n"
        "To ask for more, comment `/box fix <more instructions>`."
    )


def test_permission_denied_says_who_may_use_the_app() -> None:
    assert permission_denied("mallory") == (
        "@mallory only people with write, maintain or admin permission on this repository "
        "can use box-bot. Ask one of them to run the command for you."
    )
    assert permission_denied("mallory", "maintain").startswith(
        "@mallory only people with maintain or admin permission on this repository"
    )
    assert permission_denied("mallory", "admin").startswith(
        "@mallory only people with admin permission on this repository"
    )


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        (FailureKind.PROVIDER_NOT_CONFIGURED, "provider is not set up"),
        (FailureKind.BILLING, "Add credit"),
        (FailureKind.RATE_LIMITED, "Try again after a minute or two"),
        (FailureKind.ACTIVE_LIMIT, "Archive one you no longer need"),
        (FailureKind.NOT_READY, "did not become ready"),
        (FailureKind.GITHUB_ERROR, "GitHub returned an error"),
        (FailureKind.BOX_UNAVAILABLE, "Box did not answer as expected"),
        (FailureKind.TIMED_OUT, "did not finish in the time allowed"),
        (FailureKind.REPO_NOT_AVAILABLE, "Install Box's GitHub App on this repository"),
        (FailureKind.ARCHIVED, "to resume it"),
    ],
)
def test_failures_say_what_happened_and_what_to_do(kind: FailureKind, words: str) -> None:
    text = render_failure(kind.value, f"upstream said {GHS} @octocat")

    assert words in text
    assert "/box fix" in text
    assert text.endswith("\n\nDetails: upstream said \\[redacted\\] @\u2060octocat")


def test_failure_links_the_setup_page_and_retry_time() -> None:
    setup = render_failure("provider_not_configured", "", setup_url="https://ascii.dev/box/setup")
    retry = render_failure("rate_limited", "slow down", retry_at=1_780_000_000 + 20)

    assert "Connect it to the Box account at <https://ascii.dev/box/setup>, then" in setup
    assert "Details" not in setup
    assert "Try again after 20:27 UTC by commenting `/box fix`." in retry


def test_internal_and_unknown_failures_do_not_leak_details() -> None:
    internal = render_failure("internal", "KeyError: 'secret_column'")

    assert "secret_column" not in internal
    assert "logs" in internal
    assert render_failure("something_new", "x") == render_failure("internal", "y")


def box_report(**changes: Any) -> BoxReport:
    report = BoxReport(
        run_id="run_abc123",
        box_id="bx_23456789",
        installation_id=1,
        repo_id=2,
        seconds=23 * 60 + 41,
        dollars=0.3751,
        read_at=T0 + 1500,
    )
    return dataclasses.replace(report, **changes)


def test_cost_is_on_the_info_line_and_the_check_summary() -> None:
    run = make_run()
    comment = render_comment(run, Timeline(), now=T0 + 1500, box=box_report())
    _, summary, _ = render_check_output(run, Timeline(), now=T0 + 1500, box=box_report())

    line = "Agent `codex` (model: account default) · Box `bx_23456789` · Box time 23 min · $0.38"
    assert line in comment and line in summary


def test_the_final_cost_is_exact_once_the_box_is_stopped() -> None:
    run = make_run(state=RunState.ARCHIVED, finished_at=T0 + 1500)
    comment = render_comment(run, Timeline(), now=T0 + 9000, box=box_report(final=True))

    assert "Box time 23 min 41 s · $0.38" in comment


def test_a_box_without_usage_shows_elapsed_time_and_an_unknown_cost() -> None:
    comment = render_comment(make_run(), Timeline(), now=T0 + 1500, box=box_report(dollars=None))

    assert "Box `bx_23456789` · Time 25 min · cost unknown (this Box does not report usage)" in (
        comment
    )
    assert "$" not in comment


def test_setup_is_shown_while_running_done_and_failed_with_its_error_masked() -> None:
    run = make_run(state=RunState.PROVISIONING)
    error = f"exit code 1\nnpm ERR! token {GHS}\n```\n<img src=x>"

    running = render_comment(run, Timeline(), now=T0, box=box_report(setup_status="running"))
    done = render_comment(run, Timeline(), now=T0, box=box_report(setup_status="done"))
    failed = render_comment(
        run, Timeline(), now=T0, box=box_report(setup_status="failed", setup_error=error)
    )
    plain = render_comment(run, Timeline(), now=T0, box=box_report())

    assert (
        "⚙️ **Setup:** the box is setting up (the `setup` script of `.github/box.yml`)…" in running
    )
    assert "⚙️ **Setup:** done" in done
    assert "⚠️ **Setup failed**; the agent was told and works without it:\n\n````text\n" in failed
    assert "exit code 1\nnpm ERR! token " in failed and GHS not in failed
    assert "<\u2060img" in failed and failed.count("````") == 2
    assert "Setup" not in plain


def test_status_reply_shows_the_cost_and_the_repository_today() -> None:
    reply = render_status_reply(
        make_run(), None, now=T0 + 60, box_report=box_report(), repo_today=4.2
    )

    assert "Box time 23 min · $0.38 · This repository today: $4.20" in reply


def test_review_answer_names_the_outcome_and_only_this_prompts_commits() -> None:
    timeline = worked("finished")
    older = Step(StepKind.COMMIT, "Earlier work", sha="aaaaaaa", prompt="prompt_0")
    timeline.commits.insert(0, older)
    run = make_run(state=RunState.IDLE, pr_number=12, pr_comment_id=99)

    answer = render_review_answer(run, timeline, 12)

    assert answer == (
        "✅ Done.\n\nCommits made for this:\n"
        "- [`0123456`](https://github.com/octo/app/commit/0123456789abcdef0123456789abcdef01234567)"
        " Fix the parser on `box/issue-7` (pushed)\n\n"
        "Details are in the [tracking comment](https://github.com/octo/app/pull/12#issuecomment-99)."
    )


def test_review_answer_after_a_failure_without_commits_cannot_ping() -> None:
    timeline = timeline_of(prompt("running"), prompt("failed"))
    timeline.failure = "@everyone look <b>here</b>"
    run = make_run(state=RunState.IDLE, number=12, is_pull_request=True, comment_id=5)

    answer = render_review_answer(run, timeline, 12)

    first, second, third = answer.split("\n\n")
    assert first.startswith("❌ The agent could not finish this. ")
    assert "@everyone" not in first and "<b>" not in first
    assert second == "No commit was made for this."
    assert third.endswith("(https://github.com/octo/app/pull/12#issuecomment-5).")
