"""Who may spend the team's money: the collaborator permission API, asked and cached briefly.

https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user
On a public repository anyone reads as `read`, so only `write` and above count, and any
failure to get an answer denies (fail closed). The question is asked once, with a short
timeout: a denial must come quickly, not after the client's retries, and is never cached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

import aiohttp
import cachetools
import gidgethub
from gidgethub import sansio
from gidgethub.abc import GitHubAPI

log = logging.getLogger(__name__)

# https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user
PERMISSION_ORDER: Mapping[str, int] = MappingProxyType(
    {"read": 0, "triage": 1, "write": 2, "maintain": 3, "admin": 4}
)

CACHE_SECONDS = 60.0
TIMEOUT_SECONDS = 3.0


class PermissionChecker:
    """Answers "may this login trigger work on this repository?" and remembers for a minute."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, timeout: float = TIMEOUT_SECONDS
    ) -> None:
        self._cache: cachetools.TTLCache[tuple[str, str], tuple[str, str | None]] = (
            cachetools.TTLCache(maxsize=4096, ttl=CACHE_SECONDS, timer=clock)
        )
        self.timeout = timeout

    async def level(self, gh: GitHubAPI, repo: str, login: str) -> tuple[str, str | None]:
        """Return (permission, role_name); ("none", None) when GitHub cannot say."""
        key = (repo.lower(), login.lower())
        if (cached := self._cache.get(key)) is not None:
            return cached
        try:
            async with asyncio.timeout(self.timeout):
                data = await _get_once(
                    gh, f"/repos/{repo}/collaborators/{quote(login, safe='')}/permission"
                )
        except (gidgethub.GitHubException, aiohttp.ClientError, OSError, ValueError) as exc:
            log.warning("permission of %s on %s unknown (%s): denied", login, repo, exc)
            return "none", None
        answer = (str(data.get("permission", "none")), data.get("role_name"))
        self._cache[key] = answer
        return answer

    async def allows(self, gh: GitHubAPI, repo: str, login: str, minimum: str = "write") -> bool:
        """Return True if *login* has at least *minimum* permission on *repo*."""
        permission, role = await self.level(gh, repo, login)
        return permission_satisfies(permission, role, minimum)


async def _get_once(gh: GitHubAPI, path: str) -> dict[str, Any]:
    """GET *path* with one attempt, whatever retries the client makes for other calls.

    gidgethub retries through the client's `handle_rate_limit_error`; this goes to its
    transport (`_request`, which adds our authentication) and reads the answer the same way.
    """
    url = sansio.format_url(path, {}, base_url=gh.base_url)
    headers = sansio.create_headers(gh.requester, accept=sansio.accept_format())
    status, response_headers, body = await gh._request("GET", url, headers, b"")
    data, _rate_limit, _more = sansio.decipher_response(status, response_headers, body)
    if not isinstance(data, dict):
        raise ValueError(f"unexpected permission answer: {type(data).__name__}")
    return data


def permission_satisfies(permission: str, role_name: str | None, minimum: str) -> bool:
    """Return whether a collaborator's role reaches *minimum*.

    The collaborator permission API reports a legacy `permission` (admin/write/read/none) and a
    `role_name` that also knows `maintain` and `triage`; a custom role name falls back to
    `permission`. An unknown permission never satisfies.
    """
    if minimum not in PERMISSION_ORDER:
        raise ValueError(f"unknown minimum permission {minimum!r}")
    actual = permission
    if role_name is not None and role_name in PERMISSION_ORDER:
        actual = role_name
    return PERMISSION_ORDER.get(actual, -1) >= PERMISSION_ORDER[minimum]
