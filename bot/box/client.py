"""Async client for the Box Public API v1 (see ../shared/box-api/REFERENCE.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from enum import Enum
from typing import Any, Literal
from urllib.parse import quote

import aiohttp
from cachetools import TTLCache

from bot.box.errors import (
    BoxAPIError,
    BoxConflictError,
    BoxNotFoundError,
    BoxNotSupportedError,
    BoxPromptUnknownError,
    BoxRateLimitedError,
    BoxRepoNotAvailableError,
    BoxServerError,
    BoxUnavailableError,
    error_from_response,
    json_or_none,
)
from bot.box.models import (
    Box,
    BoxAction,
    BoxEvent,
    BoxPage,
    BoxSetup,
    Deletion,
    Desktop,
    EventPage,
    HostedPort,
    Json,
    Limits,
    PromptDelivery,
    PromptEvent,
    PromptResult,
    PromptRun,
    RepoPage,
    RepoSelection,
    Repository,
    SelectedRepository,
    StartedBox,
    Usage,
    User,
    event_cursor,
    parse_event,
)
from bot.redact import redact

logger = logging.getLogger(__name__)

# One attempt may take DEFAULT_TIMEOUT.total; a whole call, retries and waits included, at most
# DEFAULT_RETRY_BUDGET_SECONDS, so a timed-out attempt still leaves room for retries.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=15, connect=5, sock_connect=5)
DEFAULT_MAX_RETRIES = 4
DEFAULT_RETRY_BUDGET_SECONDS = 60.0
# aiohttp reads a timeout of 0 as "no timeout", so an attempt always gets at least this long.
MIN_ATTEMPT_SECONDS = 0.1
DEFAULT_TTL_SECONDS = 3600
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 8.0
REPO_CACHE_SECONDS = 300.0
DEFAULT_PAGE_LIMIT = 100  # what the server uses when `limit` is not given (REFERENCE.md §2)
MAX_PAGE_LIMIT = 200
MAX_DEBUG_BODY = 2000
USER_AGENT = "box-bot/0.1"
CONFIRM_DELETE_HEADER = "X-Ascii-Confirm-Delete"
IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
INVALID_RESPONSE = "invalid_response"
PROMPT_UNKNOWN = "prompt_delivery_unknown"

Sleep = Callable[[float], Awaitable[None]]
# Told of every exchange: (method, path, HTTP status or 0 when none arrived, seconds).
Observer = Callable[[str, str, int, float], None]


class ConnectionDropped(aiohttp.ClientConnectionError):
    """The server closed the connection before answering."""


async def _no_silent_resend(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """Report a dropped connection as `ConnectionDropped`, which aiohttp does not act on.

    aiohttp itself sends a GET or DELETE once more when the connection drops, which would
    double every retry count; only the client's own rules decide what is repeated.
    """
    try:
        return await handler(request)
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise  # could not connect: nothing was sent, and aiohttp does not resend these
        raise ConnectionDropped(str(exc) or type(exc).__name__) from exc


class Retry(Enum):
    """Which failures a call may be repeated after (REFERENCE.md §4)."""

    NEVER = "never"
    SAFE = "safe"
    IDEMPOTENT = "idempotent"


class _Keep(Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP
TtlUpdate = int | None | Literal[_Keep.KEEP]


def _reason(response: aiohttp.ClientResponse) -> str | None:
    """Return the words for an answer without an error body; a redirect says where to."""
    if 300 <= response.status < 400:
        location = response.headers.get("Location")
        where = f" to {location}" if location else ""
        return f"unexpected redirect (HTTP {response.status}){where}"
    return response.reason


def _may_retry(policy: Retry, error: BoxAPIError) -> bool:
    if policy is Retry.NEVER:
        return False
    if isinstance(error, BoxUnavailableError | BoxServerError | BoxRateLimitedError):
        return True
    return (
        policy is Retry.IDEMPOTENT
        and isinstance(error, BoxConflictError)
        and error.code == IDEMPOTENCY_IN_PROGRESS
    )


def _may_have_arrived(error: BoxAPIError) -> bool:
    """Return whether a failed request may still have taken effect on the server."""
    return isinstance(error, BoxUnavailableError | BoxServerError) or error.code == INVALID_RESPONSE


def _page_info(data: Mapping[str, Any], count: int, limit: int | None) -> tuple[str | None, bool]:
    """Return (next cursor, has more) of a page of *count* items asked with *limit*.

    `pageInfo` is optional (REFERENCE.md §2); without it a full page may have more after it.
    """
    info = data.get("pageInfo")
    if not isinstance(info, Mapping):
        return None, count >= (limit or DEFAULT_PAGE_LIMIT)
    cursor = info.get("nextCursor")
    return (cursor if isinstance(cursor, str) and cursor else None), bool(info.get("hasMore"))


def _paging(data: Mapping[str, Any], count: int, limit: int | None) -> dict[str, Any]:
    cursor, has_more = _page_info(data, count, limit)
    return {"next_cursor": cursor, "has_more": has_more}


def _can_build_cursor(events: Sequence[BoxEvent]) -> bool:
    return bool(events) and events[-1].timestamp is not None and events[-1].id is not None


def _query(**values: Any) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, Sequence) and not isinstance(value, str):
            value = ",".join(value)
        query[key] = str(value)
    return query


def _prompt_body(
    prompt: str, provider: str, model: str | None, reasoning_effort: str | None
) -> Json:
    body: Json = {"provider": provider, "prompt": prompt}
    if model:
        body["model"] = model
    if reasoning_effort:
        body["reasoningEffort"] = reasoning_effort
    return body


def _cut_timeout(timeout: aiohttp.ClientTimeout, seconds: float) -> aiohttp.ClientTimeout:
    """Return *timeout* with every limit at most *seconds*."""

    def cut(limit: float | None) -> float:
        return seconds if limit is None else min(limit, seconds)

    return aiohttp.ClientTimeout(
        total=seconds,
        connect=cut(timeout.connect),
        sock_read=cut(timeout.sock_read),
        sock_connect=cut(timeout.sock_connect),
        ceil_threshold=timeout.ceil_threshold,
    )


def _box_path(box_id: str, suffix: str = "") -> str:
    return f"/boxes/{quote(box_id, safe='')}{suffix}"


class BoxClient:
    """One Box account: typed calls, error mapping, bounded retries and the repo-selection lock.

    Each attempt may take `timeout`; a whole call, its retries and waits included, at most
    `retry_budget_seconds`. The account lock and the once-only `Sunset` warning belong to
    this instance, so a process holds one BoxClient per Box account; the lock does not reach
    other processes (a lock shared by several instances comes with PostgreSQL support).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_budget_seconds: float = DEFAULT_RETRY_BUDGET_SECONDS,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        account_lock: AbstractAsyncContextManager[Any] | None = None,
        repo_cache_seconds: float = REPO_CACHE_SECONDS,
        observer: Observer | None = None,
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._timeout = timeout or DEFAULT_TIMEOUT
        self._max_retries = max_retries
        self._budget = retry_budget_seconds
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._clock = clock
        self._account_lock = account_lock or asyncio.Lock()
        self._repo_cache: TTLCache[str, Repository] = TTLCache(256, repo_cache_seconds)
        self._sunset_logged = False
        self._observer = observer

    def __repr__(self) -> str:
        return f"BoxClient({self._base_url!r})"

    @property
    def timeout(self) -> aiohttp.ClientTimeout:
        """Return the timeout of one attempt (each is also cut to what is left of the budget)."""
        return self._timeout

    # -- transport -------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        policy: Retry = Retry.NEVER,
        params: Mapping[str, str] | None = None,
        body: Json | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Json:
        """Send one logical request, repeating it only as *policy* allows, within the budget."""
        started = self._clock()
        attempt = 0
        while True:
            limits = self._attempt_timeout(started)
            try:
                return await self._attempt(method, path, params, body, headers, limits)
            except BoxAPIError as error:
                error.attempts = attempt + 1
                delay = self._retry_delay(policy, attempt, started, error)
                if delay is None:
                    raise
                logger.warning(
                    "Box API %s %s failed (%s); retry %d in %.2fs",
                    method,
                    path,
                    error,
                    attempt + 1,
                    delay,
                )
            attempt += 1
            await self._sleep(delay)

    def _retry_delay(
        self, policy: Retry, attempt: int, started: float, error: BoxAPIError
    ) -> float | None:
        """Return how long to wait before the next attempt, or None to give up."""
        if not _may_retry(policy, error) or attempt >= self._max_retries:
            return None
        delay = error.retry_after
        if delay is None:  # exponential backoff with full jitter
            ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
            delay = self._rng.uniform(0, ceiling)
        if self._clock() - started + delay >= self._budget:
            return None
        return delay

    def _attempt_timeout(self, started: float) -> aiohttp.ClientTimeout:
        """Return the attempt timeout, cut so the attempt ends within the call's budget."""
        remaining = max(self._budget - (self._clock() - started), MIN_ATTEMPT_SECONDS)
        total = self._timeout.total
        if total is not None and total <= remaining:
            return self._timeout
        return _cut_timeout(self._timeout, remaining)

    async def _attempt(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None,
        body: Json | None,
        headers: Mapping[str, str] | None,
        limits: aiohttp.ClientTimeout,
    ) -> Json:
        """Make one HTTP exchange and turn its answer into JSON or a `BoxAPIError`."""
        started = time.monotonic()
        try:
            async with self._session.request(
                method,
                self._base_url + path,
                params=params,
                json=body,
                headers={**self._headers, **(headers or {})},
                timeout=limits,
                # The app's shared session has no middlewares of its own to keep.
                middlewares=(_no_silent_resend,),
                # The API does not redirect; following one could send the key elsewhere.
                allow_redirects=False,
            ) as response:
                raw = await response.read()
        except TimeoutError as exc:
            self._observe(method, path, 0, started)
            logger.warning("Box API %s %s timed out", method, path)
            raise BoxUnavailableError(f"{method} {path} timed out", code="timeout") from exc
        except aiohttp.ClientError as exc:
            self._observe(method, path, 0, started)
            logger.warning("Box API %s %s connection failed: %s", method, path, type(exc).__name__)
            raise BoxUnavailableError(
                f"{method} {path} failed: {type(exc).__name__}", code="connection_error"
            ) from exc
        text = raw.decode("utf-8", errors="replace")
        payload = json_or_none(text)
        self._log_answer(method, path, response, payload, text, started)
        if not 200 <= response.status < 300:
            raise error_from_response(response.status, text, response.headers, _reason(response))
        if not isinstance(payload, dict):
            raise BoxAPIError(
                f"{method} {path} answered with a body that is not a JSON object",
                status=response.status,
                code=INVALID_RESPONSE,
            )
        if payload.get("ok") is False:  # an error envelope, whatever the HTTP status said
            said = payload.get("status")
            status = said if isinstance(said, int) and 400 <= said < 600 else response.status
            raise error_from_response(status, text, response.headers)
        return payload

    def _observe(self, method: str, path: str, status: int, started: float) -> None:
        if self._observer is not None:
            self._observer(method, path, status, time.monotonic() - started)

    def _log_answer(
        self,
        method: str,
        path: str,
        response: aiohttp.ClientResponse,
        payload: Any,
        text: str,
        started: float,
    ) -> None:
        """Log status, latency and request id; the body only at DEBUG and redacted."""
        self._observe(method, path, response.status, started)
        elapsed_ms = (time.monotonic() - started) * 1000
        request_id = response.headers.get("X-Request-Id") or (
            payload.get("requestId") if isinstance(payload, dict) else None
        )
        # A working box is polled every few seconds: successful reads would drown the log.
        quiet = method == "GET" and 200 <= response.status < 300
        logger.log(
            logging.DEBUG if quiet else logging.INFO,
            "Box API %s %s -> %d in %.0f ms requestId=%s",
            method,
            path,
            response.status,
            elapsed_ms,
            request_id,
        )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Box API %s %s body: %s", method, path, redact(text)[:MAX_DEBUG_BODY])
        sunset = response.headers.get("Sunset")
        if sunset and not self._sunset_logged:
            self._sunset_logged = True
            logger.warning("Box API v1 announces it will be switched off (Sunset: %s)", sunset)

    # -- account and repositories ----------------------------------------------------------

    async def me(self) -> User:
        """Return the GitHub identity behind the API key."""
        data = await self._call("GET", "/me", policy=Retry.SAFE)
        user = data["user"] if isinstance(data.get("user"), dict) else {}
        return User(str(user.get("login", "")), user.get("email"), user)

    async def limits(self) -> Limits:
        """Return quota, active box count and billing status."""
        data = await self._call("GET", "/limits", policy=Retry.SAFE)
        return Limits.from_api(data)

    async def list_repos(
        self,
        q: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        selected: bool | None = None,
        sort: str | None = None,
        sync: bool | None = None,
    ) -> RepoPage:
        """Return one page of repositories available to Box, and the current selection.

        *sync* asks Box to re-read the repositories from GitHub first (REFERENCE.md §6).
        """
        params = _query(q=q, limit=limit, cursor=cursor, selected=selected, sort=sort, sync=sync)
        data = await self._call("GET", "/repos", policy=Retry.SAFE, params=params)
        page = RepoPage.from_api(data, None, False)
        return dataclasses.replace(page, **_paging(data, len(page.repositories), limit))

    async def select_repo(
        self, repository_id: str, base_branch: str | None = "main"
    ) -> RepoSelection:
        """Select a repository for future boxes of the whole account (idempotent)."""
        body: Json = {"repositoryId": repository_id}
        if base_branch:
            body["baseBranch"] = base_branch
        data = await self._call("POST", "/repos", policy=Retry.SAFE, body=body)
        return RepoSelection.from_api(data)

    async def resolve_repo(self, full_name: str) -> Repository:
        """Find `owner/name` among the repositories Box can see; cached for a few minutes."""
        key = full_name.lower()
        if (cached := self._repo_cache.get(key)) is not None:
            return cached
        cursor: str | None = None
        while True:
            page = await self.list_repos(q=full_name, limit=MAX_PAGE_LIMIT, cursor=cursor)
            for repo in page.repositories:
                if repo.full_name.lower() == key:
                    self._repo_cache[key] = repo
                    return repo
            if not page.has_more:
                raise BoxRepoNotAvailableError(
                    f"{full_name} is not available to Box; install Box's GitHub App on it",
                    code="repo_not_available",
                )
            if page.next_cursor is None:
                # A full page without `pageInfo`: repository cursors cannot be built here.
                raise BoxAPIError(
                    f"Box listed {len(page.repositories)} repositories matching {full_name}"
                    " without a cursor to the rest, so whether it is available is unknown",
                    code="repo_list_incomplete",
                )
            cursor = page.next_cursor

    async def start_box(
        self,
        repo_full_name: str,
        *,
        ttl_seconds: int | None = DEFAULT_TTL_SECONDS,
        idempotency_key: str | None = None,
        base_branch: str | None = None,
        setup: BoxSetup | None = None,
    ) -> StartedBox:
        """Select *repo_full_name* and create a box, holding the account lock in between.

        Returns the box, the repository as selected, and every repository that was selected
        on the account when the box was created (selecting adds to the selection).
        """
        from_cache = repo_full_name.lower() in self._repo_cache
        repo = await self.resolve_repo(repo_full_name)
        # Selection is account-wide and applies to boxes created after it (REFERENCE.md §10).
        async with self._account_lock:
            repo, selection = await self._select(repo_full_name, repo, base_branch, from_cache)
            box = await self.create_box(
                ttl_seconds=ttl_seconds, idempotency_key=idempotency_key, setup=setup
            )
        chosen = next(
            (s for s in selection.selected if s.database_id == repo.database_id),
            SelectedRepository(repo.database_id, repo.full_name, base_branch, {}),
        )
        logger.info(
            "Box %s created with %s selected (all selected: %s)",
            box.id,
            chosen.full_name,
            ", ".join(s.full_name for s in selection.selected) or chosen.full_name,
        )
        return StartedBox.of(box, chosen, selection.selected)

    async def _select(
        self, full_name: str, repo: Repository, base_branch: str | None, from_cache: bool
    ) -> tuple[Repository, RepoSelection]:
        """Select *repo*; when Box refuses an id from the cache, look the repo up once more."""
        try:
            return repo, await self.select_repo(repo.database_id, base_branch)
        except BoxAPIError as error:
            if error.status not in (400, 404):
                raise
            self._repo_cache.pop(full_name.lower(), None)  # the id may have changed
            if not from_cache:
                raise
            logger.info(
                "Box refused the cached id of %s (%s); looking it up again", full_name, error
            )
        repo = await self.resolve_repo(full_name)
        return repo, await self.select_repo(repo.database_id, base_branch)

    # -- boxes -----------------------------------------------------------------------------

    async def list_boxes(
        self,
        state: str | Sequence[str] | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        sort: str | None = None,
    ) -> BoxPage:
        """Return one page of this account's boxes, optionally only in the given states."""
        params = _query(state=state, limit=limit, cursor=cursor, sort=sort)
        data = await self._call("GET", "/boxes", policy=Retry.SAFE, params=params)
        boxes = [Box.from_api(item) for item in data.get("boxes") or [] if isinstance(item, dict)]
        return BoxPage(boxes, *_page_info(data, len(boxes), limit))

    async def create_box(
        self,
        *,
        ttl_seconds: int | None = DEFAULT_TTL_SECONDS,
        idempotency_key: str | None = None,
        setup: BoxSetup | None = None,
    ) -> Box:
        """Create a box; with an `Idempotency-Key` a failed attempt is retried with the same key.

        *setup* adds the setup script, machine type, environment and variables it is made with.
        """
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        policy = Retry.IDEMPOTENT if idempotency_key else Retry.NEVER
        body: Json = {"ttlSeconds": ttl_seconds, **(setup.body() if setup else {})}
        data = await self._call("POST", "/boxes", policy=policy, headers=headers, body=body)
        return Box.from_api(data.get("box") or {})

    async def get_box(self, box_id: str) -> Box:
        """Return one box."""
        data = await self._call("GET", _box_path(box_id), policy=Retry.SAFE)
        return Box.from_api(data.get("box") or {})

    async def usage(self, box_id: str) -> Usage:
        """Return what the box has cost so far; `BoxNotSupportedError` on a Box without it.

        An older Box has no usage endpoint and answers 404, as it does for a deleted box:
        either way there is no figure to ask for again.
        """
        try:
            data = await self._call("GET", _box_path(box_id, "/usage"), policy=Retry.SAFE)
        except BoxNotFoundError as error:
            raise BoxNotSupportedError(
                "usage is not reported by this Box API for this box",
                status=error.status,
                code="not_supported",
                request_id=error.request_id,
            ) from error
        return Usage.from_api(data)

    async def update_box(
        self, box_id: str, *, name: str | None = None, ttl_seconds: TtlUpdate = KEEP
    ) -> Box:
        """Rename a box and/or change its TTL (None disables auto-archive)."""
        body: Json = {}
        if name is not None:
            body["name"] = name
        if ttl_seconds is not KEEP:
            body["ttlSeconds"] = ttl_seconds
        data = await self._call("PATCH", _box_path(box_id), body=body)
        return Box.from_api(data.get("box") or {})

    async def delete_box(self, box_id: str) -> Deletion:
        """Delete a box for good; accepts both 200 `box.deleted` and 202 deletion operations.

        A delete is repeated after a failure; a 404 to a repeat means an earlier attempt whose
        answer was lost already deleted the box, and gives a `Deletion` that says so.
        """
        try:
            # Newer servers refuse a delete without this header (REFERENCE.md §7 DELETE).
            data = await self._call(
                "DELETE",
                _box_path(box_id),
                policy=Retry.SAFE,
                headers={CONFIRM_DELETE_HEADER: box_id},
            )
        except BoxNotFoundError as error:
            if error.attempts == 1:
                raise
            logger.info("Box %s was already deleted when the delete was repeated", box_id)
            return Deletion.already_gone(box_id)
        return Deletion.from_api(box_id, data)

    async def stop_box(self, box_id: str, *, force: bool = False) -> BoxAction:
        """Start archiving a box (safe to repeat); poll `get_box` until `archived`."""
        body: Json | None = {"force": True} if force else None
        data = await self._call("POST", _box_path(box_id, "/stop"), policy=Retry.SAFE, body=body)
        return BoxAction.from_api(data)

    async def resume_box(self, box_id: str, *, ttl_seconds: TtlUpdate = KEEP) -> BoxAction:
        """Restore an archived box from its last snapshot."""
        body: Json | None = None if ttl_seconds is KEEP else {"ttlSeconds": ttl_seconds}
        data = await self._call("POST", _box_path(box_id, "/resume"), body=body)
        return BoxAction.from_api(data)

    async def fork_box(
        self, box_id: str, idempotency_key: str | None = None, *, ttl_seconds: TtlUpdate = KEEP
    ) -> Box:
        """Create a new box from *box_id*'s latest snapshot and return the new box."""
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else None
        policy = Retry.IDEMPOTENT if idempotency_key else Retry.NEVER
        body: Json | None = None if ttl_seconds is KEEP else {"ttlSeconds": ttl_seconds}
        data = await self._call(
            "POST", _box_path(box_id, "/fork"), policy=policy, headers=headers, body=body
        )
        # The top-level `id` is the NEW box's id (REFERENCE.md §7 fork).
        return Box.from_api({**(data.get("box") or {}), "id": data.get("id")})

    # -- agent work --------------------------------------------------------------------------

    async def prompt(
        self,
        box_id: str,
        prompt: str,
        provider: str,
        model: str | None = None,
        reasoning_effort: str | None = None,
    ) -> PromptResult:
        """Queue *prompt*; after an unclear failure, look for it in the events before resending.

        After a timeout, a dropped connection or a 5xx the box's `prompt` events decide: a
        prompt found there is returned as `PromptDelivery.FOUND`; one clearly absent is sent
        once more if the budget allows, else the failure is raised; when the events cannot be
        read either, `BoxPromptUnknownError` says it is unknown whether the prompt arrived.
        """
        # Prompts have no idempotency mechanism: a blind retry could queue a second run
        # (REFERENCE.md §4), so the events decide whether the first attempt arrived.
        body = _prompt_body(prompt, provider, model, reasoning_effort)
        mark = await self._prompt_mark(box_id)
        started = self._clock()
        attempt, resent = 0, False
        while True:
            try:
                data = await self._call("POST", _box_path(box_id, "/prompt"), body=body)
                return PromptResult(
                    PromptRun.from_api(data.get("promptRun") or data),
                    PromptDelivery.SENT,
                    attempt + 1,
                )
            except BoxAPIError as error:
                delay = self._retry_delay(Retry.SAFE, attempt, started, error)
                if not _may_have_arrived(error):  # refused outright (429): nothing was queued
                    if delay is None:
                        raise
                    await self._sleep(delay)
                else:
                    delay = None if resent else delay
                    if delay is not None:
                        await self._sleep(delay)  # lets a slow first attempt land before the check
                    found = await self._check_prompt(box_id, prompt, mark, error)
                    if found is not None:
                        return PromptResult(found, PromptDelivery.FOUND, attempt + 1)
                    if delay is None:
                        logger.warning(
                            "Box %s: prompt not received after %s; no retry left", box_id, error
                        )
                        raise
                    logger.warning(
                        "Box %s: prompt not received after %s; sending it again", box_id, error
                    )
                    resent = True
            attempt += 1

    async def _check_prompt(
        self, box_id: str, prompt: str, mark: str | None, error: BoxAPIError
    ) -> PromptRun | None:
        """Look for a prompt whose sending failed with *error*; say so if it cannot be told."""
        try:
            found = await self._find_prompt(box_id, prompt, mark)
        except BoxAPIError as check_error:
            raise BoxPromptUnknownError(
                f"unknown whether the prompt arrived: sending it failed ({error}) and reading"
                f" the box's events failed too ({check_error}); it was not sent again",
                status=error.status,
                code=PROMPT_UNKNOWN,
                request_id=error.request_id,
            ) from check_error
        if found is not None:
            logger.warning(
                "Box %s: prompt %s arrived despite %s; not sending it again",
                box_id,
                found.prompt_id,
                error,
            )
        return found

    async def _prompt_mark(self, box_id: str) -> str | None:
        """Return a cursor after the newest `prompt` event, so a resend check ignores older ones."""
        page = await self.events(box_id, limit=1, sort="desc", types=["prompt"])
        if page.events and page.events[0].timestamp is not None and page.events[0].id:
            return event_cursor(page.events[0])
        return None

    async def find_prompt(
        self,
        box_id: str,
        prompt: str,
        after_cursor: str | None = None,
        *,
        since: datetime | None = None,
    ) -> PromptRun | None:
        """Return the run of the newest prompt with exactly this text that the box received
        after *after_cursor* (an event cursor) and not before *since*; None if there is none.

        Give a bound where one is known: without it an older prompt with the same text counts.
        """
        since_ms = None if since is None else int(since.timestamp() * 1000)
        return await self._find_prompt(box_id, prompt, after_cursor, since_ms)

    async def _find_prompt(
        self, box_id: str, prompt: str, mark: str | None, since_ms: int | None = None
    ) -> PromptRun | None:
        """Return the run of the newest `prompt` event with this exact text after *mark*."""
        newest: PromptEvent | None = None
        async for event in self.iter_events(box_id, mark, types=["prompt"]):
            if not isinstance(event, PromptEvent) or event.prompt.strip() != prompt.strip():
                continue
            if since_ms is None or (event.timestamp is not None and event.timestamp >= since_ms):
                newest = event
        if newest is None:
            return None
        return await self.prompt_run(box_id, newest.task_id or newest.id or "")

    async def prompt_run(self, box_id: str, prompt_id: str) -> PromptRun:
        """Return the status of one prompt run."""
        path = _box_path(box_id, f"/prompts/{quote(prompt_id, safe='')}")
        data = await self._call("GET", path, policy=Retry.SAFE)
        return PromptRun.from_api(data.get("promptRun") or {})

    async def events(
        self,
        box_id: str,
        limit: int | None = None,
        cursor: str | None = None,
        sort: str | None = None,
        types: Sequence[str] | None = None,
    ) -> EventPage:
        """Return one page of a box's events."""
        params = _query(limit=limit, cursor=cursor, sort=sort, type=types)
        data = await self._call(
            "GET", _box_path(box_id, "/events"), policy=Retry.SAFE, params=params
        )
        events = [parse_event(item) for item in data.get("events") or [] if isinstance(item, dict)]
        cursor, has_more = _page_info(data, len(events), limit)
        if has_more and cursor is None and _can_build_cursor(events):
            # The cursor both SDKs build from the last event (REFERENCE.md §2).
            cursor = event_cursor(events[-1])
        return EventPage(events, cursor, has_more)

    async def iter_events(
        self,
        box_id: str,
        after_cursor: str | None = None,
        *,
        page_size: int = 100,
        types: Sequence[str] | None = None,
    ) -> AsyncIterator[BoxEvent]:
        """Yield every event after *after_cursor* oldest first, then stop at the tail."""
        cursor = after_cursor
        while True:
            page = await self.events(
                box_id, limit=page_size, cursor=cursor, sort="asc", types=types
            )
            for event in page.events:
                yield event
            if not page.has_more or not page.events:
                return
            cursor = page.next_cursor or event_cursor(page.events[-1])

    async def interrupt(self, box_id: str) -> BoxAction:
        """Interrupt the agent work running in a box."""
        data = await self._call("POST", _box_path(box_id, "/interrupt"))
        return BoxAction.from_api(data)

    async def desktop(self, box_id: str, *, vnc: bool = False) -> Desktop:
        """Return the (secret) desktop stream URL; `provisioning` means ask again later."""
        params = {"vnc": "1"} if vnc else None
        data = await self._call("POST", _box_path(box_id, "/desktop"), params=params, body={})
        url = data.get("desktopUrl")
        return Desktop(
            url if isinstance(url, str) else None,
            bool(data.get("provisioning")),
            data.get("mode"),
            data,
        )

    async def host(self, box_id: str, port: int, public: bool = False) -> HostedPort:
        """Expose *port* of the box at `https://<subdomain>-<port>.on.ascii.dev` (newer servers)."""
        body: Json = {"port": port, "public": public}
        try:
            data = await self._call("POST", _box_path(box_id, "/host"), body=body)
        except BoxNotFoundError as error:
            await self.get_box(box_id)  # raises BoxNotFoundError when the box itself is missing
            raise BoxNotSupportedError(
                "hosting ports is not supported by this Box API",
                status=error.status,
                code="not_supported",
                request_id=error.request_id,
            ) from error
        return HostedPort(
            int(data.get("port", port)),
            str(data.get("url", "")),
            bool(data.get("isProtected", not public)),
            data.get("access"),
            data,
        )
