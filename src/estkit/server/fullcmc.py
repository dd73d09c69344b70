"""POST fullcmc (RFC 7030 §4.3): Full PKI Requests in, signed Full PKI Responses out.

HTTP-level problems are answered like every other operation's, in text/plain: missing
credentials (401), a wrong Content-Type (415), an oversized or slow body (413, 408).  Once a
body has arrived, every refusal is a CMC response (RFC 7030 §4.3.2: "a CMC response with the
content-type of application/pkcs7-mime") carried by a 4xx or 5xx status that says the same.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.helpers import parse_mimetype

from estkit.authority.cmc import CmcRequest, FullCmc
from estkit.errors import EstError, UnsupportedMediaType
from estkit.server.context import ServerContext
from estkit.server.routes import authenticate, base64_response, channel_of, read_body
from estkit.wire.base64body import decode_body

CMC_REQUEST_TYPE = "application/pkcs7-mime; smime-type=CMC-request"
CMC_RESPONSE_TYPE = "application/pkcs7-mime; smime-type=CMC-response"


def require_cmc_request(request: web.Request) -> None:
    """RFC 5273 §3 / RFC 7030 §4.3.1: the body is application/pkcs7-mime, smime-type
    CMC-request (parameter values compared without regard to case)."""
    header = request.headers.get("Content-Type")
    if header is None:
        raise UnsupportedMediaType(f"the request has no Content-Type; send {CMC_REQUEST_TYPE}")
    mime = parse_mimetype(header)
    smime_type = mime.parameters.get("smime-type", "")
    if f"{mime.type}/{mime.subtype}" != "application/pkcs7-mime" or (
        smime_type.lower() != "cmc-request"
    ):
        shown = f"{mime.type}/{mime.subtype}" + (f"; smime-type={smime_type}" if smime_type else "")
        raise UnsupportedMediaType(
            f"Content-Type '{shown[:100]}' is not accepted here; send {CMC_REQUEST_TYPE}"
        )


async def fullcmc(request: web.Request, ctx: ServerContext, label: str) -> web.StreamResponse:
    """RFC 7030 §4.3: authenticated like simpleenroll, then processed by the authority."""
    channel = channel_of(request)
    identity, channel = await authenticate(request, ctx, channel, renewing=False)
    require_cmc_request(request)
    body = await read_body(request, ctx)
    processor = FullCmc(ctx.authority)
    try:
        der = decode_body(body)
    except EstError as exc:
        answer = await asyncio.to_thread(processor.refuse, exc)
    else:
        cmc_request = CmcRequest(label, identity, channel, source=request.remote or "")
        answer = await asyncio.to_thread(processor.answer, cmc_request, der)
    response = base64_response(answer.der, CMC_RESPONSE_TYPE)
    response.set_status(answer.status)
    response.headers.update(answer.headers)
    return response
