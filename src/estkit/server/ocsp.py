"""OCSP over HTTP on the plain-HTTP listener (RFC 6960 Appendix A.1).

``POST /ocsp`` with an ``application/ocsp-request`` body, or ``GET /ocsp/{url-encoding of the
base64 of the DER request}``. Every request that reaches a handler is answered with HTTP 200
and an ``application/ocsp-response``, failures included (malformedRequest, unauthorized,
tryLater, internalError): OCSP carries its own status, and clients such as ``openssl ocsp``
report an HTTP error without reading the body, so the reason would be lost. What is not an
OCSP request at all is refused at the HTTP level as elsewhere: a wrong method (405), a body
over 64 KiB (413), a body that never arrives (408).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from email.utils import format_datetime
from urllib.parse import unquote

from aiohttp import web

from estkit.authority.ocsp import OcspAnswer, OcspRouter
from estkit.errors import NotFound
from estkit.server.context import CONTEXT
from estkit.server.routes import read_body
from estkit.wire.ocsp import OCSP_REQUEST_TYPE, OCSP_RESPONSE_TYPE, ResponseStatus

log = logging.getLogger("estkit.ocsp")

OCSP_PATH = "/ocsp"


def _responder(request: web.Request) -> OcspRouter:
    responder = request.app[CONTEXT].ocsp
    if responder is None:
        raise NotFound("this server does not run an OCSP responder")
    return responder


def _http_response(answer: OcspAnswer, cacheable: bool, responder: OcspRouter) -> web.Response:
    headers = {"Content-Type": OCSP_RESPONSE_TYPE}
    if (
        cacheable
        and answer.status == ResponseStatus.SUCCESSFUL
        and not answer.has_nonce
        and answer.this_update is not None
        and answer.next_update is not None
    ):
        # RFC 5019 §6.2: let HTTP caches keep a GET answer no longer than its nextUpdate.
        max_age = max(0, int((answer.next_update - responder.clock()).total_seconds()))
        headers["Cache-Control"] = f"max-age={max_age}, public, no-transform, must-revalidate"
        headers["Last-Modified"] = format_datetime(answer.this_update, usegmt=True)
        headers["Expires"] = format_datetime(answer.next_update, usegmt=True)
    return web.Response(body=answer.body, headers=headers)


def _refused(responder: OcspRouter, why: str) -> web.Response:
    log.info("OCSP request refused (MALFORMED_REQUEST): %s", why)
    return _http_response(responder.refuse(ResponseStatus.MALFORMED_REQUEST), False, responder)


async def ocsp_post(request: web.Request) -> web.Response:
    """RFC 6960 A.1: "The Content-Type header has the value application/ocsp-request, while
    the body of the message is the binary value of the DER encoding of the OCSPRequest"."""
    responder = _responder(request)
    body = await read_body(request, request.app[CONTEXT])
    if request.content_type.lower() != OCSP_REQUEST_TYPE:
        return _refused(responder, f"Content-Type is not {OCSP_REQUEST_TYPE}")
    answer = await asyncio.to_thread(responder.respond, body)
    return _http_response(answer, False, responder)


def request_from_path(raw_path: str) -> bytes:
    """The DER request in a GET path: ``/ocsp/`` + url-encoding of base64 (RFC 6960 A.1).

    Lenient where clients differ: '+', '/' and '=' may or may not be percent-encoded; extra
    slashes after ``/ocsp`` (a base URL ending in '/'); a '+' some client turned into a space;
    the URL-safe alphabet; missing padding. ValueError for anything else.
    """
    path = raw_path.split("?", 1)[0]
    if not path.startswith(OCSP_PATH + "/"):
        raise ValueError("the path does not start with /ocsp/")
    text = unquote(path[len(OCSP_PATH) :], errors="strict").lstrip("/")
    text = text.replace(" ", "+").replace("-", "+").replace("_", "/").rstrip("=")
    if not text:
        raise ValueError("the path holds no request")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the path is not base64 of a request") from None


async def ocsp_get(request: web.Request) -> web.Response:
    """RFC 6960 A.1 GET; successful answers without a nonce may be cached by HTTP caches."""
    responder = _responder(request)
    try:
        der = request_from_path(request.raw_path)
    except (ValueError, UnicodeDecodeError) as exc:
        return _refused(responder, str(exc))
    answer = await asyncio.to_thread(responder.respond, der)
    return _http_response(answer, True, responder)


def add_ocsp_routes(app: web.Application) -> None:
    """POST /ocsp (and /ocsp/, for AIA URLs written with a trailing slash), GET /ocsp/..."""
    app.router.add_post(OCSP_PATH + r"{slash:/*}", ocsp_post)
    app.router.add_get(OCSP_PATH + r"/{request:[\s\S]*}", ocsp_get)
