"""The client accepts everything RFC 8951 lets a server send, from a scripted server."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from estkit.client import BadResponse, BasicAuth, CsrTemplate, EstClient, generate_key
from estkit.wire.csrattrs import CsrAttribute, encode_csrattrs, oid_value

CN = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "variant-device")])


def wrapped(der: bytes, width: int, newline: bytes) -> bytes:
    text = base64.b64encode(der)
    return newline.join(text[i : i + width] for i in range(0, len(text), width)) + newline


BODY_STYLES = {
    "one-line-no-cte": (lambda der: base64.b64encode(der), None),
    "76-crlf-base64-cte": (lambda der: wrapped(der, 76, b"\r\n"), "base64"),
    "64-lf-base64-cte": (lambda der: wrapped(der, 64, b"\n"), "base64"),
    "raw-der-binary-cte": (lambda der: der, "binary"),
}


def answer(der: bytes, content_type: str, style: str) -> web.Response:
    encode, cte = BODY_STYLES[style]
    headers = {"Content-Type": content_type}
    if cte:
        headers["Content-Transfer-Encoding"] = cte
    return web.Response(body=encode(der), headers=headers)


def issuing_ca(est_server):
    ca_dir = est_server.data_dir / "ca"
    cert = x509.load_pem_x509_certificate((ca_dir / "issuing.pem").read_bytes())
    key = serialization.load_pem_private_key((ca_dir / "issuing.key").read_bytes(), None)
    return cert, key


def sign_for(csr: x509.CertificateSigningRequest, issuer, issuer_key) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(issuer.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


@pytest.mark.parametrize("style", BODY_STYLES)
def test_cacerts_in_every_body_style(est_server, proxy_factory, style):
    root = x509.load_pem_x509_certificate(est_server.ca_file.read_bytes())
    issuing, _ = issuing_ca(est_server)
    der = pkcs7.serialize_certificates([issuing, root], serialization.Encoding.DER)

    def script(record):
        if record.path.endswith("/cacerts"):
            return answer(der, "application/pkcs7-mime", style)
        return None

    proxy = proxy_factory(script)
    result = EstClient(proxy.url, est_server.ca_file).cacerts()
    assert set(result.certificates) == {issuing, root}
    assert result.roots == [root]
    assert result.intermediates == [issuing]


@pytest.mark.parametrize("style", BODY_STYLES)
@pytest.mark.parametrize("chain_first", [True, False])
def test_enroll_finds_the_issued_certificate_in_any_order(
    est_server, proxy_factory, style, chain_first
):
    """Some servers add the chain to the enroll answer, in whatever order."""
    root = x509.load_pem_x509_certificate(est_server.ca_file.read_bytes())
    issuing, issuing_key = issuing_ca(est_server)
    issued: list[x509.Certificate] = []

    def script(record):
        if not record.path.endswith("/simpleenroll"):
            return None
        csr = x509.load_der_x509_csr(base64.b64decode(record.body))
        leaf = sign_for(csr, issuing, issuing_key)
        issued.append(leaf)
        certs = [root, issuing, leaf] if chain_first else [leaf, root, issuing]
        der = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
        return answer(der, "application/pkcs7-mime; smime-type=certs-only", style)

    proxy = proxy_factory(script)
    key = generate_key("ec-p256")
    client = EstClient(proxy.url, est_server.ca_file, BasicAuth("anyone", "secret"))
    enrollment = client.enroll(CsrTemplate(key, CN))
    assert enrollment.certificate == issued[0]
    assert set(enrollment.extra_certificates) == {root, issuing}


@pytest.mark.parametrize("status", [204, 404])
def test_csrattrs_204_and_404_mean_nothing_asked(est_server, proxy_factory, status):
    proxy = proxy_factory(
        lambda record: web.Response(status=status) if record.path.endswith("/csrattrs") else None
    )
    attributes = EstClient(proxy.url, est_server.ca_file).csrattrs()
    assert attributes.items == ()
    assert attributes.key_type is None
    assert not attributes.wants_pop_linking


@pytest.mark.parametrize("style", BODY_STYLES)
def test_csrattrs_unknown_oids_are_ignored(est_server, proxy_factory, style):
    der = encode_csrattrs(
        (
            "1.3.6.1.4.1.99999.1.2",
            CsrAttribute("1.3.6.1.4.1.99999.7", (oid_value("1.2.3.4"),)),
            "1.2.840.113549.1.9.7",
            CsrAttribute("1.2.840.10045.2.1", (oid_value("1.3.132.0.34"),)),
        )
    )
    proxy = proxy_factory(
        lambda record: (
            answer(der, "application/csrattrs", style)
            if record.path.endswith("/csrattrs")
            else None
        )
    )
    attributes = EstClient(proxy.url, est_server.ca_file).csrattrs()
    assert attributes.key_type == "ec-p384"
    assert attributes.wants_pop_linking
    assert "1.3.6.1.4.1.99999.1.2" in attributes.oids


def test_garbage_answer_is_a_bad_response(est_server, proxy_factory):
    proxy = proxy_factory(
        lambda record: web.Response(
            body=b"<html>not EST</html>", headers={"Content-Type": "application/pkcs7-mime"}
        )
    )
    with pytest.raises(BadResponse, match="neither base64"):
        EstClient(proxy.url, est_server.ca_file).cacerts()
