import base64

import pytest

from estkit.errors import MalformedDer
from estkit.wire.csrattrs import CsrAttribute, decode_csrattrs, encode_csrattrs, oid_value

# RFC 7030 section 4.5.2 example: challengePassword, ecPublicKey {secp384r1},
# extensionRequest {macAddress}, ecdsaWithSHA384.
RFC7030_EXAMPLE = (
    "MEEGCSqGSIb3DQEJBzASBgcqhkjOPQIBMQcGBSuBBAAiMBYGCSqGSIb3DQEJDjEJBgcrBgEBAQEWBggqhkjOPQQDAw=="
)


def test_decodes_the_rfc_example():
    items = decode_csrattrs(base64.b64decode(RFC7030_EXAMPLE))
    assert items == (
        "1.2.840.113549.1.9.7",
        CsrAttribute("1.2.840.10045.2.1", (oid_value("1.3.132.0.34"),)),
        CsrAttribute("1.2.840.113549.1.9.14", (oid_value("1.3.6.1.1.1.1.22"),)),
        "1.2.840.10045.4.3.3",
    )


def test_encodes_the_rfc_example_byte_for_byte():
    items = decode_csrattrs(base64.b64decode(RFC7030_EXAMPLE))
    assert base64.b64encode(encode_csrattrs(items)).decode() == RFC7030_EXAMPLE


def test_empty_sequence_round_trips():
    assert encode_csrattrs(()) == b"\x30\x00"
    assert decode_csrattrs(b"\x30\x00") == ()


def test_unknown_oids_are_kept():
    items = ("1.3.6.1.4.1.99999.1", CsrAttribute("1.3.6.1.4.1.99999.2", (oid_value("1.2.3"),)))
    assert decode_csrattrs(encode_csrattrs(items)) == items


@pytest.mark.parametrize("der", [b"\x30\x00\x00", b"\x04\x00", b"\x30\x03\x02\x01\x01"])
def test_rejects_trailing_bytes_and_wrong_types(der):
    with pytest.raises(MalformedDer):
        decode_csrattrs(der)
