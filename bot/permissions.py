"""Who may spend the team's money: the collaborator permission API, asked and cached briefly.

https://docs.github.com/en/rest/collaborators/collaborators#get-repository-permissions-for-a-user
On a public repository anyone reads as `read`, so only `write` and above count, and any
failure to get an answer denies (fail closed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import quote

import cachetools
import gidgethub
from gidgethub.abc import GitHubAPI

from bot.repo_config import permission_satisfies

log = logging.getLogger(__name__)

CACHE_SECONDS = 60.0


class PermissionChecker:
    """Answers "may this login trigger work on this repository?" and remembers for a minute."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._cache: cachetools.TTLCache[tuple[str, str], tuple[str, str | None]] = (
            cachetools.TTLCache(maxsize=4096, ttl=CACHE_SECONDS, timer=clock)
        )

    async def level(self, gh: GitHubAPI, repo: str, login: str) -> tuple[str, str | None]:
        """Return (permission, role_name); ("none", None) when GitHub cannot say."""
        key = (repo.lower(), login.lower())
        if (cached := self._cache.get(key)) is not None:
            return cached
        try:
            data = await gh.getitem(f"/repos/{repo}/collaborators/{quote(login)}/permission")
        except (gidgethub.GitHubException, OSError, TimeoutError) as exc:
            log.warning("permission of %s on %s unknown (%s): denied", login, repo, exc)
            return "none", None
        answer = (str(data.get("permission", "none")), data.get("role_name"))
        self._cache[key] = answer
        return answer

    async def allows(self, gh: GitHubAPI, repo: str, login: str, minimum: str = "write") -> bool:
        """Return True if *login* has at least *minimum* permission on *repo*."""
        permission, role = await self.level(gh, repo, login)
        return permission_satisfies(permission, role, minimum)
