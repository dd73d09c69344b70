import base64

import pytest

from estkit.errors import MalformedBase64
from estkit.wire.base64body import decode_body, encode_body

DER = bytes(range(256)) * 3


def wrap(text: bytes, width: int, newline: bytes) -> bytes:
    return newline.join(text[i : i + width] for i in range(0, len(text), width)) + newline


@pytest.mark.parametrize("width", [64, 76])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_decodes_wrapped_lines(width, newline):
    assert decode_body(wrap(base64.b64encode(DER), width, newline)) == DER


def test_decodes_single_line_and_whitespace_anywhere():
    text = base64.b64encode(DER)
    noisy = b" \t".join(text[i : i + 7] for i in range(0, len(text), 7))
    assert decode_body(text) == DER
    assert decode_body(b"\r\n " + noisy + b"\t\r\n") == DER


def test_missing_padding_is_tolerated():
    assert decode_body(base64.b64encode(b"ab").rstrip(b"=")) == b"ab"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"   \r\n", "empty"),
        (b"MIIB*AA==", "not base64"),
        (b"\x30\x82\x01\x00", "not base64"),
        (b"QUJDR", "truncated"),
        (b"Q", "truncated"),
    ],
)
def test_rejects_non_base64_with_reason(body, reason):
    with pytest.raises(MalformedBase64, match=reason) as info:
        decode_body(body)
    assert info.value.status == 400


def test_encode_is_64_column_lines_that_round_trip():
    encoded = encode_body(DER)
    lines = encoded.split(b"\n")
    assert lines[-1] == b""
    assert all(len(line) == 64 for line in lines[:-2])
    assert 0 < len(lines[-2]) <= 64
    assert b"\r" not in encoded
    assert base64.b64decode(encoded) == DER
