"""The plain-HTTP listener: CA certificates (AIA caIssuers) and CRLs (CDP) for relying parties.

Nothing here is secret or authenticated, and EST itself is never served without TLS.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.errors import Forbidden, NotFound
from estkit.server.context import CONTEXT, ServerContext
from estkit.server.middleware import access_log_middleware, errors_middleware, printable
from estkit.server.ocsp import add_ocsp_routes


async def ca_certificate(request: web.Request) -> web.Response:
    ca = request.app[CONTEXT].authority.ca
    by_name = {"root": ca.root, "issuing": ca.issuing}
    for generation in reversed(ca.generations):  # the current generation wins a shared id
        by_name[generation.root_id] = generation.root
        by_name[generation.issuing_id] = generation.issuing
    cert = by_name.get(request.match_info["name"])
    if cert is None:
        raise NotFound(f"no CA certificate named '{printable(request.match_info['name'])}'")
    return web.Response(
        body=cert.public_bytes(Encoding.DER), headers={"Content-Type": "application/pkix-cert"}
    )


async def crl(request: web.Request) -> web.Response:
    """The newest stored CRL of an issuing CA generation, DER (RFC 5280 §4.2.1.13 CDP URLs
    name a DER CRL; application/pkix-crl per RFC 2585 §4.2)."""
    ctx = request.app[CONTEXT]
    name = request.match_info["name"]
    publisher = ctx.crls.get(name)
    if publisher is None:
        raise NotFound(f"no CRL for a CA named '{printable(name)}'")
    record = await asyncio.to_thread(publisher.current, "server")
    return web.Response(body=record.der, headers={"Content-Type": "application/pkix-crl"})


async def est_over_http(request: web.Request) -> web.Response:
    raise Forbidden("EST is served over HTTPS only (RFC 7030 section 3.3)")


def make_public_app(context: ServerContext) -> web.Application:
    app = web.Application(middlewares=[access_log_middleware, errors_middleware])
    app[CONTEXT] = context
    app.router.add_get("/ca/{name}.crt", ca_certificate)
    app.router.add_get("/crl/{name}.crl", crl)
    add_ocsp_routes(app)
    app.router.add_route("*", r"/.well-known/est{tail:[\s\S]*}", est_over_http)
    return app
