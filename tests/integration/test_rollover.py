"""CA rollover end to end (RFC 7030 §4.1.3): `estkit ca rollover [--root]` on a real instance,
with the CA keys in files and in a PKCS#11 token (SoftHSM2).

During the overlap cacerts carries what clients need, new certificates chain to the new CA,
and the old CA's certificates keep authenticating, stay revocable, and get CRLs and OCSP
answers signed for their own issuer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pkcs11 import Attribute

from estkit.authority.token import open_token
from estkit.config import load_config
from tests.esthttp import PKCS10, b64, make_csr, request
from tests.estserver import EstServer, start_server
from tests.revocation import cdp_url, enroll, estkit, failed, http_get, ok, openssl, serial_hex
from tests.softhsm import session_token


@pytest.fixture(params=["files", "token"])
def ca_keys(request: pytest.FixtureRequest, tmp_path_factory) -> tuple[str, ...]:
    """The ``estkit init`` options of the instance: CA keys in files, or in a token."""
    if request.param == "files":
        return ()
    return tuple(session_token(tmp_path_factory).init_args())


def root_key_labels(data_dir: Path) -> set[str]:
    """The root key labels estkit.toml mentions (token instances name it in a comment)."""
    return set(re.findall(r"estkit-root-[0-9a-f]+", (data_dir / "estkit.toml").read_text()))


def token_uris(data_dir: Path) -> tuple[str, list[str]]:
    """(the configured issuing key URI, the URIs the retired generations keep)."""
    issuing = str(load_config(data_dir).issuing_key)
    retired = sorted((data_dir / "ca" / "retired").glob("*/issuing.uri"))
    return issuing, [path.read_text().strip() for path in retired]


def rolled_over(server: EstServer, *flags: str) -> EstServer:
    """Stop the server, roll the CA over, start it again on the same instance."""
    server.stop()
    result = ok(estkit("ca", "rollover", "--dir", str(server.data_dir), *flags))
    assert "restart 'estkit serve'" in result.stdout
    return start_server(server.data_dir)


def cacerts(server: EstServer, ca_file: Path | None = None) -> list[x509.Certificate]:
    reply = request(server.est_url() + "/cacerts", ca_file or server.ca_file)
    assert reply.status == 200, reply.text
    return reply.certificates()


def named(certificates: list[x509.Certificate], cn: str) -> x509.Certificate:
    [cert] = [c for c in certificates if c.subject.rfc4514_string() == f"CN={cn},O=estkit"]
    return cert


def fetch_crl_from(server: EstServer, cert: x509.Certificate) -> x509.CertificateRevocationList:
    """The CRL at the path of cert's CDP URL, from this server (the test instance's listener
    port changes across restarts; a real deployment's is fixed)."""
    path = "/" + cdp_url(cert).split("/", 3)[3]
    reply = http_get(server, path)
    assert reply.status == 200, reply.text
    return x509.load_der_x509_crl(reply.body)


def untrusted_links(certificates: list[x509.Certificate]) -> list[x509.Certificate]:
    """What a client builds paths from: it drops self-signed roots it does not trust."""
    return [c for c in certificates if c.issuer != c.subject]


def pem(path: Path, certificates: list[x509.Certificate]) -> Path:
    path.write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in certificates))
    return path


def verify(tmp_path: Path, anchor: x509.Certificate, chain: list[x509.Certificate], leaf):
    return openssl(
        "verify",
        "-x509_strict",
        "-CAfile",
        str(pem(tmp_path / "anchor.pem", [anchor])),
        "-untrusted",
        str(pem(tmp_path / "untrusted.pem", chain)),
        str(pem(tmp_path / "leaf.pem", [leaf])),
    )


def reenroll(server: EstServer, enrolled, ca_file: Path) -> x509.Certificate:
    _, der = make_csr(enrolled.cert.subject.rfc4514_string()[3:], key=enrolled.key)
    reply = request(
        server.est_url() + "/simplereenroll",
        ca_file,
        "POST",
        b64(der),
        PKCS10,
        cert=enrolled.cert_path,
        key=enrolled.key_path,
    )
    assert reply.status == 200, reply.text
    [cert] = reply.certificates()
    return cert


def test_issuing_ca_rollover(est_server_factory, tmp_path, ca_keys):
    server = est_server_factory("", *ca_keys)
    old_uri = str(load_config(server.data_dir).issuing_key)
    old_root = x509.load_pem_x509_certificate(server.ca_file.read_bytes())
    old_issuing = named(cacerts(server), "estkit Issuing CA")
    before = enroll(server, tmp_path, "before-rollover")
    server = rolled_over(server)
    try:
        certificates = cacerts(server)
        new_issuing = named(certificates, "estkit Issuing CA G2")
        assert set(certificates) == {new_issuing, old_issuing, old_root}

        after = enroll(server, tmp_path, "after-rollover")
        assert after.cert.issuer == new_issuing.subject
        result = verify(tmp_path, old_root, certificates, after.cert)
        assert result.returncode == 0, result.stdout + result.stderr

        # The old generation's certificate still authenticates and renews (to the new CA).
        renewed = reenroll(server, before, server.ca_file)
        assert renewed.issuer == new_issuing.subject

        # It stays revocable; its own CA signs the CRL at the URL the certificate carries.
        ok(
            estkit(
                "cert",
                "revoke",
                serial_hex(before.cert),
                "--reason",
                "superseded",
                "--dir",
                str(server.data_dir),
            )
        )
        crl = fetch_crl_from(server, before.cert)
        assert crl.issuer == old_issuing.subject
        assert crl.is_signature_valid(old_issuing.public_key())
        assert crl.get_revoked_certificate_by_serial_number(before.cert.serial_number)
        assert fetch_crl_from(server, after.cert).issuer == new_issuing.subject

        # OCSP answers for each generation, signed on behalf of that generation.
        for cert, issuer, status in (
            (before.cert, old_issuing, "revoked"),
            (after.cert, new_issuing, "good"),
        ):
            leaf = pem(tmp_path / "ocsp-leaf.pem", [cert])
            issuer_file = pem(tmp_path / "ocsp-issuer.pem", [issuer])
            url = next(
                d.access_location.value
                for d in cert.extensions.get_extension_for_class(
                    x509.AuthorityInformationAccess
                ).value
                if d.access_method.dotted_string == "1.3.6.1.5.5.7.48.1"
            )
            url = server.http_url + "/" + url.split("/", 3)[3]
            result = openssl(
                "ocsp",
                "-issuer",
                str(issuer_file),
                "-cert",
                str(leaf),
                "-url",
                url,
                "-CAfile",
                str(server.ca_file),
            )
            assert "Response verify OK" in result.stderr, result.stdout + result.stderr
            assert f"{leaf}: {status}" in result.stdout, result.stdout

        events = [e.action for e in server.store().audit_events()]
        assert "ca.rollover" in events
        if ca_keys:  # the new key is in the token; the retired generation names its old key
            new_uri, retired_uris = token_uris(server.data_dir)
            assert new_uri.startswith("pkcs11:") and new_uri != old_uri
            assert retired_uris == [old_uri]
            assert not list((server.data_dir / "ca").rglob("*.key"))
    finally:
        server.stop()


def test_root_rollover_links_both_ways(est_server_factory, tmp_path, ca_keys):
    server = est_server_factory("", *ca_keys)
    old_root = x509.load_pem_x509_certificate(server.ca_file.read_bytes())
    before = enroll(server, tmp_path, "old-world")
    root_key_file = server.data_dir / "ca" / "root.key"
    old_root_key = root_key_file.read_bytes() if not ca_keys else b""
    old_root_labels = root_key_labels(server.data_dir)
    server = rolled_over(server, "--root")
    try:
        # Clients holding only the old root still reach the server and get the new chain.
        certificates = cacerts(
            server,
            ca_file=server.data_dir
            / "ca"
            / "retired"
            / next(p.name for p in (server.data_dir / "ca" / "retired").iterdir())
            / "root.pem",
        )
        new_root = x509.load_pem_x509_certificate(server.ca_file.read_bytes())
        assert new_root != old_root
        assert new_root.subject.rfc4514_string() == "CN=estkit Root CA G2,O=estkit"
        names = {(c.subject.rfc4514_string(), c.issuer.rfc4514_string()) for c in certificates}
        old, new = "CN=estkit Root CA,O=estkit", "CN=estkit Root CA G2,O=estkit"
        assert {(new, new), (old, old), (old, new), (new, old)} <= names  # NwN, OwO, OwN, NwO

        after = enroll(server, tmp_path, "new-world")
        # A client that trusts only the old root validates the new chain via NewWithOld ...
        result = verify(tmp_path, old_root, untrusted_links(certificates), after.cert)
        assert result.returncode == 0, result.stdout + result.stderr
        # ... and one that already trusts only the new root validates old certificates via
        # OldWithNew.
        result = verify(tmp_path, new_root, untrusted_links(certificates), before.cert)
        assert result.returncode == 0, result.stdout + result.stderr
        # Without the links neither works.
        plain = [c for c in certificates if c.issuer == c.subject or "Issuing" in str(c.subject)]
        assert verify(tmp_path, old_root, plain, after.cert).returncode != 0

        # A client that moved to the new root still verifies the server (OldWithNew is served).
        assert len(cacerts(server, ca_file=server.ca_file)) == len(certificates)

        retired = next((server.data_dir / "ca" / "retired").iterdir())
        if ca_keys:  # both roots' keys stay in the token; no key file is written
            assert not list((server.data_dir / "ca").rglob("*.key"))
            # The comment naming the root key now names the new one.
            new_root_labels = root_key_labels(server.data_dir)
            assert len(old_root_labels) == len(new_root_labels) == 1
            assert new_root_labels != old_root_labels
            assert (retired / "issuing.uri").read_text().startswith("pkcs11:")
        else:
            assert (retired / "root.key").read_bytes() == old_root_key
            assert (retired / "root.key").stat().st_mode & 0o077 == 0
    finally:
        server.stop()


def take_root_key_away(data_dir: Path) -> None:
    """The root key goes offline: its file is moved away, or its pair leaves the token."""
    config = load_config(data_dir)
    root_key = data_dir / "ca" / "root.key"
    if root_key.exists():
        root_key.rename(data_dir / "root.key.offline")
        return
    root = x509.load_pem_x509_certificate(config.root_cert.read_bytes())
    key_id = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    token = open_token(config.issuing_key.settings, config.issuing_key.uri.token)
    with token.session() as session:
        pair = list(session.get_objects({Attribute.ID: key_id}))
        assert len(pair) == 2, pair
        for key in pair:
            key.destroy()


def test_rollover_needs_the_root_key(est_server_factory, ca_keys):
    server = est_server_factory("", *ca_keys)
    server.stop()
    take_root_key_away(server.data_dir)
    reason = failed(estkit("ca", "rollover", "--dir", str(server.data_dir)))
    assert "root CA key is needed" in reason
    assert not (server.data_dir / "ca" / "retired").exists()


def test_interrupted_rollover_is_completed(est_server_factory):
    server = est_server_factory()
    server.stop()
    ca_dir = server.data_dir / "ca"
    ok(estkit("ca", "rollover", "--dir", str(server.data_dir)))
    # Simulate a crash after staging, before the renames: stage the current files again.
    stage = ca_dir / ".rollover"
    stage.mkdir()
    for name in ("issuing.pem", "issuing.key"):
        (ca_dir / name).rename(stage / name)
    (ca_dir / "issuing.pem").write_bytes((ca_dir / "root.pem").read_bytes())  # inconsistent
    result = ok(estkit("ca", "rollover", "--dir", str(server.data_dir)))
    assert "completed an interrupted rollover" in result.stdout
    assert not stage.exists()
    restarted = start_server(server.data_dir)
    try:
        assert (
            named(cacerts(restarted), "estkit Issuing CA G2").issuer
            == named(cacerts(restarted), "estkit Root CA").subject
        )
    finally:
        restarted.stop()


@pytest.mark.parametrize("flags", [(), ("--root",)])
def test_show_lists_every_generation(est_server_factory, flags):
    server = est_server_factory()
    server.stop()
    ok(estkit("ca", "rollover", "--dir", str(server.data_dir), *flags))
    shown = ok(estkit("ca", "show", "--dir", str(server.data_dir))).stdout
    assert "current issuing CA: CN=estkit Issuing CA G2" in shown
    assert "retired issuing CA: CN=estkit Issuing CA,O=estkit" in shown
    assert ("link certificate:" in shown) == bool(flags)
