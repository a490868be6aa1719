"""The tracking comment, check output and replies as GitHub shows them, through its own engine."""

from __future__ import annotations

import pytest

from bot.box.models import parse_event
from bot.models import PromptKind, PromptState, QueuedPrompt, RunState
from bot.runs.render import (
    permission_denied,
    render_check_output,
    render_comment,
    render_failure,
    render_status_reply,
)
from bot.runs.timeline import Timeline
from tests.markdown_view import Node, Seen, seen
from tests.test_render import (
    PR_URL,
    PREVIEW,
    PROMPT_AT,
    T0,
    bash,
    commit,
    edit,
    make_run,
    prompt,
    response,
    timeline_of,
    worked,
)

PREVIEW_PAGE = "https://frazil-pneuma-rallye-3000.on.ascii.dev/"
WORD_JOINER = "\u2060"
TOKEN_NOTE = (
    "Access tokens are removed from preview links in public repositories; "
    "a protected preview asks you to sign in to Box."
)
# Agent text that would take the comment apart if it were not fenced.
HOSTILE = (
    "</details></summary>\n"
    "## Result\n"
    "<!-- box-bot:run=run_other -->\n"
    "<details open><summary>fake</summary>\n"
    "| a | b |\n|---|---|\n| 1 | 2 |\n"
    "`````\n"
    "</blockquote>\n"
    "````` ``` ``\n"
    "- [ ] **bold** and [a link](https://example.com)"
)


def asked(
    seq: int,
    requester: str,
    instructions: str,
    state: PromptState,
    box_prompt_id: str | None = None,
    kind: PromptKind = PromptKind.FOLLOW_UP,
) -> QueuedPrompt:
    return QueuedPrompt(
        seq=seq,
        run_id="run_abc123",
        kind=kind,
        requester=requester,
        instructions=instructions,
        state=state,
        box_prompt_id=box_prompt_id,
    )


FIRST = asked(1, "alice", "", PromptState.FINISHED, "prompt_1", PromptKind.INITIAL)


def follow_up_timeline(second_status: str | None = None) -> Timeline:
    """`worked("finished")`, then a second prompt that edits a file and runs the tests."""
    timeline = worked("finished")
    second = [
        {**prompt("running"), "id": "prompt_2", "taskId": "prompt_2", "timestamp": 1780347200000},
        {**edit("d1", "docs/usage.md"), "taskId": "prompt_2", "timestamp": 1780347210000},
        {
            **bash("d2", "pytest -q tests/test_docs.py"),
            "taskId": "prompt_2",
            "timestamp": 1780347230000,
        },
    ]
    timeline.start_prompt("prompt_2")
    for event in second:
        timeline.apply(parse_event(event))
    if second_status:
        timeline.prompt_status = second_status
    return timeline


def assert_clean(view: Seen) -> None:
    """No Markdown shows as typed; nothing but our marker is an HTML comment."""
    assert view.leaked_markdown() == []
    assert view.comments == [" box-bot:run=run_abc123 "]


def note_paragraphs(view: Seen) -> list[Node]:
    return [p for p in view.root.find("p") if p.text.startswith("Access tokens")]


def test_starting_shows_the_request_queued() -> None:
    run = make_run(state=RunState.REQUESTED, box_id=None)
    prompts = [asked(1, "alice", "Fix the **parser**", PromptState.QUEUED, kind=PromptKind.INITIAL)]

    view = seen(render_comment(run, Timeline(), now=T0, prompts=prompts))

    assert view.headings() == [(2, "⏳ Starting a box"), (3, "💬 @alice asked · ⏳ queued")]
    [quote] = view.root.find("blockquote")
    assert quote.text.strip() == "Fix the parser" and quote.find("strong")
    assert_clean(view)


@pytest.mark.parametrize(
    ("state", "header"),
    [(RunState.PROVISIONING, "⏳ Starting a box"), (RunState.PROMPTING, "📦 Box ready")],
)
def test_before_the_work_the_header_says_where_the_box_is(state: RunState, header: str) -> None:
    prompts = [asked(1, "alice", "", PromptState.SENDING, kind=PromptKind.INITIAL)]

    view = seen(render_comment(make_run(state=state), Timeline(), now=T0, prompts=prompts))

    assert view.headings() == [(2, header), (3, "💬 @alice asked · 📨 sent to the box")]
    assert_clean(view)


def test_working_shows_steps_message_and_live_previews() -> None:
    timeline = timeline_of(
        prompt("running"),
        bash("c1", "pytest -q"),
        response("r1", f"Started the app.\n\nPreview: {PREVIEW}"),
    )

    view = seen(render_comment(make_run(), timeline, now=PROMPT_AT + 185, prompts=[FIRST]))

    assert view.headings() == [
        (2, "🛠️ Working"),
        (3, "💬 @alice asked · 🛠️ working for 3 min"),
        (3, "Latest message from the agent"),
        (3, "Preview"),
    ]
    assert PREVIEW_PAGE in view.links()
    [note] = note_paragraphs(view)
    assert note.parent is view.root and note.text == TOKEN_NOTE  # its own paragraph
    assert [li.text for li in view.root.find("li")][-1] == PREVIEW_PAGE
    assert_clean(view)


def test_finished_says_the_result_once_with_the_pull_request_live() -> None:
    run = make_run(state=RunState.IDLE, updated_at=T0 + 305)
    timeline = worked("finished", f"Done.\n\n**Pull request:** {PR_URL}\nTests: 12 passed")

    view = seen(render_comment(run, timeline, now=T0 + 999, pr_url=PR_URL, prompts=[FIRST]))

    assert view.headings() == [
        (2, "✅ Finished"),
        (3, "💬 @alice asked"),
        (3, "Latest message from the agent"),
        (3, "Result"),
    ]
    assert view.links().count(PR_URL) == 1
    assert view.root.find("blockquote")[0].text.strip() == "Done."
    assert "✅ Finished in 15 s." in view.paragraphs()
    assert_clean(view)


def test_failed_shows_the_notice_and_the_reason() -> None:
    run = make_run(state=RunState.FAILED, reason="box went error", finished_at=T0 + 60)
    notice = render_failure("box_error", "Box said error <b>now</b>")

    view = seen(render_comment(run, worked(), now=T0 + 999, notice=notice, prompts=[FIRST]))

    assert view.headings() == [
        (2, "❌ Failed"),
        (3, "💬 @alice asked"),
        (3, "Latest message from the agent"),
        (3, "Result"),
    ]
    quoted = view.root.find("blockquote")[0]
    assert quoted.find("strong")[0].text == "The box broke down while the agent worked."
    assert "Details: Box said error <b>now</b>" in quoted.text
    assert "❌ Failed after 1 min: box went error." in view.paragraphs()
    assert_clean(view)


def test_archived_marks_the_previews_gone() -> None:
    run = make_run(state=RunState.ARCHIVED, reason="archived by @alice", finished_at=T0 + 84)
    timeline = worked("finished", f"Done.\n\nPreview: {PREVIEW}")

    view = seen(render_comment(run, timeline, now=T0 + 999, pr_url=PR_URL, prompts=[FIRST]))

    assert view.headings()[0] == (2, "🗄️ Archived")
    assert PREVIEW_PAGE not in view.links() and note_paragraphs(view) == []
    preview = view.root.find("ul")[-1]
    assert [li.find("code")[0].text for li in preview.find("li")] == [PREVIEW_PAGE]
    assert "The box is archived, so these previews are gone." in view.paragraphs()
    assert "🗄️ Archived by @\u2060alice. The box was up for 1 min 24 s." in view.paragraphs()
    assert_clean(view)


def test_a_follow_up_is_its_own_section_and_the_first_is_collapsed() -> None:
    prompts = [
        FIRST,
        asked(2, "bob", "Also document it.\n\n- keep it short", PromptState.SENT, "prompt_2"),
    ]

    body = render_comment(make_run(), follow_up_timeline(), now=PROMPT_AT + 200, prompts=prompts)
    view = seen(body)

    assert view.headings() == [
        (2, "🛠️ Working"),
        (3, "💬 @bob asked · 🛠️ working for under a minute"),
        (3, "Latest message from the agent"),
    ]
    newest = view.root.find("h3")[0]
    after = view.root.blocks[view.root.blocks.index(newest) + 1 :]
    assert after[0].tag == "blockquote" and after[0].find("li")[0].text == "keep it short"
    assert [li.text for li in after[1].find("li")] == [
        "✏️ Edited docs/usage.md",
        "✅ pytest -q tests/test_docs.py (exit 0)",
    ]
    [older] = view.details()
    assert older.parent is view.root
    assert older.find("summary")[0].text == "💬 @alice asked · ✅ finished in 15 s"
    assert "✅ pytest -q (exit 0)" in [li.text for li in older.find("li")]
    assert_clean(view)


def test_prompts_are_listed_newest_first_each_with_how_it_ended() -> None:
    prompts = [
        FIRST,
        asked(2, "bob", "Also document it.", PromptState.FAILED, "prompt_2"),
        asked(3, "carol", "Then </details> the <b>rest</b>", PromptState.QUEUED),
    ]
    run = make_run(state=RunState.PROVISIONING)

    view = seen(render_comment(run, follow_up_timeline("failed"), now=T0, prompts=prompts))

    assert view.headings() == [
        (2, "📨 Sending a follow-up"),
        (3, "💬 @carol asked · ⏳ queued"),
        (3, "Latest message from the agent"),
    ]
    quoted = view.root.find("blockquote")[0].text.strip()
    assert quoted.replace(WORD_JOINER, "") == "Then </details> the <b>rest</b>"
    assert [d.find("summary")[0].text for d in view.details()] == [
        "💬 @bob asked: Also document it. · ❌ failed after 30 s",
        "💬 @alice asked · ✅ finished in 15 s",
    ]
    assert all(d.parent is view.root for d in view.details())
    assert_clean(view)


def test_a_resumed_box_says_it_is_back_and_waiting() -> None:
    timeline = worked("finished")
    timeline.box_resumed()
    run = make_run(state=RunState.IDLE, updated_at=T0 + 400)

    view = seen(render_comment(run, timeline, now=T0 + 999, prompts=[FIRST]))

    assert view.headings()[:2] == [
        (2, "💤 Box resumed, waiting for instructions"),
        (3, "💬 @alice asked · ✅ finished in 15 s"),  # the result does not say it
    ]
    assert not any("Finished" in p for p in view.paragraphs())
    assert (
        "💤 The box is back and waits for instructions. "
        "To give it work, comment /box fix <instructions>." in view.paragraphs()
    )
    assert_clean(view)


@pytest.mark.parametrize("state", [RunState.WORKING, RunState.IDLE, RunState.ARCHIVED])
def test_fenced_agent_text_cannot_close_our_sections(state: RunState) -> None:
    timeline = timeline_of(
        prompt("running"),
        bash("c1", "printf '</details>' | tee '## x' && echo ``` <!-- ``"),
        edit("c2", "/home/user/app/docs/</details>|x|.md"),
        commit("g1", "Close </details> <!-- and ## more"),
        response("r1", HOSTILE),
        prompt("finished"),
    )
    timeline.start_prompt("prompt_2")
    timeline.apply(parse_event({**bash("c3", "echo `</summary>`"), "taskId": "prompt_2"}))
    timeline.apply(parse_event({**response("r2", HOSTILE), "taskId": "prompt_2"}))
    prompts = [
        asked(1, "alice", HOSTILE, PromptState.FINISHED, "prompt_1", PromptKind.INITIAL),
        asked(2, "bob", HOSTILE, PromptState.SENT, "prompt_2"),
    ]
    run = make_run(state=state, finished_at=T0 + 60 if state is RunState.ARCHIVED else None)

    view = seen(render_comment(run, timeline, now=T0 + 60, prompts=prompts))

    newest = "💬 @bob asked" + (
        " · 🛠️ working for under a minute" if state is RunState.WORKING else ""
    )
    result = [(3, "Result")] if state is RunState.ARCHIVED else []
    assert view.headings()[1:] == [(3, newest), (3, "Latest message from the agent"), *result]
    [older] = view.details()
    assert older.parent is view.root and older.find("summary")[0].text.startswith(
        "💬 @alice asked: </details></summary> ## Result"
    )
    assert all(not d.within("blockquote") for d in view.root.find("h3"))
    assert view.comments == [" box-bot:run=run_abc123 "]
    texts = [block.tag for block in view.root.blocks]
    assert texts.count("details") == 1 and "table" not in texts


def test_check_output_reads_well() -> None:
    run = make_run(state=RunState.ARCHIVED, reason="box archived: issue #7 was closed")
    run = make_run(**{**run.__dict__, "finished_at": T0 + 90})
    timeline = worked("finished", f"Done.\n\nPreview: {PREVIEW}")

    title, summary, text = render_check_output(run, timeline, now=T0 + 999)

    assert title == "🗄️ Archived"
    shown = seen(summary)
    assert shown.headings() == [(3, "Result")]
    assert shown.paragraphs()[-3:-1] == [
        "✅ Finished in 15 s.",
        "🗄️ Box archived: issue #7 was closed. The box was up for 1 min 30 s.",
    ]
    details = seen(text)
    assert details.headings() == [
        (3, "What the agent did"),
        (3, "Latest message from the agent"),
        (3, "Preview"),
    ]
    assert PREVIEW_PAGE not in details.links()
    for view in (shown, details):
        assert view.leaked_markdown() == []


def test_replies_read_well() -> None:
    run = make_run(comment_id=991)
    replies = [
        render_status_reply(run, worked(), now=PROMPT_AT + 200),
        render_status_reply(None, None, now=T0),
        permission_denied("mallory"),
        render_failure("rate_limited", "slow down", retry_at=T0),
    ]

    for reply in replies:
        view = seen(reply)
        assert view.leaked_markdown() == [], reply
        assert view.comments == []
    status = seen(replies[0])
    assert status.root.find("strong")[0].text == "🛠️ Working"
    assert "#issuecomment-991" in status.links()


def test_markup_in_untrusted_details_shows_as_typed() -> None:
    view = seen(render_failure("rate_limited", "slow **down** `now` [x](https://e.com)"))

    assert view.paragraphs()[-1] == "Details: slow **down** `now` [x](https://e.com)"
    assert view.root.find("strong")[0].text == "Box rate limit reached."
    assert [a.text for a in view.root.find("a")] == ["https://e.com"]  # no link named "x"
    assert [code.text for code in view.root.find("code")] == ["/box fix"]


def test_fifty_long_prompts_stay_under_githubs_limit_and_well_formed() -> None:
    wide = "🎉完" * 90
    timeline = Timeline()
    prompts = []
    for n in range(60):
        timeline.start_prompt(f"prompt_{n}")
        for m in range(40):
            timeline.apply(
                parse_event({**bash(f"c{n}-{m}", f"{m} {wide}"), "taskId": f"prompt_{n}"})
            )
        timeline.prompt_status = "finished"
        instructions = f"{n} " + (HOSTILE + wide) * 40
        prompts.append(asked(n, "bob", instructions, PromptState.FINISHED, f"prompt_{n}"))
    run = make_run(state=RunState.IDLE, updated_at=T0 + 600)

    body = render_comment(run, timeline, now=T0 + 999, prompts=prompts)
    view = seen(body)

    assert len(body.encode("utf-16-le")) // 2 <= 60_000
    assert view.headings()[1] == (3, "💬 @bob asked")
    assert all(d.parent is view.root for d in view.details())
    assert view.root.find("blockquote")[0].text.strip().startswith("59 ")
    numbers = [int(d.find("summary")[0].text.split(": ")[1].split()[0]) for d in view.details()]
    assert numbers == sorted(numbers, reverse=True) and numbers[0] == 58


def test_a_rerun_and_failing_checks_sent_back_are_named_for_what_they_are() -> None:
    prompts = [
        FIRST,
        asked(2, "bob", "Fix the parser", PromptState.FINISHED, "prompt_2", PromptKind.RERUN),
        asked(3, "alice", "pytest: 1 failed\n" * 50, PromptState.QUEUED, kind=PromptKind.CI_FIX),
    ]
    run = make_run(state=RunState.IDLE, updated_at=T0 + 400)

    view = seen(render_comment(run, follow_up_timeline("finished"), now=T0, prompts=prompts))

    assert view.headings()[1] == (3, "🔁 Failing checks sent back to the box · ⏳ queued")
    assert "pytest: 1 failed" not in view.root.text  # the logs went to the box, not here
    assert [d.find("summary")[0].text for d in view.details()] == [
        "🔁 @bob asked to run it again: Fix the parser · ✅ finished in 30 s",
        "💬 @alice asked · ✅ finished in 15 s",
    ]


def test_a_message_that_only_repeats_the_summary_is_left_out() -> None:
    run = make_run(state=RunState.IDLE, updated_at=T0 + 400)
    message = f"**PR:** <{PR_URL}>\n\n- Tests: 12 passed\n\nPreview: {PREVIEW}"

    view = seen(render_comment(run, worked("finished", message), now=T0, pr_url=PR_URL))

    assert (3, "Latest message from the agent") not in view.headings()
    assert view.links().count(PR_URL) == 1
