"""Keep the inbox bounded: prune it at start and then every hour."""

from __future__ import annotations

import asyncio
import logging

from bot.store.interface import Store
from bot.store.records import DAY_SECONDS, StoreUnavailable

log = logging.getLogger(__name__)

PRUNE_EVERY_SECONDS = 3600.0


async def prune_periodically(
    store: Store, retention_days: int, every: float = PRUNE_EVERY_SECONDS
) -> None:
    """Prune the inbox now and every *every* seconds until cancelled; a failed pass waits."""
    while True:
        try:
            pruned = await store.prune_inbox(retention_days * DAY_SECONDS)
        except StoreUnavailable as exc:
            log.warning("could not prune the inbox: %s; trying again in %.0f s", exc, every)
        else:
            if pruned.payloads or pruned.deliveries or pruned.redeliveries:
                log.info(
                    "inbox pruned: %d payloads dropped, %d deliveries and %d redeliveries"
                    " forgotten",
                    pruned.payloads,
                    pruned.deliveries,
                    pruned.redeliveries,
                )
        await asyncio.sleep(every)
