"""The repository config each run works under, and what it adds to the run's prompt."""

from __future__ import annotations

import time

import cachetools

from bot.config.loader import ConfigLoader
from bot.config.repo import EffectiveConfig
from bot.models import Run
from bot.runs.prompt import PromptContext

RUN_CONFIG_SECONDS = 60.0


class RunConfigs:
    """Reads a run's config once for its first steps (trigger, limits, prompt, desktop)
    instead of once each; later reads (at close) ask GitHub again."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self._configs: cachetools.TTLCache[str, EffectiveConfig] = cachetools.TTLCache(
            maxsize=4096, ttl=RUN_CONFIG_SECONDS, timer=time.monotonic
        )

    def keep(self, run_id: str, config: EffectiveConfig) -> None:
        """Remember the config a run was asked for under, for its first steps."""
        self._configs[run_id] = config

    async def of(self, run: Run) -> EffectiveConfig | None:
        """The repository's configuration now (None when the run does not know its branch)."""
        if run.default_branch is None:
            return None
        if (config := self._configs.get(run.id)) is None:
            config = await self.loader.load(run.installation_id, run.repo, run.default_branch)
            self._configs[run.id] = config
        return config

    async def add_guidance(self, run: Run, context: PromptContext) -> None:
        """Add the repository's own instructions and prompt file from its default branch."""
        config = await self.of(run)
        if config is None or run.default_branch is None:
            return
        context.repo_instructions = config.instructions
        context.draft_pr = config.draft_pr
        if config.prompt_file:
            text = await self.loader.read_file(
                run.installation_id, run.repo, config.prompt_file, run.default_branch
            )
            if text is not None:
                context.repo_prompt_file = (config.prompt_file, text)
