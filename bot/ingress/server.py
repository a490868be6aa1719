"""The aiohttp application: webhook intake, health check, and the background worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from bot.box.client import DEFAULT_RETRY_BUDGET_SECONDS, BoxClient
from bot.config.loader import ConfigLoader, defaults_from
from bot.github.checks import Checks
from bot.github.client import GitHubAppAuth, get_app_info
from bot.github.permissions import PermissionChecker
from bot.github.tracker import MIN_EDIT_INTERVAL, Tracker
from bot.ingress.redeliver import reconcile_forever
from bot.ingress.screen import Screen, Skip, Skipped
from bot.ingress.webhook import (
    MAX_BODY_BYTES,
    SIGNATURE_HEADER,
    Refusal,
    WebhookRejected,
    leading_action,
    parse_delivery,
    read_headers,
    verify_signature,
)
from bot.ingress.worker import Worker, WorkerPolicy
from bot.metrics import CONTENT_TYPE, Metrics
from bot.runs.manager import RunManager
from bot.runs.timing import Timing
from bot.settings import Settings
from bot.store.connect import open_store
from bot.store.interface import Store
from bot.store.locks import NamedLock
from bot.store.records import StoreUnavailable
from bot.store.retention import prune_periodically
from handlers import Deps, build_router

log = logging.getLogger(__name__)

BOX_ACCOUNT_LOCK = "box-account"

WEBHOOK_PATH = "/api/github/webhooks"
# On SIGTERM everything is done or handed back within 25 s: open requests get
# REQUEST_SHUTDOWN_SECONDS, then in-flight work shares what is left.
REQUEST_SHUTDOWN_SECONDS = 3.0
SHUTDOWN_GRACE_SECONDS = 25.0 - REQUEST_SHUTDOWN_SECONDS
# Never aiohttp's 5-minute default: a hung upstream must not hold work for that long.
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30, sock_connect=10, sock_read=25)
IDENTITY_RETRY_MAX = 60.0
JSON = "application/json"


@dataclass
class Options:
    """Knobs that tests, the simulator mode and benchmarks turn; production uses the defaults."""

    clock: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # a watcher's waits, on that clock
    worker: WorkerPolicy = field(default_factory=WorkerPolicy)
    github_write_interval: float = 1.0
    comment_interval: float = MIN_EDIT_INTERVAL
    timing: Timing | None = None
    box_retry_budget: float = DEFAULT_RETRY_BUDGET_SECONDS


@dataclass
class Components:
    """What the running app holds for its whole life."""

    settings: Settings
    session: aiohttp.ClientSession
    store: Store
    auth: GitHubAppAuth
    box: BoxClient
    runs: RunManager
    worker: Worker
    worker_task: asyncio.Task[None]
    metrics: Metrics


COMPONENTS = web.AppKey("components", Components)
SETTINGS = web.AppKey("settings", Settings)
OPTIONS = web.AppKey("options", Options)
SCREEN = web.AppKey("screen", Screen)


def create_app(settings: Settings, options: Options | None = None) -> web.Application:
    """Build the web application; nothing is opened until it starts."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[OPTIONS] = options or Options()
    app[SCREEN] = Screen(build_router().routes, settings.app_id)
    app.router.add_post(WEBHOOK_PATH, receive_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings, options = app[SETTINGS], app[OPTIONS]
    store = await open_store(
        settings.database_url, options.clock, pool_size=settings.database_pool_size
    )
    session = aiohttp.ClientSession(timeout=CLIENT_TIMEOUT)  # after the store: it may not open
    pruning = asyncio.create_task(
        prune_periodically(store, settings.inbox_retention_days), name="inbox pruning"
    )
    if settings.database_url.startswith("sqlite"):
        # One process owns a SQLite file: whatever it left half-done is ours to redo.
        await store.release_claims(every_instance=True)
        await store.release_leases(every_instance=True)
    metrics = Metrics()
    auth = GitHubAppAuth(
        session,
        metrics=metrics,
        app_id=settings.app_id,
        private_key=settings.private_key,
        base_url=settings.github_api_url,
        clock=options.clock,
        write_interval=options.github_write_interval,
    )
    box = BoxClient(
        session,
        settings.box_api_base,
        settings.box_api_key,
        retry_budget_seconds=options.box_retry_budget,
        observer=metrics.box_call,
        # Box's repository selection is account-wide: every instance takes turns from select
        # to create, so a box never starts with another repository selected.
        account_lock=NamedLock(store, BOX_ACCOUNT_LOCK),
    )
    permissions = PermissionChecker()
    tracker = Tracker(auth, store, min_interval=options.comment_interval)
    config = ConfigLoader(auth, defaults_from(settings))
    runs = RunManager(
        store,
        auth,
        box,
        settings,
        permissions,
        tracker,
        Checks(auth),
        config,
        timing=options.timing,
        clock=options.clock,
        sleep=options.sleep,
        metrics=metrics,
    )
    deps = Deps(
        runs=runs,
        config=config,
        permissions=permissions,
        store=store,
        settings=settings,
        auth=auth,
    )
    metrics.watch_instance(lambda: runs.driving, lambda: runs.leases.taken_over)
    worker = Worker(store, build_router(), auth.installation_client, deps, options.worker, metrics)
    task = asyncio.create_task(_work(auth, runs, worker), name="worker")
    redelivery = asyncio.create_task(
        reconcile_forever(auth.app_client, store, options.clock, on_asked=metrics.redelivered),
        name="redeliver",
    )
    app[COMPONENTS] = Components(settings, session, store, auth, box, runs, worker, task, metrics)
    log.info("box-bot listening for webhooks on %s", WEBHOOK_PATH)
    try:
        yield
    finally:
        deadline = asyncio.get_running_loop().time() + SHUTDOWN_GRACE_SECONDS
        await runs.stop(SHUTDOWN_GRACE_SECONDS)  # first: nothing new starts driving a box
        await worker.stop(max(0.0, deadline - asyncio.get_running_loop().time()))
        for background in (task, redelivery):
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
        await session.close()
        pruning.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruning
        await store.close()


async def _work(auth: GitHubAppAuth, runs: RunManager, worker: Worker) -> None:
    """Learn who the app is, resume unfinished runs, then process the inbox."""
    app_id, app_slug = await _app_identity(auth)
    delay = 1.0
    while True:
        try:
            await runs.start(app_slug)
            break
        except StoreUnavailable as exc:
            log.error("cannot resume runs: %s; retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, IDENTITY_RETRY_MAX)
    await worker.run(app_id, app_slug)


async def _app_identity(auth: GitHubAppAuth) -> tuple[str, str]:
    """Learn the app's id and slug from `GET /app`, retrying until GitHub answers."""
    delay = 1.0
    while True:
        try:
            info = await get_app_info(auth)
        except Exception as exc:  # GitHub down or the key refused: keep the inbox, try again
            log.error(
                "cannot read the app from GitHub (GET /app): %s; retrying in %.0f s", exc, delay
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, IDENTITY_RETRY_MAX)
            continue
        log.info("running as GitHub App %s (id %s)", info["slug"], info["id"])
        return str(info["id"]), str(info["slug"])


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


def _refuse(metrics: Metrics, reason: Refusal, status: int, message: str) -> web.Response:
    metrics.refused.labels(reason.value).inc()
    return _error(status, message)


async def receive_webhook(request: web.Request) -> web.Response:
    """Verify and acknowledge one delivery, storing it first if it can lead to work."""
    components = request.app[COMPONENTS]
    metrics = components.metrics
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        log.warning("webhook body over %d bytes refused", MAX_BODY_BYTES)
        return _refuse(
            metrics, Refusal.TOO_LARGE, 413, f"body is larger than {MAX_BODY_BYTES} bytes"
        )
    if not verify_signature(
        components.settings.webhook_secret, body, request.headers.get(SIGNATURE_HEADER)
    ):
        log.warning(
            "webhook with a missing or wrong %s refused (delivery %s)",
            SIGNATURE_HEADER,
            request.headers.get("X-GitHub-Delivery", "-")[:64],
        )
        return _refuse(
            metrics, Refusal.BAD_SIGNATURE, 401, f"missing or invalid {SIGNATURE_HEADER} signature"
        )
    screen = request.app[SCREEN]
    try:
        headers = read_headers(request.headers)
        if headers.event != "ping":  # the body is signed: what no handler takes is not decoded
            action = leading_action(body)
            skipped = screen.by_event(headers.event) or (
                None if action is None else screen.by_action(headers.event, action)
            )
            if skipped is not None:
                return _skip(metrics, headers.id, headers.event, action, skipped)
        delivery = parse_delivery(headers, body)
    except WebhookRejected as exc:
        log.warning("webhook refused: %s", exc.message)
        return _refuse(metrics, exc.reason, 400, exc.message)
    if delivery.event == "ping":
        log.info("ping received (delivery %s, zen %r)", delivery.id, delivery.data.get("zen"))
        return web.json_response({"ok": True, "pong": True})
    skipped = screen.by_payload(
        delivery.event, delivery.action, delivery.installation_id, delivery.data
    )
    if skipped is not None:
        return _skip(metrics, delivery.id, delivery.event, delivery.action, skipped)
    try:
        stored = await components.store.add_delivery(
            delivery.id, delivery.event, delivery.action, delivery.installation_id, body
        )
    except StoreUnavailable as exc:
        log.error("delivery %s not stored, answering 503: %s", delivery.id, exc)
        return _refuse(
            metrics,
            Refusal.STORE_UNAVAILABLE,
            503,
            "the app cannot store this delivery now; GitHub will show it as failed",
        )
    if stored:
        metrics.received.labels(delivery.event).inc()
        components.worker.wake.set()
    else:
        log.info("delivery %s already received; not processed again", delivery.id)
    return web.json_response(
        {"ok": True, "delivery": delivery.id, "stored": True, "duplicate": not stored},
        status=202,
    )


def _skip(
    metrics: Metrics, delivery_id: str, event: str, action: str | None, skipped: Skipped
) -> web.Response:
    """Acknowledge a delivery that cannot lead to work without storing it."""
    metrics.skipped_one(event, skipped.reason.value)
    name = f"{event}.{action}" if action else event
    if skipped.reason is Skip.NO_INSTALLATION:  # a setup mistake worth seeing: say it once each
        log.warning("delivery %s (%s) ignored: %s", delivery_id, name, skipped.explanation)
    else:
        log.debug("delivery %s (%s) not stored: %s", delivery_id, name, skipped.explanation)
    answer = {"ok": True, "delivery": delivery_id, "stored": False, "reason": skipped.explanation}
    # Bytes, not `json_response`: its text handling is a third of this path's cost.
    return web.Response(body=json.dumps(answer).encode(), status=202, content_type=JSON)


async def healthz(request: web.Request) -> web.Response:
    """Answer 200 when the store answers, 503 otherwise."""
    try:
        await request.app[COMPONENTS].store.ping()
    except StoreUnavailable as exc:
        return _error(503, f"store unavailable: {exc}")
    return web.json_response({"ok": True})


async def metrics_page(request: web.Request) -> web.Response:
    """Serve the metrics in Prometheus's text format."""
    components = request.app[COMPONENTS]
    try:
        components.metrics.set_counts(
            await components.store.delivery_counts(), await components.store.count_runs()
        )
    except StoreUnavailable as exc:
        log.warning("metrics without store counts: %s", exc)
    return web.Response(
        body=components.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE}
    )
