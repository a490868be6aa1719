"""Markdown for a run's tracking comment, its check run, and the app's short replies.

Text from the agent or from GitHub is untrusted. It is redacted, and kept from
pinging people: an `@` that would mention someone (outside code) is followed by
a WORD JOINER (U+2060), which readers do not see but which GitHub's mention
parser does not accept. It cannot change the comment's structure either: short
texts become escaped plain text or code spans with a longer backtick fence; the
agent's message is quoted line by line, and every `<` that could start an HTML
tag or comment gets a WORD JOINER after it, everywhere, because telling code
from text exactly would need a full CommonMark parser (it shows as `<` in text
and in code alike). Output depends only on the arguments, so callers can skip
edits when the text did not change; elapsed time is shown to the minute while a
run is active and exactly once it has ended.
"""

from __future__ import annotations

import enum
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

from bot.models import MARKER_TEXT, Run, RunState
from bot.redact import redact, strip_token_query
from bot.runs.timeline import Step, StepKind, Timeline

# GitHub rejects comment bodies and check run summaries/texts over 65,535 characters.
# Sizes are measured in UTF-16 code units (never fewer than characters), with a margin.
BUDGET = 60_000
MESSAGE_CHARS = 3_000
LINE_CHARS = 200
DETAIL_CHARS = 500
NOTICE_CHARS = 2_000
TITLE_CHARS = 100
SHOWN_FILES = 30
SHOWN_TESTS = 10
SHOWN_COMMITS = 10
SHOWN_PREVIEWS = 5

WORD_JOINER = "\u2060"
TRIMMED_NOTE = "_…(trimmed)_"
MESSAGE_HEADING = "### Latest message from the agent"
STEPS_HEADING = "### What the agent did"
PREVIEW_HEADING = "### Preview"
RESULT_HEADING = "### Result"
HIDDEN_STEPS = "_Earlier steps not shown: {count}._"
TOKEN_REMOVED_NOTE = (
    "_Access tokens are removed from preview links in public repositories; "
    "a protected preview asks you to sign in to Box._"
)
DESKTOP_LINE = "🖥️ **Desktop:** <{url}> (a private link: anyone who has it can use the box)"
FOLLOW_UP_HINT = "To ask for more, comment `/box fix <more instructions>`."
RETRY_HINT = "To try again, comment `/box fix <instructions>`."
RESUME_HINT = "To continue, comment `/box fix <more instructions>`: the box is resumed first."
TRACKING_HINT = "Details are in the [tracking comment](#issuecomment-{comment_id})."
TRACKING_LINK = "Details are in the [tracking comment]({url})."
REVIEW_COMMITS = "Commits made for this:"
REVIEW_NO_COMMIT = "No commit was made for this."
NO_RUN_REPLY = (
    "No box is working on this issue or pull request. "
    "Comment `/box fix <instructions>` to start one."
)
PERMISSION_DENIED = (
    "@{login} only people with {levels} permission on this repository "
    "can use box-bot. Ask one of them to run the command for you."
)
PERMISSION_LEVELS = {
    "write": "write, maintain or admin",
    "maintain": "maintain or admin",
    "admin": "admin",
}


def permission_denied(login: str, minimum: str = "write") -> str:
    """The reply to someone below the repository's minimum permission."""
    return PERMISSION_DENIED.format(login=login, levels=PERMISSION_LEVELS[minimum])


MENTION = re.compile(r"(?<![\w`])@(?=[A-Za-z0-9])")
HTML_START = re.compile(r"<(?=[A-Za-z/!?])")
INLINE_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&#])")
CODE_SPAN = re.compile(r"(?<![`\\])(`+)(?!`).*?(?<!`)\1(?!`)")
BACKTICKS = re.compile(r"`+")
FENCE = re.compile(r" {0,3}(`{3,}(?=[^`]*$)|~{3,})")
SAFE_URL = re.compile(r"https?://[^\s<>()`'\"\[\]\\]+")
LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}(?:\[bot\])?")
UNSAFE_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")


class Phase(enum.Enum):
    """What the tracking comment's header says, as (emoji, words)."""

    STARTING = ("⏳", "Starting a box")
    READY = ("📦", "Box ready")
    WORKING = ("🛠️", "Working")
    WAITING = ("💤", "Waiting for instructions")
    FINISHED = ("✅", "Finished")
    FAILED = ("❌", "Failed")
    INTERRUPTED = ("⏹️", "Stopped (interrupted)")
    ARCHIVED = ("🗄️", "Archived")

    @property
    def title(self) -> str:
        return f"{self.value[0]} {self.value[1]}"


FINAL_PHASES = frozenset({Phase.FINISHED, Phase.FAILED, Phase.INTERRUPTED, Phase.ARCHIVED})
PROMPT_PHASES = {
    "finished": Phase.FINISHED,
    "failed": Phase.FAILED,
    "interrupted": Phase.INTERRUPTED,
}
REVIEW_OUTCOMES = {
    Phase.FINISHED: "✅ Done.",
    Phase.FAILED: "❌ The agent could not finish this.",
    Phase.INTERRUPTED: "⏹️ Stopped before the work was done.",
}
RESULT_WORDS = {
    Phase.FINISHED: "✅ Finished in {duration}.",
    Phase.FAILED: "❌ Failed after {duration}",
    Phase.INTERRUPTED: "⏹️ Interrupted after {duration}.",
    Phase.ARCHIVED: "🗄️ Archived after {duration}",
}


class FailureKind(enum.StrEnum):
    """Why a run could not go on, as the app tells the people who asked."""

    PROVIDER_NOT_CONFIGURED = "provider_not_configured"
    BILLING = "billing"
    RATE_LIMITED = "rate_limited"
    ACTIVE_LIMIT = "active_limit"
    NOT_READY = "not_ready"
    BOX_ERROR = "box_error"
    GITHUB_ERROR = "github_error"
    BOX_UNAVAILABLE = "box_unavailable"
    TIMED_OUT = "timed_out"
    REPO_NOT_AVAILABLE = "repo_not_available"
    ARCHIVED = "archived"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    BOX_STARTING = "box_starting"
    CONFLICT = "conflict"
    CANNOT_START = "cannot_start"
    LIMIT = "limit"  # told by `describe_hit`
    CONFIG = "config"  # told by listing the config's problems
    INTERNAL = "internal"


FAILURE_TEXT: dict[str, str] = {
    FailureKind.PROVIDER_NOT_CONFIGURED: (
        "⚠️ **The coding agent's provider is not set up.** Connect it to the Box account{setup}, "
        "then comment `/box fix` to try again."
    ),
    FailureKind.BILLING: (
        "⚠️ **The Box account needs credit.** No box could start because the account has no "
        "credit left. Add credit in the Box dashboard, then comment `/box fix` to try again."
    ),
    FailureKind.RATE_LIMITED: (
        "⚠️ **Box rate limit reached.** Box is not starting more boxes for this account right "
        "now. Try again after {retry} by commenting `/box fix`."
    ),
    FailureKind.ACTIVE_LIMIT: (
        "⚠️ **Too many active boxes.** The Box account already runs as many boxes as it may. "
        "Archive one you no longer need (comment `/box archive` on its issue or pull request), "
        "then comment `/box fix` here to try again."
    ),
    FailureKind.NOT_READY: (
        "⚠️ **The box did not become ready.** It failed to start or took too long. "
        "Comment `/box fix` to try again with a new box."
    ),
    FailureKind.BOX_ERROR: (
        "⚠️ **The box broke down while the agent worked.** Box reports it in an error state, "
        "so the work stopped there. Comment `/box fix` to try again with a new box."
    ),
    FailureKind.GITHUB_ERROR: (
        "⚠️ **GitHub returned an error.** box-bot could not finish its work with GitHub. "
        "Comment `/box fix` to try again; if it keeps failing, check that the app is still "
        "installed with the permissions it asks for."
    ),
    FailureKind.BOX_UNAVAILABLE: (
        "⚠️ **Box did not answer as expected.** The Box service returned an error. "
        "Wait a few minutes, then comment `/box fix` to try again."
    ),
    FailureKind.TIMED_OUT: (
        "⚠️ **The work took too long.** The agent did not finish in the time allowed, so the "
        "run was stopped. Comment `/box fix <instructions>` to try again, perhaps with a "
        "smaller task."
    ),
    FailureKind.REPO_NOT_AVAILABLE: (
        "⚠️ **Box can't see this repository.** Install Box's GitHub App on this repository "
        "(or add the repository to the app's list), then comment `/box fix` to try again."
    ),
    FailureKind.ARCHIVED: (
        "⚠️ **The box was archived before the work finished.** Comment "
        "`/box fix <more instructions>` to resume it and continue."
    ),
    FailureKind.IDEMPOTENCY_KEY_REUSED: (
        "⚠️ **Box refused to create the box.** This run's box was asked for before with "
        "different settings, and Box does not create a second one under the same request. "
        "Comment `/box fix` to start over with a new run."
    ),
    FailureKind.IDEMPOTENCY_IN_PROGRESS: (
        "⚠️ **Box is still creating this run's box.** An earlier request for it has not "
        "finished yet. Wait a minute, then comment `/box fix` to try again."
    ),
    FailureKind.BOX_STARTING: (
        "⚠️ **The box was still starting.** Box did not take the work yet. "
        "Comment `/box fix` to try again in a minute."
    ),
    FailureKind.CONFLICT: (
        "⚠️ **Box refused the request in the box's current state.** "
        "Comment `/box fix` to try again; `/box status` shows where the run is."
    ),
    FailureKind.CANNOT_START: (
        "⚠️ **Box will not start a box for this account now.** Nothing was started. "
        "Check the account in the Box dashboard, then comment `/box fix` to try again."
    ),
    FailureKind.INTERNAL: (
        "⚠️ **Something went wrong inside box-bot.** The people who run the app can find the "
        "details in its logs. Comment `/box fix` to try again."
    ),
}
DETAILS_LINE = "Details: {message}"
SETUP_LINK = " at <{url}>"
SETUP_FALLBACK = " in the Box dashboard"
RETRY_FALLBACK = "a minute or two"
RETRY_FORMAT = "%H:%M UTC"


@dataclass(frozen=True)
class _View:
    """The derived facts every part of the output shares."""

    phase: Phase
    seconds: int

    @classmethod
    def of(cls, run: Run, timeline: Timeline | None, now: float) -> _View:
        """Work out the phase and the run's elapsed time."""
        phase = run_phase(run, timeline)
        end = run.finished_at
        if end is None:
            end = max(run.updated_at, run.created_at) if phase in FINAL_PHASES else now
        return cls(phase, max(0, round(end - run.created_at)))

    @property
    def final(self) -> bool:
        return self.phase in FINAL_PHASES

    @property
    def elapsed(self) -> str:
        return format_duration(self.seconds) if self.final else format_rough(self.seconds)


def run_phase(run: Run, timeline: Timeline | None) -> Phase:
    """Return what the header should say for *run*."""
    if run.state is RunState.FAILED:
        return Phase.FAILED
    if run.state is RunState.ARCHIVED:
        return Phase.ARCHIVED
    if run.state is RunState.IDLE:
        status = timeline.prompt_status if timeline is not None else None
        return PROMPT_PHASES.get(status or "", Phase.WAITING)
    if run.state is RunState.WORKING:
        return Phase.WORKING
    return Phase.READY if run.state is RunState.PROMPTING else Phase.STARTING


def format_duration(seconds: int) -> str:
    """Return an exact duration in words, e.g. "1 h 2 min 5 s"."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{value} {unit}" for value, unit in ((hours, "h"), (minutes, "min"), (secs, "s")) if value
    ]
    return " ".join(parts) or "0 s"


def format_rough(seconds: int) -> str:
    """Return a duration to the minute, e.g. "3 min", so it changes at most once a minute."""
    if seconds < 60:
        return "under a minute"
    hours, minutes = divmod(seconds // 60, 60)
    return " ".join(f"{value} {unit}" for value, unit in ((hours, "h"), (minutes, "min")) if value)


# -- the tracking comment --------------------------------------------------------------------


def render_comment(
    run: Run,
    timeline: Timeline,
    *,
    now: float,
    pr_url: str | None = None,
    desktop_url: str | None = None,
    notice: str | None = None,
) -> str:
    """Return the tracking comment for *run*, under GitHub's size limit."""
    view = _View.of(run, timeline, now)
    head = [
        f"{run.marker}\n## {view.phase.title}",
        _notice_block(notice),
        _info_line(run, view, pr_url),
        _desktop_line(run, desktop_url),
        _summary_list(timeline),
    ]
    tail = [
        _message_block(timeline.last_message),
        _previews_block(run, timeline),
        _result_block(run, view, pr_url, timeline.failure),
    ]
    return _fit(head, tail, timeline)


def render_check_output(run: Run, timeline: Timeline, *, now: float) -> tuple[str, str, str]:
    """Return (title, summary, text) for the run's check run."""
    view = _View.of(run, timeline, now)
    title = view.phase.title
    reason = failure_reason(run, timeline)
    if view.phase is Phase.FAILED and reason:
        title = f"{title}: {' '.join(redact(reason).split())}"
    summary = _join([_info_line(run, view), _result_block(run, view, None, timeline.failure)])
    tail = [_message_block(timeline.last_message), _previews_block(run, timeline)]
    return _clip(title, TITLE_CHARS), summary, _fit([_summary_list(timeline)], tail, timeline)


def render_status_reply(run: Run | None, timeline: Timeline | None, *, now: float) -> str:
    """Return the short answer to `/box status`."""
    if run is None:
        return NO_RUN_REPLY
    view = _View.of(run, timeline, now)
    box = _code(run.box_id) if run.box_id else "not created yet"
    lines = [f"**{view.phase.title}** · box {box} · {view.elapsed}"]
    if timeline is not None and timeline.steps:
        lines.append(f"Last step: {_step_line(timeline.steps[-1])}")
    if run.comment_id is not None:
        lines.append(TRACKING_HINT.format(comment_id=run.comment_id))
    if view.final:
        lines.append(_hint(view.phase, run))
    return "\n\n".join(lines)


def render_review_answer(run: Run, timeline: Timeline, pr_number: int) -> str:
    """Return the answer to a review's request once its prompt ended: outcome and commits."""
    phase = PROMPT_PHASES.get(timeline.prompt_status or "", Phase.INTERRUPTED)
    lines = [REVIEW_OUTCOMES[phase]]
    if phase is Phase.FAILED and timeline.failure:
        lines[0] += f" {_inline(timeline.failure, DETAIL_CHARS)}."
    made = [c for c in timeline.commits if c.sha in timeline.prompt_commits][-SHOWN_COMMITS:]
    if made:
        lines.append("\n".join([REVIEW_COMMITS, *(f"- {_commit(step)}" for step in made)]))
    else:
        lines.append(REVIEW_NO_COMMIT)
    tracking = run.comment_id if run.number == pr_number else run.pr_comment_id
    if tracking is not None:
        url = f"https://github.com/{run.repo}/pull/{pr_number}#issuecomment-{tracking}"
        lines.append(TRACKING_LINK.format(url=url))
    return "\n\n".join(lines)


def render_failure(
    kind: str,
    message: str,
    *,
    setup_url: str | None = None,
    retry_at: float | None = None,
) -> str:
    """Return plain words for a failure: what happened and what to do next."""
    template = FAILURE_TEXT.get(kind, FAILURE_TEXT[FailureKind.INTERNAL])
    setup = SETUP_LINK.format(url=setup_url) if _safe_url(setup_url) else SETUP_FALLBACK
    retry = (
        time.strftime(RETRY_FORMAT, time.gmtime(math.ceil(retry_at / 60) * 60))
        if retry_at is not None
        else RETRY_FALLBACK
    )
    text = template.format(setup=setup, retry=retry)
    if kind in FAILURE_TEXT and kind != FailureKind.INTERNAL and message.strip():
        text += "\n\n" + DETAILS_LINE.format(message=_inline(message, DETAIL_CHARS))
    return text


# -- sections ----------------------------------------------------------------------------------


def _fit(head: list[str], tail: list[str], timeline: Timeline) -> str:
    """Join the sections, dropping the oldest steps until the text fits the budget."""
    shown = len(timeline.steps)
    text = _join([*head, _steps_block(timeline, shown), *tail])
    while _size(text) > BUDGET and shown > 0:
        shown //= 2
        text = _join([*head, _steps_block(timeline, shown), *tail])
    return text


def _notice_block(notice: str | None) -> str:
    if not notice or not notice.strip():
        return ""
    return _quote(_clip(redact(notice.strip()), NOTICE_CHARS).split("\n"))


def _info_line(run: Run, view: _View, pr_url: str | None = None) -> str:
    requester = f"@{run.requester}" if LOGIN.fullmatch(run.requester) else _inline(run.requester)
    model = f"model {_code(run.model)}" if run.model else "model: account default"
    if run.reasoning_effort:
        model += f", effort {_code(run.reasoning_effort)}"
    box = _code(run.box_id) if run.box_id else "not created yet"
    pull = f" · Pull request {pr_url}" if _safe_url(pr_url) else ""
    return (
        f"Asked by {requester} · Agent {_code(run.provider)} ({model}) · "
        f"Time {view.elapsed} · Box {box}{pull}"
    )


def _desktop_line(run: Run, desktop_url: str | None) -> str:
    # Desktop links control the box: never shown in a public repository.
    if not run.repo_private or desktop_url is None or not _safe_url(desktop_url):
        return ""
    return DESKTOP_LINE.format(url=desktop_url)


def _summary_list(timeline: Timeline) -> str:
    items = []
    files = timeline.files_edited
    if files:
        hidden = len(files) - SHOWN_FILES
        more = (
            " and more"
            if timeline.other_file_edits
            else (f" and {hidden} more" if hidden > 0 else "")
        )
        names = ", ".join(_code(path) for path in files[:SHOWN_FILES])
        items.append(f"**Files edited:** {names}{more}")
    if timeline.tests:
        tests = ", ".join(_command(step) for step in timeline.tests[-SHOWN_TESTS:])
        items.append(f"**Tests:** {tests}")
    if timeline.commits:
        commits = ", ".join(_commit(step) for step in timeline.commits[-SHOWN_COMMITS:])
        items.append(f"**Commits:** {commits}")
    return "\n".join(f"- {item}" for item in items)


def _steps_block(timeline: Timeline, shown: int) -> str:
    if not timeline.steps:
        return ""
    steps = timeline.steps[len(timeline.steps) - shown :] if shown else []
    hidden = timeline.steps_dropped + len(timeline.steps) - len(steps)
    lines = [STEPS_HEADING]
    if hidden:
        lines.append(HIDDEN_STEPS.format(count=hidden))
    lines.extend(f"- {_step_line(step)}" for step in steps)
    return "\n".join(lines)


def _step_line(step: Step) -> str:
    times = f" (×{step.count})" if step.count > 1 else ""
    if step.kind is StepKind.COMMAND:
        return _command(step)
    if step.kind is StepKind.EDIT:
        return f"✏️ Edited {_code(step.text)}{times}"
    if step.kind is StepKind.COMMIT:
        return f"📌 Committed {_commit(step)}"
    return f"🔧 Used {_code(step.text)}{times}"


def _command(step: Step) -> str:
    mark = {True: "✅", False: "❌", None: "▶️"}[step.ok]
    code = f" (exit {step.exit_code})" if step.exit_code is not None else ""
    return f"{mark} {_code(step.text)}{code}"


def _commit(step: Step) -> str:
    sha = _code(step.sha or "commit")
    link = f"[{sha}]({step.url})" if _safe_url(step.url) else sha
    branch = f" on {_code(step.branch)}" if step.branch else ""
    pushed = {True: " (pushed)", False: " (not pushed)", None: ""}[step.pushed]
    return f"{link} {_inline(step.text)}{branch}{pushed}"


def _message_block(message: str | None) -> str:
    if not message or not message.strip():
        return ""
    text = _untrusted(message.strip().replace("\r\n", "\n").replace("\r", "\n"))
    trimmed = len(text) > MESSAGE_CHARS
    text = HTML_START.sub("<" + WORD_JOINER, text[:MESSAGE_CHARS])
    lines = _unmention_lines(text.split("\n"))
    if trimmed:
        lines += ["", TRIMMED_NOTE]
    return f"{MESSAGE_HEADING}\n\n{_quote(lines)}"


def _previews_block(run: Run, timeline: Timeline) -> str:
    shown = (_preview_url(url, run.repo_private) for url in timeline.previews)
    urls = list(dict.fromkeys(url for url in shown if url is not None))[-SHOWN_PREVIEWS:]
    if not urls:
        return ""
    lines = [PREVIEW_HEADING, *(f"- <{url}>" for url in urls)]
    if not run.repo_private and any(strip_token_query(u) != u for u in timeline.previews):
        lines.append(TOKEN_REMOVED_NOTE)
    return "\n".join(lines)


def _preview_url(url: str, private: bool) -> str | None:
    stripped = strip_token_query(url)
    if redact(stripped) != stripped or not _safe_url(url):
        return None
    return url if private else stripped


def failure_reason(run: Run, timeline: Timeline | None) -> str | None:
    """Why the run (or its last prompt) failed, when something said."""
    if run.state is RunState.FAILED:
        return run.reason
    return timeline.failure if timeline is not None else None


def _result_block(run: Run, view: _View, pr_url: str | None, failure: str | None = None) -> str:
    if not view.final:
        return ""
    result = RESULT_WORDS[view.phase].format(duration=format_duration(view.seconds))
    if view.phase in (Phase.FAILED, Phase.ARCHIVED):
        why = run.reason if run.state is not RunState.IDLE else failure
        reason = _inline(why, DETAIL_CHARS) if why else ""
        result += f": {reason}" if reason else ""
        result += "" if result.endswith((".", "!", "?")) else "."
    lines = [RESULT_HEADING, result]
    if _safe_url(pr_url):
        lines.append(f"**Pull request:** {pr_url}")
    lines.append(_hint(view.phase, run))
    return "\n\n".join(lines)


def _hint(phase: Phase, run: Run) -> str:
    if phase is Phase.ARCHIVED:
        return RESUME_HINT
    return RETRY_HINT if run.state is RunState.FAILED else FOLLOW_UP_HINT


# -- escaping ----------------------------------------------------------------------------------


def _untrusted(text: str) -> str:
    """Return *text* redacted, without control or bidi characters or a copy of our marker."""
    text = UNSAFE_CHARS.sub("", redact(text))
    return text.replace(MARKER_TEXT, MARKER_TEXT.replace(":", ":" + WORD_JOINER))


def _inline(text: str, limit: int = LINE_CHARS) -> str:
    """Return untrusted text as one line of escaped plain markdown."""
    text = _clip(" ".join(_untrusted(text).split()), limit)
    return _unmention(INLINE_SPECIAL.sub(r"\\\1", text))


def _code(text: str, limit: int = LINE_CHARS) -> str:
    """Return untrusted text as a one-line code span that nothing inside can close."""
    lines = [line.strip() for line in _untrusted(text).splitlines() if line.strip()]
    text = _clip(" ↵ ".join(lines), limit) or " "
    longest = max((len(run) for run in BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _unmention_lines(lines: Iterable[str]) -> list[str]:
    """Neutralise mentions outside code; close a code fence the text left open."""
    out: list[str] = []
    fence: str | None = None
    for line in lines:
        match = FENCE.match(line)
        if fence is None:
            fence = match.group(1) if match else None
            out.append(line if match else _unmention_text(line))
        else:
            if match and _closes(match.group(1), fence) and not line[match.end() :].strip():
                fence = None
            out.append(line)
    if fence is not None:
        out.append(fence)
    return out


def _closes(candidate: str, fence: str) -> bool:
    return candidate[0] == fence[0] and len(candidate) >= len(fence)


def _unmention_text(line: str) -> str:
    parts, start = [], 0
    for span in CODE_SPAN.finditer(line):
        parts += [_unmention(line[start : span.start()]), span.group(0)]
        start = span.end()
    return "".join([*parts, _unmention(line[start:])])


def _unmention(text: str) -> str:
    return MENTION.sub("@" + WORD_JOINER, text)


def _quote(lines: Iterable[str]) -> str:
    return "\n".join(f"> {line}".rstrip() for line in lines)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _safe_url(url: str | None) -> bool:
    return url is not None and SAFE_URL.fullmatch(url) is not None


def _join(blocks: Iterable[str]) -> str:
    return "\n\n".join(block for block in blocks if block)


def _size(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2
