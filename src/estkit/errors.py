"""The one error hierarchy of the EST server side.

Every failure a requester can cause or act on is a subclass of :class:`EstError` that carries
the HTTP status it maps to and a plain-text reason a person can act on.  The server turns them
into ``text/plain`` responses in one middleware; nothing else decides statuses.
"""

from __future__ import annotations


class EstError(Exception):
    """Base of every error that becomes an EST error response."""

    status: int = 400
    reason: str = "bad request"
    closes_connection: bool = False
    """Answer, then close the connection (the rest of the request will never be read)."""

    def __init__(self, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(self.reason)

    def __str__(self) -> str:
        return self.reason

    def headers(self) -> dict[str, str]:
        """Extra response headers this error needs (e.g. WWW-Authenticate)."""
        return {}

    def body(self) -> str:
        """The plain-text response body: the reason, unless the answer must be bare."""
        return self.reason


class BadRequest(EstError):
    """The request is malformed or asks for something the policy cannot grant (400)."""

    status = 400


class MalformedBase64(BadRequest):
    """RFC 8951: bodies are base64 (RFC 4648); anything else cannot be decoded."""


class MalformedDer(BadRequest):
    """The decoded body is not a single DER value of the expected type."""


class BadCsrSignature(BadRequest):
    """RFC 2986: the CSR's signature must verify with its own public key."""


class IncompleteRequest(BadRequest):
    """The body never arrived whole: the connection dropped or its chunked framing broke."""

    closes_connection = True


class PolicyViolation(BadRequest):
    """The CSR is well-formed but the label's profile cannot accept it; the reason names what."""


class PopLinkingRequired(BadRequest):
    """RFC 7030 §3.5: the CSR must carry the TLS channel's tls-unique as challengePassword."""


class AuthenticationRequired(EstError):
    """RFC 7030 §3.2.3: missing or wrong credentials get 401 with a Basic challenge."""

    status = 401
    reason = "authentication required"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Basic realm="estkit"'}


class ChallengeRequired(AuthenticationRequired):
    """401 to a request that sent no credentials: a bare challenge, with an empty body.

    Clients that authenticate only when challenged (Bouncy Castle 1.72, libest) close the
    challenge unread; Bouncy Castle then fails on any unread body longer than one byte
    ("Stream closed before limit fully read").  The WWW-Authenticate header says what to do.
    """

    def body(self) -> str:
        return ""


class Forbidden(EstError):
    """The identity is known but may not do this (label, subject, SAN, revoked certificate)."""

    status = 403


class NotFound(EstError):
    """Unknown label or operation."""

    status = 404


class MethodNotAllowed(EstError):
    """The operation exists but not with this HTTP method."""

    status = 405

    def __init__(self, reason: str, allowed: str) -> None:
        super().__init__(reason)
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": self.allowed}


class RequestTimeout(EstError):
    """The client was too slow sending its request.

    RFC 9110 §15.5.9: a 408 means the server has decided to close the connection rather than
    keep waiting, so the answer says ``Connection: close`` and the connection is closed.
    """

    status = 408
    closes_connection = True


class PayloadTooLarge(EstError):
    """Bodies are bounded: an EST request is a CSR, a few KiB at most."""

    status = 413


class UnsupportedMediaType(EstError):
    """RFC 7030 §4.2.1: simpleenroll bodies are application/pkcs10."""

    status = 415


class ServiceUnavailable(EstError):
    """The store could not durably record the result; nothing was issued, retry later."""

    status = 503
    reason = "the certificate store is unavailable; nothing was issued, retry later"

    def __init__(self, reason: str | None = None, retry_after: int = 5) -> None:
        super().__init__(reason)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ApprovalPending(EstError):
    """Not a failure: RFC 7030 §4.2.3's 202, "the request has been accepted for processing
    but ... a response is not yet available"; the label waits for an operator's decision.

    Raised (rather than returned) so every front-end that enrolls answers it the same way.
    The body is empty: Bouncy Castle's EST client (1.72) closes a 202 without reading it and
    fails on any unread body longer than one byte; Retry-After says when to ask again.
    """

    status = 202
    reason = "the request awaits an operator's approval"

    def __init__(self, request_id: int, retry_after: int) -> None:
        super().__init__(f"request {request_id} awaits an operator's approval")
        self.request_id = request_id
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}

    def body(self) -> str:
        return ""


class RejectedByOperator(Forbidden):
    """An operator rejected this request (manual approval); the reason is theirs."""


class TooManyPendingRequests(EstError):
    """A requester may have only so many requests waiting for approval on a label."""

    status = 429


class CmcFailure(EstError):
    """A Full CMC request refused (RFC 7030 §4.3.2: a 4xx or 5xx status, and a CMC response
    explaining it): ``fail_info`` is the RFC 5272 §6.1.4 CMCFailInfo name the response carries,
    ``body_parts`` the request's body part IDs it is about (empty: the whole request)."""

    def __init__(
        self,
        reason: str,
        fail_info: str = "badRequest",
        status: int = 400,
        body_parts: tuple[int, ...] = (),
    ) -> None:
        super().__init__(reason)
        self.fail_info = fail_info
        self.status = status
        self.body_parts = body_parts


class KeyDeliveryRefused(BadRequest):
    """RFC 7030 §4.4.1: the CSR asks for the server-generated key to be encrypted in a way this
    server cannot do (unknown recipient, symmetric key, no usable algorithm); the reason says
    which."""
