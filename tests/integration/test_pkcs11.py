"""CA and OCSP signing keys in a PKCS#11 token (SoftHSM2): init, serve, enroll, CRL, OCSP.

The instance is made by ``estkit init --pkcs11-module ... --token ...`` and served by two
worker processes (the keys are loaded before and after fork); every signature is checked
against the CA's public keys, and with openssl.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from pkcs11 import Attribute, ObjectClass

from estkit.authority.ca import CertificateAuthority
from estkit.authority.ocsp_settings import OcspSettings
from estkit.authority.ocsp_signer import ResponderKeeper
from estkit.authority.token import TokenError, find_token_key, open_token
from estkit.config import load_config
from estkit.store import Store
from tests.esthttp import request
from tests.estserver import EstServer, init_instance, start_server
from tests.integration.test_ocsp import openssl_ocsp, post, request_der, write_pem
from tests.revocation import Enrolled, enroll, estkit, failed, fetch_crl, ok
from tests.softhsm import PIN, SO_PIN, SoftHsm, session_token


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    return session_token(tmp_path_factory)


@pytest.fixture(scope="module")
def token_server(hsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EstServer]:
    directory = tmp_path_factory.mktemp("pkcs11") / "est-data"
    init_instance(directory, "", *hsm.init_args())
    server = start_server(directory, workers=2)
    yield server
    server.stop()


def cacerts(server: EstServer) -> list[x509.Certificate]:
    reply = request(server.est_url() + "/cacerts", server.ca_file)
    assert reply.status == 200, reply.text
    return reply.certificates()


def cert_revoke(server: EstServer, serial: str):
    return estkit(
        "cert", "revoke", serial, "--reason", "keyCompromise", "--dir", str(server.data_dir)
    )


def issuing_of(server: EstServer) -> x509.Certificate:
    [issuing] = [c for c in cacerts(server) if c.subject != c.issuer]
    return issuing


def test_init_writes_token_uris_and_no_ca_key_file(token_server, hsm):
    config = load_config(token_server.data_dir)
    assert str(config.issuing_key).startswith(f"pkcs11:token={hsm.label};object=estkit-issuing-")
    assert config.ocsp.responder_key_in_token
    text = (token_server.data_dir / "estkit.toml").read_text()
    assert "pin_file" in text and hsm.pin_file.read_text().strip() not in text
    with_private_key = sorted(
        str(path.relative_to(token_server.data_dir))
        for path in token_server.data_dir.rglob("*")
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes()
    )
    assert with_private_key == ["tls/server.key"]  # the TLS key only; no CA or OCSP key


def test_enrollment_over_tls_is_signed_in_the_token(token_server, tmp_path):
    cert = enroll(token_server, tmp_path).cert
    issuing = issuing_of(token_server)
    cert.verify_directly_issued_by(issuing)
    root = x509.load_pem_x509_certificate(token_server.ca_file.read_bytes())
    issuing.verify_directly_issued_by(root)
    assert cert.signature_algorithm_oid == issuing.signature_algorithm_oid


def test_openssl_verifies_a_token_issued_certificate(token_server, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    leaf = enroll(token_server, tmp_path)
    issuing = write_pem(tmp_path, issuing_of(token_server), "issuing.pem")
    result = subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(token_server.ca_file),
            "-untrusted",
            str(issuing),
            str(leaf.cert_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{leaf.cert_path}: OK" in result.stdout


def test_crl_after_revocation_is_signed_in_the_token(token_server, tmp_path):
    revoked: Enrolled = enroll(token_server, tmp_path)
    ok(cert_revoke(token_server, revoked.serial))
    crl = fetch_crl(revoked.cert)
    issuing = issuing_of(token_server)
    assert crl.is_signature_valid(issuing.public_key())
    assert crl.get_revoked_certificate_by_serial_number(revoked.cert.serial_number) is not None


def test_ocsp_response_is_signed_by_a_responder_key_in_the_token(token_server, hsm, tmp_path):
    leaf = enroll(token_server, tmp_path).cert
    issuing = issuing_of(token_server)
    answer = post(token_server, request_der((leaf, issuing)))
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert answer.certificate_status == ocsp.OCSPCertStatus.GOOD
    [responder] = answer.certificates
    responder.verify_directly_issued_by(issuing)
    public = responder.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(
        answer.signature, answer.tbs_response_bytes, ec.ECDSA(answer.signature_hash_algorithm)
    )
    # Its key is an object in the token, found by the certificate's SubjectKeyIdentifier.
    assert not (token_server.data_dir / "ca" / "ocsp-responder.key").exists()
    ski = responder.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    key = find_token_key(open_token(hsm.settings, hsm.label), key_id=ski.digest)
    assert key.public_key() == public
    if shutil.which("openssl") is not None:
        result = openssl_ocsp(token_server, "-cert", str(write_pem(tmp_path, leaf)))
        assert "Response verify OK" in result.stdout + result.stderr, result.stderr


def test_rsa_keys_in_the_token(hsm, tmp_path):
    """P-384 signing is covered by tests/unit/test_token_signing.py; RSA end to end here."""
    directory = init_instance(tmp_path / "est-data", "", *hsm.init_args("--key-type", "rsa-2048"))
    server = start_server(directory)
    try:
        cert = enroll(server, tmp_path).cert
        issuing = issuing_of(server)
        cert.verify_directly_issued_by(issuing)
        assert isinstance(issuing.public_key(), rsa.RSAPublicKey)
        assert fetch_crl(cert).is_signature_valid(issuing.public_key())
        [responder] = post(server, request_der((cert, issuing))).certificates
        responder.verify_directly_issued_by(issuing)
    finally:
        server.stop()


# Errors: one line, exit status 1, no traceback, nothing half-made -----------------------------


def _init_error(tmp_path: Path, *args: str) -> str:
    directory = tmp_path / "est-data"
    message = failed(estkit("init", "--dir", str(directory), *args))
    assert not (directory / "estkit.toml").exists()
    assert not (directory / "ca").exists()
    return message


def test_init_with_a_missing_module(hsm, tmp_path):
    args = hsm.init_args()
    args[1] = str(tmp_path / "no-such-module.so")
    assert "no-such-module.so not found" in _init_error(tmp_path, *args)


def test_init_with_an_unknown_token_label(hsm, tmp_path):
    args = hsm.init_args()
    args[3] = "no-such-token"
    message = _init_error(tmp_path, *args)
    assert "no PKCS#11 token labelled 'no-such-token'" in message
    assert repr(hsm.label) in message  # names the tokens there are


def test_init_with_a_wrong_pin(hsm, tmp_path):
    wrong = tmp_path / "wrong-pin"
    wrong.write_text("1111\n")
    wrong.chmod(0o600)
    args = hsm.init_args()
    args[5] = str(wrong)
    message = _init_error(tmp_path, *args)
    assert f"wrong user PIN for PKCS#11 token {hsm.label!r}" in message
    assert "1111" not in message


def test_init_with_a_pin_file_others_may_read(hsm, tmp_path):
    loose = tmp_path / "loose-pin"
    loose.write_text(hsm.pin_file.read_text())
    loose.chmod(0o644)
    args = hsm.init_args()
    args[5] = str(loose)
    assert "must be 0600" in _init_error(tmp_path, *args)


def test_init_refuses_ed25519_in_a_token(hsm, tmp_path):
    message = _init_error(tmp_path, *hsm.init_args("--key-type", "ed25519"))
    assert "cannot be made in a token" in message


def test_init_with_the_pin_from_the_environment(hsm, tmp_path, monkeypatch):
    monkeypatch.setenv("ESTKIT_PKCS11_PIN", hsm.pin_file.read_text().strip())
    directory = tmp_path / "est-data"
    args = hsm.init_args()[:4]  # no --pin-file
    ok(estkit("init", "--dir", str(directory), *args))
    config = load_config(directory)
    assert 'pin_env = "ESTKIT_PKCS11_PIN"' in (directory / "estkit.toml").read_text()
    monkeypatch.delenv("ESTKIT_PKCS11_PIN")
    message = failed(estkit("serve", "--dir", str(directory), "--port", "0"))
    assert "the PKCS#11 user PIN is not set: export ESTKIT_PKCS11_PIN" in message
    assert str(config.issuing_key).startswith("pkcs11:")


def test_serve_with_a_missing_key_object(token_server, tmp_path):
    directory = tmp_path / "copy"
    shutil.copytree(token_server.data_dir, directory, ignore=shutil.ignore_patterns("*.log"))
    config = directory / "estkit.toml"
    text = config.read_text()
    uri = str(load_config(directory).issuing_key)
    config.write_text(text.replace(uri, uri.rsplit("=", 1)[0] + "=gone"))
    for workers in ("1", "2"):
        message = failed(
            estkit("serve", "--dir", str(directory), "--port", "0", "--workers", workers)
        )
        assert "holds no private key labelled 'gone'" in message


def test_a_token_key_never_exports(token_server, hsm):
    key = find_token_key(
        open_token(hsm.settings, hsm.label),
        label=str(load_config(token_server.data_dir).issuing_key).rsplit("=", 1)[1],
    )
    with pytest.raises(TokenError, match="never leaves it"):
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def test_responder_renewal_in_the_token_keeps_two_keys(token_server, hsm, tmp_path):
    """Each renewal makes a new key in the token and destroys all but it and the one it
    replaced (which other worker processes may still sign with until they renew)."""
    config = load_config(token_server.data_dir)
    ca = CertificateAuthority.load(config.root_cert, config.issuing_cert, config.issuing_key)
    store = Store(f"sqlite:///{tmp_path / 'estkit.db'}")
    store.create_schema()
    now = [datetime.now(UTC)]
    settings = OcspSettings(responder_validity=timedelta(days=3), responder_key_in_token=True)
    keeper = ResponderKeeper(ca, store, tmp_path, settings, clock=lambda: now[0])
    try:
        ids = [_key_id(keeper.start().certificate)]
        for _ in range(3):
            now[0] += timedelta(days=2, hours=1)  # less than a third left: due
            renewed = keeper.renew_if_due()
            assert renewed is not None
            ids.append(_key_id(renewed.certificate))
    finally:
        store.close()
    assert len(set(ids)) == 4
    assert not (tmp_path / "ocsp-responder.key").exists()
    token = open_token(hsm.settings, hsm.label)
    with token.session() as session:
        label = f"estkit-ocsp-{ca.issuing_id[:16]}"
        kept = {
            obj[Attribute.ID]
            for obj in session.get_objects({Attribute.LABEL: label})
            if obj[Attribute.CLASS] == ObjectClass.PRIVATE_KEY
        }
    assert kept == set(ids[-2:])


def _key_id(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


LATE_TOKEN = """
import os, subprocess, sys, threading, time
from pathlib import Path
from estkit.authority.token import find_softhsm_module, open_token
from estkit.authority.token_settings import TokenSettings

directory, pin, so_pin = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
(directory / "tokens").mkdir()
conf = directory / "softhsm2.conf"
conf.write_text(f"directories.tokendir = {directory / 'tokens'}\\nobjectstore.backend = file\\n")
os.environ["SOFTHSM2_CONF"] = str(conf)
pin_file = directory / "pin"
pin_file.write_text(pin)
pin_file.chmod(0o600)

def init_later():
    time.sleep(0.3)
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "late",
                    "--pin", pin, "--so-pin", so_pin], check=True, capture_output=True)

threading.Thread(target=init_later).start()
token = open_token(TokenSettings(find_softhsm_module(), pin_file=pin_file), "late")
with token.session() as session:
    print("found", session.token.label)
"""


def test_a_token_missing_for_a_moment_is_looked_for_again(hsm, tmp_path):
    """The module's token list is loaded again while a labelled token is missing: here the
    token appears 0.3 s after the first look (in a process of its own: the module reads
    its configuration once per process)."""
    found = subprocess.run(
        [sys.executable, "-c", LATE_TOKEN, str(tmp_path), PIN, SO_PIN],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "found late"
