"""202 / 503 + Retry-After: the client waits, resends the identical request, and gives up."""

from __future__ import annotations

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import estkit.client.client as client_module
from tests.client.conftest import basic_args


def pending_first(times: int, status: int = 202):
    """A proxy script: the first `times` simpleenroll requests get status + Retry-After: 1."""
    state = {"left": times}

    def script(record):
        if record.path.endswith("/simpleenroll") and state["left"] > 0:
            state["left"] -= 1
            return web.Response(
                status=status, text="waiting for approval", headers={"Retry-After": "1"}
            )
        return None

    return script


def enroll_via(proxy, est_server, device, *extra):
    return (
        "enroll",
        "--server",
        proxy.url,
        "--ca-file",
        est_server.ca_file,
        *basic_args(device),
        "--subject",
        f"CN={device.user}",
        "--out-cert",
        device.path("d.pem"),
        "--out-key",
        device.path("d.key"),
        *extra,
    )


def test_pending_enrollment_waits_resends_identically_and_succeeds(
    cli, est_server, device, proxy_factory
):
    proxy = proxy_factory(pending_first(2))
    result = cli(*enroll_via(proxy, est_server, device))
    assert result.code == 0, result.err
    progress = [line for line in result.err.splitlines() if "asking again in 1 s" in line]
    assert len(progress) == 2 and "pending (202)" in progress[0]

    sent = proxy.paths("/simpleenroll")
    assert len(sent) == 3
    first = sent[0]
    for again in sent[1:]:
        assert again.body == first.body
        for header in ("Authorization", "Content-Type"):
            assert again.headers[header] == first.headers[header]
    [leaf, *_] = x509.load_pem_x509_certificates(device.path("d.pem").read_bytes())
    key = serialization.load_pem_private_key(device.path("d.key").read_bytes(), None)
    assert leaf.public_key() == key.public_key()


def test_busy_server_503_with_retry_after_is_retried(
    cli, est_server, device, proxy_factory, monkeypatch
):
    waits: list[float] = []
    monkeypatch.setattr(client_module, "wait", waits.append)
    proxy = proxy_factory(pending_first(3, status=503))
    result = cli(*enroll_via(proxy, est_server, device))
    assert result.code == 0, result.err
    assert waits == [1, 1, 1]
    assert "busy (503)" in result.err
    assert len({r.body for r in proxy.paths("/simpleenroll")}) == 1


def test_gives_up_after_max_wait_with_a_clear_line(cli, est_server, device, proxy_factory):
    proxy = proxy_factory(pending_first(2))
    result = cli(*enroll_via(proxy, est_server, device, "--max-wait", "1"))
    assert result.code == 6
    assert len(result.error_lines) == 1
    line = result.error_lines[0]
    assert "gave up" in line and "--max-wait" in line and "waiting for approval" in line
    assert not device.path("d.pem").exists() and not device.path("d.key").exists()


@pytest.mark.parametrize("retry_after", ["120", "Wed, 21 Oct 2099 07:28:00 GMT"])
def test_a_delay_beyond_max_wait_gives_up_at_once(
    cli, est_server, device, proxy_factory, retry_after
):
    def script(record):
        if record.path.endswith("/simpleenroll"):
            return web.Response(status=202, headers={"Retry-After": retry_after})
        return None

    proxy = proxy_factory(script)
    result = cli(*enroll_via(proxy, est_server, device, "--max-wait", "60"))
    assert result.code == 6
    assert "gave up" in result.error_lines[0]
    assert len(proxy.paths("/simpleenroll")) == 1
