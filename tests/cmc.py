"""Helpers for the Full CMC tests: building and signing Full PKI Requests as a client would,
posting them, and reading the Full PKI Response."""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from estkit.wire.cmc import (
    ID_CCT_PKI_DATA,
    ID_CCT_PKI_RESPONSE,
    ID_CMC_REVOKE_REQUEST,
    ID_CMC_SENDER_NONCE,
    ID_CMC_TRANSACTION_ID,
    CertificationRequest,
    Control,
    PkiResponse,
    RevokeRequest,
    SignedContent,
    SignerInfo,
    encode_integer,
    encode_octets,
    encode_pki_data,
    encode_revoke_request,
    encode_signed_data,
    load_pki_response,
    load_signed_data,
    signed_attributes,
)
from tests.esthttp import Reply, request
from tests.estserver import EstServer

CMC_REQUEST = {"Content-Type": "application/pkcs7-mime; smime-type=CMC-request"}
SHA256 = "2.16.840.1.101.3.4.2.1"
ECDSA_SHA256 = "1.2.840.10045.4.3.2"
RSA_SHA256 = "1.2.840.113549.1.1.11"
ED25519 = "1.3.101.112"


def sign(
    content: bytes,
    key,
    *,
    cert: x509.Certificate | None = None,
    key_id: bytes | None = None,
    certificates: tuple[x509.Certificate, ...] = (),
    content_type: str = ID_CCT_PKI_DATA,
    attribute_content_type: str | None = None,
) -> bytes:
    """A ContentInfo/SignedData over ``content`` signed by ``key``: identified by ``cert``
    (issuerAndSerialNumber) or ``key_id`` (subjectKeyIdentifier, the self-signed form)."""
    digest = hashes.Hash(
        hashes.SHA512() if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    )
    digest.update(content)
    attributes = signed_attributes(attribute_content_type or content_type, digest.finalize())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature, algorithm = key.sign(attributes, ec.ECDSA(hashes.SHA256())), ECDSA_SHA256
        digest_oid = SHA256
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(attributes, padding.PKCS1v15(), hashes.SHA256())
        algorithm, digest_oid = RSA_SHA256, SHA256
    else:
        signature, algorithm = key.sign(attributes), ED25519
        digest_oid = "2.16.840.1.101.3.4.2.3"
    signer = SignerInfo(
        digest_algorithm=digest_oid,
        signature_algorithm=algorithm,
        signature=signature,
        signed_attributes=attributes,
        issuer=cert.issuer.public_bytes() if cert is not None else None,
        serial=cert.serial_number if cert is not None else None,
        key_id=key_id,
    )
    return encode_signed_data(content_type, content, certificates, [signer])


def key_id_of(key) -> bytes:
    """The RFC 5280 SHA-1 key identifier of a key (what a self-signed request names)."""
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest


def pki_data(
    csrs: dict[int, bytes] | None = None,
    revoke: dict[int, RevokeRequest] | None = None,
    transaction_id: int | None = None,
    nonce: bytes | None = None,
    extra: tuple[Control, ...] = (),
) -> bytes:
    controls: list[Control] = []
    if transaction_id is not None:
        controls.append(Control(90, ID_CMC_TRANSACTION_ID, (encode_integer(transaction_id),)))
    if nonce is not None:
        controls.append(Control(91, ID_CMC_SENDER_NONCE, (encode_octets(nonce),)))
    for body_part, revoke_request in (revoke or {}).items():
        value = encode_revoke_request(revoke_request)
        controls.append(Control(body_part, ID_CMC_REVOKE_REQUEST, (value,)))
    controls.extend(extra)
    requests = [CertificationRequest(i, der) for i, der in (csrs or {}).items()]
    return encode_pki_data(controls, requests)


def self_signed_request(key, csr_der: bytes, body_part: int = 1, **kwargs) -> bytes:
    """A Full PKI Request with one PKCS#10, signed with that request's key (RFC 5272 §3.2)."""
    return sign(pki_data({body_part: csr_der}, **kwargs), key, key_id=key_id_of(key))


def revoke_request_for(cert: x509.Certificate, reason: int = 1, **fields) -> RevokeRequest:
    return RevokeRequest(cert.issuer.public_bytes(), cert.serial_number, reason, **fields)


def post_cmc(
    server: EstServer,
    body: bytes,
    label: str | None = None,
    headers: dict[str, str] | None = None,
    encode: bool = True,
    **kwargs,
) -> Reply:
    return request(
        f"{server.est_url(label)}/fullcmc",
        server.ca_file,
        "POST",
        base64.b64encode(body) if encode else body,
        CMC_REQUEST if headers is None else headers,
        **kwargs,
    )


@dataclass
class CmcReply:
    reply: Reply
    der: bytes
    signed: SignedContent
    response: PkiResponse

    @property
    def status(self):
        """The one status of a response about one body part (or the whole request)."""
        [status] = self.response.statuses
        return status

    def issued(self) -> x509.Certificate:
        """The one end-entity certificate in the response (the CA chain travels with it)."""
        [cert] = [c for c in self.signed.certificates if not _is_ca(c)]
        return cert


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def read_cmc(reply: Reply, expected_status: int) -> CmcReply:
    """A Full PKI Response: right HTTP status and media type, signed PKIResponse inside."""
    assert reply.status == expected_status, f"{reply.status}: {reply.text}"
    assert reply.headers["Content-Type"] == "application/pkcs7-mime; smime-type=CMC-response"
    assert reply.headers["Content-Transfer-Encoding"] == "base64"
    der = base64.b64decode(b"".join(reply.body.split()))
    signed = load_signed_data(der)
    assert signed.content_type == ID_CCT_PKI_RESPONSE
    return CmcReply(reply, der, signed, load_pki_response(signed.content))


def openssl_verify_cms(der: bytes, directory: Path, ca_file: Path | None = None) -> bytes:
    """`openssl cms -verify` on the response: checks the signature (and with ``ca_file`` the
    signer's chain) and returns the eContent it extracted."""
    source = directory / "response.der"
    content = directory / "econtent.der"
    source.write_bytes(der)
    trust = ["-CAfile", str(ca_file)] if ca_file else ["-noverify"]
    result = subprocess.run(
        [
            "openssl",
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            str(source),
            *trust,
            "-binary",
            "-out",
            str(content),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "Verification successful" in result.stderr
    return content.read_bytes()


def openssl(*args: str, stdin: bytes | None = None) -> str:
    result = subprocess.run(
        ["openssl", *args], input=stdin, capture_output=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode()
