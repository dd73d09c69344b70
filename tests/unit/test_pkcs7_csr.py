import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from estkit.errors import MalformedDer
from estkit.wire.csr import challenge_password, load_csr
from estkit.wire.pkcs7 import certs_only, load_certs_only
from tests.esthttp import make_csr


def self_signed(cn: str) -> x509.Certificate:
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def test_certs_only_round_trip():
    certs = [self_signed("a"), self_signed("b")]
    loaded = load_certs_only(certs_only(certs))  # a DER SET OF: order is the encoding's
    assert sorted(c.serial_number for c in loaded) == sorted(c.serial_number for c in certs)


def test_certs_only_rejects_garbage():
    with pytest.raises(MalformedDer):
        load_certs_only(b"\x30\x03\x02\x01\x01")


def test_load_csr_and_challenge_password():
    _, der = make_csr("dev", challenge_password="s3cret")
    csr = load_csr(der)
    assert challenge_password(csr) == "s3cret"
    _, der = make_csr("dev")
    assert challenge_password(load_csr(der)) is None


@pytest.mark.parametrize(
    "mutate", [lambda d: d + b"\x00", lambda d: d[:-1], lambda d: b"\x31" + d[1:]]
)
def test_load_csr_rejects_trailing_truncated_and_wrong_tag(mutate):
    _, der = make_csr("dev")
    with pytest.raises(MalformedDer, match="not a DER PKCS#10"):
        load_csr(mutate(der))


def test_load_csr_rejects_ber_long_form_length():
    _, der = make_csr("dev")
    assert der[1] == 0x81  # short CSRs use one length octet after 0x81
    ber = b"\x30\x82\x00" + der[2:]
    with pytest.raises(MalformedDer):
        load_csr(ber)
