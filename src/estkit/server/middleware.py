"""Middlewares every request goes through: error mapping and the one-line access log."""

from __future__ import annotations

import logging
import re
import time

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler

from estkit.errors import EstError

access_log = logging.getLogger("estkit.access")
error_log = logging.getLogger("estkit.server")

IDENTITY = "estkit_identity"
LABEL = "estkit_label"

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_ECHOED_INPUT = re.compile(r":\s*(b'|b\"|bytearray\().*", re.DOTALL)


def printable(text: str, limit: int = 80) -> str:
    """Requester-supplied text made safe to echo in a reason or write to a log line.

    Control characters (a newline in a percent-decoded path would forge a log line) become
    escapes, and long values are cut.
    """
    if len(text) <= limit and text.isascii() and text.isprintable():
        return text  # the usual request line: nothing to escape or cut
    escaped = _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def describe_protocol_error(exc: Exception) -> str:
    """aiohttp's parser complaint without the raw request bytes it quotes."""
    message = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    summary = _ECHOED_INPUT.sub("", message.strip()).splitlines()
    text = printable(" ".join(line.strip() for line in summary).rstrip(":"), 200)
    return text or "unparsable request"


class _ProtocolErrorFilter(logging.Filter):
    """aiohttp logs a full traceback for every unparsable request, echoing the raw request
    line or header (an Authorization header included).  A client's malformed request is not a
    server fault: keep one line naming the problem, without the echoed bytes or a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            reason = describe_protocol_error(exc)
            record.msg = f"{record.getMessage()}: malformed HTTP request ({reason})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def protocol_logger() -> logging.Logger:
    """The logger given to aiohttp's connection handler (parse errors, lost connections)."""
    logger = logging.getLogger("estkit.http")
    if not any(isinstance(f, _ProtocolErrorFilter) for f in logger.filters):
        logger.addFilter(_ProtocolErrorFilter())
    return logger


def text_response(status: int, reason: str, headers: dict[str, str] | None = None) -> web.Response:
    """A plain-text error a person can act on (never a traceback)."""
    text = reason.rstrip() + "\n" if reason else ""
    response = web.Response(status=status, text=text, content_type="text/plain", charset="utf-8")
    response.headers.update(headers or {})
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn EstError and aiohttp's HTTP exceptions into text/plain answers; log the rest."""
    try:
        return await handler(request)
    except EstError as exc:
        response = text_response(exc.status, exc.body(), exc.headers())
        if exc.closes_connection:
            # Send the answer now and close, rather than let aiohttp linger for up to ten
            # seconds reading a body the client has stopped sending.
            response.force_close()
            try:
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:
                pass  # the client is already gone
            request.protocol.force_close()
        return response
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
            printable(request.method, 20),
            printable(request.raw_path, 200),
            request.get(LABEL, "-") or "-",
            status,
            request.get(IDENTITY, "-"),
            request.remote or "-",
            (time.perf_counter() - started) * 1000,
        )
