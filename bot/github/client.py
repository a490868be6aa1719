"""GitHub App authentication and the API clients the handlers use.

The app signs a short-lived JWT to mint installation tokens, keeps one token
per installation until five minutes before it expires, and lets only one
coroutine mint a token for a given installation at a time. Installation
clients ask the cache for the token on every request, so a client can live
longer than the token it started with.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import aiohttp
import cachetools
import gidgethub
import jwt
from gidgethub.aiohttp import GitHubAPI

from bot.github.budget import (
    SECONDARY_LIMIT_DEFAULT_WAIT,
    WRITE_INTERVAL_SECONDS,
    ContentBudget,
    RateBudget,
    limit_kind,
)
from bot.metrics import Metrics
from bot.redact import redact

log = logging.getLogger(__name__)

USER_AGENT = "box-bot"
# https://docs.github.com/en/rest/about-the-rest-api/api-versions
API_VERSION = "2022-11-28"
# GitHub accepts `iat` up to 60 s in the past against clock drift and `exp` at most 10 minutes out.
JWT_BACKDATE_SECONDS = 60
JWT_LIFETIME_SECONDS = 9 * 60
JWT_REUSE_SECONDS = 5 * 60
TOKEN_REFRESH_MARGIN_SECONDS = 5 * 60
MAX_CACHED_INSTALLATIONS = 10_000
# A read waits out a rate limit this long at most; beyond it the caller is told to come back.
MAX_READ_WAIT = 120.0
MAX_ATTEMPTS = 3
# Never aiohttp's 5-minute default: a hung GitHub must not hold a run for that long.
REQUEST_TIMEOUT_SECONDS = 30.0


class GitHubAppAuth:
    """Signs app JWTs and caches installation tokens."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        app_id: str,
        private_key: str,
        base_url: str,
        clock: Callable[[], float] = time.time,
        write_interval: float = WRITE_INTERVAL_SECONDS,
        secondary_wait: float = SECONDARY_LIMIT_DEFAULT_WAIT,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        metrics: Metrics | None = None,
        content: ContentBudget | None = None,
    ) -> None:
        self.session = session
        self.app_id = app_id
        self._private_key = private_key
        self.base_url = base_url
        self.clock = clock
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.metrics = metrics
        self.content = content
        self.budget = RateBudget(
            clock=clock,
            write_interval=write_interval,
            secondary_wait=secondary_wait,
            metrics=metrics,
        )
        self.token_requests = 0
        self._jwt: tuple[str, float] | None = None
        self._tokens: cachetools.TLRUCache[int, tuple[str, float]] = cachetools.TLRUCache(
            maxsize=MAX_CACHED_INSTALLATIONS, ttu=_refresh_at, timer=clock
        )
        self._locks: dict[int, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"GitHubAppAuth(app_id={self.app_id!r}, base_url={self.base_url!r})"

    def app_jwt(self) -> str:
        """Return an RS256 JWT for the app, reused for a few minutes."""
        now = self.clock()
        if self._jwt is not None and now < self._jwt[1]:
            return self._jwt[0]
        issued = int(now) - JWT_BACKDATE_SECONDS
        token = jwt.encode(
            {"iat": issued, "exp": issued + JWT_LIFETIME_SECONDS, "iss": self.app_id},
            self._private_key,
            algorithm="RS256",
        )
        self._jwt = (token, now + JWT_REUSE_SECONDS)
        return token

    def app_client(self) -> GitHubAPI:
        """Return a client for endpoints that authenticate as the app itself."""
        return AppGitHubAPI(self)

    def installation_client(
        self, installation_id: int, cache: MutableMapping[str, Any] | None = None
    ) -> GitHubAPI:
        """Return a client that acts as the given installation (with an ETag *cache* if given)."""
        return InstallationGitHubAPI(self, installation_id, cache)

    async def installation_token(self, installation_id: int) -> str:
        """Return a valid token for the installation, minting one only when needed."""
        cached = self._tokens.get(installation_id)
        if cached is not None:
            return cached[0]
        lock = self._locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(installation_id)
            if cached is None:
                cached = await self._mint_token(installation_id)
                self._tokens[installation_id] = cached
            return cached[0]

    def forget_installation(self, installation_id: int) -> None:
        """Drop the cached token (after a 401, a suspension or an uninstall)."""
        self._tokens.pop(installation_id, None)

    async def _mint_token(self, installation_id: int) -> tuple[str, float]:
        self.token_requests += 1
        if self.metrics is not None:
            self.metrics.token_refreshes.inc()
        data = await self.app_client().post(
            "/app/installations/{installation_id}/access_tokens",
            url_vars={"installation_id": str(installation_id)},
            data=b"",
        )
        expires = datetime.datetime.fromisoformat(data["expires_at"].replace("Z", "+00:00"))
        log.info(
            "minted a token for installation %s, expires %s", installation_id, data["expires_at"]
        )
        return data["token"], expires.timestamp()


def _refresh_at(_key: int, value: tuple[str, float], now: float) -> float:
    return value[1] - TOKEN_REFRESH_MARGIN_SECONDS


class _BotGitHubAPI(GitHubAPI):
    """gidgethub's aiohttp client with our version pin, timeout, logging and retries."""

    def __init__(self, auth: GitHubAppAuth, cache: MutableMapping[str, Any] | None = None) -> None:
        super().__init__(auth.session, USER_AGENT, base_url=auth.base_url, cache=cache)
        self.auth = auth

    async def _authorization(self) -> str:
        raise NotImplementedError

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        return await self._send(method, url, headers, body)

    async def _send(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Mapping[str, str], bytes]:
        headers = {
            **headers,
            "authorization": await self._authorization(),
            "x-github-api-version": API_VERSION,
        }
        started = time.monotonic()
        try:
            # aiohttp follows 301/302/307/308 itself (GitHub's renamed and moved resources).
            async with self.auth.session.request(
                method, url, headers=headers, data=body, timeout=self.auth.timeout
            ) as response:
                status, response_headers = response.status, response.headers
                data = await response.read()
        except BaseException:
            self._observe(method, url, 0, started)
            raise
        self._observe(method, url, status, started)
        log.debug(
            "github %s %s -> %s in %.0f ms",
            method,
            redact(url),
            status,
            (time.monotonic() - started) * 1000,
        )
        return status, response_headers, data

    def _observe(self, method: str, url: str, status: int, started: float) -> None:
        if self.auth.metrics is not None:
            self.auth.metrics.github_call(method, url, status, time.monotonic() - started)

    def _limited(self, exception: gidgethub.HTTPException) -> float | None:
        """Seconds to wait before asking again after a rate-limit answer (None: not one)."""
        return app_limit_wait(exception, self.auth.clock())

    async def handle_rate_limit_error(
        self, *, method: str, url: str, exception: gidgethub.HTTPException, attempt: int
    ) -> bool:
        if exception.status_code == 422:
            log.warning(
                "github %s %s refused the request (422): %s%s",
                method,
                redact(url),
                exception,
                _errors(exception),
            )
            return False
        wait = self._limited(exception)
        if attempt >= MAX_ATTEMPTS or method != "GET":
            return False  # a write is never repeated blindly; its caller decides
        if wait is None and isinstance(exception, gidgethub.GitHubBroken):
            wait = float(attempt**2)
        if wait is None or wait > MAX_READ_WAIT:
            return False
        log.warning(
            "github %s %s answered %s; retrying in %.0f s",
            method,
            redact(url),
            exception.status_code,
            wait,
        )
        await self.sleep(wait)
        return True


class AppGitHubAPI(_BotGitHubAPI):
    """Authenticates with the app JWT."""

    async def _authorization(self) -> str:
        return f"bearer {self.auth.app_jwt()}"


class InstallationGitHubAPI(_BotGitHubAPI):
    """Authenticates with the installation's token and keeps to its rate budget."""

    def __init__(
        self,
        auth: GitHubAppAuth,
        installation_id: int,
        cache: MutableMapping[str, Any] | None = None,
    ) -> None:
        super().__init__(auth, cache)
        self.installation_id = installation_id

    async def _authorization(self) -> str:
        return f"token {await self.auth.installation_token(self.installation_id)}"

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        budget, installation = self.auth.budget, self.installation_id
        if method in ("GET", "HEAD"):
            answer = await self._read(method, url, headers)
        else:
            async with budget.write_slot(installation):
                if self.auth.content is not None:
                    await self.auth.content.take(installation, method, url)
                answer = await self._send(method, url, headers, body)
            if answer[0] < 400:
                budget.wrote(installation)
        budget.observe(installation, answer[0], answer[1])
        return answer

    async def _read(
        self, method: str, url: str, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Send a read; one that hung past the timeout or lost its connection is sent again."""
        attempt = 1
        while True:
            await self._wait_for_reads()
            await self.auth.budget.pace_read(self.installation_id)
            try:
                return await self._send(method, url, headers, b"")
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if attempt == MAX_ATTEMPTS:
                    raise
                log.warning(
                    "github %s %s got no answer (%s); retrying in %d s",
                    method,
                    redact(url),
                    type(exc).__name__,
                    attempt**2,
                )
                await self.sleep(float(attempt**2))
                attempt += 1

    async def _wait_for_reads(self) -> None:
        """Hold a read until a used-up primary limit resets, if that comes soon enough."""
        paused = self.auth.budget.blocked(self.installation_id, write=False)
        if paused is None:
            return
        wait = paused.until - self.auth.clock()
        if wait > MAX_READ_WAIT:
            raise paused
        await self.sleep(wait)

    def _limited(self, exception: gidgethub.HTTPException) -> float | None:
        return self.auth.budget.limited(self.installation_id, exception)

    async def handle_rate_limit_error(
        self, *, method: str, url: str, exception: gidgethub.HTTPException, attempt: int
    ) -> bool:
        # A token can be revoked or not yet replicated: mint a new one and try once more.
        if exception.status_code == 401 and attempt == 1:
            self.auth.forget_installation(self.installation_id)
            return True
        return await super().handle_rate_limit_error(
            method=method, url=url, exception=exception, attempt=attempt
        )


def app_limit_wait(exception: gidgethub.HTTPException, now: float) -> float | None:
    """Seconds the app (JWT) client waits after a rate-limit answer, or None if it was not one.

    https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
    """
    kind = limit_kind(exception)
    if kind is None:
        return None
    headers: Mapping[str, str] = exception.headers or {}
    retry_after = headers.get("retry-after", "")
    if retry_after.isdigit():
        return float(retry_after)
    reset = headers.get("x-ratelimit-reset", "")
    if kind == "primary" and reset.isdigit():
        return max(0.0, int(reset) - now) + 1.0
    return SECONDARY_LIMIT_DEFAULT_WAIT


def _errors(exception: gidgethub.HTTPException) -> str:
    errors = getattr(exception, "errors", None)
    return f" {errors}" if errors else ""


async def get_app_info(auth: GitHubAppAuth) -> dict[str, Any]:
    """Return `GET /app` (the app's id, slug and owner)."""
    data: dict[str, Any] = await auth.app_client().getitem("/app")
    return data
