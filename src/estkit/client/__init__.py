"""The EST client: library for devices and servers; installs without the server's dependencies."""

from estkit.client.client import EstClient, parse_server_url
from estkit.client.csr import CsrTemplate, generate_key
from estkit.client.errors import (
    AuthenticationRefused,
    AuthenticationRequired,
    BadResponse,
    EstClientError,
    RequestRejected,
    RetryLater,
    ServerError,
    ServerUnreachable,
    TlsVerificationFailed,
)
from estkit.client.results import CaCertificates, CsrAttributes, Enrollment
from estkit.client.transport import BasicAuth, ClientCertificate

__all__ = [
    "AuthenticationRefused",
    "AuthenticationRequired",
    "BadResponse",
    "BasicAuth",
    "CaCertificates",
    "ClientCertificate",
    "CsrAttributes",
    "CsrTemplate",
    "Enrollment",
    "EstClient",
    "EstClientError",
    "RequestRejected",
    "RetryLater",
    "ServerError",
    "ServerUnreachable",
    "TlsVerificationFailed",
    "generate_key",
    "parse_server_url",
]
