"""The server's CRL refresh task: keeps the stored CRL current.

Every second it asks the store (one cheap read) whether a revocation has happened since the
newest CRL — by any process, e.g. ``estkit cert revoke`` — or whether that CRL's nextUpdate
is closer than ``[crl] refresh_before``, and signs a new one if so.  Signing runs in a worker
thread: a slow store or an RSA-4096 key never blocks request handling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from estkit.authority.crl import CrlPublisher
from estkit.server.periodic import run_periodically

log = logging.getLogger("estkit.crl")

POLL_SECONDS = 1.0
ACTOR = "server"


def _refresh(publisher: CrlPublisher) -> None:
    record = publisher.refresh(ACTOR)
    if record is not None:
        log.info(
            "published CRL number %d of %s (%d entries, next update %s)",
            record.number,
            publisher.issuer_id,
            record.entries,
            record.next_update.isoformat(),
        )


def _refresh_all(publishers: Sequence[CrlPublisher]) -> None:
    for publisher in publishers:
        _refresh(publisher)


def start_crl_refresh(
    publishers: Sequence[CrlPublisher], interval: float = POLL_SECONDS
) -> asyncio.Task[None]:
    """Publish each CA generation's first CRL now if there is none (so the CDP URLs answer
    from the first request), then keep them current in the background; cancel to stop.
    A retired generation keeps publishing while it is loaded: until its issuing CA expires,
    which is never before the last certificate it issued."""
    _refresh_all(publishers)
    loop = run_periodically(
        lambda: _refresh_all(publishers), lambda: interval, "refresh the CRL", log
    )
    return asyncio.create_task(loop, name="crl-refresh")
