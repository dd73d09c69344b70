"""estkit cacerts: with a trust anchor, and the RFC 7030 §4.1.1 bootstrap."""

from __future__ import annotations

import hashlib

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from estkit.cli import client_commands
from tests.client.conftest import basic_args


def sha256_hex(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


def server_chain(est_server) -> list[x509.Certificate]:
    root = x509.load_pem_x509_certificate(est_server.ca_file.read_bytes())
    issuing = x509.load_pem_x509_certificate(
        (est_server.data_dir / "ca" / "issuing.pem").read_bytes()
    )
    return [root, issuing]


def test_cacerts_with_ca_file_saves_ca_certificates(cli, est_server, tmp_path):
    out = tmp_path / "cacerts.pem"
    result = cli(
        "cacerts", "--server", est_server.url, "--ca-file", est_server.ca_file, "--out", out
    )
    assert result.code == 0, result.err
    saved = x509.load_pem_x509_certificates(out.read_bytes())
    assert {c.subject for c in saved} == {c.subject for c in server_chain(est_server)}

    before = out.read_bytes()
    again = cli(
        "cacerts", "--server", est_server.url, "--ca-file", est_server.ca_file, "--out", out
    )
    assert again.code != 0
    assert len(again.error_lines) == 1 and "--force" in again.error_lines[0]
    assert out.read_bytes() == before
    forced = cli(
        "cacerts",
        "--server",
        est_server.url,
        "--ca-file",
        est_server.ca_file,
        "--out",
        out,
        "--force",
    )
    assert forced.code == 0, forced.err


def test_bootstrap_with_the_right_fingerprint_saves_the_anchor(cli, est_server, tmp_path):
    root, issuing = server_chain(est_server)
    out = tmp_path / "anchor.pem"
    result = cli(
        "cacerts",
        "--server",
        est_server.est_url(),
        "--bootstrap",
        "--fingerprint",
        "SHA256:" + sha256_hex(root).upper(),
        "--out",
        out,
    )
    assert result.code == 0, result.err
    saved = x509.load_pem_x509_certificates(out.read_bytes())
    assert root in saved and issuing in saved
    # every certificate is shown with its subject and fingerprint
    assert "CN=estkit Root CA" in result.out and "CN=estkit Issuing CA" in result.out
    colon_hex = ":".join(sha256_hex(issuing).upper()[i : i + 2] for i in range(0, 64, 2))
    assert colon_hex in result.out
    # the saved anchor works for verified operations
    verified = cli("csrattrs", "--server", est_server.url, "--ca-file", out, "--label", "iot")
    assert verified.code == 0, verified.err
    # the bootstrap connection carried no identity
    lines = [
        line for line in est_server.log().splitlines() if "GET /.well-known/est/cacerts" in line
    ]
    assert lines and all("identity=-" in line for line in lines)


def test_bootstrap_accepts_fingerprint_without_prefix_or_colons(cli, est_server, tmp_path):
    root, _ = server_chain(est_server)
    out = tmp_path / "anchor.pem"
    result = cli(
        "cacerts",
        "--server",
        est_server.url,
        "--bootstrap",
        "--fingerprint",
        sha256_hex(root),
        "--out",
        out,
    )
    assert result.code == 0, result.err
    assert out.exists()


def test_bootstrap_with_a_wrong_fingerprint_saves_nothing(cli, est_server, tmp_path):
    root, _ = server_chain(est_server)
    wrong = "SHA256:" + ("00" + sha256_hex(root)[2:])
    out = tmp_path / "anchor.pem"
    result = cli(
        "cacerts", "--server", est_server.url, "--bootstrap", "--fingerprint", wrong, "--out", out
    )
    assert result.code == 1
    assert len(result.error_lines) == 1
    assert "fingerprint mismatch" in result.error_lines[0]
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_bootstrap_malformed_fingerprint_is_a_usage_error(cli, est_server, tmp_path):
    result = cli(
        "cacerts",
        "--server",
        est_server.url,
        "--bootstrap",
        "--fingerprint",
        "SHA256:abc",
        "--out",
        tmp_path / "a.pem",
    )
    assert result.code == 2
    assert "64 hex digits" in result.error_lines[0]


def test_bootstrap_without_terminal_or_fingerprint_refuses_before_connecting(
    cli, proxy_factory, tmp_path
):
    proxy = proxy_factory()
    out = tmp_path / "anchor.pem"
    result = cli("cacerts", "--server", proxy.url, "--bootstrap", "--out", out)
    assert result.code == 1
    assert len(result.error_lines) == 1
    assert "--fingerprint" in result.error_lines[0]
    assert not out.exists()
    assert proxy.requests == []


def test_bootstrap_on_a_terminal_asks_for_confirmation(cli, est_server, tmp_path, monkeypatch):
    questions: list[str] = []
    answers = iter(["n", "yes"])
    monkeypatch.setattr(client_commands, "is_interactive", lambda: True)
    monkeypatch.setattr(client_commands, "ask", lambda q: questions.append(q) or next(answers))
    out = tmp_path / "anchor.pem"

    refused = cli("cacerts", "--server", est_server.url, "--bootstrap", "--out", out)
    assert refused.code == 1
    assert "not confirmed" in refused.error_lines[0]
    assert not out.exists()

    accepted = cli("cacerts", "--server", est_server.url, "--bootstrap", "--out", out)
    assert accepted.code == 0, accepted.err
    assert len(questions) == 2 and "[y/N]" in questions[0]
    root, _ = server_chain(est_server)
    assert root in x509.load_pem_x509_certificates(out.read_bytes())


def test_bootstrap_sends_no_credentials(cli, est_server, device, proxy_factory, tmp_path):
    proxy = proxy_factory()
    root, _ = server_chain(est_server)
    anchor = tmp_path / "anchor.pem"
    result = cli(
        "cacerts",
        "--server",
        proxy.url,
        "--bootstrap",
        "--fingerprint",
        sha256_hex(root),
        "--out",
        anchor,
    )
    assert result.code == 0, result.err
    bootstrap = proxy.paths("/cacerts")[0]
    assert "Authorization" not in bootstrap.headers
    assert not bootstrap.client_certificate

    # The recorder does see credentials when they are sent (so the check above can fail).
    enrolled = cli(
        "enroll",
        "--server",
        proxy.url,
        "--ca-file",
        anchor,
        *basic_args(device),
        "--subject",
        f"CN={device.user}",
        "--out-cert",
        tmp_path / "c.pem",
        "--out-key",
        tmp_path / "c.key",
    )
    assert enrolled.code == 0, enrolled.err
    [enroll] = proxy.paths("/simpleenroll")
    assert enroll.headers["Authorization"].startswith("Basic ")
