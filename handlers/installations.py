"""Installation lifecycle: forget credentials of installations that went away."""

import logging
from typing import Any

from gidgethub import sansio
from gidgethub.routing import Router

from bot.github.client import GitHubAppAuth

log = logging.getLogger(__name__)
router = Router()


@router.register("installation", action="deleted")
@router.register("installation", action="suspend")
async def on_installation_gone(
    event: sansio.Event, gh: Any, *args: Any, auth: GitHubAppAuth, **kwargs: Any
) -> None:
    """Drop the cached token of an installation that was removed or suspended."""
    installation = event.data["installation"]
    auth.forget_installation(installation["id"])
    log.info(
        "installation %s on %s %s; its token is forgotten",
        installation["id"],
        installation["account"]["login"],
        event.data["action"],
    )


@router.register("installation", action="created")
@router.register("installation", action="unsuspend")
@router.register("installation", action="new_permissions_accepted")
async def on_installation_ready(event: sansio.Event, gh: Any, *args: Any, **kwargs: Any) -> None:
    """Log an installation that can be used (tokens are minted on first use)."""
    installation = event.data["installation"]
    log.info(
        "installation %s on %s %s",
        installation["id"],
        installation["account"]["login"],
        event.data["action"],
    )
