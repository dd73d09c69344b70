"""What every request handler needs, shared through the aiohttp application."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from estkit.authority.accounts import Accounts
from estkit.authority.crl import CrlPublisher
from estkit.authority.ocsp import OcspRouter
from estkit.authority.serverkeygen import KeyArchive
from estkit.authority.service import Authority
from estkit.config import ServerSettings


@dataclass(frozen=True)
class ServerContext:
    authority: Authority
    accounts: Accounts
    settings: ServerSettings
    crls: Mapping[str, CrlPublisher] = field(default_factory=dict)
    """CRL publishers by issuing CA id: the current generation and retired ones that still
    have certificates (served on the plain-HTTP listener)."""
    ocsp: OcspRouter | None = None
    """Answers OCSP requests on the plain-HTTP listener (server/ocsp.py)."""
    key_archive: KeyArchive | None = None
    """``[key_archive] recipient_cert``: serverkeygen archives keys to it (when a label says so)."""


CONTEXT = web.AppKey("estkit_context", ServerContext)
