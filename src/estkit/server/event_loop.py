"""The event loop the server runs on: uvloop where it is installed, else asyncio's own.

uvloop (libuv) does the socket and TLS-record work of every connection in compiled code;
on the enrollment path it takes a large share of the server's CPU time per request off
the Python interpreter.  The server behaves the same on either loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on the fastest loop available (ESTKIT_EVENT_LOOP=asyncio opts out)."""
    if os.environ.get("ESTKIT_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
