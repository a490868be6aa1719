"""GitHub webhook handlers: one module per event family, one router, and what each is given."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any

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

# An event's route with no action: its handlers take every action of that event.
ANY_ACTION = None


class HandlerRouter(Router):
    """A router that also says which (event, action) pairs its handlers are registered for."""

    def __init__(self, *other_routers: Router) -> None:
        self._routes: set[tuple[str, str | None]] = set()
        super().__init__(*other_routers)  # routes every handler of *other_routers* through add

    def add(self, func: Callable[..., Awaitable[Any]], event_type: str, **data_detail: Any) -> None:
        """Add a route and remember its (event, action); a route on another key takes any action."""
        super().add(func, event_type, **data_detail)
        action = data_detail.get("action") if set(data_detail) == {"action"} else ANY_ACTION
        self._routes.add((event_type, action))

    @property
    def routes(self) -> frozenset[tuple[str, str | None]]:
        """The (event, action) pairs some handler takes; action None stands for any action."""
        return frozenset(self._routes)


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


def build_router() -> HandlerRouter:
    """Return the router that dispatches every event family this app handles."""
    return HandlerRouter(
        issues.router,
        comments.router,
        reviews.router,
        pull_requests.router,
        checks.router,
        installations.router,
        config.router,
        ci.router,
    )
