"""The server's CRL refresh task: keeps the stored CRL current.

Every second it asks the store (one cheap read) whether a revocation has happened since the
newest CRL — by any process, e.g. ``estkit cert revoke`` — or whether that CRL's nextUpdate
is closer than ``[crl] refresh_before``, and signs a new one if so.  Signing runs in a worker
thread: a slow store or an RSA-4096 key never blocks request handling.
"""

from __future__ import annotations

import asyncio
import logging

from estkit.authority.crl import CrlPublisher
from estkit.errors import EstError

log = logging.getLogger("estkit.crl")

POLL_SECONDS = 1.0
ACTOR = "server"


def _refresh(publisher: CrlPublisher) -> None:
    record = publisher.refresh(ACTOR)
    if record is not None:
        log.info(
            "published CRL number %d (%d entries, next update %s)",
            record.number,
            record.entries,
            record.next_update.isoformat(),
        )


async def _loop(publisher: CrlPublisher, interval: float) -> None:
    failing: str | None = None
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(_refresh, publisher)
        except (EstError, ValueError, OSError) as exc:
            if str(exc) != failing:  # one line per distinct failure, not one per second
                log.error("could not refresh the CRL: %s", exc)
            failing = str(exc)
        except Exception:
            # A bug must not end the task silently: the CRL would go stale unnoticed.
            if failing != "internal":
                log.exception("could not refresh the CRL")
            failing = "internal"
        else:
            if failing is not None:
                log.info("CRL refresh works again")
            failing = None


def start_crl_refresh(
    publisher: CrlPublisher, interval: float = POLL_SECONDS
) -> asyncio.Task[None]:
    """Publish the first CRL now if there is none (so the CDP URL answers from the first
    request), then keep it current in the background; cancel the task to stop."""
    _refresh(publisher)
    return asyncio.create_task(_loop(publisher, interval), name="crl-refresh")
