"""Read a repository's `.github/box.yml` (over its organisation's) from the default branch.

Files are fetched with conditional requests: GitHub answers 304 when a file did not
change, which costs no rate limit, so every run sees the current configuration. Config
in a pull request's branch is never used (a fork could otherwise choose the budget).
"""

from __future__ import annotations

import base64
import logging
from typing import Any
from urllib.parse import quote

import cachetools
import gidgethub

from bot.config.repo import (
    CONFIG_PATH,
    Defaults,
    EffectiveConfig,
    RepoConfig,
    merge_configs,
    parse_repo_config,
    too_large,
)
from bot.github.client import GitHubAppAuth
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
        setup=settings.box_setup_script,
        machine=settings.box_machine,
        environment=settings.box_environment,
    )


class ConfigLoader:
    """Finds the configuration in force for a repository."""

    def __init__(self, auth: GitHubAppAuth, defaults: Defaults) -> None:
        self.auth = auth
        self.defaults = defaults
        # gidgethub keeps (etag, last-modified, data) per URL and sends If-None-Match.
        self.http_cache: cachetools.LRUCache[str, Any] = cachetools.LRUCache(CACHED_RESPONSES)
        # Parsed files by (source, git blob sha): a 304 returns the same blob, parsed once.
        self._parsed: cachetools.LRUCache[tuple[str, str], RepoConfig] = cachetools.LRUCache(
            CACHED_RESPONSES
        )

    async def load(self, installation_id: int, repo: str, ref: str) -> EffectiveConfig:
        """Return the merged config; raise `RepoConfigError` listing problems with their lines.

        *ref* is the default branch for runs; a pull request's head only to validate its file.
        """
        owner = repo.split("/", 1)[0]
        org = await self._org_config(installation_id, f"{owner}/{ORG_CONFIG_REPO}")
        own = await self._config(installation_id, repo, ref)
        return merge_configs(self.defaults, org, own)

    async def _org_config(self, installation_id: int, org_repo: str) -> RepoConfig | None:
        """The organisation's file; a `.github` repository the app cannot read counts as none."""
        try:
            return await self._config(installation_id, org_repo, None)
        except gidgethub.BadRequest as exc:
            if exc.status_code != 403:
                raise
            log.info("%s is not readable by this installation; no organisation config", org_repo)
            return None

    async def _config(self, installation_id: int, repo: str, ref: str | None) -> RepoConfig | None:
        data = await self._contents(installation_id, repo, CONFIG_PATH, ref)
        if data is None:
            return None
        source = CONFIG_PATH if ref is not None else f"{repo}:{CONFIG_PATH}"
        key = (source, str(data.get("sha") or ""))
        parsed = self._parsed.get(key) if key[1] else None
        if parsed is None:
            parsed = parse_repo_config(config_bytes(data, source), source)
            if key[1]:
                self._parsed[key] = parsed
        return parsed

    async def read_file(
        self, installation_id: int, repo: str, path: str, ref: str | None
    ) -> str | None:
        """Return a text file's content from *ref* (the default branch when None), or None."""
        data = await self._contents(installation_id, repo, path, ref)
        if data is None or not data.get("content"):
            return None
        raw = base64.b64decode(data["content"])
        return raw[:MAX_PROMPT_FILE_BYTES].decode("utf-8", errors="replace")

    async def _contents(
        self, installation_id: int, repo: str, path: str, ref: str | None
    ) -> dict[str, Any] | None:
        """Return the contents API's answer for a file, or None when there is no such file."""
        gh = self.auth.installation_client(installation_id, cache=self.http_cache)
        query = f"?ref={quote(ref, safe='')}" if ref else ""
        try:
            data = await gh.getitem(f"/repos/{repo}/contents/{quote(path)}{query}")
        except gidgethub.BadRequest as exc:
            if exc.status_code == 404:
                return None
            raise
        if not isinstance(data, dict) or data.get("type") != "file":
            return None
        return data

    def forget(self, repo: str) -> None:
        """Drop what is cached for *repo* (after a push that changed its config).

        For an organisation's `.github` repository this drops the organisation's file, which
        every repository of the organisation reads.
        """
        for url in [url for url in self.http_cache if f"/repos/{repo}/".lower() in url.lower()]:
            self.http_cache.pop(url, None)


def config_bytes(data: dict[str, Any], source: str) -> bytes:
    """Return a config file's bytes from the contents API, whole, for the parser to judge.

    GitHub sends no content (encoding `none`) for files over 1 MB:
    https://docs.github.com/rest/repos/contents#get-repository-content
    """
    size = int(data.get("size") or 0)
    if data.get("encoding") != "base64" or (size and not data.get("content")):
        raise too_large(size, source)
    return base64.b64decode(data.get("content") or "")
