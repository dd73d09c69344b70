"""The plain-HTTP listener: CA certificates (AIA caIssuers) and CRLs (CDP) for relying parties.

Nothing here is secret or authenticated, and EST itself is never served without TLS.
"""

from __future__ import annotations

from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.errors import Forbidden, NotFound
from estkit.server.context import CONTEXT, ServerContext
from estkit.server.middleware import access_log_middleware, errors_middleware, printable


async def ca_certificate(request: web.Request) -> web.Response:
    ca = request.app[CONTEXT].authority.ca
    by_name = {
        "root": ca.root,
        "issuing": ca.issuing,
        ca.root_id: ca.root,
        ca.issuing_id: ca.issuing,
    }
    cert = by_name.get(request.match_info["name"])
    if cert is None:
        raise NotFound(f"no CA certificate named '{printable(request.match_info['name'])}'")
    return web.Response(
        body=cert.public_bytes(Encoding.DER), headers={"Content-Type": "application/pkix-cert"}
    )


async def crl(request: web.Request) -> web.Response:
    raise NotFound("no CRL has been published yet")


async def est_over_http(request: web.Request) -> web.Response:
    raise Forbidden("EST is served over HTTPS only (RFC 7030 section 3.3)")


def make_public_app(context: ServerContext) -> web.Application:
    app = web.Application(middlewares=[access_log_middleware, errors_middleware])
    app[CONTEXT] = context
    app.router.add_get("/ca/{name}.crt", ca_certificate)
    app.router.add_get("/crl/{name}.crl", crl)
    app.router.add_route("*", r"/.well-known/est{tail:[\s\S]*}", est_over_http)
    return app
