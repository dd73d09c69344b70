"""The OCSP responder (RFC 6960): certificate status from the store, signed by the delegate.

Every request gets an OCSPResponse, never an exception: problems are reported in
OCSPResponseStatus (§4.2.1), which every OCSP client reads, rather than as HTTP errors only
some of them would show.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from estkit.authority.ca import CertificateAuthority
from estkit.authority.ocsp_settings import OcspSettings
from estkit.authority.ocsp_signer import ResponderKeeper
from estkit.authority.revocation import REASONS
from estkit.authority.service import Clock, serial_hex, utc_now
from estkit.errors import ServiceUnavailable
from estkit.store import Store
from estkit.wire.ocsp import (
    CERT_ID_HASHES,
    CertId,
    MalformedOcspRequest,
    OcspRequest,
    ResponseStatus,
    SingleStatus,
    encode_basic_response,
    encode_unsuccessful,
    issuer_hashes,
    parse_request,
)

log = logging.getLogger("estkit.ocsp")

MAX_REQUESTS = 100
"""CertIDs answered in one request; a larger request is refused as malformed."""
MAX_NONCE_OCTETS = 128
"""RFC 9654 §2.1 (which obsoletes RFC 8954's 32): a nonce of 1 to 128 octets is accepted, an
empty or longer one refused with malformedRequest."""
CACHE_ENTRIES = 4096


@dataclass(frozen=True)
class OcspAnswer:
    """An encoded OCSPResponse and what HTTP caching may know about it."""

    body: bytes
    status: ResponseStatus
    this_update: datetime | None = None
    next_update: datetime | None = None
    has_nonce: bool = False


class _Refused(Exception):
    def __init__(self, status: ResponseStatus, why: str) -> None:
        super().__init__(why)
        self.status = status


CacheKey = tuple[int, tuple[tuple[bytes, str, datetime | None, str | None], ...]]


class OcspResponder:
    """Answers OCSP requests about certificates of the issuing CA.

    Thread-safe: requests are answered in worker threads, the responder certificate is
    swapped whole by renewal, and the response cache has its own lock.
    """

    def __init__(
        self,
        ca: CertificateAuthority,
        store: Store,
        keeper: ResponderKeeper,
        settings: OcspSettings,
        clock: Clock = utc_now,
    ) -> None:
        self.ca = ca
        self.store = store
        self.keeper = keeper
        self.settings = settings
        self.clock = clock
        self._issuer = {oid: issuer_hashes(ca.issuing, oid) for oid in CERT_ID_HASHES}
        self._cache: OrderedDict[CacheKey, OcspAnswer] = OrderedDict()
        self._lock = threading.Lock()

    def serves(self, cert_id: CertId) -> bool:
        """Whether cert_id names this responder's issuing CA."""
        expected = self._issuer.get(cert_id.hash_oid)
        return expected == (cert_id.issuer_name_hash, cert_id.issuer_key_hash)

    def respond(self, der: bytes) -> OcspAnswer:
        """The OCSPResponse to a DER OCSPRequest, whatever the request holds."""
        try:
            return self._respond(der)
        except _Refused as refused:
            log.info("OCSP request refused (%s): %s", refused.status.name, refused)
            return self.refuse(refused.status)
        except Exception:
            log.exception("OCSP request failed")
            return self.refuse(ResponseStatus.INTERNAL_ERROR)

    def refuse(self, status: ResponseStatus) -> OcspAnswer:
        """An unsuccessful response, for what never got as far as an OCSP request."""
        return OcspAnswer(encode_unsuccessful(status), status)

    def _respond(self, der: bytes) -> OcspAnswer:
        try:
            request = parse_request(der)
        except MalformedOcspRequest as exc:
            raise _Refused(ResponseStatus.MALFORMED_REQUEST, str(exc)) from None
        self._check(request)
        try:
            singles = [self._status(cert_id) for cert_id in request.cert_ids]
        except ServiceUnavailable as exc:
            # §4.2.1 tryLater: the store is the source of truth; never guess "good".
            raise _Refused(ResponseStatus.TRY_LATER, str(exc)) from None
        responder = self.keeper.current
        now = self.clock()
        if now >= responder.certificate.not_valid_after_utc:
            raise _Refused(ResponseStatus.TRY_LATER, "the responder certificate has expired")
        key: CacheKey | None = None
        if request.nonce is None:
            key = (responder.certificate.serial_number, tuple(_cache_part(s) for s in singles))
            cached = self._cached(key, now)
            if cached is not None:
                return cached
        this_update = now.replace(microsecond=0)
        next_update = min(
            this_update + self.settings.response_validity,
            responder.certificate.not_valid_after_utc,
        )
        body = encode_basic_response(
            responder_key=responder.key,
            responder_certificates=[responder.certificate],
            produced_at=this_update,
            this_update=this_update,
            next_update=next_update,
            singles=singles,
            nonce=request.nonce,
        )
        answer = OcspAnswer(
            body, ResponseStatus.SUCCESSFUL, this_update, next_update, request.nonce is not None
        )
        if key is not None:
            self._remember(key, answer)
        return answer

    def _check(self, request: OcspRequest) -> None:
        """Refuse what this responder cannot answer, before looking anything up."""
        if len(request.cert_ids) > MAX_REQUESTS:
            raise _Refused(
                ResponseStatus.MALFORMED_REQUEST,
                f"{len(request.cert_ids)} CertIDs in one request (at most {MAX_REQUESTS})",
            )
        if request.critical_unknown:
            # §4.4: unrecognized extensions are ignored "unless they have the critical flag
            # set and are not understood".
            raise _Refused(
                ResponseStatus.MALFORMED_REQUEST,
                f"critical extension {', '.join(request.critical_unknown)} not understood",
            )
        if request.nonce is not None and not 1 <= request.nonce_length <= MAX_NONCE_OCTETS:
            raise _Refused(
                ResponseStatus.MALFORMED_REQUEST,
                f"a nonce of {request.nonce_length} octets (1 to {MAX_NONCE_OCTETS} accepted)",
            )
        for cert_id in request.cert_ids:
            expected = self._issuer.get(cert_id.hash_oid)
            if expected != (cert_id.issuer_name_hash, cert_id.issuer_key_hash):
                # The delegated responder speaks for the issuing CA only: a client must not
                # be told anything, even "unknown", about another CA's certificates.
                what = "an unsupported hash algorithm" if expected is None else "another CA"
                raise _Refused(
                    ResponseStatus.UNAUTHORIZED,
                    f"a CertID names {what} ({cert_id.hash_oid})",
                )

    def _status(self, cert_id: CertId) -> SingleStatus:
        if cert_id.serial <= 0:
            return SingleStatus(cert_id, "unknown")
        record = self.store.certificate(serial_hex(cert_id.serial))
        if record is None or record.issuer_id != self.ca.issuing_id:
            return SingleStatus(cert_id, "unknown")
        if record.status != "revoked":
            return SingleStatus(cert_id, "good")
        return SingleStatus(
            cert_id,
            "revoked",
            revoked_at=record.revoked_at or record.issued_at,
            reason=_reason(record.revocation_reason),
        )

    # Reusing signed responses -----------------------------------------------------------------

    def _cached(self, key: CacheKey, now: datetime) -> OcspAnswer | None:
        """A response signed earlier for the same CertIDs and statuses, while it still has at
        least half of response_validity to run (RFC 5019 §2.2.1 allows pre-produced
        responses). Never for a request with a nonce: that answer is bound to the request."""
        margin = self.settings.response_validity / 2
        with self._lock:
            answer = self._cache.get(key)
            if answer is None:
                return None
            assert answer.next_update is not None
            if now >= answer.next_update - margin:
                del self._cache[key]
                return None
            self._cache.move_to_end(key)
            return answer

    def _remember(self, key: CacheKey, answer: OcspAnswer) -> None:
        with self._lock:
            self._cache[key] = answer
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)


def _cache_part(single: SingleStatus) -> tuple[bytes, str, datetime | None, str | None]:
    reason = single.reason.value if single.reason is not None else None
    return (single.cert_id.der, single.status, single.revoked_at, reason)


def _reason(name: str | None) -> x509.ReasonFlags | None:
    """The revocationReason to send. Like CRL entries (RFC 5280 §5.3.1: "SHOULD be absent
    instead of using the unspecified (0) reasonCode value"), unspecified is left out."""
    flag = REASONS.get(name or "unspecified")
    if flag is None:
        flag = next((f for n, f in REASONS.items() if n.lower() == (name or "").lower()), None)
    return None if flag in (None, x509.ReasonFlags.unspecified) else flag


class OcspRouter:
    """One responder per CA generation (after a rollover, the retired issuing CA keeps its
    own delegated responder for its certificates); a request goes to the responder of the
    CA its first CertID names.  A request mixing generations gets ``unauthorized`` for the
    others' CertIDs from that responder, as for any foreign CertID."""

    def __init__(self, responders: list[OcspResponder]) -> None:
        assert responders, "at least the current generation's responder"
        self.responders = responders

    @property
    def clock(self) -> Clock:
        return self.responders[0].clock

    def respond(self, der: bytes) -> OcspAnswer:
        try:
            request = parse_request(der)
        except MalformedOcspRequest:
            return self.responders[0].respond(der)  # answers malformedRequest
        first = request.cert_ids[0] if request.cert_ids else None
        responder = next(
            (r for r in self.responders if first is not None and r.serves(first)),
            self.responders[0],
        )
        return responder.respond(der)

    def refuse(self, status: ResponseStatus) -> OcspAnswer:
        return self.responders[0].refuse(status)
