"""GitHub webhook handlers, one module per event family, composed into one router."""

from gidgethub.routing import Router

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
