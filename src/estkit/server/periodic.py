"""Background upkeep that must not stop quietly: run a job again and again, in a thread,
logging one line per distinct failure (not one per attempt) and one when it recovers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from estkit.errors import EstError


async def run_periodically(
    job: Callable[[], object], interval: Callable[[], float], what: str, log: logging.Logger
) -> None:
    """Call job every interval() seconds in a worker thread until cancelled."""
    failing: str | None = None
    while True:
        await asyncio.sleep(interval())
        try:
            await asyncio.to_thread(job)
        except (EstError, ValueError, OSError) as exc:
            if str(exc) != failing:
                log.error("could not %s: %s", what, exc)
            failing = str(exc)
        except Exception:
            # A bug must not end the task silently: what it keeps current would go stale.
            if failing != "internal":
                log.exception("could not %s", what)
            failing = "internal"
        else:
            if failing is not None:
                log.info("%s works again", what)
            failing = None
