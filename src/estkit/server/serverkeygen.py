"""POST /serverkeygen (RFC 7030 §4.4): the server makes the key pair and returns both halves.

Authentication and authorization are those of simpleenroll; the answer is the two-part
``multipart/mixed`` of §4.4.2, each part base64 with ``Content-Transfer-Encoding: base64``
(RFC 8951 §3) and CRLF line ends: the key (``application/pkcs8``, or with encryption
requested ``application/pkcs7-mime; smime-type=server-generated-key``) and the certificate
(``application/pkcs7-mime; smime-type=certs-only``).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from estkit.authority.request import EnrollmentRequest
from estkit.authority.serverkeygen import serverkeygen as generate
from estkit.server.context import ServerContext
from estkit.server.routes import (
    PKCS10_TYPE,
    authenticate,
    channel_of,
    read_body,
    require_content_type,
)
from estkit.wire.base64body import decode_body
from estkit.wire.csr import load_csr
from estkit.wire.keydelivery import key_delivery_request
from estkit.wire.multipart import encode_serverkeygen
from estkit.wire.pkcs7 import certs_only


async def serverkeygen(request: web.Request, ctx: ServerContext, label: str) -> web.StreamResponse:
    """RFC 7030 §4.4.1: a CSR naming subject and SANs; its own key and signature are ignored."""
    channel = channel_of(request)
    identity, channel = await authenticate(request, ctx, channel, renewing=False)
    require_content_type(request, PKCS10_TYPE)
    der = decode_body(await read_body(request, ctx))
    csr = load_csr(der, ignore_key=True)
    delivery = key_delivery_request(der)
    enrollment = EnrollmentRequest(
        label=label,
        csr=csr,
        identity=identity,
        channel=channel,
        source=request.remote or "",
    )
    # Key generation (RSA especially) and signing are CPU work: off the event loop.
    result = await asyncio.to_thread(generate, ctx.authority, enrollment, delivery, ctx.key_archive)
    content_type, body = encode_serverkeygen(
        result.encrypted_key or result.private_key_info,
        certs_only([result.certificate]),
        encrypted=result.encrypted_key is not None,
    )
    return web.Response(body=body, headers={"Content-Type": content_type})
