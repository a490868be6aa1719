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
edits when the text did not change.

Each prompt of a run is a section headed by who asked and their instructions,
newest first, the older ones collapsed in `<details>`. Two times are shown, once
each: how long the agent worked on a prompt (from its events, on Box's clock; to
the minute while it works, exactly once it ended) and, once the run is over, how
long the box was up.
"""

from __future__ import annotations

import dataclasses
import enum
import html
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.models import MARKER_TEXT, BoxReport, PromptKind, PromptState, QueuedPrompt, Run, RunState
from bot.redact import redact, strip_token_query
from bot.runs.prompt import sanitize
from bot.runs.review import given_instructions
from bot.runs.timeline import PromptLog, Step, StepKind, Timeline

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
INSTRUCTIONS_CHARS = 1_000
EARLIER_INSTRUCTIONS_CHARS = 300
SUMMARY_SNIPPET_CHARS = 60
INSTRUCTIONS_READ_FACTOR = 4

WORD_JOINER = "\u2060"
TRIMMED_NOTE = "_…(trimmed)_"
MESSAGE_HEADING = "### Latest message from the agent"
STEPS_HEADING = "### What the agent did"
PREVIEW_HEADING = "### Preview"
RESULT_HEADING = "### Result"
HIDDEN_STEPS = "_Earlier steps not shown: {count}._"
HIDDEN_PROMPTS = "_Earlier prompts not shown: {count}._"
ASKED = "💬 {who} asked"
ASKED_AGAIN = "🔁 {who} asked to run it again"
CI_SENT_BACK = "🔁 Failing checks sent back to the box"
ASKED_UNKNOWN = "💬 A follow-up"
QUEUED = "⏳ queued"
SENT = "📨 sent to the box"
WORKING_FOR = "🛠️ working for {duration}"
WORKING_NOW = "🛠️ working"
PREVIEWS_GONE = "_The box is archived, so these previews are gone._"
BOX_BACK = (
    "💤 The box is back and waits for instructions. "
    "To give it work, comment `/box fix <instructions>`."
)
TOKEN_REMOVED_NOTE = (
    "_Access tokens are removed from preview links in public repositories; "
    "a protected preview asks you to sign in to Box._"
)
DESKTOP_LINE = "🖥️ **Desktop:** <{url}> (a private link: anyone who has it can use the box)"
COST_TEXT = "Box time {time} · ${dollars:.2f}"
COST_UNKNOWN = "Time {elapsed} · cost unknown (this Box does not report usage)"
TODAY_TEXT = "This repository today: ${dollars:.2f}"
SETUP_TEXT = {
    "pending": "⚙️ **Setup:** the box is setting up (the `setup` script of `.github/box.yml`)…",
    "running": "⚙️ **Setup:** the box is setting up (the `setup` script of `.github/box.yml`)…",
    "done": "⚙️ **Setup:** done",
    "failed": "⚠️ **Setup failed**; the agent was told and works without it:",
}
SETUP_ERROR_CHARS = 1_000
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
# A line that is only a label and a value, e.g. "**Pull request:** <url>", "- Tests: 12 passed".
LABELLED_LINE = re.compile(
    r"(?i)[\s>*_#-]*(?:(?P<label>pull request|pr|preview|tests?|test results)\b[\s*_`]*:"
    r"[\s*_`]*)?(?P<rest>\S.*?)?[\s.]*"
)
LINK_VALUE = re.compile(r"[<*_`\[(]*(https?://[^\s<>]+?)[>*_`\])]*")


class Phase(enum.Enum):
    """What the tracking comment's header says, as (emoji, words)."""

    STARTING = ("⏳", "Starting a box")
    RESUMING = ("⏳", "Resuming the box")
    READY = ("📦", "Box ready")
    FOLLOW_UP = ("📨", "Sending a follow-up")
    WORKING = ("🛠️", "Working")
    WAITING = ("💤", "Waiting for instructions")
    RESUMED = ("💤", "Box resumed, waiting for instructions")
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
# How a prompt ended, as (result line, older section's summary); {duration} is its work time.
ENDED_WORDS = {
    "finished": ("✅ Finished in {duration}", "✅ finished in {duration}"),
    "failed": ("❌ Failed after {duration}", "❌ failed after {duration}"),
    "interrupted": ("⏹️ Interrupted after {duration}", "⏹️ interrupted after {duration}"),
}
ENDED_WITHOUT_TIME = {
    "finished": ("✅ Finished", "✅ finished"),
    "failed": ("❌ Failed", "❌ failed"),
    "interrupted": ("⏹️ Interrupted", "⏹️ interrupted"),
}
RUN_FAILED = "❌ Failed after {duration}"
BOX_ENDED = "🗄️ {reason} The box was up for {duration}."
BOX_ARCHIVED = "Box archived."


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
    INVALID_SETUP_SCRIPT = "invalid_setup_script"
    UNKNOWN_ENVIRONMENT = "unknown_environment"
    INVALID_ENV = "invalid_env"
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
    FailureKind.INVALID_SETUP_SCRIPT: (
        "⚠️ **Box refused the setup script.** Fix `setup` in `.github/box.yml` (or the "
        "operator's `BOX_SETUP_FILE`): Box takes a text script of at most 64 KiB. Then comment "
        "`/box fix` to try again."
    ),
    FailureKind.UNKNOWN_ENVIRONMENT: (
        "⚠️ **Box has no such environment.** Fix `environment` in `.github/box.yml` (or the "
        "operator's `BOX_ENVIRONMENT`) to name an environment of the Box account. Then comment "
        "`/box fix` to try again."
    ),
    FailureKind.INVALID_ENV: (
        "⚠️ **Box refused the box's variables.** Fix `env` in `.github/box.yml`: names of "
        "letters, digits and `_`, none of Box's own, at most 100 and 64 KiB in all. Then comment "
        "`/box fix` to try again."
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
    seconds: int  # since the run was asked for: until it ended, or until now

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
    """Return what the header should say for *run*.

    A box that already worked is not started again: it is resumed (after an archive) or
    handed the follow-up; a box resumed with nothing asked waits, whatever came before.
    """
    if run.state is RunState.FAILED:
        return Phase.FAILED
    if run.state is RunState.ARCHIVED:
        return Phase.ARCHIVED
    if run.state is RunState.WORKING:
        return Phase.WORKING
    back = timeline is not None and timeline.box_back
    worked = timeline is not None and timeline.prompt_id is not None
    if run.state is RunState.IDLE:
        if back:
            return Phase.RESUMED
        status = timeline.prompt_status if timeline is not None else None
        return PROMPT_PHASES.get(status or "", Phase.WAITING)
    if run.state is RunState.PROMPTING:
        return Phase.FOLLOW_UP if worked and not back else Phase.READY
    if back:
        return Phase.RESUMING
    return Phase.FOLLOW_UP if worked else Phase.STARTING


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


@dataclass(frozen=True)
class _Section:
    """One prompt of the run: what was asked (from the store) and what the box did with it."""

    log: PromptLog | None
    asked: QueuedPrompt | None
    first: bool = False  # the run's first prompt (asked by the run's requester)

    @property
    def status(self) -> str | None:
        """Box's status of the prompt, or where the app is with it before Box has it."""
        if self.log is not None:
            return self.log.status
        if self.asked is None:
            return None
        if self.asked.state is PromptState.QUEUED:
            return "queued"
        return "sent" if self.asked.state in SENDING_STATES else self.asked.state.value

    @property
    def ended(self) -> bool:
        return self.status in ENDED_WORDS

    def heading(self, run: Run) -> str:
        """Who asked, in words."""
        asked = self.asked
        if asked is not None and asked.kind is PromptKind.CI_FIX:
            return CI_SENT_BACK
        login = asked.requester if asked is not None else (run.requester if self.first else None)
        if login is None:
            return ASKED_UNKNOWN
        who = f"@{login}" if LOGIN.fullmatch(login) else _inline(login)
        again = asked is not None and asked.kind is PromptKind.RERUN
        return (ASKED_AGAIN if again else ASKED).format(who=who)

    def outcome(self, result: bool) -> str:
        """How the prompt ended with its work time: a result line, or a summary's words."""
        status = self.status or ""
        seconds = self.log.work_seconds if self.log is not None else None
        if seconds is None:
            return ENDED_WITHOUT_TIME[status][0 if result else 1]
        return ENDED_WORDS[status][0 if result else 1].format(duration=format_duration(seconds))

    def progress(self, run: Run, now: float) -> str:
        """Where a prompt that has not ended is, with how long it has worked ("" if unknown)."""
        if self.status == "queued":
            return QUEUED
        if self.status == "sent":
            return SENT
        if run.state is not RunState.WORKING:
            return ""
        start = self.log.first_ms / 1000 if self.log and self.log.first_ms else None
        start = start or (self.asked.sent_at if self.asked is not None else None)
        if start is None:
            return WORKING_NOW
        return WORKING_FOR.format(duration=format_rough(max(0, round(now - start))))

    def instructions(self, limit: int) -> str:
        """The instructions as the box read them (without hidden comments), quoted."""
        asked = self.asked
        given = given_instructions(asked) if asked is not None else ""
        if asked is None or asked.kind is PromptKind.CI_FIX or not given.strip():
            return ""
        return _quote(_quoted_lines(_readable(given, limit), limit))


SENDING_STATES = frozenset({PromptState.SENDING, PromptState.SENT})
WAITING_STATES = frozenset({PromptState.QUEUED, *SENDING_STATES})


def _sections(timeline: Timeline, prompts: Sequence[QueuedPrompt]) -> list[_Section]:
    """Every prompt of the run, oldest first: those Box had, then those still on their way."""
    by_box_id = {p.box_prompt_id: p for p in prompts if p.box_prompt_id}
    known = {log.id for log in timeline.prompts}
    unseen = [p for p in prompts if p.box_prompt_id not in known]
    sections = [
        # Ended before the timeline's oldest prompt (whose log it no longer keeps).
        *(_Section(None, p) for p in unseen if p.state not in WAITING_STATES),
        *(_Section(timeline.log_of(log.id), by_box_id.get(log.id)) for log in timeline.prompts),
        *(_Section(None, p) for p in unseen if p.state in WAITING_STATES),
    ]
    if not sections:  # a timeline that saw no prompt: its steps and status are the current one's
        current = PromptLog("", timeline.prompt_status, timeline.failure)
        sections = [_Section(dataclasses.replace(current, dropped=timeline.steps_dropped), None)]
    return [dataclasses.replace(sections[0], first=True), *sections[1:]]


# -- the tracking comment --------------------------------------------------------------------


def render_comment(
    run: Run,
    timeline: Timeline,
    *,
    now: float,
    prompts: Sequence[QueuedPrompt] = (),
    pr_url: str | None = None,
    desktop_url: str | None = None,
    notice: str | None = None,
    box: BoxReport | None = None,
) -> str:
    """Return the tracking comment for *run*, under GitHub's size limit.

    *prompts* are the run's prompts from the store (who asked what); each gets its own
    section, newest first, the older ones collapsed.
    """
    view = _View.of(run, timeline, now)
    sections = _sections(timeline, prompts)
    head = [
        f"{run.marker}\n## {view.phase.title}",
        _notice_block(notice),
        _info_line(run, pr_url, cost_text(box, view)),
        _setup_block(box),
        _desktop_line(run, desktop_url),
        _summary_list(timeline),
    ]
    links = [url for url in (pr_url or "", *timeline.previews) if _safe_url(url)]
    tail = [
        _message_block(timeline.last_message, links, bool(timeline.tests)),
        _previews_block(run, timeline),
        _result_block(run, view, sections[-1]),
    ]
    told = view.final and run.state is not RunState.FAILED  # the result says how it ended
    return _fit(head, tail, timeline, run, sections, now, told)


def render_check_output(
    run: Run, timeline: Timeline, *, now: float, box: BoxReport | None = None
) -> tuple[str, str, str]:
    """Return (title, summary, text) for the run's check run: the prompt it is about."""
    view = _View.of(run, timeline, now)
    if run.state.active and run.state is not RunState.WORKING:
        # The check is its prompt's: while the box is up it says how the prompt ended,
        # whatever the run does next (resume, follow-up) until the next prompt's own check.
        phase = PROMPT_PHASES.get(timeline.prompt_status or "", Phase.WAITING)
        view = dataclasses.replace(view, phase=phase)
    title = view.phase.title
    reason = failure_reason(run, timeline)
    if view.phase is Phase.FAILED and reason:
        title = f"{title}: {' '.join(redact(reason).split())}"
    newest = _sections(timeline, ())[-1]
    cost = cost_text(box, view)
    summary = _join(
        [_info_line(run, None, cost), _setup_block(box), _result_block(run, view, newest)]
    )
    links = [url for url in timeline.previews if _safe_url(url)]
    tail = [
        _message_block(timeline.last_message, links, bool(timeline.tests)),
        _previews_block(run, timeline),
    ]
    steps = [step for step in timeline.steps if step.prompt == timeline.prompt_id]
    text = _fit_steps([_summary_list(timeline)], tail, steps, newest)
    return _clip(title, TITLE_CHARS), summary, text


def render_status_reply(
    run: Run | None,
    timeline: Timeline | None,
    *,
    now: float,
    box_report: BoxReport | None = None,
    repo_today: float | None = None,
) -> str:
    """Return the short answer to `/box status`; *repo_today* is the repository's spend today."""
    if run is None:
        return NO_RUN_REPLY
    view = _View.of(run, timeline, now)
    box = _code(run.box_id) if run.box_id else "not created yet"
    lines = [f"**{view.phase.title}** · box {box} · {view.elapsed} since it was asked for"]
    spend = [cost_text(box_report, view)]
    if repo_today is not None:
        spend.append(TODAY_TEXT.format(dollars=repo_today))
    if any(spend):
        lines.append(" · ".join(filter(None, spend)))
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
    made = [c for c in timeline.commits if c.prompt == timeline.prompt_id][-SHOWN_COMMITS:]
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


def _fit(
    head: list[str],
    tail: list[str],
    timeline: Timeline,
    run: Run,
    sections: list[_Section],
    now: float,
    told: bool,
) -> str:
    """Join the parts, dropping the oldest steps, then the oldest prompts, until they fit."""
    blocks = _prompt_blocks(run, sections, timeline, now, told)  # newest first
    shown, kept = len(timeline.steps), len(blocks)

    def text() -> str:
        visible = {id(step) for step in timeline.steps[len(timeline.steps) - shown :]}
        listed = [block.text(visible) for block in blocks[:kept]]
        if kept < len(blocks):
            listed.append(HIDDEN_PROMPTS.format(count=len(blocks) - kept))
        return _join([*head, *listed, *tail])

    body = text()
    while _size(body) > BUDGET and shown > 0:
        shown //= 2
        body = text()
    while _size(body) > BUDGET and kept > 1:
        kept //= 2
        body = text()
    return body


def _fit_steps(head: list[str], tail: list[str], steps: list[Step], section: _Section) -> str:
    """Join the parts with the newest of *steps* that fit."""
    dropped = section.log.dropped if section.log is not None else 0
    lines = [f"- {_step_line(step)}" for step in steps]
    shown = len(steps)

    def text() -> str:
        listed = _step_list(lines[len(lines) - shown :], dropped + len(lines) - shown)
        return _join([*head, f"{STEPS_HEADING}\n\n{listed}" if listed else "", *tail])

    body = text()
    while _size(body) > BUDGET and shown > 0:
        shown //= 2
        body = text()
    return body


@dataclass(frozen=True)
class _Block:
    """A prompt's section as written, but for which of its steps fit."""

    opening: str  # its heading, or the `<details>` and summary of an older prompt
    instructions: str
    steps: list[tuple[Step, str]]  # each with its line
    dropped: int
    collapsed: bool

    def text(self, visible: set[int]) -> str:
        lines = [line for step, line in self.steps if id(step) in visible]
        listed = _step_list(lines, self.dropped + len(self.steps) - len(lines))
        inner = _join([self.instructions, listed])
        if not self.collapsed:
            return _join([self.opening, inner])
        return (
            f"{self.opening}\n\n{inner}\n\n</details>" if inner else f"{self.opening}\n</details>"
        )


def _prompt_blocks(
    run: Run, sections: list[_Section], timeline: Timeline, now: float, told: bool
) -> list[_Block]:
    """The newest prompt as a section of its own, then the older ones, each collapsed.

    How the newest ended is said in its heading unless the result says it (*told*).
    """
    blocks = []
    for n, section in enumerate(reversed(sections)):
        steps = [
            (step, f"- {_step_line(step)}")
            for step in timeline.steps
            if (step.prompt or "") == _log_id(section)
        ]
        dropped = section.log.dropped if section.log is not None else 0
        heading = section.heading(run)
        if n == 0:
            if not section.ended:
                state = section.progress(run, now)
            else:
                state = "" if told else section.outcome(False)
            opening = f"### {heading}" + (f" · {state}" if state else "")
            instructions = section.instructions(INSTRUCTIONS_CHARS)
        else:
            state = section.outcome(False) if section.ended else section.progress(run, now)
            summary = f"{heading}{_snippet(section)}" + (f" · {state}" if state else "")
            opening = f"<details>\n<summary>{html.escape(summary, quote=False)}</summary>"
            instructions = section.instructions(EARLIER_INSTRUCTIONS_CHARS)
        blocks.append(_Block(opening, instructions, steps, dropped, collapsed=n > 0))
    return blocks


def _log_id(section: _Section) -> str | None:
    return section.log.id if section.log is not None else None


def _snippet(section: _Section) -> str:
    """The start of a prompt's instructions, for the summary line of a collapsed section."""
    asked = section.asked
    given = given_instructions(asked) if asked is not None else ""
    if asked is None or asked.kind is PromptKind.CI_FIX or not given.strip():
        return ""
    text = _readable(given, SUMMARY_SNIPPET_CHARS)
    text = _clip(" ".join(_untrusted(text).split()), SUMMARY_SNIPPET_CHARS)
    return f": {_unmention(text)}"


def _readable(instructions: str, limit: int) -> str:
    """Instructions as the box read them (no hidden comments), from enough of their start.

    They were posted in a public comment already; only the start is shown, so only a part
    a few times that long is cleaned (a long text would otherwise be cleaned in full).
    """
    return sanitize(instructions[: limit * INSTRUCTIONS_READ_FACTOR]).strip()


def _step_list(lines: list[str], hidden: int) -> str:
    """Step lines, after a note of how many earlier ones are not shown."""
    note = [HIDDEN_STEPS.format(count=hidden), ""] if hidden else []
    return "\n".join([*note, *lines]).strip()


def _notice_block(notice: str | None) -> str:
    if not notice or not notice.strip():
        return ""
    return _quote(_clip(redact(notice.strip()), NOTICE_CHARS).split("\n"))


def cost_text(box: BoxReport | None, view: _View) -> str:
    """Return the box's billed time and dollars, e.g. `Box time 23 min · $0.38` ("" without
    a box); to the minute while the box runs, so it changes at most once a minute. A Box
    that does not report usage gets the run's elapsed time and an unknown cost."""
    if box is None:
        return ""
    if box.dollars is None:
        return COST_UNKNOWN.format(elapsed=view.elapsed)
    seconds = round(box.seconds)
    shown = format_duration(seconds) if box.final else format_rough(seconds)
    return COST_TEXT.format(time=shown, dollars=box.dollars)


def _setup_block(box: BoxReport | None) -> str:
    if box is None or box.setup_status not in SETUP_TEXT:
        return ""
    line = SETUP_TEXT[box.setup_status]
    if box.setup_status != "failed":
        return line
    return line + "\n\n" + _code_block(box.setup_error or "(Box gave no error text)")


def _code_block(text: str) -> str:
    """Return untrusted multi-line text as a fenced code block that nothing inside can close."""
    text = _untrusted(text.strip().replace("\r\n", "\n").replace("\r", "\n"))
    text = HTML_START.sub("<" + WORD_JOINER, _clip(text, SETUP_ERROR_CHARS))
    longest = max((len(run) for run in BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _info_line(run: Run, pr_url: str | None = None, cost: str = "") -> str:
    """The run's facts in one line: the agent, the box, what it cost and the pull request."""
    model = f"model {_code(run.model)}" if run.model else "model: account default"
    if run.reasoning_effort:
        model += f", effort {_code(run.reasoning_effort)}"
    box = _code(run.box_id) if run.box_id else "not created yet"
    parts = [f"Agent {_code(run.provider)} ({model})", f"Box {box}"]
    if cost:
        parts.append(cost)
    if _safe_url(pr_url):
        parts.append(f"Pull request {pr_url}")
    return " · ".join(parts)


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


def _message_block(message: str | None, links: Sequence[str], tests_shown: bool) -> str:
    """The agent's latest message, quoted, without lines that repeat what is shown above."""
    if not message or not message.strip():
        return ""
    lines = _quoted_lines(message.strip(), MESSAGE_CHARS, links, tests_shown)
    if not any(line.strip() for line in lines):
        return ""
    return f"{MESSAGE_HEADING}\n\n{_quote(lines)}"


def _quoted_lines(
    text: str, limit: int, links: Sequence[str] = (), tests_shown: bool = False
) -> list[str]:
    """Untrusted text as lines ready to quote: redacted, inert, its code fences closed."""
    text = _untrusted(text.replace("\r\n", "\n").replace("\r", "\n"))
    trimmed = len(text) > limit
    text = HTML_START.sub("<" + WORD_JOINER, text[:limit])
    lines = _unmention_lines(text.split("\n"), links, tests_shown)
    while lines and not lines[0].strip():
        del lines[0]
    while lines and not lines[-1].strip():
        del lines[-1]
    if trimmed:
        lines += ["", TRIMMED_NOTE]
    return lines


def _previews_block(run: Run, timeline: Timeline) -> str:
    shown = (_preview_url(url, run.repo_private) for url in timeline.previews)
    urls = list(dict.fromkeys(url for url in shown if url is not None))[-SHOWN_PREVIEWS:]
    if not urls:
        return ""
    if not run.state.active:  # the box is archived or stopped: the links lead nowhere now
        return "\n".join([PREVIEW_HEADING, "", PREVIEWS_GONE, "", *(f"- {_code(u)}" for u in urls)])
    lines = [PREVIEW_HEADING, *(f"- <{url}>" for url in urls)]
    if not run.repo_private and any(strip_token_query(u) != u for u in timeline.previews):
        lines += ["", TOKEN_REMOVED_NOTE]
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


def _result_block(run: Run, view: _View, newest: _Section) -> str:
    """How the newest prompt ended (its work time) and how the box's life ended (its length)."""
    if view.phase is Phase.RESUMED:
        return f"{RESULT_HEADING}\n\n{BOX_BACK}"
    if not view.final:
        return ""
    lines = [RESULT_HEADING]
    if run.state is RunState.FAILED:
        failed = RUN_FAILED.format(duration=format_duration(view.seconds))
        lines.append(_with_reason(failed, run.reason))
    elif newest.ended:
        failure = newest.log.failure if newest.log and newest.status == "failed" else None
        lines.append(_with_reason(newest.outcome(True), failure))
    if run.state is RunState.ARCHIVED:
        reason = _inline(run.reason, DETAIL_CHARS) if run.reason else ""
        reason = (reason[:1].upper() + reason[1:]) if reason else BOX_ARCHIVED
        reason += "" if reason.endswith((".", "!", "?")) else "."
        lines.append(BOX_ENDED.format(reason=reason, duration=format_duration(view.seconds)))
    lines.append(_hint(view.phase, run))
    return "\n\n".join(lines)


def _with_reason(words: str, reason: str | None) -> str:
    text = f"{words}: {_inline(reason, DETAIL_CHARS)}" if reason and reason.strip() else words
    return text if text.endswith((".", "!", "?")) else text + "."


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


def _unmention_lines(
    lines: Iterable[str], links: Sequence[str] = (), tests_shown: bool = False
) -> list[str]:
    """Neutralise mentions outside code; close a code fence the text left open.

    Lines outside code that only repeat a link shown elsewhere (the pull request, a
    preview) or the tests the summary lists are left out.
    """
    out: list[str] = []
    fence: str | None = None
    for line in lines:
        match = FENCE.match(line)
        if fence is None:
            fence = match.group(1) if match else None
            if not match and _repeats(line, links, tests_shown):
                continue
            out.append(line if match else _unmention_text(line))
        else:
            if match and _closes(match.group(1), fence) and not line[match.end() :].strip():
                fence = None
            out.append(line)
    if fence is not None:
        out.append(fence)
    return out


def _repeats(line: str, links: Sequence[str], tests_shown: bool) -> bool:
    """Whether a line of the agent's text only says what the comment shows elsewhere."""
    match = LABELLED_LINE.fullmatch(line.replace(WORD_JOINER, ""))
    if match is None or match.group("rest") is None:
        return False
    if (match.group("label") or "").lower().startswith("test"):
        return tests_shown
    url = LINK_VALUE.fullmatch(match.group("rest"))
    return url is not None and _page(url.group(1)) in {_page(link) for link in links}


def _page(url: str) -> str:
    """A URL without its query, fragment or trailing slash (a token may have been masked)."""
    return re.split(r"[?#]", url, maxsplit=1)[0].rstrip("/")


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
