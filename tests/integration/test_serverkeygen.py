"""POST /serverkeygen (RFC 7030 §4.4): answer format, key types, policy, auth, encrypted
delivery (decrypted with openssl cms), key archival, and estkit's own client end to end."""

from __future__ import annotations

import base64
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ
from pyasn1_modules import rfc2986, rfc3565, rfc5652, rfc5751, rfc5958, rfc7030

from estkit.client import BasicAuth, CsrTemplate, EstClient
from estkit.wire.pkcs7 import load_certs_only
from tests.esthttp import PKCS10, b64, enroll_basic, make_csr, new_key, request, write_pair

PKCS8_HEADERS = [b"Content-Type: application/pkcs8", b"Content-Transfer-Encoding: base64"]
CERTS_HEADERS = [
    b"Content-Type: application/pkcs7-mime; smime-type=certs-only",
    b"Content-Transfer-Encoding: base64",
]
ENCRYPTED_HEADERS = [
    b"Content-Type: application/pkcs7-mime; smime-type=server-generated-key",
    b"Content-Transfer-Encoding: base64",
]
OID_DECRYPT_KEY_ID = univ.ObjectIdentifier("1.2.840.113549.1.9.16.2.37")
SHA256KDF = univ.ObjectIdentifier("1.3.132.1.11.1")

FACTORY_TOML = """
[key_archive]
recipient_cert = "archive.pem"

[labels.kept]
serverkeygen_archive = true

[labels.rsakg]
key_types = ["rsa"]
serverkeygen_key_type = "rsa-2048"

[labels.p384]
serverkeygen_key_type = "ec-p384"

[labels.edkg]
serverkeygen_key_type = "ed25519"

[labels.only-cn]
allowed_cn = ["sensor-*"]

[labels.manual]
approval = "manual"
"""


# ---------------------------------------------------------------- helpers


def csr_with(key, cn: str, attributes: list[tuple[univ.ObjectIdentifier, bytes]]) -> bytes:
    """A CSR carrying extra attributes (DER values), signed by ``key``: cryptography's builder
    takes string attributes only, so they are added with pyasn1 and the CSR re-signed."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    base = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    csr, _ = decoder.decode(
        base.public_bytes(serialization.Encoding.DER), asn1Spec=rfc2986.CertificationRequest()
    )
    info = csr["certificationRequestInfo"]
    for oid, value in attributes:
        attribute = rfc2986.Attribute()
        attribute["type"] = oid
        attribute["values"].append(univ.Any(value))
        info["attributes"].append(attribute)
    tbs = encoder.encode(info)
    if isinstance(key, rsa.RSAPrivateKey):
        from cryptography.hazmat.primitives.asymmetric import padding

        signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    csr["signature"] = univ.BitString.fromOctetString(signature)
    return encoder.encode(csr)


def capabilities(*oids: univ.ObjectIdentifier) -> bytes:
    caps = rfc5751.SMIMECapabilities()
    for oid in oids:
        capability = rfc5751.SMIMECapability()
        capability["capabilityID"] = oid
        caps.append(capability)
    return encoder.encode(caps)


def key_id_attribute(key_id: bytes) -> tuple[univ.ObjectIdentifier, bytes]:
    return (
        rfc7030.id_aa_asymmDecryptKeyID,
        encoder.encode(rfc7030.AsymmetricDecryptKeyIdentifier(key_id)),
    )


def post(server, der: bytes, label: str | None = None, user=None, password=None, **kw):
    return request(
        server.est_url(label) + "/serverkeygen",
        server.ca_file,
        "POST",
        b64(der),
        kw.pop("headers", PKCS10),
        user=user,
        password=password,
        **kw,
    )


def split_parts(reply) -> list[tuple[list[bytes], bytes]]:
    """(header lines, base64 payload) of each part, checking the framing byte for byte."""
    content_type = reply.headers["Content-Type"]
    match = re.fullmatch(r"multipart/mixed; boundary=([A-Za-z0-9'()+_,./:=?-]{1,70})", content_type)
    assert match, content_type
    body = reply.body
    assert b"\n" not in body.replace(b"\r\n", b""), "a line ends in a bare LF"
    dash = b"--" + match.group(1).encode()
    assert body.startswith(dash + b"\r\n")
    assert body.endswith(dash + b"--\r\n")
    parts = []
    for chunk in body[len(dash) + 2 : -len(dash) - 4].split(b"\r\n" + dash + b"\r\n"):
        head, _, payload = chunk.partition(b"\r\n\r\n")
        parts.append((head.split(b"\r\n"), payload))
    return parts


def b64decode(payload: bytes) -> bytes:
    return base64.b64decode(b"".join(payload.split()), validate=True)


def plain_answer(reply) -> tuple[bytes, x509.Certificate]:
    """(PKCS#8 DER, certificate) of a 200 answer with exactly the expected two parts."""
    assert reply.status == 200, reply.text
    (key_head, key_payload), (certs_head, certs_payload) = split_parts(reply)
    assert key_head == PKCS8_HEADERS
    assert certs_head == CERTS_HEADERS
    certificates = load_certs_only(b64decode(certs_payload))
    assert len(certificates) == 1
    return b64decode(key_payload), certificates[0]


def assert_pkcs8_for(pkcs8: bytes, cert: x509.Certificate):
    """True PKCS#8 (a PrivateKeyInfo, not PKCS#1/SEC1) whose key is the certificate's."""
    info, rest = decoder.decode(pkcs8, asn1Spec=rfc5958.OneAsymmetricKey())
    assert not rest
    assert int(info["version"]) == 0
    key = serialization.load_der_private_key(pkcs8, password=None)
    assert key.public_key() == cert.public_key()
    return key


def openssl(*args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def enroll(
    server, tmp_path: Path, user: str, password: str, key
) -> tuple[Path, Path, x509.Certificate]:
    """simpleenroll a certificate for ``key``; returns (cert.pem, key.pem, cert)."""
    _, der = make_csr(user, key=key)
    reply = enroll_basic(server, der, None, user, password)
    assert reply.status == 200, reply.text
    cert = reply.certificates()[0]
    cert_path, key_path = write_pair(tmp_path, user, key, cert)
    return cert_path, key_path, cert


def ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def audit_for(server, serial: int):
    store = server.store()
    try:
        return [e for e in store.audit_events() if e.subject == format(serial, "x")]
    finally:
        store.close()


@pytest.fixture(scope="module")
def archive_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An archive certificate and key, the key kept apart from the instance (the operator's)."""
    directory = tmp_path_factory.mktemp("archive")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "estkit key archive")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return write_pair(directory, "archive", key, cert)


@pytest.fixture(scope="module")
def kg_server(tmp_path_factory: pytest.TempPathFactory, archive_keys):
    """A fresh instance with the labels above and an archive certificate."""
    from tests.estserver import init_instance, start_server

    directory = tmp_path_factory.mktemp("kg") / "est-data"
    init_instance(directory, "")
    (directory / "archive.pem").write_bytes(archive_keys[0].read_bytes())
    config = directory / "estkit.toml"
    config.write_text(config.read_text() + FACTORY_TOML)
    server = start_server(directory)
    yield server
    server.stop()


@pytest.fixture
def user(est_server):
    name = f"kg-{datetime.now(UTC).strftime('%H%M%S%f')}"
    return name, est_server.add_user(name)


# ---------------------------------------------------------------- the answer


def test_answer_is_two_base64_parts_with_the_key_and_its_certificate(est_server, user):
    name, password = user
    csr_key, der = make_csr(name, sans=None)
    reply = post(est_server, der, user=name, password=password)
    pkcs8, cert = plain_answer(reply)
    key = assert_pkcs8_for(pkcs8, cert)
    # RFC 7030 §4.4.1: the CSR's key only signed the request; the certificate is for a new one.
    assert cert.public_key() != csr_key.public_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert cert.subject.rfc4514_string() == f"CN={name}"
    ca = x509.load_pem_x509_certificate((est_server.data_dir / "ca" / "issuing.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    store = est_server.store()
    try:
        record = store.certificate(format(cert.serial_number, "x"))
        assert record is not None and record.kind == "serverkeygen"
        # Without archival the server keeps nothing of the key.
        assert store.archived_key(record.serial) is None
    finally:
        store.close()
    events = audit_for(est_server, cert.serial_number)
    assert [e.action for e in events] == ["certificate.serverkeygen"]
    assert events[0].detail["archived"] is False
    assert events[0].detail["key_type"] == "ec-p256"
    assert events[0].actor == f"user:{name}"


def test_server_keeps_no_copy_without_archival(est_server, user):
    name, password = user
    _, der = make_csr(name)
    pkcs8, cert = plain_answer(post(est_server, der, user=name, password=password))
    scalar = assert_pkcs8_for(pkcs8, cert).private_numbers().private_value.to_bytes(32, "big")
    database = Path(est_server.store().url.removeprefix("sqlite:///"))
    files = list(database.parent.glob(database.name + "*"))  # the database, its WAL and SHM
    assert database in files
    for path in files:
        content = path.read_bytes()
        assert pkcs8 not in content
        assert scalar not in content  # the private key itself, in any wrapping


def test_csr_signature_and_key_type_are_ignored(est_server, user):
    """RFC 7030 §4.4.1: the server "MUST ignore the public key values and signature"."""
    name, _ = user
    # An RSA CSR on a label that accepts EC P-256 keys only, with a broken signature.
    iot_user = "kg-iot-" + name[3:]
    iot_password = est_server.add_user(iot_user)
    _, der = make_csr(iot_user, key=new_key("rsa-2048"))
    broken = der[:-1] + bytes([der[-1] ^ 0x01])
    assert not x509.load_der_x509_csr(broken).is_signature_valid
    pkcs8, cert = plain_answer(post(est_server, broken, "iot", iot_user, iot_password))
    key = assert_pkcs8_for(pkcs8, cert)
    assert isinstance(key, ec.EllipticCurvePrivateKey)


@pytest.mark.parametrize(
    ("label", "expected"),
    [("rsakg", "rsa-2048"), ("p384", "ec-p384"), ("edkg", "ed25519"), (None, "ec-p256")],
)
def test_key_type_follows_the_label(kg_server, label, expected):
    name = f"kt-{label}"
    password = kg_server.add_user(name)
    _, der = make_csr(name)
    pkcs8, cert = plain_answer(post(kg_server, der, label, name, password))
    key = assert_pkcs8_for(pkcs8, cert)
    if expected == "rsa-2048":
        assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_encipherment
    elif expected == "ed25519":
        assert isinstance(key, ed25519.Ed25519PrivateKey)
    else:
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == {"ec-p384": "secp384r1", "ec-p256": "secp256r1"}[expected]


def test_rsa_only_label_defaults_to_its_minimum_size(est_server, user):
    """The shared `rsa` label (RSA, at least 3072 bits) sets no serverkeygen_key_type."""
    name, password = user
    _, der = make_csr(name)
    pkcs8, cert = plain_answer(post(est_server, der, "rsa", name, password))
    key = assert_pkcs8_for(pkcs8, cert)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072


# ---------------------------------------------------------------- refusals


def test_cn_not_allowed_is_403(kg_server):
    password = kg_server.add_user("kg-cn")
    _, der = make_csr("printer-7")
    reply = post(kg_server, der, "only-cn", "kg-cn", password)
    assert reply.status == 403
    assert "allowed_cn" in reply.text


def test_cn_must_equal_identity_is_403(est_server, user):
    name, password = user
    _, der = make_csr("someone-else")
    reply = post(est_server, der, "iot", name, password)
    assert reply.status == 403
    assert "someone-else" in reply.text


def test_no_credentials_get_the_basic_challenge(est_server):
    _, der = make_csr("anon")
    reply = post(est_server, der)
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Basic realm="estkit"'


def test_wrong_password_is_401(est_server, user):
    name, _ = user
    _, der = make_csr(name)
    reply = post(est_server, der, user=name, password="wrong")
    assert reply.status == 401
    assert "wrong user name or password" in reply.text


def test_malformed_bodies_are_400_and_415(est_server, user):
    name, password = user
    reply = post(est_server, b"\x30\x03\x02\x01", user=name, password=password)
    assert reply.status == 400
    assert "PKCS#10" in reply.text
    _, der = make_csr(name)
    reply = post(
        est_server, der, user=name, password=password, headers={"Content-Type": "text/plain"}
    )
    assert reply.status == 415


def test_manual_approval_label_refuses_serverkeygen(kg_server):
    password = kg_server.add_user("kg-manual")
    _, der = make_csr("kg-manual")
    reply = post(kg_server, der, "manual", "kg-manual", password)
    assert reply.status == 403
    assert "approval" in reply.text and "simpleenroll" in reply.text
    store = kg_server.store()
    try:
        assert not [r for r in store.certificates() if r.label == "manual"]
    finally:
        store.close()


# ---------------------------------------------------------------- encrypted delivery


def _decrypt_delivery(
    reply, cert_path: Path, key_path: Path, root: Path
) -> tuple[bytes, x509.Certificate]:
    """openssl opens the EnvelopedData, verifies the SignedData inside against the trust
    anchor, and the AsymmetricKeyPackage holds the PKCS#8 key of the certified key."""
    assert reply.status == 200, reply.text
    (key_head, key_payload), (certs_head, certs_payload) = split_parts(reply)
    assert key_head == ENCRYPTED_HEADERS
    assert certs_head == CERTS_HEADERS
    enveloped = b64decode(key_payload)
    signed = openssl(
        "cms", "-decrypt", "-inform", "DER", "-recip", str(cert_path), "-inkey", str(key_path),
        stdin=enveloped,
    )  # fmt: skip
    package = openssl(
        "cms", "-verify", "-inform", "DER", "-CAfile", str(root), "-purpose", "any",
        stdin=signed,
    )  # fmt: skip
    keys, rest = decoder.decode(package, asn1Spec=rfc5958.AsymmetricKeyPackage())
    assert not rest and len(keys) == 1
    certificate = load_certs_only(b64decode(certs_payload))[0]
    pkcs8 = encoder.encode(keys[0])
    assert_pkcs8_for(pkcs8, certificate)
    return enveloped, certificate


@pytest.mark.parametrize(
    ("recipient_type", "caps"),
    [
        ("rsa-2048", (rfc3565.id_aes256_CBC,)),
        ("ec-p256", (rfc3565.id_aes128_CBC, rfc3565.id_aes128_wrap)),
        ("ec-p384", (rfc3565.id_aes256_CBC, rfc3565.id_aes256_wrap, SHA256KDF)),
    ],
)
def test_encrypted_delivery_opens_with_openssl(est_server, user, tmp_path, recipient_type, caps):
    name, password = user
    cert_path, key_path, recipient = enroll(
        est_server, tmp_path, name, password, new_key(recipient_type)
    )
    der = csr_with(
        new_key("ec-p256"),
        name,
        [key_id_attribute(ski(recipient)), (rfc5751.smimeCapabilities, capabilities(*caps))],
    )
    reply = post(est_server, der, user=name, password=password)
    enveloped, issued = _decrypt_delivery(reply, cert_path, key_path, est_server.ca_file)
    info, _ = decoder.decode(enveloped, asn1Spec=rfc5652.ContentInfo())
    envelope, _ = decoder.decode(info["content"], asn1Spec=rfc5652.EnvelopedData())
    recipient_info = envelope["recipientInfos"][0]
    algorithm = envelope["encryptedContentInfo"]["contentEncryptionAlgorithm"]["algorithm"]
    assert algorithm == caps[0]  # the client's first (preferred) content cipher
    assert envelope["encryptedContentInfo"]["contentType"] == rfc5652.id_signedData
    if recipient_type.startswith("rsa"):
        assert recipient_info.getName() == "ktri"
        assert bytes(recipient_info["ktri"]["rid"]["subjectKeyIdentifier"]) == ski(recipient)
    else:
        assert recipient_info.getName() == "kari"
        wrap, _ = decoder.decode(
            recipient_info["kari"]["keyEncryptionAlgorithm"]["parameters"],
            asn1Spec=rfc5652.KeyEncryptionAlgorithmIdentifier(),
        )
        assert wrap["algorithm"] == caps[1]
    events = audit_for(est_server, issued.serial_number)
    assert events[0].detail["delivery"] == "encrypted"
    assert events[0].detail["recipient_key_id"] == ski(recipient).hex()


def test_unknown_key_identifier_is_400(est_server, user):
    name, password = user
    der = csr_with(
        new_key("ec-p256"),
        name,
        [
            key_id_attribute(b"\x42" * 20),
            (rfc5751.smimeCapabilities, capabilities(rfc3565.id_aes128_CBC)),
        ],
    )
    reply = post(est_server, der, user=name, password=password)
    assert reply.status == 400
    assert "4242424242" in reply.text and "names no currently valid certificate" in reply.text


def test_symmetric_key_delivery_is_not_offered(est_server, user):
    name, password = user
    der = csr_with(
        new_key("ec-p256"),
        name,
        [
            (OID_DECRYPT_KEY_ID, encoder.encode(univ.OctetString(b"kek-1"))),
            (rfc5751.smimeCapabilities, capabilities(rfc3565.id_aes128_wrap)),
        ],
    )
    reply = post(est_server, der, user=name, password=password)
    assert reply.status == 400
    assert "symmetric" in reply.text and "not offer" in reply.text


def test_encrypted_delivery_needs_usable_capabilities(est_server, user, tmp_path):
    name, password = user
    _, _, recipient = enroll(est_server, tmp_path, name, password, new_key("ec-p256"))
    without = csr_with(new_key("ec-p256"), name, [key_id_attribute(ski(recipient))])
    reply = post(est_server, without, user=name, password=password)
    assert reply.status == 400 and "SMIMECapabilities" in reply.text
    no_wrap = csr_with(
        new_key("ec-p256"),
        name,
        [
            key_id_attribute(ski(recipient)),
            (rfc5751.smimeCapabilities, capabilities(rfc3565.id_aes128_CBC)),
        ],
    )
    reply = post(est_server, no_wrap, user=name, password=password)
    assert reply.status == 400 and "key-wrap" in reply.text


def test_revoked_recipient_is_unknown(kg_server, tmp_path):
    password = kg_server.add_user("kg-revoked")
    _, _, recipient = enroll(kg_server, tmp_path, "kg-revoked", password, new_key("rsa-2048"))
    store = kg_server.store()
    try:
        store.revoke_certificate(
            format(recipient.serial_number, "x"), "keyCompromise", datetime.now(UTC)
        )
    finally:
        store.close()
    der = csr_with(
        new_key("ec-p256"),
        "kg-revoked",
        [
            key_id_attribute(ski(recipient)),
            (rfc5751.smimeCapabilities, capabilities(rfc3565.id_aes128_CBC)),
        ],
    )
    reply = post(kg_server, der, user="kg-revoked", password=password)
    assert reply.status == 400


# ---------------------------------------------------------------- archival


def test_archival_keeps_only_an_encrypted_copy(kg_server, archive_keys, tmp_path):
    password = kg_server.add_user("kg-kept")
    _, der = make_csr("kg-kept")
    pkcs8, cert = plain_answer(post(kg_server, der, "kept", "kg-kept", password))
    scalar = assert_pkcs8_for(pkcs8, cert).private_numbers().private_value.to_bytes(32, "big")
    serial = format(cert.serial_number, "x")
    store = kg_server.store()
    try:
        archived = store.archived_key(serial)
        assert archived is not None
        assert archived.label == "kept"
    finally:
        store.close()
    assert pkcs8 not in archived.der and scalar not in archived.der
    archive_cert, archive_key = archive_keys
    fingerprint = x509.load_pem_x509_certificate(archive_cert.read_bytes()).fingerprint(
        hashes.SHA256()
    )
    assert archived.recipient == fingerprint.hex()
    # Recovery as the README describes it: export, then decrypt with the archive key.
    exported = tmp_path / "key.p7m"
    from tests.estserver import run_estkit

    result = run_estkit(
        "key-archive", "export", serial, "--out", str(exported), "--dir", str(kg_server.data_dir)
    )
    assert "openssl cms -decrypt" in result.stdout
    recovered = openssl(
        "cms", "-decrypt", "-inform", "DER", "-in", str(exported), "-recip", str(archive_cert),
        "-inkey", str(archive_key),
    )  # fmt: skip
    assert recovered == pkcs8
    listing = run_estkit("key-archive", "list", "--dir", str(kg_server.data_dir)).stdout
    assert serial in listing
    events = audit_for(kg_server, cert.serial_number)
    assert [e.action for e in events] == ["certificate.serverkeygen", "key_archive.export"]
    assert events[0].detail["archived"] is True


def test_labels_without_archival_keep_nothing_on_an_archiving_instance(kg_server):
    password = kg_server.add_user("kg-notkept")
    _, der = make_csr("kg-notkept")
    _, cert = plain_answer(post(kg_server, der, "p384", "kg-notkept", password))
    store = kg_server.store()
    try:
        assert store.archived_key(format(cert.serial_number, "x")) is None
    finally:
        store.close()


# ---------------------------------------------------------------- estkit's own client


def test_estkit_client_library(est_server, user):
    name, password = user
    client = EstClient(est_server.url, est_server.ca_file, auth=BasicAuth(name, password))
    template = CsrTemplate(
        ec.generate_private_key(ec.SECP256R1()),
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]),
    )
    result = client.serverkeygen(template)
    assert result.certificate.public_key() == result.private_key.public_key()
    assert result.certificate.subject == template.subject
