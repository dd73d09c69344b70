"""The OCSP responder and its certificate keeper in-process, with an injected clock and a real
SQLite store: renewal timing, response reuse, and the statuses a server rarely shows."""

from __future__ import annotations

import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from estkit.authority.ca import CertificateAuthority
from estkit.authority.keys import generate_key, write_private_key
from estkit.authority.ocsp import OcspResponder
from estkit.authority.ocsp_settings import OcspSettings
from estkit.authority.ocsp_signer import ResponderKeeper
from estkit.authority.pki import create_pki
from estkit.store import Store
from estkit.wire.ocsp import issuer_hashes

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class Clock:
    now: datetime = START

    def __call__(self) -> datetime:
        return self.now


def make_ca(directory: Path) -> CertificateAuthority:
    directory.mkdir()
    create_pki(directory, "test", "ec-p256", ["localhost"], now=START - timedelta(days=1))
    ca_dir = directory / "ca"
    return CertificateAuthority.load(
        ca_dir / "root.pem", ca_dir / "issuing.pem", ca_dir / "issuing.key"
    )


@pytest.fixture
def setup(tmp_path):
    ca = make_ca(tmp_path / "instance")
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.create_schema()
    yield ca, store, tmp_path / "instance" / "ca", Clock()
    store.close()


def keeper_for(setup, settings: OcspSettings | None = None, ca=None) -> ResponderKeeper:
    default_ca, store, directory, clock = setup
    return ResponderKeeper(ca or default_ca, store, directory, settings or OcspSettings(), clock)


def audit_reasons(store: Store) -> list[str]:
    return [
        e.detail["reason"] for e in store.audit_events() if e.action == "certificate.ocsp-responder"
    ]


def request_for(ca: CertificateAuthority, serial: int) -> bytes:
    name_hash, key_hash = issuer_hashes(ca.issuing, "1.3.14.3.2.26")
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        name_hash, key_hash, serial, hashes.SHA1()
    )
    return builder.build().public_bytes(serialization.Encoding.DER)


# The keeper -------------------------------------------------------------------------------------


def test_renewed_once_a_third_of_the_lifetime_is_left(setup):
    _, store, directory, clock = setup
    keeper = keeper_for(setup)
    first = keeper.start()
    assert first.certificate.not_valid_after_utc == START + timedelta(days=30)
    assert stat.S_IMODE((directory / "ocsp-responder.key").stat().st_mode) == 0o600
    clock.now = START + timedelta(days=19)  # 11 days left: more than a third
    assert keeper.renew_if_due() is None
    clock.now = START + timedelta(days=20, seconds=1)  # less than 10 days left
    renewed = keeper.renew_if_due()
    assert renewed is not None and keeper.current is renewed
    assert renewed.certificate.not_valid_after_utc == clock.now.replace(microsecond=0) + timedelta(
        days=30
    )
    assert renewed.key.public_key() != first.key.public_key()
    on_disk = x509.load_pem_x509_certificate((directory / "ocsp-responder.pem").read_bytes())
    assert on_disk == renewed.certificate
    assert stat.S_IMODE((directory / "ocsp-responder.key").stat().st_mode) == 0o600
    assert audit_reasons(store) == ["first start", "renewal"]
    # Both certificates are in the store, like everything the CA signs.
    for responder in (first, renewed):
        record = store.certificate(format(responder.certificate.serial_number, "x"))
        assert record is not None and record.kind == "ocsp-responder"


def test_a_fresh_start_reuses_a_sound_responder(setup):
    _, store, _, clock = setup
    first = keeper_for(setup).start()
    clock.now = START + timedelta(days=5)
    again = keeper_for(setup).start()
    assert again.certificate == first.certificate
    assert audit_reasons(store) == ["first start"]


def test_not_renewed_in_a_loop_near_the_issuing_ca_end(setup):
    ca, store, _, clock = setup
    clock.now = ca.issuing.not_valid_after_utc - timedelta(days=5)
    keeper = keeper_for(setup)
    first = keeper.start()
    assert first.certificate.not_valid_after_utc == ca.issuing.not_valid_after_utc
    clock.now += timedelta(hours=1)
    assert keeper.renew_if_due() is None  # a new one would end no later
    assert audit_reasons(store) == ["first start"]


def test_shortened_validity_renews_at_start(setup):
    _, store, _, clock = setup
    keeper_for(setup).start()
    clock.now = START + timedelta(minutes=1)
    short = keeper_for(setup, OcspSettings(responder_validity=timedelta(days=1))).start()
    assert short.certificate.not_valid_after_utc == clock.now + timedelta(days=1)
    assert audit_reasons(store) == ["first start", "responder_validity was shortened"]


def test_a_new_issuing_ca_gets_a_new_responder(setup, tmp_path):
    _, store, _, _ = setup
    keeper_for(setup).start()
    other_ca = make_ca(tmp_path / "other")
    responder = keeper_for(setup, ca=other_ca).start()
    responder.certificate.verify_directly_issued_by(other_ca.issuing)
    assert audit_reasons(store) == ["first start", "the issuing CA changed"]


def test_a_key_file_that_does_not_match_is_replaced(setup):
    _, store, directory, _ = setup
    keeper_for(setup).start()
    key_path = directory / "ocsp-responder.key"
    key_path.unlink()
    write_private_key(key_path, generate_key("ec-p256"))
    responder = keeper_for(setup).start()
    assert responder.certificate.public_key() == responder.key.public_key()
    assert audit_reasons(store)[-1].endswith(
        "did not match " + str(directory / "ocsp-responder.pem")
    )


# The responder ----------------------------------------------------------------------------------


def test_responses_are_reused_until_half_their_validity_is_gone(setup):
    ca, store, _, clock = setup
    keeper = keeper_for(setup)
    keeper.start()
    responder = OcspResponder(ca, store, keeper, OcspSettings(), clock)
    der = request_for(ca, 12345)
    first = responder.respond(der)
    clock.now += timedelta(minutes=29)
    assert responder.respond(der).body == first.body
    clock.now += timedelta(minutes=2)  # 29 minutes of the hour left: sign afresh
    later = responder.respond(der)
    assert later.body != first.body
    assert later.this_update == clock.now
    parsed = ocsp.load_der_ocsp_response(later.body)
    assert parsed.certificate_status == ocsp.OCSPCertStatus.UNKNOWN


def test_next_update_never_outlives_the_responder_certificate(setup):
    ca, store, _, clock = setup
    keeper = keeper_for(setup, OcspSettings(responder_validity=timedelta(minutes=30)))
    current = keeper.start()
    responder = OcspResponder(ca, store, keeper, OcspSettings(), clock)
    answer = responder.respond(request_for(ca, 7))
    assert answer.next_update == current.certificate.not_valid_after_utc


def test_an_expired_responder_answers_try_later(setup):
    ca, store, _, clock = setup
    keeper = keeper_for(setup)
    keeper.start()
    responder = OcspResponder(ca, store, keeper, OcspSettings(), clock)
    clock.now = START + timedelta(days=31)  # renewal never ran
    answer = ocsp.load_der_ocsp_response(responder.respond(request_for(ca, 7)).body)
    assert answer.response_status == ocsp.OCSPResponseStatus.TRY_LATER


def test_an_unavailable_store_answers_try_later(setup, tmp_path):
    ca, _, _, clock = setup
    keeper = keeper_for(setup)
    keeper.start()
    empty = Store(f"sqlite:///{tmp_path / 'no-tables.db'}")  # no schema: every read fails
    try:
        responder = OcspResponder(ca, empty, keeper, OcspSettings(), clock)
        answer = ocsp.load_der_ocsp_response(responder.respond(request_for(ca, 7)).body)
    finally:
        empty.close()
    assert answer.response_status == ocsp.OCSPResponseStatus.TRY_LATER
