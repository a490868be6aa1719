"""The run lifecycle: request → provision → prompt → watch → finish → archive.

Each step records its result in the store before the next begins, so a
restart resumes a run where it stopped without creating a second box or
sending a prompt twice. One asyncio task drives each run that has work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import aiohttp
import gidgethub

from bot.box.client import BoxClient
from bot.box.errors import BoxAPIError
from bot.box.models import BoxState, PromptStatus
from bot.config.loader import ConfigLoader
from bot.config.repo import RepoConfigError
from bot.github.budget import InstallationPaused, sleep_until
from bot.github.checks import CONCLUSIONS, Checks
from bot.github.client import GitHubAppAuth
from bot.github.permissions import PermissionChecker
from bot.github.tracker import Tracker
from bot.logs import bind
from bot.metrics import Metrics
from bot.models import (
    ACTIVE_STATES,
    BoxReport,
    PromptKind,
    PromptState,
    QueuedPrompt,
    Run,
    RunState,
)
from bot.runs.caps import DollarCaps
from bot.runs.configs import RunConfigs
from bot.runs.context import gather_context
from bot.runs.failures import BoxGone, LimitReached, ThreadUnreadable, describe_failure
from bot.runs.leases import Leases
from bot.runs.limits import day_start, limits_for
from bot.runs.prompt import build_prompt
from bot.runs.provision import (
    box_setup,
    check_account,
    remember_desktop,
    wait_ready,
    wait_setup,
)
from bot.runs.pulls import PullRequests
from bot.runs.record import RunEnded, RunRecord
from bot.runs.requests import Outcome, RunRequest, new_run
from bot.runs.review_reply import answer_review
from bot.runs.spend import SpendTracker
from bot.runs.stops import BoxStops
from bot.runs.tasks import RunTasks
from bot.runs.timeline import resumed
from bot.runs.timing import Timing
from bot.runs.watch import PromptEnd, Watcher
from bot.settings import Settings
from bot.store.interface import Store
from bot.store.records import CIFixClaim, CIFixOutcome, CreateOutcome

log = logging.getLogger(__name__)

RESUMABLE = (
    RunState.REQUESTED,
    RunState.PROVISIONING,
    RunState.PROMPTING,
    RunState.WORKING,
    RunState.IDLE,
)
# A prompt looked for after a restart counts if Box received it at most this long before
# the app began sending it (the two clocks may differ).
CLOCK_SKEW_SECONDS = 300.0


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
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.auth = auth
        self.box = box
        self.settings = settings
        self.permissions = permissions
        self.tracker = tracker
        self.checks = checks
        self.config = config
        self.timing = timing or Timing.for_poll_interval(
            settings.box_poll_interval, settings.lease_seconds
        )
        self.clock = clock
        self.metrics = metrics
        self.app_slug = ""
        self.spend = SpendTracker(
            box, store, metrics=metrics, clock=clock, every=self.timing.usage_every
        )
        self.record = RunRecord(store, tracker, checks, clock, self.spend)
        self.watcher = Watcher(store, box, self.record, settings, self.timing, clock, sleep)
        self.stops = BoxStops(store, box, self.record, self.timing, clock)
        self.pulls = PullRequests(auth, self.record)
        self.leases = Leases(
            store,
            seconds=self.timing.lease_seconds,
            renew_every=self.timing.lease_renew,
            scan_every=self.timing.lease_scan,
        )
        self.tasks = RunTasks(self._drive, self.leases)
        self.configs = RunConfigs(config)
        self.caps = DollarCaps(
            store, box, settings, self.configs, self.record, self.archive, metrics, clock
        )
        self._background: list[asyncio.Task[None]] = []

    # -- requests from handlers -------------------------------------------------------------

    async def request(self, req: RunRequest) -> tuple[Outcome, Run]:
        """Start a run, or queue the request for the run already active on that thread."""
        active = await self.store.active_run(req.repo_id, req.number)
        if active is not None:
            return await self._follow_up(active, req)
        latest = await self.store.latest_run(req.repo_id, req.number)
        if latest is not None and latest.state is RunState.ARCHIVED and latest.box_id:
            return await self._reactivate(latest, req)
        run = new_run(req, self.settings, self.clock())
        outcome, stored = await self.store.create_run(run, self._prompt(run.id, req))
        if outcome is CreateOutcome.CREATED and req.config is not None:
            self.configs.keep(stored.id, req.config)
        if outcome is CreateOutcome.ACTIVE_EXISTS:
            return await self._follow_up(stored, req)
        started = Outcome.STARTED if outcome is CreateOutcome.CREATED else Outcome.DUPLICATE
        if not await self.tasks.take(stored.id):  # another instance drives it and posts the comment
            return started, stored
        try:
            async with self.record.lock(stored.id):  # this instance's lease scan may kick it now
                stored = await self.store.get_run(stored.id) or stored
                stored = await self.tracker.ensure_comment(stored, await self.record.render(stored))
        finally:  # without the comment the run still goes on; a retry or the driver posts it
            self.kick(stored.id)
        return started, stored

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
            async with self.record.lock(run.id):  # the driver may be posting it right now
                run = await self.store.get_run(run.id) or run
                run = await self.tracker.ensure_comment(run, await self.record.render(run))
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
        async with self.record.lock(run.id):
            updated = await self.store.update_run(
                run.id,
                expect=[RunState.ARCHIVED, RunState.FAILED],
                state=RunState.PROVISIONING,
                reason=None,
                notice=None,
                finished_at=None,
                summary=resumed(run.summary),
            )
            if updated is not None:
                await self.record.show(updated, final=True)
                await self.checks.update(updated, self.record.check_output(updated))
            return updated

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

    async def announce(self, run: Run, notice: str | None) -> Run:
        """Show *notice* prominently on the run's tracking comment (None removes it)."""
        return await self.record.announce(run, notice)

    async def link_pr(self, run: Run, pr_number: int, head_sha: str) -> Run:
        """Tie a pull request to its run: its own tracking comment, and a check on its head."""
        return await self.pulls.link(run, pr_number, head_sha)

    async def spend_today(self, run: Run) -> tuple[BoxReport | None, float]:
        """What the run's box has cost so far, and what its repository's boxes cost today."""
        report = await (self.spend.refresh(run) if run.state.active else self.spend.report(run))
        since = day_start(self.clock())
        return report, await self.store.dollars_since(since, run.installation_id, run.repo_id)

    # -- commands on a run ------------------------------------------------------------------

    async def interrupt(self, run: Run) -> None:
        """Stop the agent's current work; the watcher reports the interruption."""
        if run.box_id is not None:
            await self.box.interrupt(run.box_id)

    async def resume(self, run: Run) -> Run:
        """Bring an archived run's box back, ready for follow-ups."""
        updated = await self._reopen(run)
        if updated is None:
            return run
        self.kick(run.id)
        return updated

    # -- the driver ---------------------------------------------------------------------------

    async def start(self, app_slug: str) -> None:
        """Resume every run that was in progress, and every stop that had not gone through."""
        self.app_slug = app_slug
        for run in await self.store.runs_in(RESUMABLE):
            self.kick(run.id)
        for pending in await self.store.pending_stops():
            self.stops.retry_later(pending.run_id, 0.0)
        if not self._background and not self.tasks.stopping:
            self._background = [
                asyncio.create_task(
                    self.watcher.sweep_idle_runs(
                        self.is_driving, self.caps.run_cap, self.caps.stop
                    ),
                    name="idle sweep",
                ),
                asyncio.create_task(
                    self.leases.keep(self.tasks.held, self.tasks.abandon), name="lease renewal"
                ),
                asyncio.create_task(
                    self.leases.scan(self.kick, self.is_driving), name="lease takeover"
                ),
            ]

    async def stop(self, grace: float) -> None:
        """Stop driving runs; their state is in the store for the next start."""
        tasks = self.tasks.cancel()
        for background in self._background:
            background.cancel()
        tasks += self._background
        tasks += self.stops.cancel()
        tasks += self.watcher.cancel_timers()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        # Whatever a cancelled driver could not give back (cancelled mid-take, say) goes now,
        # so another instance goes on at once rather than after the lease.
        await self.leases.release_all()

    def kick(self, run_id: str) -> None:
        """Make sure a task is driving this run."""
        self.tasks.kick(run_id)

    @property
    def driving(self) -> int:
        """How many runs have a task driving them now."""
        return len(self.tasks)

    def is_driving(self, run_id: str) -> bool:
        """Whether a task is driving this run now."""
        return run_id in self.tasks

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
        except InstallationPaused as exc:  # GitHub asked to wait: the step is taken again after
            log.info("run %s: %s", run.id, exc)
            await sleep_until(exc.until, self.clock)
            return True
        except Exception as exc:
            await self._fail(run, exc)
            return False
        return True

    # -- provision ------------------------------------------------------------------------------

    async def _provision(self, run: Run) -> None:
        if run.box_id is None:
            await self._readable(run)
        run = await self.record.set(run, RunState.PROVISIONING)
        config = await self.configs.of(run)
        limits = limits_for(self.settings, config)
        hit = await self.store.reserve(run.id, limits)
        if hit is not None:
            raise LimitReached(hit)
        if run.box_id is None:
            await self.caps.check_day(run, limits)
            await check_account(self.box, self.clock())
            box, selected = await self.box.start_box(
                run.repo,
                ttl_seconds=run.ttl_seconds or self.settings.box_ttl_seconds,
                idempotency_key=run.id,
                setup=box_setup(self.settings, config),
            )
            log.info("run %s: box %s created for %s", run.id, box.id, selected.full_name)
            run = await self.record.save(run, box_id=box.id)
            with contextlib.suppress(BoxAPIError):
                await self.box.update_box(box.id, name=f"{run.repo}#{run.number}")
            async with self.record.lock(run.id):
                await self.record.show(run)
        assert run.box_id is not None

        async def day_cap() -> None:  # a resume starts a box again
            await self.caps.check_day(run, limits)

        await wait_ready(self.box, run.box_id, self.timing, self.clock, day_cap)
        cap = limits.run_dollars

        async def enforce(current: Run) -> None:  # the box bills while it sets up
            await self.watcher.enforce_dollars(current, cap, self.caps.stop)

        await wait_setup(self.box, self.spend, self.record, self.timing, self.clock, run, enforce)
        await remember_desktop(self.box, self.configs, self.record.desktops, run)
        await self.record.set(run, RunState.PROMPTING)

    async def _readable(self, run: Run) -> None:
        """Spend nothing on an issue or pull request GitHub no longer shows (404/410)."""
        gh = self.auth.installation_client(run.installation_id)
        try:
            await gh.getitem(f"/repos/{run.repo}/issues/{run.number}")
        except gidgethub.BadRequest as exc:
            if exc.status_code in (404, 410):
                log.warning(
                    "run %s: %s#%s answers %s (%s); no box is started",
                    run.id,
                    run.repo,
                    run.number,
                    exc.status_code,
                    exc,
                )
                raise ThreadUnreadable(run.number, exc.status_code) from exc
            log.warning("run %s: could not look at #%s first: %s", run.id, run.number, exc)
        except (gidgethub.GitHubBroken, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("run %s: could not look at #%s first: %s", run.id, run.number, exc)

    # -- prompt ---------------------------------------------------------------------------------

    async def _send_prompt(self, run: Run) -> None:
        assert run.box_id is not None
        pending = await self.store.prompts(
            run.id, [PromptState.QUEUED, PromptState.SENDING, PromptState.SENT]
        )
        if not pending:
            await self.record.set(run, RunState.IDLE)
            return
        prompt = pending[0]
        if prompt.state is PromptState.SENT:
            await self._begin_work(run)
            return
        text = prompt.text
        if text is None:
            gh = self.auth.installation_client(run.installation_id)
            context = await gather_context(gh, self.permissions, run, prompt, self.app_slug)
            await self.configs.add_guidance(run, context)
            if (report := await self.spend.report(run)) is not None:
                context.setup_status, context.setup_error = report.setup_status, report.setup_error
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

    async def _begin_work(self, run: Run) -> Run:
        """Mark the sent prompt as working and give it its own check."""
        async with self.record.lock(run.id):
            current = await self.store.get_run(run.id) or run
            if not current.state.active:
                raise RunEnded(current.state)
            if current.state is not RunState.WORKING:
                # The previous prompt's check is completed; this prompt gets a new one.
                current = await self.record.save(current, state=RunState.WORKING, check_run_id=None)
                log.info("run %s: %s", run.id, RunState.WORKING.value)
                await self.record.show(current, final=True)
            if current.is_pull_request and current.head_sha is None:
                current = await self.record.save(
                    current, head_sha=await self.pulls.head_of(current)
                )
            return await self.pulls.open_check(current)

    async def _wake_if_queued(self, run: Run) -> bool:
        if not await self.store.prompts(run.id, [PromptState.QUEUED]):
            return False
        await self.record.set(run, RunState.PROVISIONING)
        return True

    # -- watch and finish -----------------------------------------------------------------------

    async def _watch(self, run: Run) -> None:
        """Follow the current prompt run until it ends, then record how it ended."""
        assert run.box_id is not None
        sent = await self.store.prompts(run.id, [PromptState.SENT])
        if not sent or sent[0].box_prompt_id is None:
            await self.record.set(run, RunState.PROMPTING)
            return
        prompt = sent[0]
        async with self.record.lock(run.id):  # a restart may have come between send and check
            run = await self.pulls.open_check(await self.store.get_run(run.id) or run)
        await remember_desktop(self.box, self.configs, self.record.desktops, run)
        cap = await self.caps.run_cap(run)
        end = await self.watcher.follow(run, prompt, cap, self.caps.stop)
        await self._finish_prompt(prompt, end)

    async def _finish_prompt(self, prompt: QueuedPrompt, end: PromptEnd) -> None:
        """Record how the prompt ended; its check concludes from that, whatever the box does."""
        run, timeline, status = end.run, end.timeline, end.status
        timeline.prompt_status = status
        await self.store.update_prompt(prompt.seq, PromptState(status))
        past_lifetime = self.clock() > self.watcher.deadline(prompt)
        timed_out = end.timed_out or (status == PromptStatus.INTERRUPTED and past_lifetime)
        async with self.record.lock(run.id):
            current = await self.store.update_run(
                run.id,
                expect=sorted(ACTIVE_STATES),
                state=RunState.IDLE,
                summary=timeline.to_json(),
            )
            if current is None:
                return
            await self.record.show(current, final=True)
            conclusion = "timed_out" if timed_out else CONCLUSIONS[status]
            await self.checks.complete(current, conclusion, self.record.check_output(current))
            self._work_ended(current, "timed_out" if timed_out else status)
        log.info("run %s: prompt %s %s", run.id, prompt.box_prompt_id, status)
        gh = self.auth.installation_client(run.installation_id)
        await answer_review(gh, current, prompt, timeline)
        await self.watcher.check_idle_box(current)

    # -- archive ----------------------------------------------------------------------------------

    async def archive(self, run: Run, reason: str, *, delete: bool = False) -> Run:
        """Stop and archive (or delete) the run's box, once however often it is asked.

        A failed run is archived too while its box is still up (its stop did not go through).
        """
        async with self.record.lock(run.id):
            before = await self.store.get_run(run.id)
            if before is None:
                return run
            archivable = sorted(ACTIVE_STATES)
            if before.state is RunState.FAILED and await self.stops.box_live(before):
                archivable.append(RunState.FAILED)
            updated = await self.store.update_run(
                run.id,
                expect=archivable,
                state=RunState.ARCHIVED,
                reason=reason,
                finished_at=self.clock(),
            )
            if updated is None:
                return await self.stops.stop_pending(before)
            if updated.box_id is not None:
                updated = await self.stops.stop_box(updated, delete=delete)
            await self.record.show(updated, final=True)
            if before.state is RunState.WORKING:
                await self.checks.complete(updated, "cancelled", self.record.check_output(updated))
            else:  # the last prompt's check is completed: it follows the run's state
                await self.checks.update(updated, self.record.check_output(updated))
            if before.state.active and before.state is not RunState.IDLE:
                self._work_ended(updated, RunState.ARCHIVED.value)
            log.info("run %s: %s", run.id, reason)
            return updated

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
            config = await self.configs.of(run)
        except (RepoConfigError, gidgethub.GitHubException) as exc:
            log.warning("run %s: config unreadable at close (%s); using BOX_ON_CLOSE", run.id, exc)
            config = None
        return config.on_close if config is not None else self.settings.box_on_close

    # -- failure --------------------------------------------------------------------------------

    async def _fail(self, run: Run, exc: Exception) -> None:
        """End the run as failed (archived if Box archived its box), saying why and what next."""
        failure = describe_failure(exc, self.clock())
        log.warning("run %s failed (%s): %s", run.id, failure.kind, failure.message)
        gone = isinstance(exc, BoxGone) and exc.state != BoxState.ERROR
        async with self.record.lock(run.id):
            before = await self.store.get_run(run.id) or run
            if isinstance(exc, BoxGone):  # the box is stopped or broken: its cost is final
                await self.spend.refresh(before, final=True)
            updated = await self.store.update_run(
                run.id,
                expect=sorted(ACTIVE_STATES),
                state=RunState.ARCHIVED if gone else RunState.FAILED,
                reason=failure.message,
                notice=failure.notice(),
                finished_at=self.clock(),
            )
            if updated is None:
                return
            self._work_ended(updated, updated.state.value)
            if updated.box_id is not None and not isinstance(exc, BoxGone):
                # A failed run's box would otherwise run (and bill) until its TTL.
                updated = await self.stops.stop_box(updated)
            await self.record.show(updated, final=True)
            if before.state is RunState.WORKING:  # only a working prompt has an open check
                await self.checks.complete(updated, "failure", self.record.check_output(updated))
            else:
                await self.checks.update(updated, self.record.check_output(updated))

    def _work_ended(self, run: Run, outcome: str) -> None:
        """Observe the time the run took until its work ended, as its tracking comment shows."""
        if self.metrics is not None:
            self.metrics.run_ended(outcome, self.clock() - run.created_at)
