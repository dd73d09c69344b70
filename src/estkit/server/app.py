"""The EST application factory."""

from __future__ import annotations

from aiohttp import web

from estkit.server.context import CONTEXT, ServerContext
from estkit.server.middleware import access_log_middleware, errors_middleware
from estkit.server.routes import MAX_BODY_BYTES, add_routes


def make_est_app(context: ServerContext) -> web.Application:
    app = web.Application(
        middlewares=[access_log_middleware, errors_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[CONTEXT] = context
    add_routes(app)
    return app
