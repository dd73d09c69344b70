"""TLS for the EST listener: the server context and what a connection tells about its peer."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

# Forward-secret AEAD suites only for TLS 1.2; TLS 1.3 suites are all AEAD already.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:!aNULL:!eNULL:!EXPORT:!DES:!3DES:!RC4:!MD5"
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def server_context(
    cert_file: Path,
    key_file: Path,
    client_trust: Sequence[x509.Certificate],
    max_version: str = "1.3",
) -> ssl.SSLContext:
    """TLS 1.2+ server context that asks for (but does not require) a client certificate.

    Client certificates are verified against ``client_trust`` (this CA and any third-party
    anchors); partial chains are accepted so an anchor may be an intermediate CA.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = TLS_VERSIONS[max_version]
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    # No TLS 1.3 session tickets (README, TLS: what each would cost).  TLS 1.2 keeps its
    # stateless tickets: without them OpenSSL would keep every session in memory instead.
    context.num_tickets = 0
    context.load_cert_chain(cert_file, key_file)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    pem = "".join(c.public_bytes(Encoding.PEM).decode() for c in client_trust)
    context.load_verify_locations(cadata=pem)
    return context


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> x509.Certificate | None:
    """The verified client certificate of the connection, if the client sent one."""
    der = ssl_object.getpeercert(binary_form=True)
    return None if der is None else x509.load_der_x509_certificate(der)
