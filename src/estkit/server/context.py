"""What every request handler needs, shared through the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from estkit.authority.accounts import Accounts
from estkit.authority.crl import CrlPublisher
from estkit.authority.ocsp import OcspResponder
from estkit.authority.serverkeygen import KeyArchive
from estkit.authority.service import Authority
from estkit.config import ServerSettings


@dataclass(frozen=True)
class ServerContext:
    authority: Authority
    accounts: Accounts
    settings: ServerSettings
    crls: CrlPublisher | None = None
    """Signs and finds the issuing CA's CRL (served on the plain-HTTP listener)."""
    ocsp: OcspResponder | None = None
    """Answers OCSP requests on the plain-HTTP listener (server/ocsp.py)."""
    key_archive: KeyArchive | None = None
    """``[key_archive] recipient_cert``: serverkeygen archives keys to it (when a label says so)."""


CONTEXT = web.AppKey("estkit_context", ServerContext)
