"""Signing certificates and CRLs with keys in a PKCS#11 token: DER assembly, URIs, settings.

The token tests use a SoftHSM2 token of this process (tests/softhsm.py).
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID, SignatureAlgorithmOID

from estkit.authority.signing import sign_builder
from estkit.authority.token import (
    Pkcs11Uri,
    TokenError,
    TokenKey,
    TokenKeyRef,
    TokenSettings,
    TokenUnavailable,
    open_token,
)
from estkit.config import ConfigError, load_config
from estkit.wire.der import assemble_signed, der_elements
from estkit.wire.keytypes import generate_key
from estkit.wire.keytypes import sign_data as ocsp_sign
from tests.softhsm import SoftHsm, session_token

NOW = datetime.now(UTC).replace(microsecond=0)
EXPECTED_ALGORITHM = {
    "ec-p256": SignatureAlgorithmOID.ECDSA_WITH_SHA256,
    "ec-p384": SignatureAlgorithmOID.ECDSA_WITH_SHA384,
    "rsa-2048": SignatureAlgorithmOID.RSA_WITH_SHA256,
    "rsa-3072": SignatureAlgorithmOID.RSA_WITH_SHA256,
}


def _certificate_builder(public_key, cn: str = "token test") -> x509.CertificateBuilder:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=5))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )


def _crl_builder(issuer: x509.Certificate) -> x509.CertificateRevocationListBuilder:
    revoked = x509.RevokedCertificateBuilder().serial_number(1234).revocation_date(NOW).build()
    return (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(NOW)
        .next_update(NOW + timedelta(days=7))
        .add_extension(x509.CRLNumber(7), critical=False)
        .add_revoked_certificate(revoked)
    )


# DER assembly, without a token ----------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048", "rsa-4096"])
def test_reassembly_reproduces_what_cryptography_signs(key_type):
    """tbs + algorithm + signature put back together is byte for byte the signed object
    (RSA-4096: a 512-byte signature, so multi-byte DER lengths at every level)."""
    key = generate_key(key_type)
    cert = sign_builder(_certificate_builder(key.public_key()), key)
    der = cert.public_bytes(Encoding.DER)
    tbs, algorithm, _ = der_elements(der)
    assert tbs == cert.tbs_certificate_bytes
    assert assemble_signed(tbs, algorithm, cert.signature) == der
    crl = sign_builder(_crl_builder(cert), key)
    crl_der = crl.public_bytes(Encoding.DER)
    crl_tbs, crl_algorithm, _ = der_elements(crl_der)
    assert assemble_signed(crl_tbs, crl_algorithm, crl.signature) == crl_der


# URIs and settings ------------------------------------------------------------------------------


def test_uri_round_trip_with_percent_encoding():
    uri = Pkcs11Uri.parse("pkcs11:token=My%20HSM;object=ca%3Bkey;type=private")
    assert uri == Pkcs11Uri("My HSM", "ca;key")
    assert Pkcs11Uri.parse(str(uri)) == uri


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("pkcs11:token=a", "needs both token=LABEL and object=LABEL"),
        ("pkcs11:token=a;object=b?pin-value=1234", "query attributes are not supported"),
        ("pkcs11:token=a;object=b;type=public", "type must be 'private'"),
        ("pkcs11:token=a;object=b;serial=1", "unsupported attribute 'serial=1'"),
        ("file:ca.key", "is not a pkcs11: URI"),
    ],
)
def test_bad_uris(text, reason):
    with pytest.raises(ValueError, match=reason.replace("?", r"\?")):
        Pkcs11Uri.parse(text)


def _write_config(directory: Path, issuing_key: str, tables: str) -> Path:
    (directory / "estkit.toml").write_text(
        '[ca]\nroot_cert = "ca/root.pem"\nissuing_cert = "ca/issuing.pem"\n'
        f'issuing_key = "{issuing_key}"\n'
        f'[tls]\ncert = "tls/server.pem"\nkey = "tls/server.key"\n{tables}'
    )
    return directory


def test_responder_key_in_the_token_needs_the_ca_key_there(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(_write_config(tmp_path, "ca/issuing.key", '[ocsp]\nresponder_key = "token"\n'))
    assert caught.value.key == "ocsp.responder_key"
    assert "needs the issuing CA key in a token" in caught.value.reason


def test_a_pkcs11_key_in_the_configuration(tmp_path):
    tables = '[pkcs11]\nmodule = "/opt/hsm/lib.so"\npin_file = "secret/pin"\n'
    config = load_config(_write_config(tmp_path, "pkcs11:token=HSM%201;object=ca", tables))
    assert config.issuing_key == TokenKeyRef(
        TokenSettings(Path("/opt/hsm/lib.so"), pin_file=tmp_path / "secret/pin"),
        Pkcs11Uri("HSM 1", "ca"),
    )


@pytest.mark.parametrize(
    ("pkcs11", "key", "reason"),
    [
        ("", "pkcs11", "needs a [pkcs11] table"),
        ("[pkcs11]\n", "pkcs11.module", "must be the path of the PKCS#11 module"),
        (
            '[pkcs11]\nmodule = "/m.so"\npin_file = "pin"\npin_env = "X"\n',
            "pkcs11.pin_file",
            "not both",
        ),
        ('[pkcs11]\nmodule = "/m.so"\npin = "1234"\n', "pkcs11.pin", "unknown setting"),
        ('[pkcs11]\nmodule = "/m.so"\npin_env = ""\n', "pkcs11.pin_env", "environment variable"),
    ],
)
def test_pkcs11_table_errors(tmp_path, pkcs11, key, reason):
    with pytest.raises(ConfigError) as caught:
        load_config(_write_config(tmp_path, "pkcs11:token=t;object=o", pkcs11))
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_pin_sources(tmp_path, monkeypatch):
    pin = tmp_path / "pin"
    pin.write_text("9876\n")
    pin.chmod(0o600)
    assert TokenSettings(Path("/m.so"), pin_file=pin).pin() == "9876"
    pin.chmod(0o640)
    with pytest.raises(TokenError, match="must be 0600"):
        TokenSettings(Path("/m.so"), pin_file=pin).pin()
    monkeypatch.setenv("MY_PIN", "5555")
    assert TokenSettings(Path("/m.so"), pin_env="MY_PIN").pin() == "5555"
    monkeypatch.delenv("MY_PIN")
    with pytest.raises(TokenError, match="export MY_PIN"):
        TokenSettings(Path("/m.so"), pin_env="MY_PIN").pin()


# Keys in a SoftHSM2 token -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    return session_token(tmp_path_factory)


_KEYS: dict[str, TokenKey] = {}


def token_key(hsm: SoftHsm, key_type: str) -> TokenKey:
    if key_type not in _KEYS:
        token = open_token(hsm.settings, hsm.label)
        key = token.generate(key_type, f"unit-{key_type}-{uuid.uuid4().hex[:8]}")
        assert isinstance(key, TokenKey)
        _KEYS[key_type] = key
    return _KEYS[key_type]


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_certificate_and_crl_signed_in_the_token_verify(hsm, key_type):
    key = token_key(hsm, key_type)
    cert = sign_builder(_certificate_builder(key.public_key()), key)
    assert cert.signature_algorithm_oid == EXPECTED_ALGORITHM[key_type]
    cert.verify_directly_issued_by(cert)  # self-signed: the token's signature over the TBS
    crl = sign_builder(_crl_builder(cert), key)
    assert crl.signature_algorithm_oid == EXPECTED_ALGORITHM[key_type]
    assert crl.is_signature_valid(key.public_key())
    assert crl.get_revoked_certificate_by_serial_number(1234) is not None


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_token_keys_sign_like_cryptography_keys(hsm, key_type):
    """What OCSP and CMS signing call: key.sign(data, ...) with DER ECDSA signatures."""
    key = token_key(hsm, key_type)
    data = b"to be signed by the token"
    signature = ocsp_sign(key, data)
    public = key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        digest = hashes.SHA384() if public.curve.key_size == 384 else hashes.SHA256()
        public.verify(signature, data, ec.ECDSA(digest))
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


def test_signing_from_many_threads_at_once(hsm):
    key = token_key(hsm, "ec-p256")

    def sign(index: int) -> x509.Certificate:
        return sign_builder(_certificate_builder(key.public_key(), f"thread {index}"), key)

    with ThreadPoolExecutor(max_workers=8) as pool:
        certs = list(pool.map(sign, range(32)))
    for cert in certs:
        cert.verify_directly_issued_by(cert)


def test_a_second_open_reuses_the_logged_in_session(hsm):
    assert open_token(hsm.settings, hsm.label) is open_token(hsm.settings, hsm.label)


def test_key_types_a_token_does_not_make(hsm):
    token = open_token(hsm.settings, hsm.label)
    with pytest.raises(TokenError, match="ed25519 keys cannot be made in a PKCS#11 token"):
        token.generate("ed25519", "unit-ed25519")


def test_missing_object_is_named(hsm):
    token = open_token(hsm.settings, hsm.label)
    with pytest.raises(TokenError, match="holds no private key labelled 'nothing-here'"):
        token.private_key("nothing-here")


def test_signing_goes_on_after_the_token_dropped_the_session(hsm):
    key = token_key(hsm, "ec-p256")
    token = open_token(hsm.settings, hsm.label)
    with token.session() as session:
        session.close()  # as a token reset or a replugged HSM would
    cert = sign_builder(_certificate_builder(key.public_key()), key)
    cert.verify_directly_issued_by(cert)


def test_a_token_that_stays_away_is_a_503_until_it_returns(hsm, monkeypatch):
    key = token_key(hsm, "ec-p256")
    token = open_token(hsm.settings, hsm.label)
    monkeypatch.delenv("ESTKIT_TEST_ABSENT_PIN", raising=False)
    with token.session() as session:
        session.close()  # the token went away...
    monkeypatch.setattr(
        token, "settings", TokenSettings(hsm.settings.module, pin_env="ESTKIT_TEST_ABSENT_PIN")
    )
    with pytest.raises(TokenUnavailable, match="nothing was signed, retry later") as refused:
        sign_builder(_certificate_builder(key.public_key()), key)  # ...and cannot log in again
    assert refused.value.status == 503 and refused.value.headers() == {"Retry-After": "5"}
    monkeypatch.setattr(token, "settings", hsm.settings)  # it is back
    cert = sign_builder(_certificate_builder(key.public_key()), key)
    cert.verify_directly_issued_by(cert)
