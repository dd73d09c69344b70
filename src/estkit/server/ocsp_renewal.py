"""Starting the OCSP responder with the server, and renewing its certificate while it runs.

At start the responder certificate in ca/ is used if sound, else issued (first start, the
issuing CA changed, a third or less of its lifetime left). Then a background task checks
again every ``responder_validity / 10`` (at most hourly) and renews in a worker thread, so
key generation and the store write never block request handling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from estkit.authority.ca import RETIRED_DIR, CertificateAuthority
from estkit.authority.ocsp import OcspResponder, OcspRouter
from estkit.authority.ocsp_signer import ResponderKeeper
from estkit.authority.service import Authority, Clock, utc_now
from estkit.config import Config
from estkit.server.periodic import run_periodically
from estkit.server.responder_lock import SharedResponderKeeper
from estkit.store import Store

log = logging.getLogger("estkit.ocsp")


async def _renew_all(keepers: list[ResponderKeeper]) -> None:
    await asyncio.gather(
        *(
            run_periodically(
                keeper.renew_if_due,
                _interval_of(keeper),
                "renew the OCSP responder certificate",
                log,
            )
            for keeper in keepers
        )
    )


def _interval_of(keeper: ResponderKeeper) -> Callable[[], float]:
    return lambda: keeper.check_interval


def responder_keepers(
    config: Config, ca: CertificateAuthority, store: Store, clock: Clock = utc_now
) -> list[ResponderKeeper]:
    """One keeper per CA generation, not started yet. The current generation keeps its
    responder files in ca/, a retired one in its ca/retired/<id>/ directory. Issuance is
    serialized across processes (server/responder_lock.py): workers share these files."""
    keepers: list[ResponderKeeper] = []
    for generation in ca.generations:
        directory = config.directory / "ca"
        if generation is not ca:
            directory = config.issuing_cert.parent / RETIRED_DIR / generation.issuing_id
        directory.mkdir(mode=0o700, exist_ok=True)
        keepers.append(SharedResponderKeeper(generation, store, directory, config.ocsp, clock))
    return keepers


def start_ocsp(config: Config, authority: Authority) -> tuple[OcspRouter, asyncio.Task[None]]:
    """The responders (one per CA generation, each with its delegated certificate loaded or
    issued now) and the renewal task (cancel it to stop). KeyFileError if a responder key
    file is readable by others."""
    responders = []
    keepers = responder_keepers(config, authority.ca, authority.store, authority.clock)
    for keeper in keepers:
        keeper.start()
        responders.append(
            OcspResponder(keeper.ca, authority.store, keeper, config.ocsp, authority.clock)
        )
    return OcspRouter(responders), asyncio.create_task(_renew_all(keepers), name="ocsp-renewal")
