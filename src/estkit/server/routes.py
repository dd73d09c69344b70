"""RFC 7030 operations under /.well-known/est[/<label>]/<operation>."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from cryptography import x509

from estkit.authority.accounts import WRONG_CREDENTIALS, AccountChanged, HashCheckNeeded
from estkit.authority.checks import common_name
from estkit.authority.identity import OWN_ANCHOR, Channel, Identity
from estkit.authority.request import EnrollmentRequest
from estkit.errors import (
    AuthenticationRequired,
    BadRequest,
    ChallengeRequired,
    Forbidden,
    IncompleteRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from estkit.server.auth import BasicCredentials, parse_basic
from estkit.server.context import CONTEXT, ServerContext
from estkit.server.middleware import IDENTITY, LABEL, describe_protocol_error, printable
from estkit.server.tls import peer_certificate
from estkit.wire.base64body import decode_body, encode_body
from estkit.wire.csr import load_csr
from estkit.wire.csrattrs import encode_csrattrs
from estkit.wire.pkcs7 import certs_only

EST_PREFIX = "/.well-known/est"
MAX_BODY_BYTES = 64 * 1024
CACERTS_TYPE = "application/pkcs7-mime"
CERTS_ONLY_TYPE = "application/pkcs7-mime; smime-type=certs-only"
CSRATTRS_TYPE = "application/csrattrs"
PKCS10_TYPE = "application/pkcs10"

Operation = Callable[[web.Request, ServerContext, str], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    handler: Operation


def base64_response(der: bytes, content_type: str) -> web.Response:
    """An EST success body: base64 DER with Content-Transfer-Encoding (RFC 8951 §3)."""
    return web.Response(
        body=encode_body(der),
        headers={"Content-Type": content_type, "Content-Transfer-Encoding": "base64"},
    )


def channel_of(request: web.Request) -> Channel:
    """TLS facts of the request's connection (the EST listener is TLS-only)."""
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        raise Forbidden("EST requires TLS")
    version = ssl_object.version() or "unknown"
    binding = ssl_object.get_channel_binding("tls-unique") if version == "TLSv1.2" else None
    return Channel(
        tls_version=version,
        tls_unique=binding,
        peer_certificate=peer_certificate(ssl_object),
        peer_anchor=None,
    )


def certificate_identity(ctx: ServerContext, channel: Channel) -> tuple[Identity, Channel]:
    """Identity of the TLS client certificate holder (refused if revoked or unknown)."""
    cert = channel.peer_certificate
    assert cert is not None
    anchor, issued_on = ctx.authority.certificate_origin(cert)
    name = common_name(cert.subject) or cert.subject.rfc4514_string()
    identity = Identity(
        name=name, method="certificate", anchor=anchor, certificate=cert, issued_on=issued_on
    )
    return identity, Channel(channel.tls_version, channel.tls_unique, cert, anchor)


def offered_credentials(
    request: web.Request, channel: Channel, renewing: bool
) -> BasicCredentials | None:
    """RFC 7030 §3.3: the HTTP Basic credentials offered, after the refusals that need no
    store (a second Authorization header, nothing to authenticate with at all)."""
    if len(request.headers.getall("Authorization", [])) > 1:
        # Which one counts would depend on the reader (a proxy may pick the other): refuse.
        raise BadRequest("the request has more than one Authorization header")
    credentials = parse_basic(request.headers.get("Authorization"))
    if renewing and channel.peer_certificate is None:
        raise Forbidden(
            "simplereenroll requires the TLS client certificate being renewed; "
            "connect with that certificate and its key"
        )
    if not renewing and credentials is None and channel.peer_certificate is None:
        raise ChallengeRequired(
            "enrollment requires HTTP Basic credentials or a TLS client certificate"
        )
    return credentials


def identify(
    ctx: ServerContext,
    channel: Channel,
    credentials: BasicCredentials | None,
    renewing: bool,
    hash_allowed: bool = True,
) -> tuple[Identity, Channel]:
    """Who is asking: the certificate being renewed, else Basic credentials, else the TLS
    client certificate.  Reads the store (see identify_soon for where it runs)."""
    if renewing:
        identity, channel = certificate_identity(ctx, channel)
        if identity.anchor != OWN_ANCHOR:
            raise Forbidden("simplereenroll needs a TLS client certificate issued by this CA")
        return identity, channel
    if credentials is not None:
        user = ctx.accounts.authenticate(
            credentials.user, credentials.password, hash_allowed=hash_allowed
        )
        if user is None:
            raise AuthenticationRequired(WRONG_CREDENTIALS)
        return user, channel
    return certificate_identity(ctx, channel)


async def identify_soon(
    ctx: ServerContext,
    channel: Channel,
    credentials: BasicCredentials | None,
    renewing: bool,
    recall: bool = False,
) -> tuple[Identity, Channel]:
    """identify, on the event loop when the store's reads are local (SQLite) and the Basic
    secret's verification is remembered; otherwise on a worker thread, since a PostgreSQL
    round trip or an argon2id check (tens of milliseconds) must not stall the loop.

    ``recall``: a Basic account verified lately is taken from memory, without reading the
    store (Accounts.recall), on either store: only for enrollment, whose issuing transaction
    checks that the account is still stored as it was."""
    if recall and credentials is not None and not renewing:
        with contextlib.suppress(HashCheckNeeded):
            return ctx.accounts.recall(credentials.user, credentials.password), channel
    if ctx.authority.store.local_reads:
        try:
            return identify(ctx, channel, credentials, renewing, hash_allowed=False)
        except HashCheckNeeded:
            pass
    return await asyncio.to_thread(identify, ctx, channel, credentials, renewing)


async def authenticate(
    request: web.Request, ctx: ServerContext, channel: Channel, renewing: bool
) -> tuple[Identity, Channel]:
    """RFC 7030 §3.3: TLS client certificate and/or HTTP Basic, as the operation needs."""
    credentials = offered_credentials(request, channel, renewing)
    identity, channel = await identify_soon(ctx, channel, credentials, renewing)
    request[IDENTITY] = identity.describe()  # for the access log line, even on refusal
    return identity, channel


async def read_body(request: web.Request, ctx: ServerContext) -> bytes:
    """The request body, bounded in size (413) and in time (408); chunked bodies welcome."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is over {MAX_BODY_BYTES} bytes")
    try:
        if request.content.is_eof():
            # Usually the whole body came with the headers: nothing to wait for, no timer.
            body = request.content.read_nowait()
        else:
            async with asyncio.timeout(ctx.settings.body_timeout):
                body = await _read_chunks(request.content)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {ctx.settings.body_timeout:g} seconds"
        ) from None
    except ConnectionError:
        raise IncompleteRequest(
            "the connection closed before the whole request body arrived"
        ) from None
    except (HttpProcessingError, web.RequestPayloadError) as exc:  # broken chunked framing
        raise IncompleteRequest(
            f"the request body's chunked framing is malformed: {describe_protocol_error(exc)}"
        ) from None
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is over {MAX_BODY_BYTES} bytes")
    return body


async def _read_chunks(content: StreamReader) -> bytes:
    """The rest of a body as it arrives, stopping one byte past the limit."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.read(MAX_BODY_BYTES + 1):
        size += len(chunk)
        chunks.append(chunk)
        if size > MAX_BODY_BYTES:
            break
    return b"".join(chunks)


def require_content_type(request: web.Request, expected: str) -> None:
    if "Content-Type" not in request.headers:
        raise UnsupportedMediaType(f"the request has no Content-Type; send {expected}")
    if request.content_type != expected:
        raise UnsupportedMediaType(
            f"Content-Type '{request.content_type}' is not accepted here; send {expected}"
        )


async def cacerts(request: web.Request, ctx: ServerContext, label: str) -> web.StreamResponse:
    """RFC 7030 §4.1: the CA certificates, without authentication."""
    return base64_response(certs_only(ctx.authority.ca.chain), CACERTS_TYPE)


async def csrattrs(request: web.Request, ctx: ServerContext, label: str) -> web.StreamResponse:
    """RFC 7030 §4.5: what to put in the CSR; 204 when the label asks for nothing."""
    items = ctx.authority.csr_attributes(label)
    if not items:
        return web.Response(status=204)
    return base64_response(encode_csrattrs(items), CSRATTRS_TYPE)


async def _enroll(
    request: web.Request, ctx: ServerContext, label: str, renewing: bool
) -> web.StreamResponse:
    """Everything but the commit on the event loop (Authority.enroll_async says why)."""
    channel = channel_of(request)
    credentials = offered_credentials(request, channel, renewing)
    body = await read_body(request, ctx)
    identity, checked = await identify_soon(ctx, channel, credentials, renewing, recall=True)
    request[IDENTITY] = identity.describe()  # for the access log line, even on refusal
    require_content_type(request, PKCS10_TYPE)
    enrollment = EnrollmentRequest(
        label=label,
        csr=load_csr(decode_body(body)),
        identity=identity,
        channel=checked,
        renewing=identity.certificate if renewing else None,
        source=request.remote or "",
    )
    cert = await enroll_recalled(ctx, enrollment)
    return base64_response(certs_only([cert]), CERTS_ONLY_TYPE)


async def enroll_recalled(ctx: ServerContext, enrollment: EnrollmentRequest) -> x509.Certificate:
    """Authority.enroll_async for an identity that may have been recalled from memory: an
    account found removed or replaced is forgotten, so that its next request reads the store
    (and is refused there, before anything is signed)."""
    try:
        return await ctx.authority.enroll_async(enrollment)
    except AccountChanged as changed:
        ctx.accounts.forget(changed.name)
        raise


async def simpleenroll(request: web.Request, ctx: ServerContext, label: str) -> web.StreamResponse:
    """RFC 7030 §4.2.1."""
    return await _enroll(request, ctx, label, renewing=False)


async def simplereenroll(
    request: web.Request, ctx: ServerContext, label: str
) -> web.StreamResponse:
    """RFC 7030 §4.2.2: renew or rekey with the current certificate over mutual TLS."""
    return await _enroll(request, ctx, label, renewing=True)


async def serverkeygen(request: web.Request, ctx: ServerContext, label: str) -> web.StreamResponse:
    """RFC 7030 §4.4, in server/serverkeygen.py (imported here: it builds on this module)."""
    from estkit.server.serverkeygen import serverkeygen as operation

    return await operation(request, ctx, label)


async def fullcmc(request: web.Request, ctx: ServerContext, label: str) -> web.StreamResponse:
    """RFC 7030 §4.3, in server/fullcmc.py (imported here: it builds on this module)."""
    from estkit.server.fullcmc import fullcmc as operation

    return await operation(request, ctx, label)


ROUTES: dict[str, Route] = {
    "cacerts": Route("GET", cacerts),
    "csrattrs": Route("GET", csrattrs),
    "simpleenroll": Route("POST", simpleenroll),
    "simplereenroll": Route("POST", simplereenroll),
    "serverkeygen": Route("POST", serverkeygen),
    "fullcmc": Route("POST", fullcmc),
}


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Resolve label and operation, enforce the method, run the operation."""
    ctx = request.app[CONTEXT]
    parts = request.match_info["tail"].split("/")
    if len(parts) == 1:
        label, operation = "", parts[0]
    elif len(parts) == 2 and parts[0]:
        label, operation = parts
    else:
        raise NotFound(f"no EST resource at {printable(request.raw_path)}")
    if label and label not in ctx.authority.profiles:
        # Checked here rather than by authority.profile() so the echoed label is printable.
        raise NotFound(f"no EST label '{printable(label)}' is configured on this server")
    request[LABEL] = label
    route = ROUTES.get(operation)
    if route is None:
        raise NotFound(
            f"unknown EST operation '{printable(operation)}'; operations: {', '.join(ROUTES)}"
        )
    # RFC 9110 §9.3.2: HEAD is GET without the body, wherever GET is allowed.
    allowed = "GET, HEAD" if route.method == "GET" else route.method
    if request.method != route.method and not (route.method == "GET" and request.method == "HEAD"):
        raise MethodNotAllowed(
            f"{operation} takes {route.method}, not {printable(request.method, 20)}", allowed
        )
    return await route.handler(request, ctx, label)


def add_routes(app: web.Application) -> None:
    # [\s\S] rather than ".": a percent-encoded newline in a label must still reach dispatch
    # (and get a 404 naming it), not fall through to aiohttp's bare "404: Not Found".
    app.router.add_route("*", EST_PREFIX + r"/{tail:[\s\S]*}", dispatch)
