"""What can go wrong talking to an EST server, one class per thing a caller can act on."""

from __future__ import annotations


class EstClientError(Exception):
    """Base of every client failure; ``str()`` says what happened and what to do."""


class ServerUnreachable(EstClientError):
    """No connection could be made (DNS, refused, timeout)."""


class TlsVerificationFailed(EstClientError):
    """The server's certificate did not verify against the trust anchors, or its name."""


class AuthenticationRequired(EstClientError):
    """401: the server wants credentials and none (or no more) were available."""


class AuthenticationRefused(EstClientError):
    """401 after credentials were sent: wrong user name, password or certificate."""


class RequestRejected(EstClientError):
    """A 4xx answer: the server refused the request and said why (``reason``)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the server rejected the request ({status}): {reason}")
        self.status = status
        self.reason = reason


class RetryLater(EstClientError):
    """202 or 503 with Retry-After: ask again, identically, after ``delay`` seconds."""

    def __init__(self, status: int, delay: int, reason: str = "") -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(f"the server asks to retry in {delay} s ({status}){detail}")
        self.status = status
        self.delay = delay
        self.reason = reason


class ServerError(EstClientError):
    """A 5xx answer without Retry-After."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"the server failed ({status}): {reason}")
        self.status = status
        self.reason = reason


class OperationNotOffered(ServerError):
    """501: the server does not implement this operation (e.g. serverkeygen, fullcmc)."""

    def __init__(self, operation: str, reason: str) -> None:
        super().__init__(501, reason)
        self.operation = operation

    def __str__(self) -> str:
        return f"the server does not offer {self.operation} (501): {self.reason}"


class GaveUpWaiting(EstClientError):
    """The server kept answering 202/503 + Retry-After beyond the time the caller allowed."""

    def __init__(self, waited: float, max_wait: float, last: RetryLater) -> None:
        super().__init__(
            f"gave up after waiting {waited:.0f} s of at most {max_wait:.0f} s: the server still "
            f"asks to retry in {last.delay} s ({last.status}"
            + (f": {last.reason})" if last.reason else ")")
        )
        self.waited = waited
        self.max_wait = max_wait
        self.last = last


class BadResponse(EstClientError):
    """The server answered something that is not what RFC 7030 says it sends."""
