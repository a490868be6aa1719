"""GitHub webhook handlers: one module per event family, one router, and what each is given."""

from __future__ import annotations

from dataclasses import dataclass, fields

from gidgethub.routing import Router

from bot.config.loader import ConfigLoader
from bot.github.client import GitHubAppAuth
from bot.github.permissions import PermissionChecker
from bot.runs.manager import RunManager
from bot.settings import Settings
from bot.store.interface import Store
from handlers import (
    checks,
    ci,
    comments,
    config,
    installations,
    issues,
    pull_requests,
    reviews,
)


@dataclass(frozen=True)
class Deps:
    """What every handler is given, each as the keyword argument of its field's name."""

    runs: RunManager
    config: ConfigLoader
    permissions: PermissionChecker
    store: Store
    settings: Settings
    auth: GitHubAppAuth

    def keywords(self) -> dict[str, object]:
        """The dependencies as keyword arguments for a handler."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def build_router() -> Router:
    """Return the router that dispatches every event family this app handles."""
    return Router(
        issues.router,
        comments.router,
        reviews.router,
        pull_requests.router,
        checks.router,
        installations.router,
        config.router,
        ci.router,
    )
