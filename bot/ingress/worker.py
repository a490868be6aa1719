"""Process the webhook inbox: claim stored deliveries and dispatch them to the handlers.

A delivery is tried again with exponential backoff when a handler fails, and
only the handlers that have not yet succeeded run again. After the last
attempt it stays in the inbox as failed, with its error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gidgethub import sansio
from gidgethub.abc import GitHubAPI
from gidgethub.routing import Router

from bot.logs import bind
from bot.metrics import Metrics
from bot.redact import redact
from bot.store.interface import Store
from bot.store.records import Delivery, DeliveryStatus, StoreUnavailable
from handlers import Deps

log = logging.getLogger(__name__)

# Work from other apps' bots is never triggered, but these events must still be seen when a
# bot causes them: the PR a box opens may come from Box's own GitHub App, CI runs as bots,
# and a bot may merge a change to `.github/box.yml`.
BOT_EXEMPT_EVENTS = frozenset(
    {
        "pull_request",
        "push",
        "check_suite",
        "workflow_run",
        "status",
        "installation",
        "installation_repositories",
    }
)

ClientFactory = Callable[[int], GitHubAPI]
# Intake does not store these any more, but an inbox may hold some from before, or from an
# older instance sharing the database.
NO_INSTALLATION = "the payload names no installation, so there is no GitHub App token to act with"


@dataclass(frozen=True)
class WorkerPolicy:
    """How hard and how fast the worker works."""

    concurrency: int = 8
    max_attempts: int = 5
    base_delay: float = 2.0
    max_delay: float = 300.0
    lease_seconds: float = 300.0
    idle_poll: float = 1.0


def handler_key(callback: Callable[..., Awaitable[None]]) -> str:
    """Return the key a handler's success is recorded under: its family and function name.

    The family is the last part of the handler's module (`issues` for `handlers.issues`), so
    the key survives the package moving: a delivery retried across a deploy still skips the
    handlers that already succeeded. Rows recorded under the older `module.function` names
    are rewritten by a store migration.
    """
    family = callback.__module__.rpartition(".")[2]
    return f"{family}.{callback.__qualname__}"


def ignore_reason(event: str, data: Mapping[str, Any], app_slug: str, app_id: str) -> str | None:
    """Say why a delivery must not be acted on (bots, our own echoes), or None."""
    sender = _mapping(data.get("sender"))
    login = str(sender.get("login", ""))
    if login.lower() == f"{app_slug}[bot]".lower():
        return "sent by this app"
    via = _mapping(_mapping(data.get("comment")).get("performed_via_github_app"))
    if str(via.get("id", "")) == app_id:
        return "comment written by this app"
    if sender.get("type") == "Bot" and event not in BOT_EXEMPT_EVENTS:
        return f"sent by the bot {login}"
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


class Worker:
    """Claims deliveries from the store and runs the router's handlers on them."""

    def __init__(
        self,
        store: Store,
        router: Router,
        client_for: ClientFactory,
        deps: Deps,
        policy: WorkerPolicy = WorkerPolicy(),
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.router = router
        self.client_for = client_for
        self.deps = deps
        self.policy = policy
        self.metrics = metrics
        self.wake = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(policy.concurrency)
        self.app_slug = ""
        self.app_id = ""

    async def run(self, app_id: str, app_slug: str) -> None:
        """Work as the app (*app_id*, *app_slug*) until `stop` is called."""
        self.app_id, self.app_slug = app_id, app_slug
        try:
            await self.store.listen_deliveries(self.wake.set)
        except StoreUnavailable as exc:  # the inbox is still polled
            log.warning("cannot listen for new deliveries: %s; polling instead", exc)
        while not self._stopping:
            try:
                self.wake.clear()  # before claiming: a delivery stored meanwhile still wakes
                claimed = await self._claim()
                if not claimed:
                    await self._sleep_until_due()
            except StoreUnavailable as exc:
                log.error("cannot read the inbox: %s; trying again shortly", exc)
                await asyncio.sleep(self.policy.idle_poll * 5)

    async def _claim(self) -> int:
        free = self.policy.concurrency - len(self._tasks)
        if free <= 0:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            return 1
        deliveries = await self.store.claim_deliveries(free, self.policy.lease_seconds)
        for delivery in deliveries:
            task = asyncio.create_task(self.process(delivery), name=f"delivery {delivery.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(deliveries)

    async def _sleep_until_due(self) -> None:
        due = await self.store.next_due_in()
        timeout = self.policy.idle_poll if due is None else min(due, self.policy.idle_poll)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), timeout)

    async def stop(self, grace: float) -> None:
        """Stop claiming; give in-flight deliveries *grace* seconds, then hand them back."""
        self._stopping = True
        self.wake.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self.store.release_claims()
        except StoreUnavailable as exc:  # they are released at the next start instead
            log.error("could not hand back in-flight deliveries: %s", exc)

    async def process(self, delivery: Delivery) -> None:
        """Dispatch one delivery to every matching handler and record the outcome."""
        data = delivery.data()
        with bind(
            delivery=delivery.id, installation=delivery.installation_id, repo=_repo_name(data)
        ):
            await self._process(delivery, data)

    async def _process(self, delivery: Delivery, data: dict[str, Any]) -> None:
        context = _log_context(delivery, data)
        if delivery.attempts > self.policy.max_attempts:  # claimed again after a crash
            error = f"gave up after {delivery.attempts - 1} attempts; last error: " + (
                delivery.last_error or "the app stopped while handling it"
            )
            log.error("%s failed: %s", context, error)
            await self.store.finish_delivery(
                delivery.id, DeliveryStatus.FAILED, delivery.done_handlers, error
            )
            self._count(delivery, "failed")
            return
        try:
            reason = ignore_reason(delivery.event, data, self.app_slug, self.app_id)
        except Exception as exc:  # a payload of a shape no handler can read
            log.exception("%s cannot be read", context)
            await self._record(delivery, list(delivery.done_handlers), [repr(exc)], context)
            return
        event = sansio.Event(data, event=delivery.event, delivery_id=delivery.id)
        callbacks = sorted(self.router.fetch(event), key=handler_key)
        if reason is None and not callbacks:
            reason = "no handler for this event"
        if reason is None and delivery.installation_id is None:
            reason = NO_INSTALLATION
        if reason is not None:
            log.info("%s ignored: %s", context, reason)
            await self.store.finish_delivery(delivery.id, DeliveryStatus.IGNORED, error=reason)
            self._count(delivery, "ignored")
            return
        done, errors = await self._run_handlers(delivery, event, callbacks, context)
        await self._record(delivery, done, errors, context)

    async def _run_handlers(
        self,
        delivery: Delivery,
        event: sansio.Event,
        callbacks: list[Callable[..., Awaitable[None]]],
        context: str,
    ) -> tuple[list[str], list[str]]:
        assert delivery.installation_id is not None  # ignored before the handlers otherwise
        gh = self.client_for(delivery.installation_id)
        done = list(delivery.done_handlers)
        errors: list[str] = []
        for callback in callbacks:
            name = handler_key(callback)
            if name in done:
                continue
            try:
                await callback(event, gh, delivery_id=delivery.id, **self.deps.keywords())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s handler %s failed", context, name)
                errors.append(redact(f"{name}: {type(exc).__name__}: {exc}"))
            else:
                done.append(name)
        return done, errors

    async def _record(
        self, delivery: Delivery, done: list[str], errors: list[str], context: str
    ) -> None:
        if not errors:
            log.info("%s done by %s", context, ", ".join(done))
            await self.store.finish_delivery(delivery.id, DeliveryStatus.DONE, done)
            self._count(delivery, "done")
            return
        error = "; ".join(errors)
        if delivery.attempts >= self.policy.max_attempts:
            log.error("%s failed after %d attempts: %s", context, delivery.attempts, error)
            await self.store.finish_delivery(delivery.id, DeliveryStatus.FAILED, done, error)
            self._count(delivery, "failed")
            return
        delay = self._backoff(delivery.attempts)
        log.warning("%s attempt %d failed; retrying in %.1f s", context, delivery.attempts, delay)
        await self.store.retry_delivery(delivery.id, done, error, delay)
        self._count(delivery, "retry")

    def _count(self, delivery: Delivery, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.processed.labels(delivery.event, outcome).inc()

    def _backoff(self, attempts: int) -> float:
        ceiling = min(self.policy.max_delay, self.policy.base_delay * 2 ** (attempts - 1))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


def _repo_name(data: Mapping[str, Any]) -> str | None:
    repository = data.get("repository")
    name = repository.get("full_name") if isinstance(repository, dict) else None
    return name if isinstance(name, str) else None


def _log_context(delivery: Delivery, data: Mapping[str, Any]) -> str:
    repo = _repo_name(data) or "-"
    action = f".{delivery.action}" if delivery.action else ""
    return (
        f"delivery={delivery.id} event={delivery.event}{action}"
        f" installation={delivery.installation_id or '-'} repo={repo}"
    )
