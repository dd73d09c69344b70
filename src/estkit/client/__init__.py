"""The EST client: library for devices and servers; installs without the server's dependencies."""

from estkit.client.client import EstClient, parse_server_url, with_retries
from estkit.client.csr import CsrTemplate, generate_key
from estkit.client.errors import (
    AuthenticationRefused,
    AuthenticationRequired,
    BadResponse,
    EstClientError,
    GaveUpWaiting,
    OperationNotOffered,
    RequestRejected,
    RetryLater,
    ServerError,
    ServerUnreachable,
    TlsVerificationFailed,
)
from estkit.client.files import Pair
from estkit.client.renewal import Renewer, Threshold
from estkit.client.results import CaCertificates, CsrAttributes, Enrollment, ServerGeneratedKey
from estkit.client.transport import BasicAuth, ClientCertificate
from estkit.client.trust import bootstrap_cacerts, fingerprint

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
    "GaveUpWaiting",
    "OperationNotOffered",
    "Pair",
    "Renewer",
    "RequestRejected",
    "RetryLater",
    "ServerError",
    "ServerGeneratedKey",
    "ServerUnreachable",
    "Threshold",
    "TlsVerificationFailed",
    "bootstrap_cacerts",
    "fingerprint",
    "generate_key",
    "parse_server_url",
    "with_retries",
]
