"""The server runs on uvloop when it is installed, and on asyncio's own loop when asked."""

from __future__ import annotations

import re

import pytest

from tests.esthttp import enroll_basic, make_csr
from tests.estserver import init_instance, start_server


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_enrollment_on_each_event_loop(tmp_path, monkeypatch, loop):
    monkeypatch.setenv("ESTKIT_EVENT_LOOP", loop)
    server = start_server(init_instance(tmp_path / "est"))
    try:
        password = server.add_user("looped")
        _, der = make_csr(f"on-{loop}")
        reply = enroll_basic(server, der, None, "looped", password)
        assert reply.status == 200, reply.text
        [cert] = reply.certificates()
        assert cert.subject.rfc4514_string() == f"CN=on-{loop}"
        assert re.search(
            rf"event loop: {loop}; [1-9][0-9]{{4,}} startup objects exempt", server.log()
        )
    finally:
        server.stop()
