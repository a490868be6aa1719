"""The run lifecycle: from a maintainer's request to a box that works and reports back.

Each step records its result in the store before the next begins, so a
restart resumes a run where it stopped without creating a second box or
sending a prompt twice. One asyncio task drives each run that has work.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cachetools
import gidgethub

from bot.box.client import (
    BoxAPIError,
    BoxBillingError,
    BoxClient,
    BoxConflictError,
    BoxNotFoundError,
    BoxRateLimitedError,
    BoxRepoNotAvailableError,
)
from bot.box.models import (
    TERMINAL_PROMPT_STATUSES,
    WORKING_BOX_STATES,
    BoxState,
    PromptStatus,
    ResponseEvent,
    event_cursor,
)
from bot.box.models import Limits as BoxLimits
from bot.config.loader import ConfigLoader
from bot.config.repo import EffectiveConfig, RepoConfigError, format_problems
from bot.github.checks import CONCLUSIONS, Checks
from bot.github.client import GitHubAppAuth
from bot.github.permissions import PermissionChecker
from bot.github.tracker import Tracker
from bot.logs import bind, detached
from bot.models import ACTIVE_STATES, PromptKind, PromptState, QueuedPrompt, Run, RunState
from bot.runs.context import gather_context
from bot.runs.limits import Limit, LimitHit, describe_hit, limits_for
from bot.runs.prompt import PromptContext, build_prompt
from bot.runs.render import render_check_output, render_comment, render_failure
from bot.runs.review_reply import answer_review
from bot.runs.timeline import Timeline
from bot.settings import Settings
from bot.store.sqlite import CIFixClaim, CIFixOutcome, CreateOutcome, PendingStop, Store

log = logging.getLogger(__name__)

RESUMABLE = (
    RunState.REQUESTED,
    RunState.PROVISIONING,
    RunState.PROMPTING,
    RunState.WORKING,
    RunState.IDLE,
)

BEFORE_WORK = frozenset({RunState.REQUESTED, RunState.PROVISIONING, RunState.PROMPTING})
# A poll reads the prompt run and a page of events; the rest covers box checks and backlogs.
CALLS_PER_POLL = 3
EVENT_PAGE_SIZE = 100
EVENT_PAGES_PER_POLL = 5
# A prompt looked for after a restart counts if Box received it at most this long before
# the app began sending it (the two clocks may differ).
CLOCK_SKEW_SECONDS = 300.0
RUN_CONFIG_SECONDS = 60.0


class CallBudget:
    """At most *calls* Box calls in any *window* seconds; a call over it waits its turn."""

    def __init__(
        self, calls: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.calls, self.window, self.clock = max(1, calls), window, clock
        self._made: collections.deque[float] = collections.deque()

    async def spend(self) -> None:
        """Wait until one more call fits in the window, and count it."""
        while True:
            now = self.clock()
            while self._made and now - self._made[0] >= self.window:
                self._made.popleft()
            if len(self._made) < self.calls:
                self._made.append(now)
                return
            await asyncio.sleep(self._made[0] + self.window - now)


@dataclass(frozen=True)
class Timing:
    """How long to wait for boxes and how often to look at them."""

    ready_timeout: float = 900.0
    ready_poll: float = 3.0
    poll_interval: float = 5.0
    max_poll_interval: float = 30.0
    box_check_every: int = 6
    stop_retry_base: float = 30.0
    stop_retry_max: float = 1800.0
    budget_window: float = 60.0
    sweep_every: float = 300.0

    @classmethod
    def for_poll_interval(cls, interval: float) -> Timing:
        """Timing for `BOX_POLL_INTERVAL`: a quiet run slows to 6 intervals, never under 30 s."""
        return cls(poll_interval=interval, max_poll_interval=max(30.0, 6 * interval))

    @property
    def calls_per_window(self) -> int:
        """Box calls one run's watcher may make per `budget_window`."""
        return math.ceil(self.budget_window / self.poll_interval) * CALLS_PER_POLL


@dataclass(frozen=True)
class RunRequest:
    """Someone with write access asked for work on an issue or pull request."""

    installation_id: int
    repo_id: int
    repo: str
    repo_private: bool
    number: int
    is_pull_request: bool
    requester: str
    instructions: str
    trigger_key: str
    kind: PromptKind = PromptKind.INITIAL
    default_branch: str | None = None
    config: EffectiveConfig | None = None


class Outcome(enum.Enum):
    """What a request led to."""

    STARTED = "started"
    QUEUED = "queued as a follow-up"
    RESUMED = "resumed the archived box"
    DUPLICATE = "already handled"


class LimitReached(Exception):
    """A spending limit stopped the run before a box was started."""

    def __init__(self, hit: LimitHit) -> None:
        super().__init__(hit.limit.value)
        self.hit = hit


class BoxStartsUsedUp(Exception):
    """Box's limit on box starts per minute, hour or day is used up (`GET /limits`)."""

    def __init__(self, window: str, limit: int | None, retry_at: float) -> None:
        allowed = f"{limit} box starts" if limit is not None else "only so many box starts"
        super().__init__(f"Box allows {allowed} per {window} and they are used up")
        self.retry_at = retry_at


class BoxCannotStart(Exception):
    """`GET /limits` says the account cannot start boxes, for a reason Box names."""


class RunEnded(Exception):
    """The run was archived or failed meanwhile (by a command, a close, or another step)."""


class ReadyTimeout(Exception):
    """The box did not become ready in time."""


class BoxGone(Exception):
    """The box went to `error` or `archived` while the run needed it."""

    def __init__(self, state: str, *, started: bool = False) -> None:
        super().__init__(state)
        self.state = state
        self.started = started  # the box had been ready: it broke down, not failed to start


def new_run_id() -> str:
    """Return a short, unguessable run id."""
    return "run_" + secrets.token_hex(6)


class RunManager:
    """Starts, resumes and follows runs."""

    def __init__(
        self,
        store: Store,
        auth: GitHubAppAuth,
        box: BoxClient,
        settings: Settings,
        permissions: PermissionChecker,
        tracker: Tracker,
        checks: Checks,
        config: ConfigLoader,
        *,
        timing: Timing | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.auth = auth
        self.box = box
        self.settings = settings
        self.permissions = permissions
        self.tracker = tracker
        self.checks = checks
        self.config = config
        self.timing = timing or Timing.for_poll_interval(settings.box_poll_interval)
        self.clock = clock
        self.app_slug = ""
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wanted: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._stop_retries: dict[str, asyncio.Task[None]] = {}
        self._desktops: dict[str, str] = {}  # secret links, kept in memory only
        # The config a run starts with, read once for its first steps (trigger, limits,
        # prompt, desktop) instead of once each; later reads (at close) ask GitHub again.
        self._configs: cachetools.TTLCache[str, EffectiveConfig] = cachetools.TTLCache(
            maxsize=4096, ttl=RUN_CONFIG_SECONDS, timer=time.monotonic
        )
        self._sweeper: asyncio.Task[None] | None = None
        self._stopping = False

    # -- requests from handlers -------------------------------------------------------------

    async def request(self, req: RunRequest) -> tuple[Outcome, Run]:
        """Start a run, or queue the request for the run already active on that thread."""
        active = await self.store.active_run(req.repo_id, req.number)
        if active is not None:
            return await self._follow_up(active, req)
        latest = await self.store.latest_run(req.repo_id, req.number)
        if latest is not None and latest.state is RunState.ARCHIVED and latest.box_id:
            return await self._reactivate(latest, req)
        run = Run(
            id=new_run_id(),
            installation_id=req.installation_id,
            repo_id=req.repo_id,
            repo=req.repo,
            repo_private=req.repo_private,
            number=req.number,
            is_pull_request=req.is_pull_request,
            state=RunState.REQUESTED,
            requester=req.requester,
            provider=req.config.provider if req.config else self.settings.box_provider,
            model=req.config.model if req.config else self.settings.box_model,
            reasoning_effort=(
                req.config.reasoning_effort if req.config else self.settings.box_reasoning_effort
            ),
            ttl_seconds=req.config.ttl_seconds if req.config else self.settings.box_ttl_seconds,
            default_branch=req.default_branch,
            created_at=self.clock(),
            updated_at=self.clock(),
        )
        outcome, stored = await self.store.create_run(run, self._prompt(run.id, req))
        if outcome is CreateOutcome.CREATED and req.config is not None:
            self._configs[stored.id] = req.config
        if outcome is CreateOutcome.ACTIVE_EXISTS:
            return await self._follow_up(stored, req)
        try:
            stored = await self.tracker.ensure_comment(
                stored, self.render(stored), new=outcome is CreateOutcome.CREATED
            )
        finally:  # without the comment the run still goes on; a retry or the driver posts it
            self.kick(stored.id)
        return (Outcome.STARTED if outcome is CreateOutcome.CREATED else Outcome.DUPLICATE), stored

    def _prompt(self, run_id: str, req: RunRequest, kind: PromptKind | None = None) -> QueuedPrompt:
        return QueuedPrompt(
            seq=0,
            run_id=run_id,
            kind=kind or req.kind,
            requester=req.requester,
            instructions=req.instructions,
            state=PromptState.QUEUED,
            trigger_key=req.trigger_key,
        )

    async def _follow_up(self, run: Run, req: RunRequest) -> tuple[Outcome, Run]:
        if run.comment_id is None:  # an earlier try at this trigger could not post it
            run = await self.tracker.ensure_comment(run, self.render(run))
        if (
            req.kind is PromptKind.INITIAL
            and not req.instructions
            and req.trigger_key.startswith("label:")
        ):
            return Outcome.DUPLICATE, run
        kind = PromptKind.FOLLOW_UP if req.kind is PromptKind.INITIAL else req.kind
        queued = await self.store.queue_prompt(self._prompt(run.id, req, kind))
        self.kick(run.id)
        return (Outcome.QUEUED if queued else Outcome.DUPLICATE), run

    async def _reactivate(self, run: Run, req: RunRequest) -> tuple[Outcome, Run]:
        updated = await self._reopen(run)
        if updated is None:
            return await self.request(req)
        kind = PromptKind.FOLLOW_UP if req.kind is PromptKind.INITIAL else req.kind
        await self.store.queue_prompt(self._prompt(run.id, req, kind))
        self.kick(run.id)
        return Outcome.RESUMED, updated

    async def _reopen(self, run: Run) -> Run | None:
        """Make an archived (or failed) run active again (its box is resumed by the driver)."""
        async with self._lock(run.id):
            updated = await self.store.update_run(
                run.id,
                expect=[RunState.ARCHIVED, RunState.FAILED],
                state=RunState.PROVISIONING,
                reason=None,
                notice=None,
                finished_at=None,
            )
            if updated is not None:
                await self._show(updated, final=True)
            return updated

    async def announce(self, run: Run, notice: str | None) -> Run:
        """Show *notice* prominently on the run's tracking comment (None removes it)."""
        async with self._lock(run.id):
            updated = await self._save(run, notice=notice)
            await self._show(updated, final=True)
            return updated

    # -- commands on a run ------------------------------------------------------------------

    async def interrupt(self, run: Run) -> None:
        """Stop the agent's current work; the watcher reports the interruption."""
        if run.box_id is not None:
            await self.box.interrupt(run.box_id)

    async def archive(self, run: Run, reason: str, *, delete: bool = False) -> Run:
        """Stop and archive (or delete) the run's box, once however often it is asked.

        A failed run is archived too while its box is still up (its stop did not go through).
        """
        async with self._lock(run.id):
            before = await self.store.get_run(run.id)
            if before is None:
                return run
            archivable = sorted(ACTIVE_STATES)
            if before.state is RunState.FAILED and await self._box_live(before):
                archivable.append(RunState.FAILED)
            updated = await self.store.update_run(
                run.id,
                expect=archivable,
                state=RunState.ARCHIVED,
                reason=reason,
                finished_at=self.clock(),
            )
            if updated is None:
                return await self._stop_pending(before)
            if updated.box_id is not None:
                updated = await self._stop_box(updated, delete=delete)
            await self._show(updated, final=True)
            if before.state is RunState.WORKING:
                await self.checks.complete(updated, "cancelled", self._check_output(updated))
            log.info("run %s: %s", run.id, reason)
            return updated

    # -- stopping boxes -----------------------------------------------------------------------

    async def _stop_box(self, run: Run, *, delete: bool = False) -> Run:
        """Stop (or delete) the run's box now, or note it as pending and try again later."""
        assert run.box_id is not None
        pending = await self.store.add_pending_stop(run.id, run.box_id, delete=delete)
        return await self._attempt_stop(run, pending)

    async def _stop_pending(self, run: Run) -> Run:
        """Try a stop that has not gone through yet again (a redelivered close, a restart)."""
        pending = await self.store.pending_stop(run.id)
        if pending is None:
            return run
        updated = await self._attempt_stop(run, pending)
        await self._show(updated, final=True)
        return updated

    async def _attempt_stop(self, run: Run, pending: PendingStop) -> Run:
        """Make one attempt; on failure schedule the next with backoff. Return the run as saved."""
        try:
            if pending.delete:
                await self.box.delete_box(pending.box_id)
            else:
                await self.box.stop_box(pending.box_id)
        except BoxNotFoundError:
            pass
        except BoxAPIError as exc:
            if pending.delete or not await self._box_stopped(pending.box_id):
                delay = min(
                    self.timing.stop_retry_base * 2**pending.attempts, self.timing.stop_retry_max
                )
                log.warning(
                    "run %s: could not stop box %s (%s); trying again in %.0f s",
                    run.id,
                    pending.box_id,
                    exc,
                    delay,
                )
                await self.store.stop_failed(run.id, str(exc), self.clock() + delay)
                self._retry_stop_later(run.id, delay)
                return await self._save(run, notice=stop_note(run, done=False))
        await self.store.clear_pending_stop(run.id)
        log.info(
            "run %s: box %s %s", run.id, pending.box_id, "deleted" if pending.delete else "stopped"
        )
        return await self._save(run, notice=stop_note(run, done=True))

    async def _box_stopped(self, box_id: str) -> bool:
        """Whether Box already archives the box (stopping it again is then not needed)."""
        state = await self._box_state(box_id)
        return state in (BOX_DELETED, BoxState.ARCHIVING, BoxState.ARCHIVED)

    async def _box_state(self, box_id: str) -> str | None:
        """The box's state as Box reports it, `BOX_DELETED` if it is gone, None if unclear."""
        try:
            return (await self.box.get_box(box_id)).state
        except BoxNotFoundError:
            return BOX_DELETED
        except BoxAPIError:
            return None

    def _retry_stop_later(self, run_id: str, delay: float) -> None:
        if self._stopping or run_id in self._stop_retries:
            return
        task = asyncio.create_task(self._retry_stop(run_id, delay), name=f"stop {run_id}")
        self._stop_retries[run_id] = task

    async def _retry_stop(self, run_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        del self._stop_retries[run_id]  # a failed attempt schedules the next one
        try:
            async with self._lock(run_id):
                run = await self.store.get_run(run_id)
                if run is not None:
                    await self._stop_pending(run)
        except Exception:
            log.exception("run %s: retrying the stop of its box failed", run_id)

    async def _box_live(self, run: Run) -> bool:
        """Whether the run's box may still be running (an unclear answer counts as running)."""
        if run.box_id is None:
            return False
        state = await self._box_state(run.box_id)
        return state is None or (state != BOX_DELETED and state not in STOPPED_BOX_STATES)

    async def resume(self, run: Run) -> Run:
        """Bring an archived run's box back, ready for follow-ups."""
        updated = await self._reopen(run)
        if updated is None:
            return run
        self.kick(run.id)
        return updated

    # -- pull requests ------------------------------------------------------------------------

    async def link_pr(self, run: Run, pr_number: int, head_sha: str) -> Run:
        """Tie a pull request to its run: its own tracking comment, and a check on its head."""
        async with self._lock(run.id):
            current = await self.store.get_run(run.id) or run
            if current.pr_number != pr_number:
                current = await self._save(current, pr_number=pr_number)
                current = await self.tracker.ensure_pr_comment(current, self.render(current))
                await self._show(current, final=True)
                log.info("run %s: linked to pull request #%s", run.id, pr_number)
            if head_sha != current.head_sha:
                current = await self._new_head(current, head_sha)
            return current

    async def _new_head(self, run: Run, head_sha: str) -> Run:
        """Give a new head commit its check (call with the run's lock held).

        While a prompt runs (WORKING) its check is open: it moves to the new commit. Before
        the prompt is sent, the check is started when it is. After the work, a pull request
        that has no check yet gets one that is completed at once.
        """
        if run.state is RunState.WORKING:
            if run.check_run_id is not None:
                superseded = (
                    "Superseded",
                    f"A newer commit ({head_sha[:7]}) has its own check.",
                    "",
                )
                await self.checks.complete(run, "neutral", superseded)
            run = await self._save(run, head_sha=head_sha, check_run_id=None)
            return await self._open_check(run)
        if run.state in BEFORE_WORK or run.check_run_id is not None:
            return await self._save(run, head_sha=head_sha)
        check_id = await self.checks.start(run, head_sha, self._check_output(run))
        run = await self._save(run, head_sha=head_sha, check_run_id=check_id)
        await self.checks.complete(run, settled_conclusion(run), self._check_output(run))
        return run

    async def _open_check(self, run: Run) -> Run:
        """Start the check of the prompt run now working, on the head commit, once."""
        if run.state is not RunState.WORKING or run.head_sha is None or run.check_run_id:
            return run
        check_id = await self.checks.start(run, run.head_sha, self._check_output(run))
        return await self._save(run, check_run_id=check_id)

    async def _begin_work(self, run: Run) -> Run:
        """Mark the sent prompt as working and give it its own check."""
        async with self._lock(run.id):
            current = await self.store.get_run(run.id) or run
            if not current.state.active:
                raise RunEnded(current.state)
            if current.state is not RunState.WORKING:
                # The previous prompt's check is completed; this prompt gets a new one.
                current = await self._save(current, state=RunState.WORKING, check_run_id=None)
                log.info("run %s: %s", run.id, RunState.WORKING.value)
                await self._show(current, final=True)
            if current.is_pull_request and current.head_sha is None:
                current = await self._save(current, head_sha=await self._pull_head(current))
            return await self._open_check(current)

    async def _pull_head(self, run: Run) -> str | None:
        """The head commit of the pull request a run was asked on (None if GitHub won't say)."""
        gh = self.auth.installation_client(run.installation_id)
        try:
            pull = await gh.getitem(f"/repos/{run.repo}/pulls/{run.number}")
        except (gidgethub.GitHubException, OSError, TimeoutError) as exc:
            log.warning("run %s: head of pull request #%s unknown: %s", run.id, run.number, exc)
            return None
        sha = (pull.get("head") or {}).get("sha")
        return sha if isinstance(sha, str) and sha else None

    async def pr_closed(self, run: Run, merged: bool) -> Run:
        """Stop the run's box when its pull request closes (delete it if policy says so)."""
        if merged and await self._on_close(run) == "delete":
            reason = f"box deleted: pull request #{run.pr_number} was merged"
            return await self.archive(run, reason, delete=True)
        verb = "merged" if merged else "closed"
        return await self.archive(run, f"box archived: pull request #{run.pr_number} was {verb}")

    async def _on_close(self, run: Run) -> str:
        """What the repository's config says to do with a box when its PR merges."""
        try:
            config = await self._config(run)
        except (RepoConfigError, gidgethub.GitHubException) as exc:
            log.warning("run %s: config unreadable at close (%s); using BOX_ON_CLOSE", run.id, exc)
            config = None
        return config.on_close if config is not None else self.settings.box_on_close

    # -- the driver ---------------------------------------------------------------------------

    async def start(self, app_slug: str) -> None:
        """Resume every run that was in progress, and every stop that had not gone through."""
        self.app_slug = app_slug
        for run in await self.store.runs_in(RESUMABLE):
            self.kick(run.id)
        for pending in await self.store.pending_stops():
            self._retry_stop_later(pending.run_id, 0.0)
        if self._sweeper is None and not self._stopping:
            self._sweeper = asyncio.create_task(self._sweep_idle_runs(), name="idle sweep")

    async def stop(self, grace: float) -> None:
        """Stop driving runs; their state is in the store for the next start."""
        self._stopping = True
        tasks = [*self._tasks.values(), *self._stop_retries.values()]
        if self._sweeper is not None:
            tasks.append(self._sweeper)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    def kick(self, run_id: str) -> None:
        """Make sure a task is driving this run."""
        if self._stopping:
            return
        self._wanted.add(run_id)
        if run_id not in self._tasks:
            # A run outlives the delivery that kicked it: its lines carry the run, not that.
            self._tasks[run_id] = asyncio.create_task(
                self._drive_loop(run_id), name=run_id, context=detached()
            )

    @property
    def driving(self) -> int:
        """How many runs have a task driving them now."""
        return len(self._tasks)

    def is_driving(self, run_id: str) -> bool:
        """Whether a task is driving this run now."""
        return run_id in self._tasks

    async def _drive_loop(self, run_id: str) -> None:
        try:
            while run_id in self._wanted:
                self._wanted.discard(run_id)
                await self._drive(run_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s: driver crashed", run_id)
        finally:
            del self._tasks[run_id]

    async def _drive(self, run_id: str) -> None:
        while (run := await self.store.get_run(run_id)) is not None and run.state.active:
            with bind(run=run.id, repo=run.repo, box=run.box_id):
                if not await self._step(run):
                    return

    async def _step(self, run: Run) -> bool:
        """Take the run one step further; return False when there is nothing left to do now."""
        try:
            if run.state in (RunState.REQUESTED, RunState.PROVISIONING):
                await self._provision(run)
            elif run.state is RunState.PROMPTING:
                await self._send_prompt(run)
            elif run.state is RunState.WORKING:
                await self._watch(run)
            else:
                return await self._wake_if_queued(run)
        except asyncio.CancelledError:
            raise
        except RunEnded:
            return False
        except Exception as exc:
            await self._fail(run, exc)
            return False
        return True

    async def _provision(self, run: Run) -> None:
        run = await self._set(run, RunState.PROVISIONING)
        hit = await self.store.reserve(run.id, limits_for(self.settings, await self._config(run)))
        if hit is not None:
            raise LimitReached(hit)
        if run.box_id is None:
            await self._check_box_account()
            box, selected = await self.box.start_box(
                run.repo,
                ttl_seconds=run.ttl_seconds or self.settings.box_ttl_seconds,
                idempotency_key=run.id,
            )
            log.info("run %s: box %s created for %s", run.id, box.id, selected.full_name)
            run = await self._save(run, box_id=box.id)
            with contextlib.suppress(BoxAPIError):
                await self.box.update_box(box.id, name=f"{run.repo}#{run.number}")
            async with self._lock(run.id):
                await self._show(run)
        await self._wait_ready(run)
        await self._remember_desktop(run)
        await self._set(run, RunState.PROMPTING)

    async def _check_box_account(self) -> None:
        """Ask Box whether the account may start (or resume) a box, rather than fail the call."""
        limits = await self.box.limits()
        refusal = account_refusal(limits, self.clock())
        if refusal is not None:
            raise refusal

    async def _config(self, run: Run) -> EffectiveConfig | None:
        """The repository's configuration now (None when the run does not know its branch)."""
        if run.default_branch is None:
            return None
        if (config := self._configs.get(run.id)) is None:
            config = await self.config.load(run.installation_id, run.repo, run.default_branch)
            self._configs[run.id] = config
        return config

    async def _wait_ready(self, run: Run) -> None:
        assert run.box_id is not None
        deadline = self.clock() + self.timing.ready_timeout
        resumed = False
        while True:
            box = await self.box.get_box(run.box_id)
            if box.state in WORKING_BOX_STATES:
                return
            if box.state == BoxState.ARCHIVED and not resumed:
                await self._check_box_account()  # a resume counts as a start
                await self.box.resume_box(run.box_id)
                resumed = True
            elif box.state == BoxState.ERROR:
                raise BoxGone(box.state)
            if self.clock() > deadline:
                raise ReadyTimeout(f"box {run.box_id} was still {box.state}")
            await asyncio.sleep(self.timing.ready_poll)

    async def _remember_desktop(self, run: Run) -> None:
        """Fetch the desktop link once, where the repository shows it (private repos only)."""
        if run.box_id is None or run.id in self._desktops:
            return
        try:
            config = await self._config(run)
        except (RepoConfigError, gidgethub.GitHubException):
            return
        if config is None or not config.desktop_allowed(run.repo_private):
            return
        try:
            desktop = await self.box.desktop(run.box_id)
        except BoxAPIError as exc:
            log.warning("run %s: no desktop link: %s", run.id, exc)
            return
        if desktop.url:
            self._desktops[run.id] = desktop.url

    async def _send_prompt(self, run: Run) -> None:
        assert run.box_id is not None
        pending = await self.store.prompts(
            run.id, [PromptState.QUEUED, PromptState.SENDING, PromptState.SENT]
        )
        if not pending:
            await self._set(run, RunState.IDLE)
            return
        prompt = pending[0]
        if prompt.state is PromptState.SENT:
            await self._begin_work(run)
            return
        text = prompt.text
        if text is None:
            gh = self.auth.installation_client(run.installation_id)
            context = await gather_context(gh, self.permissions, run, prompt, self.app_slug)
            await self._add_repo_guidance(run, context)
            text = build_prompt(context)
            await self.store.update_prompt(prompt.seq, PromptState.QUEUED, text=text)
        prompt_id = None
        if prompt.state is PromptState.SENDING:  # we may have sent it before a restart
            since = None
            if prompt.sent_at is not None:  # Box's clock may differ a little from ours
                since = datetime.fromtimestamp(prompt.sent_at - CLOCK_SKEW_SECONDS, UTC)
            found = await self.box.find_prompt(run.box_id, text, since=since)
            prompt_id = found.prompt_id if found is not None else None
        if prompt_id is None:
            await self.store.update_prompt(prompt.seq, PromptState.SENDING)
            result = await self.box.prompt(
                run.box_id, text, run.provider, run.model, run.reasoning_effort
            )
            prompt_id = result.run.prompt_id
        await self.store.update_prompt(prompt.seq, PromptState.SENT, box_prompt_id=prompt_id)
        await self._begin_work(run)

    async def _add_repo_guidance(self, run: Run, context: PromptContext) -> None:
        """Add the repository's own instructions and prompt file from its default branch."""
        config = await self._config(run)
        if config is None or run.default_branch is None:
            return
        context.repo_instructions = config.instructions
        context.draft_pr = config.draft_pr
        if config.prompt_file:
            text = await self.config.read_file(
                run.installation_id, run.repo, config.prompt_file, run.default_branch
            )
            if text is not None:
                context.repo_prompt_file = (config.prompt_file, text)

    async def _wake_if_queued(self, run: Run) -> bool:
        if not await self.store.prompts(run.id, [PromptState.QUEUED]):
            return False
        await self._set(run, RunState.PROVISIONING)
        return True

    async def _watch(self, run: Run) -> None:
        """Follow the current prompt run until it ends, showing progress as it goes."""
        box_id = run.box_id
        assert box_id is not None
        sent = await self.store.prompts(run.id, [PromptState.SENT])
        if not sent or sent[0].box_prompt_id is None:
            await self._set(run, RunState.PROMPTING)
            return
        prompt, prompt_id = sent[0], sent[0].box_prompt_id
        async with self._lock(run.id):  # a restart may have come between the send and the check
            run = await self._open_check(await self.store.get_run(run.id) or run)
        await self._remember_desktop(run)
        timeline = Timeline.from_json(run.summary)
        timeline.start_prompt(prompt_id)
        polls, interval, timed_out = 0, self.timing.poll_interval, False
        deadline = self._deadline(prompt)
        budget = CallBudget(self.timing.calls_per_window, self.timing.budget_window)
        while True:
            await budget.spend()
            status = (await self.box.prompt_run(box_id, prompt_id)).status
            run, changed, more = await self._follow_events(run, timeline, budget)
            if status in TERMINAL_PROMPT_STATUSES:
                while more:  # the whole story before the result
                    run, _, more = await self._follow_events(run, timeline, budget)
                await self._finish_prompt(run, prompt, timeline, status, timed_out=timed_out)
                return
            if not timed_out and self.clock() > deadline:
                timed_out = await self._time_out(run)
            polls += 1
            if polls % self.timing.box_check_every == 0:
                await budget.spend()
                await self._check_box(run)
            async with self._lock(run.id):
                current = await self.store.get_run(run.id) or run  # the check may have moved
                if await self._show(current):
                    await self.checks.update(current, self._check_output(current))
            idle_max = max(self.timing.max_poll_interval, self.timing.poll_interval)
            busy = changed or more
            interval = self.timing.poll_interval if busy else min(interval * 1.5, idle_max)
            await asyncio.sleep(interval)

    async def _follow_events(
        self, run: Run, timeline: Timeline, budget: CallBudget
    ) -> tuple[Run, bool, bool]:
        """Read a few pages of new events; return the run, whether anything shown changed, and
        whether more pages wait.

        The saved cursor never passes a streaming partial that nothing has followed yet: Box
        may finalise it under the same id, so the next read starts before it again.
        """
        assert run.box_id is not None
        changed, cursor, more = False, run.events_cursor, False
        holding, held = False, run.events_cursor  # held: the cursor before an unsettled partial
        for _ in range(EVENT_PAGES_PER_POLL):
            await budget.spend()
            page = await self.box.events(
                run.box_id, limit=EVENT_PAGE_SIZE, cursor=cursor, sort="asc"
            )
            for event in page.events:
                changed = timeline.apply(event) or changed
                if isinstance(event, ResponseEvent):
                    if event.is_streaming and not holding:
                        holding, held = True, cursor
                    elif not event.is_streaming:
                        holding = False
                with contextlib.suppress(ValueError):
                    cursor = event_cursor(event)
            more = page.has_more and bool(page.events)
            if not more:
                break
            cursor = page.next_cursor or cursor
        # Hold at a partial, unless holding there again would stop reading a long backlog.
        saved = held if holding and (not more or held != run.events_cursor) else cursor
        if saved != run.events_cursor or changed:
            run = await self._save(run, events_cursor=saved, summary=timeline.to_json())
        return run, changed, more

    async def _check_box(self, run: Run) -> None:
        assert run.box_id is not None
        box = await self.box.get_box(run.box_id)
        if box.state in (BoxState.ERROR, BoxState.ARCHIVED, BoxState.ARCHIVING):
            raise BoxGone(box.state, started=True)

    async def _time_out(self, run: Run) -> bool:
        """Interrupt work that ran past `BOX_MAX_RUN_MINUTES` and say so."""
        assert run.box_id is not None
        minutes = self.settings.max_run_minutes
        log.warning("run %s: working for over %d minutes; interrupting", run.id, minutes)
        unit = "minute" if minutes == 1 else "minutes"
        message = f"The agent worked for more than {minutes} {unit} (BOX_MAX_RUN_MINUTES)."
        await self.announce(run, render_failure("timed_out", message))
        await self.box.interrupt(run.box_id)
        return True

    async def _finish_prompt(
        self,
        run: Run,
        prompt: QueuedPrompt,
        timeline: Timeline,
        status: str,
        *,
        timed_out: bool = False,
    ) -> None:
        """Record how the prompt ended; its check concludes from that, whatever the box does."""
        timeline.prompt_status = status
        await self.store.update_prompt(prompt.seq, PromptState(status))
        past_lifetime = self.clock() > self._deadline(prompt)
        timed_out = timed_out or (status == PromptStatus.INTERRUPTED and past_lifetime)
        async with self._lock(run.id):
            current = await self.store.update_run(
                run.id,
                expect=sorted(ACTIVE_STATES),
                state=RunState.IDLE,
                summary=timeline.to_json(),
            )
            if current is None:
                return
            await self._show(current, final=True)
            conclusion = "timed_out" if timed_out else CONCLUSIONS[status]
            await self.checks.complete(current, conclusion, self._check_output(current))
        log.info("run %s: prompt %s %s", run.id, prompt.box_prompt_id, status)
        gh = self.auth.installation_client(run.installation_id)
        await answer_review(gh, current, prompt, timeline)
        await self._check_idle_box(current)

    def _deadline(self, prompt: QueuedPrompt) -> float:
        """When a prompt run has worked for `BOX_MAX_RUN_MINUTES`."""
        return (prompt.sent_at or self.clock()) + self.settings.max_run_minutes * 60

    async def _check_idle_box(self, run: Run) -> None:
        """End an idle run whose box Box archived on its own (its TTL) or lost."""
        assert run.box_id is not None
        try:
            box = await self.box.get_box(run.box_id)
        except BoxNotFoundError:
            raise
        except BoxAPIError as exc:  # the work is done; the idle sweep looks again later
            log.warning("run %s: could not read box %s after its work: %s", run.id, run.box_id, exc)
            return
        if box.state == BoxState.ERROR:
            raise BoxGone(box.state, started=True)
        if box.state in (BoxState.ARCHIVING, BoxState.ARCHIVED):
            await self._box_expired(run)

    async def _sweep_idle_runs(self) -> None:
        """Every few minutes, end idle runs whose box Box archived on its own (its TTL)."""
        while True:
            await asyncio.sleep(self.timing.sweep_every)
            try:
                for run in await self.store.runs_in([RunState.IDLE]):
                    if run.box_id is not None and not self.is_driving(run.id):
                        await self._sweep_one(run)
            except Exception:
                log.exception("the sweep of idle runs failed; trying again later")

    async def _sweep_one(self, run: Run) -> None:
        assert run.box_id is not None
        try:
            box = await self.box.get_box(run.box_id)
        except BoxAPIError as exc:
            log.warning("run %s: could not look at box %s: %s", run.id, run.box_id, exc)
            return
        if box.state in (BoxState.ARCHIVING, BoxState.ARCHIVED):
            await self._box_expired(run)

    async def _box_expired(self, run: Run) -> None:
        async with self._lock(run.id):
            updated = await self.store.update_run(
                run.id,
                expect=[RunState.IDLE],
                state=RunState.ARCHIVED,
                reason=BOX_EXPIRED,
                finished_at=self.clock(),
            )
            if updated is not None:
                log.info("run %s: %s", run.id, BOX_EXPIRED)
                await self._show(updated, final=True)

    # -- state, failures and rendering ---------------------------------------------------------

    def _lock(self, run_id: str) -> asyncio.Lock:
        return self._locks.setdefault(run_id, asyncio.Lock())

    async def _set(self, run: Run, state: RunState) -> Run:
        async with self._lock(run.id):
            current = await self.store.get_run(run.id) or run
            if not current.state.active:
                raise RunEnded(current.state)
            if current.state is state:
                return current
            current = await self._save(current, state=state)
            log.info("run %s: %s", run.id, state.value)
            await self._show(current, final=True)
            return current

    async def _save(self, run: Run, **fields: Any) -> Run:
        updated = await self.store.update_run(run.id, **fields)
        if updated is None:
            raise LookupError(f"run {run.id} disappeared from the store")
        return updated

    async def _show(self, run: Run, *, final: bool = False) -> bool:
        """Render the run as stored now and edit its comments (call with the run's lock held)."""
        current = await self.store.get_run(run.id) or run
        if current.comment_id is None:  # GitHub refused it when the run was asked for
            try:
                current = await self.tracker.ensure_comment(current, self.render(current))
            except (gidgethub.GitHubException, OSError, TimeoutError) as exc:
                log.warning("run %s: the tracking comment cannot be posted yet: %s", run.id, exc)
        return await self.tracker.show(current, self.render(current), final=final)

    async def _fail(self, run: Run, exc: Exception) -> None:
        kind, message, setup_url, retry_at = describe_failure(exc, self.clock())
        log.warning("run %s failed (%s): %s", run.id, kind, message)
        gone = isinstance(exc, BoxGone) and exc.state != BoxState.ERROR
        notice = render_failure(kind, message, setup_url=setup_url, retry_at=retry_at)
        if isinstance(exc, LimitReached):
            notice = describe_hit(exc.hit)
        elif isinstance(exc, RepoConfigError):
            notice = CONFIG_PROBLEMS.format(problems=format_problems(exc.problems))
        async with self._lock(run.id):
            before = await self.store.get_run(run.id) or run
            updated = await self.store.update_run(
                run.id,
                expect=sorted(ACTIVE_STATES),
                state=RunState.ARCHIVED if gone else RunState.FAILED,
                reason=message,
                notice=notice,
                finished_at=self.clock(),
            )
            if updated is None:
                return
            if updated.box_id is not None and not isinstance(exc, BoxGone):
                # A failed run's box would otherwise run (and bill) until its TTL.
                updated = await self._stop_box(updated)
            await self._show(updated, final=True)
            if before.state is RunState.WORKING:  # only a working prompt has an open check
                await self.checks.complete(updated, "failure", self._check_output(updated))

    def render(self, run: Run) -> str:
        """Render the run's tracking comment as it stands."""
        return render_comment(
            run,
            Timeline.from_json(run.summary),
            now=self.clock(),
            notice=run.notice,
            pr_url=pr_url(run),
            desktop_url=self._desktops.get(run.id) if run.state.active else None,
        )

    def _check_output(self, run: Run) -> tuple[str, str, str]:
        return render_check_output(run, Timeline.from_json(run.summary), now=self.clock())

    async def queue_ci_fix(
        self, run: Run, pr_number: int, head_sha: str, failures: str, limit: int
    ) -> CIFixClaim:
        """Send failing CI on *head_sha* to the run's box, once per commit, *limit* per PR."""
        prompt = QueuedPrompt(
            seq=0,
            run_id=run.id,
            kind=PromptKind.CI_FIX,
            requester=run.requester,
            instructions=failures,
            state=PromptState.QUEUED,
            trigger_key=f"ci:{run.repo_id}:{pr_number}:{head_sha}",
        )
        claim = await self.store.claim_ci_fix(prompt, run.repo_id, pr_number, head_sha, limit)
        if claim.outcome is CIFixOutcome.QUEUED:
            self.kick(run.id)
        return claim


def settled_conclusion(run: Run) -> str:
    """The conclusion of a check made after the work ended (neutral when nothing says)."""
    if run.state is RunState.FAILED:
        return "failure"
    status = Timeline.from_json(run.summary).prompt_status
    return CONCLUSIONS.get(status or "", "neutral")


def pr_url(run: Run) -> str | None:
    """Return the web URL of the run's linked pull request, if any."""
    if run.pr_number is None:
        return None
    return f"https://github.com/{run.repo}/pull/{run.pr_number}"


BOX_EXPIRED = "box archived after its time to live"
STOPPED_BOX_STATES = frozenset({BoxState.ARCHIVING, BoxState.ARCHIVED, BoxState.ERROR})
BOX_DELETED = "deleted"  # not a Box state: the box is gone (404)
BOX_STOPPED = "The box was stopped and archived, so it does not keep running."
BOX_STOP_PENDING = "box-bot has not managed to stop the box yet and keeps trying."


def stop_note(run: Run, *, done: bool) -> str | None:
    """The run's notice with what is known about stopping its box."""
    text = run.notice or ""
    for note in (BOX_STOPPED, BOX_STOP_PENDING):
        text = text.replace(note, "")
    note = BOX_STOP_PENDING if not done else (BOX_STOPPED if run.state is RunState.FAILED else "")
    return "\n\n".join(part for part in (text.strip(), note) if part) or None


CONFIG_PROBLEMS = (
    "⚠️ **`.github/box.yml` has problems, so no box was started.** Fix them on the default "
    "branch, then comment `/box fix` to try again.\n\n{problems}"
)


START_WINDOWS = (("minute", 60.0), ("hour", 3600.0), ("day", 86400.0))
BILLING_OK = ("active", "trialing", "")
ACTIVE_BOX_LIMIT = "active_box_limit"
CONFLICT_KINDS = {
    ACTIVE_BOX_LIMIT: "active_limit",
    "idempotency_key_reused": "idempotency_key_reused",
    "idempotency_in_progress": "idempotency_in_progress",
    "box_starting": "box_starting",
}


def account_refusal(limits: BoxLimits, now: float) -> Exception | None:
    """Why `GET /limits` says no box can start now, as the error to report (None: it can)."""
    full = limits.max_active_boxes <= 0 or limits.active_boxes >= limits.max_active_boxes
    used_up = starts_used_up(limits.raw, now)
    if limits.can_start and not full and used_up is None:
        return None
    if limits.billing_status not in BILLING_OK:
        return BoxBillingError(
            f"Box says this account cannot start boxes (billing status {limits.billing_status!r})",
            status=402,
            code="cannot_start",
        )
    if full:
        return LimitReached(LimitHit(Limit.BOX_ACCOUNT, limits.max_active_boxes))
    if used_up is not None:
        return used_up
    reason = limits.raw.get("startBlockedReason") or limits.raw.get("blockedReason")
    return BoxCannotStart(str(reason) if reason else "Box says the account cannot start boxes")


def starts_used_up(raw: Mapping[str, Any], now: float) -> BoxStartsUsedUp | None:
    """The first start window (minute, hour, day) with nothing left, from `starts`."""
    starts = raw.get("starts")
    if not isinstance(starts, Mapping) or starts.get("unlimited") is True:
        return None
    for window, seconds in START_WINDOWS:
        counts = starts.get(window)
        if not isinstance(counts, Mapping):
            continue
        limit, remaining = counts.get("limit"), counts.get("remaining")
        if isinstance(remaining, int) and remaining <= 0:
            return BoxStartsUsedUp(window, limit if isinstance(limit, int) else None, now + seconds)
    return None


def describe_failure(exc: Exception, now: float) -> tuple[str, str, str | None, float | None]:
    """Map an error to (kind, plain message, setup link, retry time) for the tracking comment."""
    if isinstance(exc, LimitReached):
        return "limit", f"limit {exc.hit.limit.value} reached", None, exc.hit.frees_at
    if isinstance(exc, RepoConfigError):
        return "config", "invalid .github/box.yml", None, None
    if isinstance(exc, BoxRepoNotAvailableError):
        return "repo_not_available", exc.message, None, None
    if isinstance(exc, BoxConflictError) and exc.code == "provider_not_configured":
        setup = exc.details.get("setupUrl") if exc.details else None
        return "provider_not_configured", exc.message, setup, None
    if isinstance(exc, BoxBillingError):
        return "billing", exc.message, None, None
    if isinstance(exc, BoxRateLimitedError):
        retry = now + exc.retry_after if exc.retry_after is not None else None
        return "rate_limited", exc.message, None, retry
    if isinstance(exc, BoxConflictError):
        return CONFLICT_KINDS.get(exc.code or "", "conflict"), exc.message, None, None
    if isinstance(exc, BoxStartsUsedUp):
        return "rate_limited", str(exc), None, exc.retry_at
    if isinstance(exc, BoxCannotStart):
        return "cannot_start", str(exc), None, None
    if isinstance(exc, BoxAPIError):
        return "box_unavailable", exc.message, None, None
    if isinstance(exc, ReadyTimeout):
        return "not_ready", str(exc), None, None
    if isinstance(exc, BoxGone):
        kind = "archived" if exc.state != "error" else ("box_error" if exc.started else "not_ready")
        return kind, f"box went {exc.state}", None, None
    if isinstance(exc, gidgethub.GitHubException):
        return "github_error", str(exc) or type(exc).__name__, None, None
    return "internal", f"{type(exc).__name__}: {exc}", None, None
