"""Middlewares every request goes through: error mapping and the one-line access log."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from estkit.errors import EstError

access_log = logging.getLogger("estkit.access")
error_log = logging.getLogger("estkit.server")

IDENTITY = "estkit_identity"
LABEL = "estkit_label"


def text_response(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    """A plain-text error a person can act on (never a traceback)."""
    response = web.Response(
        status=status, text=reason.rstrip() + "\n", content_type="text/plain", charset="utf-8"
    )
    response.headers.update(headers or {})
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn EstError and aiohttp's HTTP exceptions into text/plain answers; log the rest."""
    try:
        return await handler(request)
    except EstError as exc:
        return text_response(exc.status, exc.reason, exc.headers())
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and exc.text != exc.reason else exc.reason
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return text_response(exc.status, reason or "error", headers)
    except Exception:
        error_log.exception("internal error on %s %s", request.method, request.path)
        return text_response(500, "internal server error; the event was logged")


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request: method, path, label, status, identity, latency. No secrets."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        access_log.info(
            "%s %s label=%s status=%d identity=%s peer=%s %.1fms",
            request.method,
            request.path,
            request.get(LABEL, "-") or "-",
            status,
            request.get(IDENTITY, "-"),
            request.remote or "-",
            (time.perf_counter() - started) * 1000,
        )
