"""Starting the OCSP responder with the server, and renewing its certificate while it runs.

At start the responder certificate in ca/ is used if sound, else issued (first start, the
issuing CA changed, a third or less of its lifetime left). Then a background task checks
again every ``responder_validity / 10`` (at most hourly) and renews in a worker thread, so
key generation and the store write never block request handling.
"""

from __future__ import annotations

import asyncio
import logging

from estkit.authority.ca import RETIRED_DIR
from estkit.authority.ocsp import OcspResponder, OcspRouter
from estkit.authority.ocsp_signer import ResponderKeeper
from estkit.authority.service import Authority
from estkit.config import Config
from estkit.errors import EstError

log = logging.getLogger("estkit.ocsp")


async def _loop(keeper: ResponderKeeper) -> None:
    failing: str | None = None
    while True:
        await asyncio.sleep(keeper.check_interval)
        try:
            await asyncio.to_thread(keeper.renew_if_due)
        except (EstError, ValueError, OSError) as exc:
            if str(exc) != failing:  # one line per distinct failure, not one per check
                log.error("could not renew the OCSP responder certificate: %s", exc)
            failing = str(exc)
        except Exception:
            # A bug must not end the task silently: responses would stop at its expiry.
            if failing != "internal":
                log.exception("could not renew the OCSP responder certificate")
            failing = "internal"
        else:
            if failing is not None:
                log.info("OCSP responder renewal works again")
            failing = None


async def _renew_all(keepers: list[ResponderKeeper]) -> None:
    await asyncio.gather(*(_loop(keeper) for keeper in keepers))


def start_ocsp(config: Config, authority: Authority) -> tuple[OcspRouter, asyncio.Task[None]]:
    """The responders (one per CA generation, each with its delegated certificate loaded or
    issued now) and the renewal task (cancel it to stop). The current generation keeps its
    responder files in ca/, a retired one in its ca/retired/<id>/ directory. KeyFileError if
    a responder key file is readable by others."""
    responders = []
    keepers = []
    for generation in authority.ca.generations:
        directory = config.directory / "ca"
        if generation is not authority.ca:
            directory = config.issuing_cert.parent / RETIRED_DIR / generation.issuing_id
        directory.mkdir(mode=0o700, exist_ok=True)
        keeper = ResponderKeeper(
            generation, authority.store, directory, config.ocsp, authority.clock
        )
        keeper.start()
        keepers.append(keeper)
        responders.append(
            OcspResponder(generation, authority.store, keeper, config.ocsp, authority.clock)
        )
    return OcspRouter(responders), asyncio.create_task(_renew_all(keepers), name="ocsp-renewal")
