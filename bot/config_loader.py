"""Read a repository's `.github/box.yml` (over its organisation's) from the default branch.

Files are fetched with conditional requests: GitHub answers 304 when a file did not
change, which costs no rate limit, so every run sees the current configuration. Config
in a pull request's branch is never used (a fork could otherwise choose the budget).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import cachetools
import gidgethub

from bot.github import GitHubAppAuth
from bot.repo_config import (
    CONFIG_PATH,
    Defaults,
    EffectiveConfig,
    RepoConfig,
    merge_configs,
    parse_repo_config,
)
from bot.settings import Settings

log = logging.getLogger(__name__)

ORG_CONFIG_REPO = ".github"
MAX_PROMPT_FILE_BYTES = 64 * 1024
CACHED_RESPONSES = 2048


def defaults_from(settings: Settings) -> Defaults:
    """The operator's defaults, as set in the environment."""
    return Defaults(
        label=settings.trigger_label,
        provider=settings.box_provider,
        model=settings.box_model,
        reasoning_effort=settings.box_reasoning_effort,
        ttl_seconds=settings.box_ttl_seconds,
        on_close=settings.box_on_close,
    )


class ConfigLoader:
    """Finds the configuration in force for a repository."""

    def __init__(self, auth: GitHubAppAuth, defaults: Defaults) -> None:
        self.auth = auth
        self.defaults = defaults
        # gidgethub keeps (etag, last-modified, data) per URL and sends If-None-Match.
        self.http_cache: cachetools.LRUCache[str, Any] = cachetools.LRUCache(CACHED_RESPONSES)

    async def load(self, installation_id: int, repo: str, default_branch: str) -> EffectiveConfig:
        """Return the merged config; raise `RepoConfigError` listing problems with their lines."""
        owner = repo.split("/", 1)[0]
        org = await self._config(installation_id, f"{owner}/{ORG_CONFIG_REPO}", None)
        own = await self._config(installation_id, repo, default_branch)
        return merge_configs(self.defaults, org, own)

    async def _config(self, installation_id: int, repo: str, ref: str | None) -> RepoConfig | None:
        text = await self.read_file(installation_id, repo, CONFIG_PATH, ref)
        if text is None:
            return None
        source = CONFIG_PATH if ref is not None else f"{repo}:{CONFIG_PATH}"
        return parse_repo_config(text, source)

    async def read_file(
        self, installation_id: int, repo: str, path: str, ref: str | None
    ) -> str | None:
        """Return a text file's content from *ref* (the default branch when None), or None."""
        gh = self.auth.installation_client(installation_id, cache=self.http_cache)
        query = f"?ref={ref}" if ref else ""
        try:
            data = await gh.getitem(f"/repos/{repo}/contents/{path}{query}")
        except gidgethub.BadRequest as exc:
            if exc.status_code == 404:
                return None
            raise
        if not isinstance(data, dict) or data.get("type") != "file":
            return None
        raw = base64.b64decode(data.get("content") or "")
        return raw[:MAX_PROMPT_FILE_BYTES].decode("utf-8", errors="replace")

    def forget(self, repo: str) -> None:
        """Drop what is cached for *repo* (after a push that changed its config)."""
        for url in [url for url in self.http_cache if f"/repos/{repo}/".lower() in url.lower()]:
            self.http_cache.pop(url, None)
