"""A Box Public API v1 server on a loopback port, following ../shared/box-api/REFERENCE.md."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import random
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aiohttp import web

from bot.sim.box_agent import AgentContext, Script, default_scripts, run_script
from bot.sim.box_state import (
    API_PREFIX,
    BILLING_MULTIPLIERS,
    PROMPTABLE_STATES,
    TERMINAL_RUN_STATUSES,
    BoxTimings,
    Fault,
    IdempotencyRecord,
    Json,
    RecordedRequest,
    SimApiError,
    SimBox,
    SimRun,
    error_body,
    iso,
    paginate,
    parse_ttl,
)

__all__ = [
    "API_PREFIX",
    "DEFAULT_API_KEY",
    "BoxSimulator",
    "BoxTimings",
    "RecordedRequest",
    "SimBox",
    "SimRun",
]

logger = logging.getLogger(__name__)

AgentHook = Callable[[str, Json], Awaitable[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_API_KEY = "box_live_simulator0123456789"
BOX_ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
ACTIVE_STATES = ("provisioned", "cloning", "ready", "idle", "running")
COUNTED_STATES = frozenset({"init", "provisioning", *ACTIVE_STATES})
ARCHIVED_STATES = frozenset({"archiving", "archived"})
STARTING_STATES = frozenset({"init", "provisioning", "provisioned", "cloning"})
PROVIDERS = {
    "codex": "codex",
    "claude-code": "claude-code",
    "claude": "claude-code",
    "pi": "pi",
    "opencode": "opencode",
    "prime-agent": "prime-agent",
    "prime": "prime-agent",
    "kimi": "kimi",
    "kimi-code": "kimi",
}
DEFAULT_MODELS = {"codex": "gpt-5.4", "claude-code": "sonnet"}
DEFAULT_TTL_SECONDS = 3600
MAX_NAME_LENGTH = 120
MAX_IDEMPOTENCY_KEY = 255
IDEMPOTENCY_KEY_SECONDS = 24 * 3600  # keys are kept 24 h (REFERENCE.md §4)
FAILED_KEY_HOLD_SECONDS = 120.0  # a create that failed frees its key after ~2 min
SETUP_URL = "https://box.ascii.dev/dashboard?tab=agents"
SLUG_WORDS = (
    "frazil",
    "pneuma",
    "rallye",
    "quokka",
    "basalt",
    "cirrus",
    "marram",
    "tundra",
    "lumen",
    "sorrel",
    "fjord",
    "gantry",
    "nimbus",
    "ochre",
    "prism",
    "talus",
)
MAX_SETUP_SCRIPT_BYTES = 64 * 1024
MAX_ENV_VARS = 100
MAX_ENV_BYTES = 64 * 1024
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
RESERVED_ENV_NAMES = frozenset(
    {
        "ASCII_TOKEN",
        "ASCII_API_URL",
        "AGENT_ID",
        "PRODUCT_MODE",
        "ENVIRONMENT_ID",
        "BOX_ID",
        "SERVICE_PREVIEW_TOKEN",
        "BOX_CLI_TOKEN",
    }
)
DEFAULT_ENVIRONMENT = "base"
DEFAULT_SECONDS_PER_DOLLAR = 3600.0
FAULT_CODES = {402: "insufficient_credit", 404: "not_found", 409: "conflict", 429: "rate_limited"}


def _ok(kind: str, http_status: int = 200, /, **fields: Any) -> web.Response:
    return web.json_response({"ok": True, "type": kind, **fields}, status=http_status)


class BoxSimulator:
    """Serve the Box endpoints the app uses, with timings, limits, faults and a scripted agent."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        timings: BoxTimings | None = None,
        seed: int | None = None,
        login: str = "box-bot-dev",
        max_active_boxes: int = 20,
        creation_rate_per_minute: int = 20,
        credit: bool = True,
        unconfigured_providers: Iterable[str] = (),
        delete_mode: Literal["operation", "deleted"] = "operation",
        host_supported: bool = True,
        selection_replaces: bool = False,
        page_info: bool = True,
        sunset: str | None = None,
        on_agent_event: AgentHook | None = None,
        idempotency_key_seconds: float = IDEMPOTENCY_KEY_SECONDS,
        failed_key_hold_seconds: float = FAILED_KEY_HOLD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        usage_supported: bool = True,
        seconds_per_dollar: float = DEFAULT_SECONDS_PER_DOLLAR,
    ) -> None:
        self.api_key = api_key
        self.timings = timings or BoxTimings()
        self.login = login
        self.max_active_boxes = max_active_boxes
        self.creation_rate_per_minute = creation_rate_per_minute
        self.credit = credit
        self.unconfigured_providers = set(unconfigured_providers)
        self.delete_mode = delete_mode
        self.host_supported = host_supported
        self.selection_replaces = selection_replaces
        self.page_info = page_info  # False: lists answer without the optional `pageInfo`
        self.sunset = sunset
        self.on_agent_event = on_agent_event
        self.idempotency_key_seconds = idempotency_key_seconds
        self.failed_key_hold_seconds = failed_key_hold_seconds
        self.clock = clock  # for rate limits, idempotency keys and billed time
        self.usage_supported = usage_supported  # False: an older Box without the usage endpoint
        self.seconds_per_dollar = seconds_per_dollar
        self.environments: set[str] = {DEFAULT_ENVIRONMENT}
        # A setup script containing a key fails with its value as `setupError`.
        self.setup_failures: dict[str, str] = {}
        self.provision_failure = False
        self.scripts: dict[str, Script] = default_scripts()
        self.default_script = "success"
        self.script_rules: dict[str, str] = {}
        self.requests: list[RecordedRequest] = []
        self.boxes: dict[str, SimBox] = {}
        self.repos: dict[str, Json] = {}
        self.selected: dict[str, str] = {}
        self.environment_id = "env_sim"
        self.base_url = ""
        self._rng = random.Random(seed)
        self._fault_rng = random.Random(seed)  # apart, so faults do not change box ids
        self._faults: list[Fault] = []
        self._idempotency: dict[str, IdempotencyRecord] = {}
        self._starts: deque[float] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None

    # -- lifecycle of the server -----------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on *host*:*port* (0 = any free port) and return the API base URL."""
        app = web.Application(middlewares=[self._middleware])
        self._add_routes(app.router)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.base_url = f"http://{host}:{bound}{API_PREFIX}"
        return self.base_url

    async def close(self) -> None:
        """Cancel every simulated task and stop the server."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        box = API_PREFIX + "/boxes/{box_id}"
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/me", self._me),
            ("GET", "/limits", self._limits),
            ("GET", "/repos", self._list_repos),
            ("POST", "/repos", self._select_repo),
            ("GET", "/boxes", self._list_boxes),
            ("POST", "/boxes", self._create_box),
        ]
        for method, path, handler in routes:
            router.add_route(method, API_PREFIX + path, handler)
        box_routes: list[tuple[str, str, Handler]] = [
            ("GET", "", self._get_box),
            ("PATCH", "", self._update_box),
            ("DELETE", "", self._delete_box),
            ("POST", "/stop", self._stop_box),
            ("POST", "/resume", self._resume_box),
            ("POST", "/fork", self._fork_box),
            ("POST", "/prompt", self._prompt),
            ("GET", "/prompts/{prompt_id}", self._prompt_run),
            ("GET", "/events", self._events),
            ("POST", "/interrupt", self._interrupt),
            ("POST", "/desktop", self._desktop),
            ("POST", "/host", self._host),
            ("GET", "/usage", self._usage),
        ]
        for method, suffix, handler in box_routes:
            router.add_route(method, box + suffix, handler)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- test knobs and views --------------------------------------------------------------

    def add_repo(self, full_name: str, github_id: int | None = None, private: bool = False) -> str:
        """Make a GitHub repository available to Box; return its `databaseId`."""
        owner, _, name = full_name.partition("/")
        github_id = github_id or 100_000 + len(self.repos)
        database_id = f"repo_{owner.lower()}_{github_id}"
        self.repos[database_id] = {
            "id": github_id,
            "databaseId": database_id,
            "name": name,
            "fullName": full_name,
            "private": private,
            "permissions": "write",
            "pushedAt": iso(datetime.now(UTC)),
        }
        return database_id

    def selected_at_create(self, box_id: str) -> list[str]:
        """Return the full names of the repos selected when *box_id* was created, oldest first."""
        return list(self.boxes[box_id].selected)

    def inject_fault(
        self,
        method: str,
        path_regex: str,
        status: int | Literal["drop"] | None = 500,
        *,
        times: int | None = None,
        rate: float | None = None,
        delay: float = 0.0,
        retry_after: float | None = None,
        after: bool = False,
        body: str | None = None,
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Fail matching requests: an error status, a dropped connection ("drop"), or only a
        *delay* (status None). With *after* the request takes effect first.

        Without *rate* the next *times* (default 1) matching requests fail. With *rate* each
        matching request fails with that probability, drawn from the seeded generator, until
        *times* have failed (default: for good, see `clear_faults`).
        """
        remaining = times if times is not None else (1 if rate is None else math.inf)
        self._faults.append(
            Fault(
                method.upper(),
                re.compile(path_regex),
                status,
                remaining,
                delay,
                retry_after,
                after,
                body,
                content_type,
                rate,
                dict(headers or {}),
            )
        )

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._faults.clear()

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        """Return the recorded requests whose method and route match."""
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method == method and pattern.search(r.route)]

    async def wait_until(self, box_id: str, predicate: Callable[[SimBox], bool]) -> SimBox:
        """Wait until *predicate* holds for the box (wrap in `asyncio.timeout` to bound it)."""
        box = self.boxes[box_id]
        while not predicate(box):
            box.changed.clear()
            await box.changed.wait()
        return box

    async def wait_for_state(self, box_id: str, *states: str) -> SimBox:
        """Wait until the box reaches one of *states*."""
        return await self.wait_until(box_id, lambda box: box.state in states)

    async def wait_for_run(self, box_id: str, prompt_id: str) -> SimRun:
        """Wait until a prompt run ends."""
        box = await self.wait_until(
            box_id, lambda box: box.runs[prompt_id].status in TERMINAL_RUN_STATUSES
        )
        return box.runs[prompt_id]

    # -- middleware: record, faults, auth, envelopes ---------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = "req_" + secrets.token_hex(8)
        await self._record(request)
        fault = self._take_fault(request)
        try:
            response = await self._faulted(request, fault, request_id, after=False)
            if response is None:
                self._check_auth(request)
                response = await handler(request)
                response = await self._faulted(request, fault, request_id, after=True) or response
        except SimApiError as error:
            response = web.json_response(
                error_body(error, request_id), status=error.status, headers=error.headers
            )
        response.headers["X-Request-Id"] = request_id
        if self.sunset:
            response.headers["Sunset"] = self.sunset
        return response

    async def _record(self, request: web.Request) -> None:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", errors="replace")
        self.requests.append(
            RecordedRequest(
                request.method, request.path, dict(request.query), body, dict(request.headers)
            )
        )

    def _take_fault(self, request: web.Request) -> Fault | None:
        for fault in self._faults:
            if fault.method != request.method or not fault.pattern.search(request.path):
                continue
            if fault.rate is not None and self._fault_rng.random() >= fault.rate:
                continue
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            return fault
        return None

    async def _faulted(
        self, request: web.Request, fault: Fault | None, request_id: str, *, after: bool
    ) -> web.StreamResponse | None:
        """Apply *fault* in its phase: wait, then drop the connection or answer an error."""
        if fault is None or fault.after != after:
            return None
        await asyncio.sleep(fault.delay)
        if fault.status is None:
            return None
        if fault.status == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        headers = dict(fault.headers)
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault.body is not None:
            return web.Response(
                status=fault.status,
                text=fault.body,
                headers=headers,
                content_type=fault.content_type,
            )
        code = FAULT_CODES.get(fault.status, "internal_error")
        error = SimApiError(fault.status, code, f"Injected fault {fault.status}.")
        return web.json_response(
            error_body(error, request_id), status=fault.status, headers=headers
        )

    def _paging(self, info: Json) -> Json:
        """Return the `pageInfo` field, or nothing when switched off (it is optional)."""
        return {"pageInfo": info} if self.page_info else {}

    def _check_auth(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            raise SimApiError(401, "unauthorized", "Missing or invalid API key.")

    # -- shared checks ---------------------------------------------------------------------

    def _box(self, request: web.Request) -> SimBox:
        box = self.boxes.get(request.match_info["box_id"])
        if box is None or box.deleted:
            raise SimApiError(404, "box_not_found", "No box with this id.")
        return box

    @staticmethod
    async def _body(request: web.Request) -> Json:
        raw = await request.read()  # already buffered by the recording middleware
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise SimApiError(400, "invalid_json", "The body is not valid JSON.") from exc
        if not isinstance(body, dict):
            raise SimApiError(400, "invalid_body", "The body must be a JSON object.")
        return body

    def _require_credit(self) -> None:
        if not self.credit:
            raise SimApiError(402, "insufficient_credit", "Add credit to keep using boxes.")

    def _check_can_start(self) -> None:
        """Apply credit, creation-rate and active-box limits to a create, fork or resume."""
        self._require_credit()
        now = self.clock()
        while self._starts and now - self._starts[0] >= 60:
            self._starts.popleft()
        if len(self._starts) >= self.creation_rate_per_minute:
            # With a limit of 0 nothing has started: the whole minute is the wait.
            oldest = self._starts[0] if self._starts else now
            wait = max(1, math.ceil(60 - (now - oldest)))
            raise SimApiError(
                429,
                "rate_limited",
                "Too many box starts; slow down.",
                {"retryAfter": wait},
                {"Retry-After": str(wait)},
            )
        if self._active_boxes() >= self.max_active_boxes:
            raise SimApiError(
                409,
                "active_box_limit",
                "Too many active boxes.",
                {"maxActiveBoxes": self.max_active_boxes},
            )
        self._starts.append(now)

    def _idempotency_begin(self, request: web.Request, body: Json) -> Json | None:
        """Return the stored answer for a replayed key, or reserve the key (REFERENCE.md §4)."""
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return None
        if not key or len(key) > MAX_IDEMPOTENCY_KEY:
            raise SimApiError(
                400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 characters."
            )
        fingerprint = json.dumps([request.method, request.path, body], sort_keys=True)
        record = self._idempotency.get(key)
        if record is None or record.expires_at <= self.clock():
            self._idempotency[key] = IdempotencyRecord(fingerprint)
            return None
        if record.fingerprint != fingerprint:
            raise SimApiError(
                409, "idempotency_key_reused", "This key was used for a different request."
            )
        if record.answer is None:  # still running, or failed less than the hold ago
            raise SimApiError(
                409, "idempotency_in_progress", "A request with this key is still running."
            )
        return record.answer

    async def _idempotent(
        self, request: web.Request, body: Json, make: Callable[[], Awaitable[Json]]
    ) -> web.Response:
        """Run *make* once per Idempotency-Key and replay its answer while the key is kept;
        a failed run keeps the key busy for `failed_key_hold_seconds`, then frees it."""
        replay = self._idempotency_begin(request, body)
        if replay is not None:
            return web.json_response(replay, status=202)
        record = self._idempotency.get(request.headers.get("Idempotency-Key") or "")
        try:
            answer = await make()
        except BaseException:
            if record is not None:
                record.expires_at = self.clock() + self.failed_key_hold_seconds
            raise
        if record is not None:
            record.answer = answer
            record.expires_at = self.clock() + self.idempotency_key_seconds
        return web.json_response(answer, status=202)

    # -- account and repositories ----------------------------------------------------------

    async def _me(self, request: web.Request) -> web.Response:
        return _ok(
            "user.info",
            user={
                "login": self.login,
                "email": f"{self.login}@example.com",
                "zeroDataRetention": False,
            },
        )

    def _active_boxes(self) -> int:
        """Count boxes that hold a slot, including ones still provisioning."""
        return sum(1 for b in self.boxes.values() if b.state in COUNTED_STATES and not b.deleted)

    async def _limits(self, request: web.Request) -> web.Response:
        active = self._active_boxes()
        return _ok(
            "limits.info",
            canStart=self.credit and active < self.max_active_boxes,
            activeBoxes=active,
            maxActiveBoxes=self.max_active_boxes,
            activeStates=list(ACTIVE_STATES),
            maxCreationRequestsPerMinute=self.creation_rate_per_minute,
            maxCreationRequestsPerDay=None,
            billingStatus="active" if self.credit else "payment_required",
            creditBalanceSeconds=7200 if self.credit else 0,
        )

    def _selected_json(self) -> list[Json]:
        return [
            {
                **self.repos[db_id],
                "baseBranch": branch,
                "setupRoutineId": None,
                "setupScript": "",
                "setupBlocking": False,
                "preCommitHooks": [],
            }
            for db_id, branch in self.selected.items()
        ]

    async def _list_repos(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "").lower()
        only = request.query.get("selected")
        repos = [
            r for r in self.repos.values() if q in r["fullName"].lower() or q in r["name"].lower()
        ]
        if only in ("true", "false"):
            repos = [r for r in repos if (r["databaseId"] in self.selected) == (only == "true")]
        page, info = paginate(request.query, repos, lambda r: (0, r["fullName"].lower()), "asc")
        owners: dict[str, list[Json]] = {}
        for repo in page:
            owners.setdefault(repo["fullName"].split("/")[0], []).append(repo)
        installations = [
            {
                "type": "Organization",
                "accountLogin": owner,
                "accountAvatarUrl": None,
                "repositories": items,
            }
            for owner, items in owners.items()
        ]
        return _ok(
            "repos.list",
            installations=installations,
            environmentId=self.environment_id,
            selectedRepositories=self._selected_json(),
            **self._paging(info),
        )

    async def _select_repo(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        repo_id = body.get("repositoryId")
        if not isinstance(repo_id, str) or repo_id not in self.repos:
            raise SimApiError(
                400, "invalid_repository", "repositoryId must be a databaseId from GET /repos."
            )
        # Account-wide, and selecting adds one repo or updates its base branch (REFERENCE.md
        # §10); `selection_replaces` models a server that keeps only the latest. Re-selecting
        # moves the repo to the end, so the last entry is the one most recently asked for.
        if self.selection_replaces:
            self.selected.clear()
        self.selected.pop(repo_id, None)
        self.selected[repo_id] = str(body.get("baseBranch") or "main")
        return _ok(
            "repos.updated",
            success=True,
            environmentId=self.environment_id,
            selectedRepositories=self._selected_json(),
        )

    # -- boxes -----------------------------------------------------------------------------

    def _new_box_id(self) -> str:
        while True:
            box_id = "bx_" + "".join(self._rng.choice(BOX_ID_ALPHABET) for _ in range(8))
            if box_id not in self.boxes:
                return box_id

    def _new_box(
        self,
        ttl: int | None,
        selected: Sequence[str],
        name: str | None = None,
        options: Json | None = None,
    ) -> SimBox:
        number = len(self.boxes)
        options = options or {}
        words = [self._rng.choice(SLUG_WORDS) for _ in range(3)]
        now = datetime.now(UTC)
        box = SimBox(
            id=self._new_box_id(),
            name=name or f"Box {now:%Y-%m-%d %H:%M}",
            subdomain=f"{'-'.join(words)}{number or ''}",
            ttl_seconds=ttl,
            selected=list(selected),
            ip=f"203.0.113.{number % 250 + 2}",
            type=options.get("type", "default"),
            environment=options.get("environment", DEFAULT_ENVIRONMENT),
            env=dict(options.get("env", {})),
            setup_script=options.get("setupScript"),
            setup_status="pending" if options.get("setupScript") is not None else None,
            clock=self.clock,
        )
        self.boxes[box.id] = box
        self._arm_ttl(box)
        box.lifecycle = self._spawn(self._provision(box, clone=True))
        return box

    async def _provision(self, box: SimBox, *, clone: bool) -> None:
        await asyncio.sleep(self.timings.provisioning)
        if self.provision_failure:
            box.set_state("error")
            return
        if clone:
            box.set_state("cloning")
            await asyncio.sleep(self.timings.cloning)
        box.set_state("ready")
        self._start_next_run(box)
        if clone and box.setup_script is not None:
            await self._run_setup(box)

    async def _run_setup(self, box: SimBox) -> None:
        """Run the create-time setup script in the background of a ready box."""
        script = box.setup_script or ""
        box.setup_status = "running"
        box.changed.set()
        await asyncio.sleep(self.timings.setup)
        failure = next((e for key, e in self.setup_failures.items() if key in script), None)
        box.setup_status, box.setup_error = ("failed", failure) if failure else ("done", None)
        box.changed.set()

    def _arm_ttl(self, box: SimBox) -> None:
        """(Re)start the auto-archive countdown; a new TTL counts from now."""
        if box.ttl_task is not None:
            box.ttl_task.cancel()
        box.ttl_task, box.archive_after = None, None
        if box.ttl_seconds is not None:
            box.archive_after = datetime.now(UTC) + timedelta(seconds=box.ttl_seconds)
            box.ttl_task = self._spawn(self._expire(box, box.ttl_seconds * self.timings.ttl_scale))

    async def _expire(self, box: SimBox, seconds: float) -> None:
        await asyncio.sleep(seconds)
        box.ttl_task = None
        await self._begin_archive(box)

    async def _list_boxes(self, request: web.Request) -> web.Response:
        states = {s for s in request.query.get("state", "").split(",") if s}
        boxes = [
            b for b in self.boxes.values() if not b.deleted and (not states or b.state in states)
        ]
        page, info = paginate(
            request.query, boxes, lambda b: (int(b.created.timestamp() * 1000), b.id)
        )
        return _ok("box.list", boxes=[b.to_api() for b in page], **self._paging(info))

    async def _create_box(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        ttl = parse_ttl(body.get("ttlSeconds", DEFAULT_TTL_SECONDS))
        options = self._box_options(body)

        async def make() -> Json:
            self._check_can_start()
            await asyncio.sleep(self.timings.create_latency)
            selected = [self.repos[db_id]["fullName"] for db_id in self.selected]
            box = self._new_box(ttl, selected, options=options)
            return {
                "ok": True,
                "type": "box.created",
                "status": box.state,
                "ttlSeconds": ttl,
                "box": box.to_api(),
            }

        return await self._idempotent(request, body, make)

    def _box_options(self, body: Json) -> Json:
        """Check the create fields of the newer API (REFERENCE.md §7 POST /boxes)."""
        options: Json = {}
        if "type" in body:
            if body["type"] not in BILLING_MULTIPLIERS:
                choices = "|".join(BILLING_MULTIPLIERS)
                raise SimApiError(400, "invalid_type", f"type must be one of {choices}.")
            options["type"] = body["type"]
        if "setupScript" in body:
            script = body["setupScript"]
            if not isinstance(script, str) or len(script.encode()) > MAX_SETUP_SCRIPT_BYTES:
                raise SimApiError(
                    400, "invalid_setup_script", "setupScript must be a string of at most 64 KB."
                )
            options["setupScript"] = script
        if "environment" in body:
            name = body["environment"]
            if name not in self.environments:
                raise SimApiError(
                    400, "unknown_environment", f"No environment named {name!r}.", {"name": name}
                )
            options["environment"] = name
        if "env" in body:
            options["env"] = self._check_env(body["env"])
        return options

    @staticmethod
    def _check_env(env: Any) -> dict[str, str]:
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise SimApiError(400, "invalid_env", "env must map names to string values.")
        for name in env:
            if not ENV_NAME.match(name) or name in RESERVED_ENV_NAMES:
                raise SimApiError(
                    400, "invalid_env", f"{name!r} cannot be set in env.", {"key": name}
                )
        if len(env) > MAX_ENV_VARS or len(json.dumps(env).encode()) > MAX_ENV_BYTES:
            raise SimApiError(400, "invalid_env", "env has too many variables or is too big.")
        return dict(env)

    async def _usage(self, request: web.Request) -> web.Response:
        """Report billed time and dollars; they follow the clock and stop once archived."""
        if not self.usage_supported:
            raise web.HTTPNotFound()
        box = self._box(request)
        seconds = box.billable_seconds()
        dollars = seconds * box.billing_multiplier / self.seconds_per_dollar
        now = datetime.now(UTC)
        return _ok(
            "box.usage",
            boxId=box.id,
            boxType=box.type,
            billingMultiplier=box.billing_multiplier,
            since=request.query.get("since") or iso(box.created),
            until=request.query.get("until") or iso(now),
            seconds=round(seconds, 3),
            dollars=round(dollars, 6),
            secondsPerDollar=self.seconds_per_dollar,
            running=box.billed_since is not None,
        )

    async def _get_box(self, request: web.Request) -> web.Response:
        return _ok("box.info", box=self._box(request).to_api())

    async def _update_box(self, request: web.Request) -> web.Response:
        box, body = self._box(request), await self._body(request)
        if "name" in body:
            name = body["name"]
            if not isinstance(name, str) or not name.strip():
                raise SimApiError(400, "invalid_name", "name must be 1-120 characters.")
            box.name = name[:MAX_NAME_LENGTH]
        if "ttlSeconds" in body:
            box.ttl_seconds = parse_ttl(body["ttlSeconds"])
            if box.state not in ARCHIVED_STATES:  # an archived box keeps it for its resume
                self._arm_ttl(box)
        box.updated = datetime.now(UTC)
        return _ok("box.info", box=box.to_api())

    async def _delete_box(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if request.headers.get("X-Ascii-Confirm-Delete") != box.id:
            raise SimApiError(
                409,
                "confirmation_required",
                "Send X-Ascii-Confirm-Delete with the box id to delete it.",
            )
        await self._halt(box)
        box.deleted = True
        if self.delete_mode == "deleted":
            return _ok("box.deleted", id=box.id, status="deleted")
        now = iso(datetime.now(UTC))
        operation = {
            "id": "bdop_" + secrets.token_hex(16),
            "kind": "box",
            "targetId": box.id,
            "reason": "explicit",
            "status": "completed",
            "attemptCount": 1,
            "requestedAt": now,
            "completedAt": now,
        }
        return _ok("deletion.operation", 202, operation=operation)

    async def _halt(self, box: SimBox) -> None:
        """Interrupt agent work and cancel the box's lifecycle and TTL timers."""
        await self._interrupt_runs(box)
        for task in (box.lifecycle, box.ttl_task):
            if task is not None:
                task.cancel()
        box.lifecycle = box.ttl_task = None

    async def _begin_archive(self, box: SimBox) -> None:
        await self._halt(box)
        box.archive_after = None  # nothing left to count down until a resume
        box.set_state("archiving")
        box.lifecycle = self._spawn(self._archive(box))

    async def _archive(self, box: SimBox) -> None:
        await asyncio.sleep(self.timings.archiving)
        box.snapshot_available = box.snapshot_available or box.was_ready
        box.set_state("archived")

    async def _stop_box(self, request: web.Request) -> web.Response:
        box = self._box(request)
        if box.state not in ("archiving", "archived"):
            await self._begin_archive(box)
        return _ok("box.stopping", 202, id=box.id, status=box.state, box=box.to_api())

    async def _resume_box(self, request: web.Request) -> web.Response:
        box, body = self._box(request), await self._body(request)
        if box.state != "archived":
            raise SimApiError(409, "box_not_archived", f"The box is {box.state}, not archived.")
        if not box.snapshot_available:
            raise SimApiError(409, "no_snapshot", "The box has no completed snapshot.")
        self._check_can_start()
        if "ttlSeconds" in body:
            box.ttl_seconds = parse_ttl(body["ttlSeconds"])
        box.set_state("provisioning")
        self._arm_ttl(box)
        box.lifecycle = self._spawn(self._provision(box, clone=False))
        return _ok("box.resuming", 202, id=box.id, status=box.state, box=box.to_api())

    async def _fork_box(self, request: web.Request) -> web.Response:
        source, body = self._box(request), await self._body(request)
        ttl = parse_ttl(body.get("ttlSeconds", DEFAULT_TTL_SECONDS))

        async def make() -> Json:
            if not source.snapshot_available:
                raise SimApiError(409, "no_snapshot", "The source box has no completed snapshot.")
            self._check_can_start()
            await asyncio.sleep(self.timings.create_latency)
            box = self._new_box(ttl, source.selected, f"{source.name} (fork)")
            return {
                "ok": True,
                "type": "box.forking",
                "id": box.id,
                "status": "forking",
                "box": box.to_api(),
            }

        return await self._idempotent(request, body, make)

    # -- agent work ------------------------------------------------------------------------

    async def _prompt(self, request: web.Request) -> web.Response:
        box, body = self._box(request), await self._body(request)
        prompt, provider = body.get("prompt"), PROVIDERS.get(str(body.get("provider")))
        if not isinstance(prompt, str) or not prompt:
            raise SimApiError(400, "invalid_prompt", "prompt must be a non-empty string.")
        if provider is None:
            raise SimApiError(400, "invalid_provider", "provider is not a known harness.")
        self._require_credit()
        if provider in self.unconfigured_providers:
            raise SimApiError(
                409,
                "provider_not_configured",
                f"Add {provider} credentials on the Agents page first.",
                {"provider": provider, "setupUrl": SETUP_URL},
            )
        self._check_promptable(box)
        run = await self._queue_run(box, prompt, provider, body)
        return _ok(
            "prompt.queued",
            202,
            id=box.id,
            promptId=run.id,
            promptRun=run.to_api(),
            status=run.status,
            provider=provider,
            model=run.model,
            reasoningEffort=run.reasoning_effort,
        )

    @staticmethod
    def _check_promptable(box: SimBox) -> None:
        # The code for "box not ready" is not documented; `box_starting` is the documented
        # retryable code for work sent while provisioning (REFERENCE.md §1.3).
        if box.state in STARTING_STATES:
            raise SimApiError(409, "box_starting", "The box is still starting; try again soon.")
        if box.state not in PROMPTABLE_STATES:
            raise SimApiError(409, "box_not_running", f"The box is {box.state}; resume it first.")

    async def _queue_run(self, box: SimBox, prompt: str, provider: str, body: Json) -> SimRun:
        run_id = "prompt_" + secrets.token_hex(6)
        model = str(body.get("model") or DEFAULT_MODELS.get(provider, "default"))
        effort = body.get("reasoningEffort")
        event = await self._emit(
            box,
            "prompt",
            {"prompt": prompt, "status": "queued", "is_reverted": False},
            run_id,
            run_id,
        )
        run = SimRun(
            run_id,
            box.id,
            prompt,
            provider,
            model,
            effort if isinstance(effort, str) else None,
            "queued",
            iso(datetime.now(UTC)),
            event,
        )
        box.runs[run.id] = run
        box.pending.append(run)
        self._start_next_run(box)
        return run

    def _script_for(self, prompt: str) -> Script:
        for needle, name in self.script_rules.items():
            if needle in prompt:
                return self.scripts[name]
        return self.scripts[self.default_script]

    def _start_next_run(self, box: SimBox) -> None:
        if box.current is None and box.pending and box.state in ("ready", "idle"):
            box.current = box.pending.popleft()
            box.set_state("running")
            box.run_task = self._spawn(self._execute(box, box.current))

    async def _execute(self, box: SimBox, run: SimRun) -> None:
        await self._set_run_status(box, run, "running")

        async def emit(event_type: str, data: Json, event_id: str) -> Json:
            return await self._emit(box, event_type, data, event_id, run.id)

        ctx = AgentContext(
            box.id,
            run.id,
            run.prompt,
            run.model,
            box.subdomain,
            box.selected[-1] if box.selected else None,
            self.timings.agent_step,
            emit,
        )
        status = await run_script(self._script_for(run.prompt), ctx)
        box.current, box.run_task = None, None
        box.snapshot_available = True
        box.set_state("idle")
        await self._set_run_status(box, run, status)
        self._start_next_run(box)

    async def _set_run_status(self, box: SimBox, run: SimRun, status: str) -> None:
        run.status = status
        run.event["data"]["status"] = status  # the prompt event changes in place
        box.changed.set()
        await self._notify(box, run.event)

    async def _emit(
        self, box: SimBox, event_type: str, data: Json, event_id: str, task_id: str
    ) -> Json:
        """Append an event with a strictly increasing timestamp and tell the hook."""
        box.last_timestamp = max(int(time.time() * 1000), box.last_timestamp + 1)
        event = {
            "id": event_id,
            "type": event_type,
            "timestamp": box.last_timestamp,
            "taskId": task_id,
            "data": data,
        }
        box.events.append(event)
        await self._notify(box, event)
        return event

    async def _notify(self, box: SimBox, event: Json) -> None:
        if self.on_agent_event is None:
            return
        try:
            await self.on_agent_event(box.id, copy.deepcopy(event))
        except Exception:
            logger.exception("on_agent_event hook failed for %s", box.id)

    async def _interrupt_runs(self, box: SimBox) -> bool:
        """Cancel the running turn and drop queued prompts; return whether anything ran."""
        runs = [run for run in (box.current, *box.pending) if run is not None]
        if box.run_task is not None:
            box.run_task.cancel()
            await asyncio.wait([box.run_task])
        box.current, box.run_task = None, None
        box.pending.clear()
        for run in runs:
            await self._set_run_status(box, run, "interrupted")
        if box.state == "running":
            box.set_state("idle")
        return bool(runs)

    async def _prompt_run(self, request: web.Request) -> web.Response:
        box = self._box(request)
        run = box.runs.get(request.match_info["prompt_id"])
        if run is None:
            raise SimApiError(404, "prompt_not_found", "No prompt run with this id.")
        return _ok("prompt.run", id=box.id, promptRun=run.to_api())

    async def _events(self, request: web.Request) -> web.Response:
        box = self._box(request)
        self._require_credit()
        types = {t for t in request.query.get("type", "").split(",") if t}
        events = [e for e in box.events if not types or e["type"] in types]
        page, info = paginate(request.query, events, lambda e: (e["timestamp"], e["id"]))
        return _ok("events.list", id=box.id, events=page, **self._paging(info))

    async def _interrupt(self, request: web.Request) -> web.Response:
        box = self._box(request)
        self._require_credit()
        if not await self._interrupt_runs(box):
            raise SimApiError(409, "no_running_turn", "Nothing is running in this box.")
        return _ok("box.interrupted", id=box.id, status="interrupted")

    async def _desktop(self, request: web.Request) -> web.Response:
        box = self._box(request)
        self._require_credit()
        if not box.machine_up:
            return _ok(
                "desktop.url",
                success=False,
                provisioning=True,
                desktopUrl=None,
                message="The machine is starting; ask again shortly.",
            )
        vnc = request.query.get("vnc") == "1"
        return _ok(
            "desktop.url",
            success=True,
            desktopUrl=box.desktop_url(vnc),
            ip=box.ip,
            **({"mode": "vnc"} if vnc else {}),
        )

    async def _host(self, request: web.Request) -> web.Response:
        if not self.host_supported:
            raise web.HTTPNotFound()
        box, body = self._box(request), await self._body(request)
        self._require_credit()
        port = body.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise SimApiError(400, "invalid_port", "port must be an integer from 1 to 65535.")
        if port not in box.hosted:  # idempotent per box and port; protection is sticky
            public = bool(body.get("public", False))
            url = f"https://{box.subdomain}-{port}.on.ascii.dev"
            if not public:
                url += "?_token=" + secrets.token_urlsafe(16)
            box.hosted[port] = {
                "success": True,
                "port": port,
                "url": url,
                "isProtected": not public,
                "access": "public" if public else "private",
            }
        return _ok("box.hosted", **box.hosted[port])
