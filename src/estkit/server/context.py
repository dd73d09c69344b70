"""What every request handler needs, shared through the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from estkit.authority.accounts import Accounts
from estkit.authority.service import Authority
from estkit.config import ServerSettings


@dataclass(frozen=True)
class ServerContext:
    authority: Authority
    accounts: Accounts
    settings: ServerSettings


CONTEXT = web.AppKey("estkit_context", ServerContext)
